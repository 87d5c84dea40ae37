//! Files that could block or explode (issue 14, items 1 and 3): a FIFO, a
//! device, a 1 GB file or a password longer than MQTT carries is refused with
//! one clear line — at start, `--config.check` and reload — and never waited
//! on; a reload that fails on a file stops nothing; SIGTERM ends the daemon
//! in time whatever the files are. Real Mosquitto, the real binary.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;

use mqtt_pulse::config::Config;

use crate::support::daemon::{Daemon, assert_fails_with_one_line, run};
use crate::support::http::ready;
use crate::support::{Broker, TempDir};
use crate::{SHUTDOWN_DEADLINE, target, write_config};

const PASSWORD: &str = "fifo-test-password";

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A writer that puts the password into the FIFO once, for the first reader
/// that opens it — what an old daemon, which read a password file twice per
/// reload, got on its first read and never on its second. Released by
/// [`release`] if nobody reads.
fn feed_once(fifo: &Path) -> JoinHandle<()> {
    let fifo = fifo.to_owned();
    std::thread::spawn(move || {
        // Blocks until a reader opens the FIFO.
        if let Ok(mut writer) = OpenOptions::new().write(true).open(&fifo) {
            let _ = writer.write_all(format!("{PASSWORD}\n").as_bytes());
        }
    })
}

/// Opens the FIFO's read end without blocking, so a writer waiting for a
/// reader goes on, and waits for the writer.
fn release(fifo: &Path, writer: JoinHandle<()>) {
    let _reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .unwrap();
    writer.join().unwrap();
}

/// The config error of `config` as `Config::load` words it.
fn load_error(config: &Path) -> String {
    Config::load(config).expect_err("a bad file").to_string()
}

#[test]
fn a_reload_that_meets_a_fifo_stops_nothing_and_sigterm_still_ends_the_daemon() {
    let broker = Broker::builder().password("probe", PASSWORD).start();
    let dir = TempDir::new("daemon-files-reload");
    fs::write(dir.join("password"), format!("{PASSWORD}\n")).unwrap();
    let config = dir.join("mqtt-pulse.toml");
    let login = |file: &str, extra: &str| {
        format!("username = \"probe\"\npassword_file = \"{file}\"\n{extra}")
    };
    let a = target("a", &broker, &login("password", ""));
    let b = |file: &str, keep_alive: &str| {
        target(
            "b",
            &broker,
            &login(file, &format!("keep_alive = \"{keep_alive}\"")),
        )
    };
    write_config(&config, &[a.clone(), b("password", "5s")]);
    let config_arg = config.to_str().unwrap();
    let mut daemon = Daemon::start(&dir, &["--config.file", config_arg], ready);
    daemon.wait_for_metrics("a and b up", |m| {
        m.up("mqtt-pulse-a") == Some(1.0) && m.up("mqtt-pulse-b") == Some(1.0)
    });
    let mark = broker.log_mark();

    // b changes, and its new password file is a FIFO fed once: a reload that
    // read it twice (validate, stop b, read again to start) stopped b and then
    // hung on the second read. c is new.
    let fifo = dir.join("password.fifo");
    mkfifo(&fifo);
    let writer = feed_once(&fifo);
    write_config(
        &config,
        &[
            a,
            b("password.fifo", "2s"),
            target("c", &broker, &login("password", "")),
        ],
    );
    let reload = crate::support::http::fetch(daemon.port(), "POST", "/-/reload");

    // Nothing stopped: b keeps its connection and its series, c never started.
    let metrics = daemon.metrics();
    for id in ["mqtt-pulse-a", "mqtt-pulse-b"] {
        assert_eq!(metrics.up(id), Some(1.0), "{id}:\n{}", metrics.text);
    }
    let response = reload.expect("the reload answers (not stuck on the FIFO)");
    let expected = load_error(&config);
    assert!(
        expected.ends_with(&format!(
            "cannot read `password_file` in [[target]] \"b\": {}: is a FIFO, not a regular file",
            fifo.display()
        )),
        "{expected}"
    );
    assert!(
        expected.starts_with(&format!("{config_arg}:")),
        "{expected}"
    );
    assert_eq!(response.status, 500, "{}", response.body);
    assert_eq!(response.body, format!("config reload failed: {expected}\n"));
    assert_eq!(metrics.reload_successful(), Some(0.0));
    for id in ["mqtt-pulse-a", "mqtt-pulse-b"] {
        assert_eq!(metrics.up(id), Some(1.0), "{id}:\n{}", metrics.text);
        assert_eq!(metrics.status_changes(id, "down"), Some(0.0), "{id}");
        assert_eq!(metrics.status_changes(id, "up"), Some(1.0), "{id}");
    }
    assert!(!metrics.has_client("mqtt-pulse-c"));
    let log = broker.log_since(mark);
    assert!(!log.contains("DISCONNECT from mqtt-pulse-b"), "{log}");
    assert!(!log.contains("New client connected"), "{log}");

    // The same one line from --config.check, promptly (not waiting on the FIFO).
    let check = run(&["--config.file", config_arg, "--config.check"]);
    assert_fails_with_one_line(&check, &format!("mqtt-pulse: {expected}"), "--config.check");
    // And at start.
    let start = run(&[
        "--config.file",
        config_arg,
        "--web.listen-address",
        "127.0.0.1:0",
    ]);
    assert_fails_with_one_line(&start, &format!("mqtt-pulse: {expected}"), "start");
    release(&fifo, writer);

    // A password file turned into a FIFO under a running target: the next
    // connect attempt says so and keeps the password read before.
    fs::remove_file(dir.join("password")).unwrap();
    mkfifo(&dir.join("password"));
    broker.restart();
    daemon.wait_for_metrics("a and b up again after the broker restart", |m| {
        ["mqtt-pulse-a", "mqtt-pulse-b"]
            .iter()
            .all(|id| m.up(id) == Some(1.0) && m.status_changes(id, "up") == Some(2.0))
    });
    let logs = daemon.stderr();
    assert!(
        logs.contains("cannot read the files to connect with")
            && logs.contains("is a FIFO, not a regular file"),
        "{logs}"
    );
    assert!(!logs.contains(PASSWORD), "{logs}");

    // SIGTERM with a FIFO configured: exit 0 within the grace period.
    let status = daemon.terminate(SHUTDOWN_DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
}

/// `--config.check` of one target whose password file is `password_file`.
fn check_with_password_file(dir: &Path, password_file: &Path) -> (PathBuf, std::process::Output) {
    let broker_url = "mqtt://127.0.0.1:1";
    let config = dir.join("mqtt-pulse.toml");
    fs::write(
        &config,
        format!(
            "[[target]]\nname = \"t\"\nurl = \"{broker_url}\"\nusername = \"probe\"\npassword_file = {:?}\n",
            password_file.to_str().unwrap()
        ),
    )
    .unwrap();
    let output = run(&["--config.file", config.to_str().unwrap(), "--config.check"]);
    (config, output)
}

#[test]
fn huge_files_devices_and_passwords_longer_than_mqtt_carries_are_refused() {
    let dir = TempDir::new("daemon-files-sizes");

    // A 1 GB password file (sparse): refused by its size, never read.
    let huge = dir.join("huge");
    fs::File::create(&huge).unwrap().set_len(1 << 30).unwrap();
    let (config, output) = check_with_password_file(&dir, &huge);
    let expected = format!(
        "mqtt-pulse: {}:5:17: cannot read `password_file` in [[target]] \"t\": {}: is 1073741824 bytes, more than the 65537 bytes a password file may have",
        config.display(),
        huge.display()
    );
    assert_fails_with_one_line(&output, &expected, "a 1 GB password file");

    // /dev/zero: a device, not a regular file.
    let (config, output) = check_with_password_file(&dir, Path::new("/dev/zero"));
    let expected = format!(
        "mqtt-pulse: {}:5:17: cannot read `password_file` in [[target]] \"t\": /dev/zero: is a character device, not a regular file",
        config.display()
    );
    assert_fails_with_one_line(&output, &expected, "/dev/zero");

    // 65,535 bytes of password is what MQTT's 16-bit length carries ...
    let longest = dir.join("longest");
    fs::write(&longest, format!("{}\n", "p".repeat(65_535))).unwrap();
    let (_, output) = check_with_password_file(&dir, &longest);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    // ... one more is refused with the place of its key, naming the file and
    // not the password: with a line ending, and in a file of 65,536 or
    // 65,537 bytes without one (within the file size cap, so only reading
    // the password finds it).
    let too_long = dir.join("too-long");
    for (contents, what) in [
        (
            format!("{}\n", "p".repeat(65_536)),
            "65,536 bytes and a newline",
        ),
        ("p".repeat(65_536), "a 65,536-byte file"),
        ("p".repeat(65_537), "a 65,537-byte file"),
    ] {
        fs::write(&too_long, &contents).unwrap();
        let (config, output) = check_with_password_file(&dir, &too_long);
        let password_bytes = contents.trim_end().len();
        let expected = format!(
            "mqtt-pulse: {}:5:17: cannot read `password_file` in [[target]] \"t\": {}: the password is {password_bytes} bytes long; MQTT carries at most 65535",
            config.display(),
            too_long.display()
        );
        assert_fails_with_one_line(&output, &expected, what);
    }
    // The 65,541-byte password: refused by the file's size, with its place.
    fs::write(&too_long, "p".repeat(65_541)).unwrap();
    let (_, output) = check_with_password_file(&dir, &too_long);
    let stderr = crate::support::text(&output.stderr);
    assert!(
        stderr.contains(":5:17: cannot read `password_file`") && stderr.contains("is 65541 bytes"),
        "{stderr}"
    );

    // The config file itself as a FIFO: refused, not waited on.
    let fifo = dir.join("config.fifo");
    mkfifo(&fifo);
    let output = run(&["--config.file", fifo.to_str().unwrap(), "--config.check"]);
    let expected = format!(
        "mqtt-pulse: {}: cannot read the config file: is a FIFO, not a regular file",
        fifo.display()
    );
    assert_fails_with_one_line(&output, &expected, "a FIFO config file");
}

#[test]
fn a_reload_reports_a_password_longer_than_mqtt_carries_with_the_place_of_its_key() {
    let dir = TempDir::new("daemon-files-reload-long-password");
    let config = dir.join("mqtt-pulse.toml");
    // Nothing listens on port 1: the target never connects, which does not
    // matter to a reload.
    let target =
        |login: &str| format!("[[target]]\nname = \"t\"\nurl = \"mqtt://127.0.0.1:1\"\n{login}");
    fs::write(&config, target("")).unwrap();
    let config_arg = config.to_str().unwrap();
    let daemon = Daemon::start(&dir, &["--config.file", config_arg], ready);

    // 65,537 bytes: within the file size cap, one password byte over (or two).
    let password = dir.join("password");
    fs::write(&password, "p".repeat(65_537)).unwrap();
    fs::write(
        &config,
        target("username = \"probe\"\npassword_file = \"password\"\n"),
    )
    .unwrap();
    let response = crate::support::http::fetch(daemon.port(), "POST", "/-/reload").unwrap();
    assert_eq!(response.status, 500, "{}", response.body);
    assert_eq!(
        response.body,
        format!(
            "config reload failed: {config_arg}:5:17: cannot read `password_file` in [[target]] \"t\": {}: the password is 65537 bytes long; MQTT carries at most 65535\n",
            password.display()
        )
    );
    assert!(!response.body.contains("ppp"), "{}", response.body);
    assert_eq!(daemon.metrics().reload_successful(), Some(0.0));
}
