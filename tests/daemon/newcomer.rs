//! What a newcomer meets in the first minute (issue 18): the daemon started
//! with no config where no broker listens at 127.0.0.1:1883.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::support::daemon::{binary, settings_env};
use crate::support::{TempDir, wait_until};

/// Runs in a network namespace of its own (`unshare --net`, loopback up), so
/// its 127.0.0.1:1883 is empty whatever this machine runs there — the test
/// never touches the machine's broker.
#[test]
fn without_a_config_and_no_broker_at_1883_the_daemon_says_what_to_do_in_one_line() {
    let dir = TempDir::new("daemon-newcomer");
    let stderr_path = dir.join("stderr");
    let mut command = Command::new("unshare");
    command
        .args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(binary())
        .args(["--web.listen-address", "127.0.0.1:9883"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path).unwrap());
    for name in settings_env() {
        command.env_remove(name);
    }
    let mut child = command
        .spawn()
        .expect("unshare (util-linux) runs the daemon in its own network namespace");
    let stderr = || fs::read_to_string(&stderr_path).unwrap_or_default();
    let hinted = wait_until(Duration::from_secs(10), || {
        stderr().contains("no --config.file given")
    });
    // `unshare` and `sh` exec, so the child's pid is the daemon's.
    signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let stderr = stderr();
    assert!(hinted, "no hint within 10 s:\n{stderr}");
    assert!(status.success(), "{status}:\n{stderr}");
    let hints: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("no --config.file given"))
        .collect();
    assert_eq!(hints.len(), 1, "one line:\n{stderr}");
    let hint = hints[0];
    assert!(hint.contains(" level=warn "), "{hint}");
    assert!(
        hint.contains(
            " msg=\"no --config.file given and no MQTT broker answers at mqtt://127.0.0.1:1883: \
             start one there, pass --config.file FILE (see mqtt-pulse.example.toml), \
             or try a broker with `mqtt-pulse ping URL`\""
        ),
        "{hint}"
    );
    assert!(hint.ends_with(" reason=connection_refused"), "{hint}");
}
