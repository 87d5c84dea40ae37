//! One-shot runs: every bad config, a missing file, a taken or malformed
//! listen address, a missing web config, an unknown flag each fail with one
//! line; `--config.check` and `--version` on good input.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use mqtt_pulse::config::Config;
use mqtt_pulse::daemon::{DaemonError, LONG_VERSION};

use crate::support::daemon::{assert_fails_with_one_line, run};
use crate::support::{TempDir, free_port, text};

/// `--config.file <file> --web.listen-address 127.0.0.1:<free port>`: the
/// serving path, which must fail before it serves.
fn serve_args(config: &str, port: u16) -> Vec<String> {
    vec![
        "--config.file".into(),
        config.into(),
        "--web.listen-address".into(),
        format!("127.0.0.1:{port}"),
    ]
}

#[test]
fn every_bad_config_fails_with_the_librarys_one_line_through_check_and_serve() {
    let mut bad_files: Vec<PathBuf> = fs::read_dir("tests/testdata")
        .expect("read tests/testdata")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("bad-") && name.ends_with(".toml")
        })
        .collect();
    bad_files.sort();
    assert!(
        bad_files.len() >= 40,
        "expected the bad-*.toml table of tests/config/errors.rs, found {bad_files:?}"
    );

    for path in &bad_files {
        let error = Config::load(path)
            .err()
            .unwrap_or_else(|| panic!("{} loads, but it is a bad-* file", path.display()));
        let expected = format!("mqtt-pulse: {error}");
        let file = path.to_str().expect("a UTF-8 path");

        let check = run(&["--config.file", file, "--config.check"]);
        assert_fails_with_one_line(&check, &expected, &format!("--config.check {file}"));

        let serve = run(&serve_args(file, free_port()));
        assert_fails_with_one_line(&serve, &expected, &format!("serving {file}"));
    }
}

#[test]
fn a_missing_or_unreadable_config_file_fails_with_one_line() {
    let dir = TempDir::new("daemon-unreadable");
    let missing = dir.join("missing.toml");
    // A directory: unreadable as a file even for root, unlike a chmod 000 file.
    let directory = dir.join("config.toml");
    fs::create_dir(&directory).unwrap();

    for path in [&missing, &directory] {
        let error = Config::load(path).expect_err("an unreadable file");
        let expected = format!("mqtt-pulse: {error}");
        assert!(
            expected.contains("cannot read the config file"),
            "{expected}"
        );
        let file = path.to_str().unwrap();

        let check = run(&["--config.file", file, "--config.check"]);
        assert_fails_with_one_line(&check, &expected, &format!("--config.check {file}"));
        let serve = run(&serve_args(file, free_port()));
        assert_fails_with_one_line(&serve, &expected, &format!("serving {file}"));
    }
}

#[test]
fn a_listen_address_in_use_fails_with_one_line() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = run(&[
        "--config.file",
        "tests/testdata/good-minimal.toml",
        "--web.listen-address",
        &address,
    ]);
    let in_use = io::Error::from_raw_os_error(nix::errno::Errno::EADDRINUSE as i32);
    assert_fails_with_one_line(
        &output,
        &format!("mqtt-pulse: cannot listen on {address}: {in_use}"),
        "listen address in use",
    );
    drop(taken);
}

#[test]
fn malformed_listen_addresses_fail_with_one_line() {
    let cases = [
        (
            "nonsense",
            "mqtt-pulse: invalid --web.listen-address \"nonsense\": expected host:port or :port",
        ),
        (
            ":99999",
            "mqtt-pulse: invalid --web.listen-address \":99999\": \"99999\" is not a port number",
        ),
        (
            "host:",
            "mqtt-pulse: invalid --web.listen-address \"host:\": expected host:port or :port",
        ),
    ];
    for (address, expected) in cases {
        let output = run(&[
            "--config.file",
            "tests/testdata/good-minimal.toml",
            "--web.listen-address",
            address,
        ]);
        assert_fails_with_one_line(
            &output,
            expected,
            &format!("--web.listen-address {address}"),
        );
    }
}

#[test]
fn a_missing_web_config_file_fails_with_one_clear_line() {
    // Every other bad web config is in tests/web_config/.
    let listen = format!("127.0.0.1:{}", free_port());
    let missing = "tests/testdata/web/no-such-web-config.yml";
    let output = run(&[
        "--config.file",
        "tests/testdata/good-minimal.toml",
        "--web.listen-address",
        &listen,
        "--web.config.file",
        missing,
    ]);
    let error = mqtt_pulse::http::WebConfig::load(missing).expect_err("a missing file");
    let expected = format!("mqtt-pulse: {}", DaemonError::from(error));
    assert!(
        expected.contains("cannot read the web config file") && expected.contains(missing),
        "{expected}"
    );
    assert_fails_with_one_line(&output, &expected, "--web.config.file missing");
}

#[test]
fn an_unknown_flag_is_clap_usage_error_status_2() {
    let output = run(&["--no-such-flag"]);
    let stderr = text(&output.stderr);
    // clap's convention for usage errors; anything non-zero would do for a
    // shell, but 2 is what it documents and what scripts can tell apart from 1.
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unexpected argument '--no-such-flag'"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn config_check_counts_the_paths_too() {
    let output = run(&[
        "--config.file",
        "tests/testdata/good-paths.toml",
        "--config.check",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "tests/testdata/good-paths.toml: OK, 2 targets (north, south), 2 paths \
         (north->south, south->north)\n"
    );
}

#[test]
fn config_check_on_a_good_file_prints_a_one_line_summary() {
    let output = run(&[
        "--config.file",
        "tests/testdata/good-full.toml",
        "--config.check",
    ]);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "tests/testdata/good-full.toml: OK, 3 targets (plain, tls-own, websocket)\n"
    );
    // The file turns TLS verification off for one target: warned, one line.
    let config = Config::load(Path::new("tests/testdata/good-full.toml")).unwrap();
    let expected: String = config
        .warnings()
        .iter()
        .map(|warning| format!("{warning}\n"))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(stderr, expected);
}

/// Guards `--version`: the crate version, the revision of this checkout
/// (`git rev-parse --short=12 HEAD`, see `support::expected_revision`) and
/// the compiler's version.
#[test]
fn version_names_the_version_revision_and_compiler() {
    let output = run(&["--version"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert_eq!(stdout, format!("mqtt-pulse {LONG_VERSION}\n"));
    let rest = LONG_VERSION
        .strip_prefix(concat!(env!("CARGO_PKG_VERSION"), " (revision "))
        .unwrap_or_else(|| panic!("{LONG_VERSION}"));
    let (revision, rustc) = rest
        .strip_suffix(')')
        .and_then(|rest| rest.split_once(", rustc "))
        .unwrap_or_else(|| panic!("{LONG_VERSION}"));
    assert_eq!(revision, crate::support::expected_revision(), "{stdout}");
    // The compiler is always known: build.rs runs it.
    assert!(
        rustc.split('.').count() >= 3 && rustc.split('.').all(|p| !p.is_empty()),
        "{stdout}"
    );
    assert!(output.stderr.is_empty());
}

#[test]
fn config_check_also_checks_the_web_config_and_certificate_contents() {
    let web = "tests/testdata/web/bad-bcrypt-hash.yml";
    let expected = format!(
        "mqtt-pulse: {}",
        mqtt_pulse::http::WebConfig::load(Path::new(web)).unwrap_err()
    );
    let output = run(&["--config.check", "--web.config.file", web]);
    assert_fails_with_one_line(&output, &expected, "--config.check with a bad web config");

    // The config loader checks that files exist; starting also reads them.
    let dir = TempDir::new("daemon-check-pem");
    let config = dir.join("mqtt-pulse.toml");
    fs::write(
        &config,
        format!(
            "[[target]]\nname = \"t\"\nurl = \"mqtts://127.0.0.1:8883\"\n[target.tls]\nca_file = \"{}\"\n",
            fs::canonicalize("tests/testdata/web/not-a-certificate.pem")
                .unwrap()
                .display()
        ),
    )
    .unwrap();
    let output = run(&["--config.check", "--config.file", config.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("mqtt-pulse: target \"t\": cannot use the certificate file")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}
