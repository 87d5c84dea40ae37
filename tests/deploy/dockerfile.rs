//! The `Dockerfile`: built with the tested release command, run unprivileged,
//! with a healthcheck that passes against a serving exporter.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::support::daemon;
use crate::support::{TempDir, free_port, text};
use crate::{RELEASE_BUILD, exporter, read, repo, succeed};

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
pub(crate) struct Instruction {
    pub(crate) stage: String,
    pub(crate) keyword: String,
    pub(crate) args: String,
}

pub(crate) fn dockerfile() -> Vec<Instruction> {
    let source = read(&repo("Dockerfile"));
    let mut instructions = Vec::new();
    let mut stage = String::new();
    let mut current = String::new();
    for line in source.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            current.push_str(start.trim());
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        let keyword = keyword.to_uppercase();
        let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
        if keyword == "FROM" {
            let words: Vec<&str> = args.split(' ').collect();
            stage = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => "final".to_owned(),
            };
        }
        instructions.push(Instruction {
            stage: stage.clone(),
            keyword,
            args,
        });
        current.clear();
    }
    instructions
}

#[test]
fn dockerfile_builds_with_the_tested_command_and_runs_unprivileged_with_a_healthcheck() {
    let instructions = dockerfile();
    let in_stage = |stage: &str, keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|i| i.stage == stage && i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    };
    let froms: Vec<&str> = instructions
        .iter()
        .filter(|i| i.keyword == "FROM")
        .map(|i| i.args.as_str())
        .collect();
    // Every base is a build argument (tests/deploy/image.rs builds the image
    // from local ones); the defaults are what users get.
    assert_eq!(
        froms,
        [
            "${BUILD_IMAGE} AS build",
            "${BINARY_FROM} AS binary",
            "${RUNTIME_IMAGE}"
        ],
        "a build stage, the binary's source and a runtime stage"
    );
    let defaults = global_args();
    assert_eq!(
        defaults["BUILD_IMAGE"],
        "docker.io/library/rust:1.95-bookworm"
    );
    assert_eq!(
        defaults["RUNTIME_IMAGE"],
        "gcr.io/distroless/cc-debian12:nonroot"
    );
    assert_eq!(
        defaults["BINARY_FROM"], "build",
        "compiled in the build stage"
    );
    // The runtime stage names its base (declared again to be in scope there).
    assert!(in_stage("final", "ARG").contains(&"RUNTIME_IMAGE"));

    // The build stage: every cargo build is the release build, and the last RUN is it.
    let runs = in_stage("build", "RUN");
    assert_eq!(
        runs.last().copied(),
        Some(RELEASE_BUILD),
        "the build stage ends in `RUN {RELEASE_BUILD}`"
    );
    for run in &runs {
        for command in run
            .split("&&")
            .map(str::trim)
            .filter(|c| c.starts_with("cargo"))
        {
            assert_eq!(command, RELEASE_BUILD, "RUN {run}");
        }
    }
    assert!(
        read(&repo("scripts/demo")).contains(RELEASE_BUILD),
        "scripts/demo builds with {RELEASE_BUILD}"
    );
    // --locked: Cargo.lock must already be what Cargo.toml resolves to.
    // Offline, for this machine's platform only: the crates of other
    // platforms (Windows' console crates) are never downloaded here.
    let rustc = succeed(Command::new("rustc").arg("-vV"), "rustc");
    let host = rustc
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host");
    succeed(
        Command::new(env!("CARGO")).current_dir(repo("")).args([
            "metadata",
            "--locked",
            "--offline",
            "--format-version=1",
            "--filter-platform",
            host,
        ]),
        "cargo",
    );

    // The dependency layer stubs every target Cargo.toml names, and copies only
    // files the build context (after .dockerignore) has.
    let manifest: toml::Value = toml::from_str(&read(&repo("Cargo.toml"))).unwrap();
    let stubs = runs.first().copied().unwrap_or_default();
    // Cargo checks that every target the manifest lists has its file.
    let mut paths = vec![manifest["lib"]["path"].as_str().unwrap().to_owned()];
    for (kind, dir) in [
        ("bin", "src/bin"),
        ("bench", "benches"),
        ("test", "tests"),
        ("example", "examples"),
    ] {
        for target in manifest
            .get(kind)
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            paths.push(match target.get("path").and_then(toml::Value::as_str) {
                Some(path) => path.to_owned(),
                None => format!("{dir}/{}.rs", target["name"].as_str().unwrap()),
            });
        }
    }
    for path in paths {
        assert!(
            stubs.contains(&format!("> {path}")) || stubs.contains(&format!("touch {path}")),
            "no stub for {path}"
        );
    }
    let ignored: Vec<String> = read(&repo(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect();
    for required in ["target", ".git"] {
        assert!(
            ignored.iter().any(|i| i == required),
            ".dockerignore leaves out {required}"
        );
    }
    for copy in in_stage("build", "COPY") {
        let words: Vec<&str> = copy.split(' ').collect();
        for source in &words[..words.len() - 1] {
            assert!(repo(source).exists(), "COPY {source}: no such file");
            let top = source.split('/').next().unwrap();
            assert!(
                !ignored.iter().any(|i| i == top),
                "COPY {source}, which .dockerignore leaves out"
            );
        }
    }

    // The runtime stage.
    let workdir = in_stage("build", "WORKDIR");
    let copies = in_stage("final", "COPY");
    let binary_path = "/usr/local/bin/mqtt-pulse";
    assert_eq!(
        copies,
        [format!(
            "--from=binary {}/target/release/mqtt-pulse {binary_path}",
            workdir[0]
        )]
    );
    let user = in_stage("final", "USER");
    assert_eq!(user.len(), 1);
    let uid = user[0].split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "runs as {uid}");
    assert_eq!(in_stage("final", "EXPOSE"), ["9883"]);
    let help = succeed(daemon::command().arg("--help"), "mqtt-pulse");
    assert!(
        help.contains("[default: :9883]"),
        "the exposed port is the default one:\n{help}"
    );
    assert_eq!(
        in_stage("final", "ENTRYPOINT"),
        [format!("[\"{binary_path}\"]")]
    );
    let healthcheck = healthcheck_command();
    assert_eq!(healthcheck[0], binary_path);
    assert_eq!(healthcheck[1], "healthcheck");
    assert!(
        healthcheck.contains(&"--web.listen-address=127.0.0.1:9883".to_owned()),
        "{healthcheck:?}"
    );

    let labels = in_stage("final", "LABEL").join(" ");
    let args = in_stage("final", "ARG");
    assert!(
        args.contains(&format!("VERSION={}", env!("CARGO_PKG_VERSION")).as_str()),
        "ARG VERSION is the crate's: {args:?}"
    );
    for (key, value) in [
        ("title", "\"mqtt-pulse\""),
        ("version", "\"${VERSION}\""),
        ("revision", "\"${REVISION}\""),
        ("licenses", &format!("\"{}\"", env!("CARGO_PKG_LICENSE"))),
        ("base.name", "\"${RUNTIME_IMAGE}\""),
    ] {
        let pair = format!("org.opencontainers.image.{key}={value}");
        assert!(labels.contains(&pair), "LABEL {pair} missing in {labels}");
    }
    assert!(labels.contains("org.opencontainers.image.description="));
}

/// The `ARG NAME=default`s before the first `FROM`: the ones `FROM` lines can use.
pub(crate) fn global_args() -> BTreeMap<String, String> {
    dockerfile()
        .into_iter()
        .filter(|i| i.stage.is_empty() && i.keyword == "ARG")
        .map(|i| {
            let (name, default) = i.args.split_once('=').unwrap_or((&i.args, ""));
            (name.to_owned(), default.to_owned())
        })
        .collect()
}

/// The HEALTHCHECK's exec-form command.
pub(crate) fn healthcheck_command() -> Vec<String> {
    let instructions = dockerfile();
    let healthcheck = instructions
        .iter()
        .find(|i| i.stage == "final" && i.keyword == "HEALTHCHECK")
        .expect("a HEALTHCHECK in the runtime stage");
    let command = &healthcheck.args[healthcheck
        .args
        .find("CMD [")
        .expect("HEALTHCHECK CMD [exec form]")
        + 4..];
    serde_json::from_str(command).unwrap_or_else(|e| panic!("HEALTHCHECK CMD {command}: {e}"))
}

#[test]
fn the_dockerfile_healthcheck_passes_against_a_serving_exporter_and_fails_without_one() {
    let dir = TempDir::new("deploy-healthcheck");
    let config = dir.join("mqtt-pulse.toml");
    let nowhere = free_port();
    fs::write(
        &config,
        format!("[[target]]\nname = \"x\"\nurl = \"mqtt://127.0.0.1:{nowhere}\"\n"),
    )
    .unwrap();
    let exporter = exporter(&dir, &config);
    let command = healthcheck_command();
    let run = |port: u16| {
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| a.replace("127.0.0.1:9883", &format!("127.0.0.1:{port}")))
            .collect();
        assert_cmd::Command::from_std(daemon::command())
            .args(&args)
            .timeout(Duration::from_secs(10))
            .output()
            .unwrap()
    };
    let serving = run(exporter.port());
    assert!(serving.status.success(), "{}", text(&serving.stderr));
    let closed = run(free_port());
    assert!(
        !closed.status.success(),
        "healthcheck of a closed port succeeded"
    );
}
