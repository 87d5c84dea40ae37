//! The container image, built from the `Dockerfile` and run for real with
//! Podman (Debian packages `podman` and `runc`: no daemon, no registry).
//!
//! Nothing can be pulled here, so the test builds the Dockerfile's real
//! runtime stage on a base image it assembles itself — the shared libraries
//! the binary links, an `/etc/passwd` with the image's user, `podman import`ed
//! — with the binary cargo built for the tests as `BINARY_FROM` (so the build
//! stage, and its toolchain image, are skipped). Then it runs the image, each
//! container with a published port on Podman's bridge network:
//! - as the kustomize base's StatefulSet runs it (`kubectl kustomize`), one
//!   container per replica: pod name, args, env (the shard index as the
//!   downward API gives each pod), security context (user, group, read-only
//!   root, no capabilities, no new privileges), the ConfigMap and the Secret
//!   as rendered, mounted where the pod mounts them — only the brokers'
//!   addresses are changed, to private Mosquittos that accept nothing but the
//!   Secret's passwords. Every target comes up in exactly one of them;
//! - as docker-compose.yml runs it: its command and its bind mount of
//!   deploy/mqtt-pulse, with the image's own user.
//!
//! Each container: the process runs as the image's non-root user, the image's
//! HEALTHCHECK passes inside it (`podman healthcheck run`), `/-/ready` and
//! `/metrics` answer through the published port, and the config the mounts
//! carry is the one that runs.
//!
//! Podman keeps everything under the test's own temporary directory
//! (`--root`, `--runroot`, its tmp dir; the vfs storage driver) and reads the
//! test's own `CONTAINERS_CONF`: the sandbox refuses Podman's default rlimits
//! (`default_ulimits = []`, `--ulimit host`), crun cannot run on this machine's
//! hybrid cgroup v1 layout (runc can), and there is no systemd (cgroupfs, file
//! events). It runs Podman as root, as CI does (the Secret's files are given
//! the pod's group with chown; rootless Podman would also need uidmap and
//! subordinate ids). Wall time: about 10 s, most of it the vfs driver copying the
//! 60 MB debug binary between layers.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::compose::{binds, docker_compose};
use crate::dockerfile::{dockerfile, healthcheck_command};
use crate::kubernetes::Rendered;
use crate::support::daemon;
use crate::support::http::fetch;
use crate::support::metrics::Metrics;
use crate::support::{Broker, TempDir, free_port, text};
use crate::{DEADLINE, output, poll, repo, succeed, yaml};

/// Debian's podman.
const PODMAN: &str = "/usr/bin/podman";
/// The local images the test makes.
const RUNTIME_BASE: &str = "localhost/mqtt-pulse-test-runtime:latest";
const BINARY_IMAGE: &str = "localhost/mqtt-pulse-test-binary:latest";
const IMAGE: &str = "localhost/mqtt-pulse:test";
/// The label the StatefulSet controller gives each pod, its ordinal.
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Podman with all its state in one temporary directory; every container is
/// removed (and its conmon ended) on drop, before the directory goes.
struct Podman {
    dir: TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = TempDir::new("podman");
        for sub in ["root", "runroot", "tmp"] {
            fs::create_dir(dir.join(sub)).unwrap();
        }
        fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\n\
                 # The sandbox refuses Podman's default rlimits.\n\
                 default_ulimits = []\n\
                 [engine]\n\
                 # crun refuses this machine's hybrid cgroup layout; runc runs.\n\
                 runtime = \"runc\"\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 tmp_dir = \"{}\"\n",
                dir.join("tmp").display()
            ),
        )
        .unwrap();
        Podman { dir }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(PODMAN);
        command
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(["--storage-driver", "vfs"]);
        command
    }

    /// `podman args…`; panics with its output unless it succeeds; stdout.
    fn run(&self, args: &[&str]) -> String {
        succeed(self.command().args(args), "podman")
    }

    fn output(&self, args: &[&str]) -> Output {
        output(self.command().args(args), "podman")
    }

    fn inspect(&self, what: &str) -> Value {
        let inspected: Value = serde_json::from_str(&self.run(&["inspect", what])).unwrap();
        inspected[0].clone()
    }

    /// The container's logs, for failure messages.
    fn logs(&self, container: &str) -> String {
        let out = self.output(&["logs", container]);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
    }
}

/// A root file system for the runtime stage: what distroless/cc gives the
/// binary, as far as it uses it — the shared libraries `ldd` names, and the
/// image's user in /etc/passwd and /etc/group.
fn runtime_base(dir: &Path, binary: &Path, uid: &str, gid: &str) -> PathBuf {
    let root = dir.join("runtime-rootfs");
    let libraries = succeed(Command::new("ldd").arg(binary), "libc-bin");
    for library in libraries
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        let target = root.join(library.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(library, &target).unwrap_or_else(|e| panic!("copy {library}: {e}"));
    }
    let etc = root.join("etc");
    fs::create_dir_all(&etc).unwrap();
    fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nonroot:x:{uid}:{gid}:nonroot:/home/nonroot:/sbin/nologin\n"
        ),
    )
    .unwrap();
    fs::write(etc.join("group"), format!("root:x:0:\nnonroot:x:{gid}:\n")).unwrap();
    let tmp = root.join("tmp");
    fs::create_dir(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    tar(dir, &root, "runtime.tar")
}

/// `dir/name`: a tar of `root`'s contents.
fn tar(dir: &Path, root: &Path, name: &str) -> PathBuf {
    let file = dir.join(name);
    succeed(
        Command::new("tar")
            .arg("-C")
            .arg(root)
            .arg("-cf")
            .arg(&file)
            .arg("."),
        "tar",
    );
    file
}

/// The `Dockerfile`'s final stage on the test's base, with the test binary.
fn build_image(podman: &Podman, work: &Path) {
    let user = dockerfile()
        .into_iter()
        .find(|i| i.stage == "final" && i.keyword == "USER")
        .unwrap()
        .args;
    let (uid, gid) = user.split_once(':').unwrap();
    let binary = daemon::binary();
    let base = runtime_base(work, &binary, uid, gid);
    podman.run(&["import", base.to_str().unwrap(), RUNTIME_BASE]);
    // The binary where the build stage leaves it (the COPY --from=binary path).
    let holder = work.join("binary-rootfs");
    let release = holder.join("src/target/release");
    fs::create_dir_all(&release).unwrap();
    fs::copy(&binary, release.join("mqtt-pulse")).unwrap();
    let binary_tar = tar(work, &holder, "binary.tar");
    podman.run(&["import", binary_tar.to_str().unwrap(), BINARY_IMAGE]);

    let built = podman.output(&[
        "build",
        "--isolation",
        "chroot",
        // Docker's format keeps the HEALTHCHECK (OCI has no such field).
        "--format",
        "docker",
        "--pull=never",
        "--build-arg",
        &format!("RUNTIME_IMAGE={RUNTIME_BASE}"),
        "--build-arg",
        &format!("BINARY_FROM={BINARY_IMAGE}"),
        "--build-arg",
        "REVISION=test",
        "--tag",
        IMAGE,
        "--file",
        repo("Dockerfile").to_str().unwrap(),
        repo("").to_str().unwrap(),
    ]);
    assert!(
        built.status.success(),
        "podman build failed:\n{}{}",
        text(&built.stdout),
        text(&built.stderr)
    );
}

/// What the kernel says of the container's main process: its `/proc/PID/status`
/// fields and whether its root is mounted read-only.
fn process(podman: &Podman, container: &str) -> (BTreeMap<String, String>, bool) {
    let pid = podman.inspect(container)["State"]["Pid"].as_u64().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let fields = status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let read_only_root = mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        fields[4] == "/" && fields[5].split(',').any(|o| o == "ro")
    });
    (fields, read_only_root)
}

/// Waits until the container answers `GET /-/ready` on its published port;
/// then the image's HEALTHCHECK must pass inside it.
fn await_ready_and_healthy(podman: &Podman, container: &str, port: u16) {
    // Some(true) once ready; Some(false) as soon as the container has stopped.
    let ready = poll(DEADLINE, || {
        if fetch(port, "GET", "/-/ready").is_ok_and(|r| r.status == 200) {
            Some(true)
        } else if podman.inspect(container)["State"]["Running"] == false {
            Some(false)
        } else {
            None
        }
    });
    assert_eq!(
        ready,
        Some(true),
        "{container}: /-/ready on published port {port} never answered 200 \
         (Some(false): the container stopped):\n{}",
        podman.logs(container)
    );
    let check = podman.output(&["healthcheck", "run", container]);
    assert!(
        check.status.success(),
        "{container}: the HEALTHCHECK failed inside the container: {}{}\n{}",
        text(&check.stdout),
        text(&check.stderr),
        podman.logs(container)
    );
    assert_eq!(
        podman.inspect(container)["State"]["Health"]["Status"],
        "healthy"
    );
}

fn scrape(port: u16) -> Metrics {
    let answer = fetch(port, "GET", "/metrics").unwrap();
    assert_eq!(answer.status, 200);
    Metrics::parse(answer.body)
}

#[test]
fn the_image_runs_as_the_kubernetes_manifests_and_the_compose_file_run_it() {
    let podman = Podman::new();
    let work = TempDir::new("image");
    build_image(&podman, &work);

    // The image as built: the Dockerfile's user, port, entry point and health check.
    let image = podman.inspect(IMAGE);
    let config = &image["Config"];
    let user = dockerfile()
        .into_iter()
        .find(|i| i.stage == "final" && i.keyword == "USER")
        .unwrap()
        .args;
    let (uid, gid) = user.split_once(':').unwrap();
    assert_eq!(config["User"], user.as_str());
    assert!(config["ExposedPorts"].get("9883/tcp").is_some(), "{config}");
    assert_eq!(config["Entrypoint"][0], "/usr/local/bin/mqtt-pulse");
    let mut healthcheck = vec!["CMD".to_owned()];
    healthcheck.extend(healthcheck_command());
    assert_eq!(
        image["Healthcheck"]["Test"]
            .as_array()
            .unwrap_or_else(|| panic!("no health check in the image: {image}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        healthcheck
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.base.name"],
        RUNTIME_BASE
    );

    // ---- As the StatefulSet runs it -------------------------------------------
    let rendered = Rendered::base();
    let container = rendered.container();
    let pod = &rendered.statefulset()["spec"]["template"]["spec"];
    let (config_mount, config_files) = rendered.config_map("config");
    let (secret_mount, secrets) = rendered.secret("passwords");
    let (secret_volume, _) = rendered.mount("passwords");
    let (mut config_text, config_toml) = rendered.config();

    // A broker per target, on Podman's bridge gateway, that accepts only that
    // target's user with the password from its Secret key. Mosquitto listens on
    // 0.0.0.0 for it: the bridge exists only once a container runs.
    let network: Value =
        serde_json::from_str(&podman.run(&["network", "inspect", "podman"])).unwrap();
    let gateway = network[0]["subnets"][0]["gateway"]
        .as_str()
        .unwrap_or_else(|| panic!("no gateway: {network}"))
        .to_owned();
    let mut brokers = Vec::new();
    for target in config_toml["target"].as_array().unwrap() {
        // The Secret key of the same name: whether the file is really there is
        // for the container to show.
        let file = target["password_file"].as_str().unwrap();
        let key = Path::new(file).file_name().unwrap().to_str().unwrap();
        let password = String::from_utf8(secrets[key].clone()).unwrap();
        let password = password.strip_suffix('\n').unwrap_or(&password);
        let outside = free_port();
        let broker = Broker::builder()
            .password(target["username"].as_str().unwrap(), password)
            .extra_config(&format!("listener {outside} 0.0.0.0\n"))
            .start();
        let url = target["url"].as_str().unwrap();
        config_text = config_text.replace(
            &format!("url = \"{url}\""),
            &format!("url = \"mqtt://{gateway}:{outside}\""),
        );
        brokers.push((target["name"].as_str().unwrap().to_owned(), broker));
    }

    // The ConfigMap and Secret as the kubelet writes them: the Secret's files
    // with the volume's defaultMode, owned by the pod's fsGroup.
    let config_dir = work.join("configmap");
    fs::create_dir(&config_dir).unwrap();
    for (key, content) in &config_files {
        let content = if config_mount.clone() + "/" + key == rendered.arg("--config.file") {
            &config_text
        } else {
            content
        };
        fs::write(config_dir.join(key), content).unwrap();
    }
    let secret_dir = work.join("secret");
    fs::create_dir(&secret_dir).unwrap();
    let mode = secret_volume["secret"]["defaultMode"].as_u64().unwrap() as u32;
    let fs_group: u32 = pod["securityContext"]["fsGroup"].as_u64().unwrap() as u32;
    for (key, bytes) in &secrets {
        let file = secret_dir.join(key);
        fs::write(&file, bytes).unwrap();
        std::os::unix::fs::chown(&file, Some(0), Some(fs_group)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
    }

    // One container per replica, each as its pod: its name, its ordinal.
    let security = &pod["securityContext"];
    let context = &container["securityContext"];
    let container_port = container["ports"][0]["containerPort"].as_u64().unwrap();
    let mut pods = Vec::new();
    for ordinal in 0..rendered.replicas() {
        let name = format!(
            "{}-{ordinal}",
            rendered.statefulset()["metadata"]["name"].as_str().unwrap()
        );
        let published = free_port();
        let mut run: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            name.clone(),
            "--hostname".into(),
            name.clone(),
            "--ulimit".into(),
            "host".into(),
            "--publish".into(),
            format!("127.0.0.1:{published}:{container_port}"),
            "--user".into(),
            format!("{}:{}", security["runAsUser"], security["runAsGroup"]),
            "--group-add".into(),
            fs_group.to_string(),
            "--volume".into(),
            format!("{}:{config_mount}:ro", config_dir.display()),
            "--volume".into(),
            format!("{}:{secret_mount}:ro", secret_dir.display()),
        ];
        assert_eq!(context["readOnlyRootFilesystem"], true);
        // Without Podman's writable /tmp, /run and /var/tmp: a pod has none.
        run.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
        assert_eq!(context["capabilities"]["drop"][0], "ALL");
        run.extend(["--cap-drop".into(), "all".into()]);
        assert_eq!(context["allowPrivilegeEscalation"], false);
        run.extend(["--security-opt".into(), "no-new-privileges".into()]);
        // RuntimeDefault: Podman's default seccomp profile, which it applies unasked.
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
        for (env, entry) in rendered.env() {
            let value = match (
                &entry["value"],
                &entry["valueFrom"]["fieldRef"]["fieldPath"],
            ) {
                (Value::String(value), _) => value.clone(),
                (_, Value::String(path))
                    if path == &format!("metadata.labels['{POD_INDEX_LABEL}']") =>
                {
                    ordinal.to_string()
                }
                _ => panic!("env {env}: {entry} — teach this test what the kubelet gives"),
            };
            run.extend(["--env".into(), format!("{env}={value}")]);
        }
        run.push(IMAGE.into());
        for arg in container["args"].as_array().unwrap() {
            run.push(arg.as_str().unwrap().to_owned());
        }
        let run: Vec<&str> = run.iter().map(String::as_str).collect();
        podman.run(&run);
        pods.push((name, published));
    }
    for (name, published) in &pods {
        await_ready_and_healthy(&podman, name, *published);

        let (status, read_only_root) = process(&podman, name);
        let ids =
            |field: &str| -> Vec<String> { status[field].split(' ').map(str::to_owned).collect() };
        assert_eq!(ids("Uid"), [uid; 4], "{name}: {status:?}");
        assert_eq!(ids("Gid"), [gid; 4], "{name}: {status:?}");
        assert!(
            status["Groups"]
                .split(' ')
                .any(|g| g == fs_group.to_string()),
            "{status:?}"
        );
        assert_eq!(status["CapBnd"], "0000000000000000", "no capabilities");
        assert_eq!(status["CapEff"], "0000000000000000");
        assert_eq!(status["NoNewPrivs"], "1");
        assert_eq!(status["Seccomp"], "2", "a seccomp filter");
        assert!(read_only_root, "{name}: the root file system is read-only");
    }

    // Every target is up in exactly one pod, under a client id with that pod's
    // name: the config came from the ConfigMap's mount, each password from the
    // Secret's mount (the brokers take nothing else), and each pod kept the
    // share its ordinal gave it.
    let owners = poll(DEADLINE, || {
        let pages: Vec<Metrics> = pods.iter().map(|(_, port)| scrape(*port)).collect();
        let mut owners = BTreeMap::new();
        for (target, _) in &brokers {
            let mut up_in = Vec::new();
            for ((pod, _), page) in pods.iter().zip(&pages) {
                match page.up(&format!("mqtt-pulse-{pod}-{target}")) {
                    Some(1.0) => up_in.push(pod.clone()),
                    Some(_) => return None,
                    None => {}
                }
            }
            if up_in.is_empty() {
                return None;
            }
            owners.insert(target.clone(), up_in);
        }
        Some(owners)
    });
    let logs = || {
        pods.iter()
            .map(|(pod, port)| {
                format!(
                    "--- {pod} ---\n{}\n{}",
                    scrape(*port).text,
                    podman.logs(pod)
                )
            })
            .collect::<String>()
    };
    let owners = owners.unwrap_or_else(|| panic!("not every target came up:\n{}", logs()));
    for (target, pods) in &owners {
        assert_eq!(
            pods.len(),
            1,
            "{target} is watched by {pods:?}:\n{}",
            logs()
        );
    }

    // ---- As docker-compose.yml runs it ----------------------------------------
    let resolved = succeed(&mut docker_compose(&["config"]), "docker-compose");
    let compose = yaml(&resolved, "docker-compose config");
    let service = &compose["services"]["mqtt-pulse"];
    let target_port = service["ports"][0]["target"]
        .as_u64()
        .unwrap_or_else(|| panic!("ports: {}", service["ports"]));
    let published = free_port();
    let mut run: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--name".into(),
        "compose".into(),
        "--ulimit".into(),
        "host".into(),
        "--publish".into(),
        format!("127.0.0.1:{published}:{target_port}"),
    ];
    for (source, target) in binds(service) {
        run.extend([
            "--volume".into(),
            format!("{}:{target}:ro", source.display()),
        ]);
    }
    run.push(IMAGE.into());
    for arg in service["command"].as_array().unwrap() {
        run.push(arg.as_str().unwrap().to_owned());
    }
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    podman.run(&run);
    await_ready_and_healthy(&podman, "compose", published);
    let (status, _) = process(&podman, "compose");
    assert_eq!(
        status["Uid"].split(' ').collect::<Vec<_>>(),
        [uid; 4],
        "the image's own user"
    );
    // The compose config's target (its broker is the compose stack's, absent
    // here), with the password file next to it in the mount: loaded.
    let page = poll(DEADLINE, || {
        let page = scrape(published);
        page.up("mqtt-pulse-mosquitto").is_some().then_some(page)
    });
    assert!(
        page.is_some(),
        "no series of the compose config's target:\n{}\n--- log ---\n{}",
        scrape(published).text,
        podman.logs("compose")
    );
    drop(brokers);
}
