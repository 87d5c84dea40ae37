//! `mqtt-pulse watch <daemon url>` (issue 18): the real binary following a
//! real daemon's `/events`, its targets on a Mosquitto from the fixture.
#![cfg(feature = "daemon")]

mod support;

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use support::daemon::{Daemon, Interactive};
use support::http::ready;
use support::{Broker, TempDir, TestPki};

/// Generous for events from a broker and a daemon on a loaded machine.
const WITHIN: Duration = Duration::from_secs(15);

/// A config with one target per name on `broker`, keep-alive 1 s; client
/// ids are `mqtt-pulse-<name>`.
fn config(dir: &Path, broker: &Broker, names: &[&str]) -> String {
    let mut text = String::from("[defaults]\nkeep_alive = \"1s\"\n");
    for name in names {
        text.push_str(&format!(
            "[[target]]\nname = \"{name}\"\nurl = \"{}\"\n",
            broker.url()
        ));
    }
    let path = dir.join("mqtt-pulse.toml");
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn daemon_url(daemon: &Daemon) -> String {
    format!("http://127.0.0.1:{}", daemon.port())
}

#[test]
fn watch_shows_a_target_up_and_its_round_trips_then_down_with_its_reason_when_the_broker_dies() {
    let dir = TempDir::new("watch-down");
    let broker = Broker::start();
    let name = format!("watch-down-{}", std::process::id());
    let client_id = format!("mqtt-pulse-{name}");
    let daemon = Daemon::start(
        &dir,
        &["--config.file", &config(&dir, &broker, &[&name])],
        ready,
    );
    let mut watch = Interactive::spawn(&dir, "watch", &["watch", &daemon_url(&daemon)]);

    let first = watch.wait_for_line("naming the daemon", WITHIN, |_| true);
    assert_eq!(first, format!("WATCH {}", daemon_url(&daemon)));
    watch.wait_for_line("saying the target is up", WITHIN, |line| {
        line == format!("{client_id}: up")
    });
    let rtt = watch.wait_for_line("with a round trip", WITHIN, |line| line.contains(" rtt="));
    assert!(
        rtt.starts_with(&format!("{client_id}: seq=1 rtt=")) && rtt.ends_with(" ms"),
        "ping's line, prefixed with the client id: {rtt}"
    );

    broker.kill();
    let down = watch.wait_for_line("saying the target is down", WITHIN, |line| {
        line.starts_with(&format!("{client_id}: down"))
    });
    let reason = down
        .strip_prefix(&format!("{client_id}: down ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("a Down line without its reason: {down}"));
    assert!(
        [
            "closed_by_broker",
            "closed_after_connect",
            "io",
            "ping_timeout"
        ]
        .contains(&reason),
        "a lost connection's reason: {down}"
    );

    let (status, lines) = watch.interrupt(Duration::from_secs(5));
    assert!(
        status.success(),
        "connected, so Ctrl-C is a success: {status}\n{lines:?}"
    );
    let text = lines.join("\n");
    assert!(
        text.contains(&format!(
            "--- {} watch statistics ---\n1 clients, connected ",
            daemon_url(&daemon)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n{client_id}: "))
            && text.contains(" round trips, 1 downs, down at the end, rtt min/avg/max/stddev = "),
        "{text}"
    );
}

#[test]
fn client_id_selects_one_client_and_kind_one_kind() {
    let dir = TempDir::new("watch-select");
    let broker = Broker::start();
    let pid = std::process::id();
    let (chosen, other) = (format!("watch-chosen-{pid}"), format!("watch-other-{pid}"));
    let daemon = Daemon::start(
        &dir,
        &["--config.file", &config(&dir, &broker, &[&chosen, &other])],
        ready,
    );
    let chosen_id = format!("mqtt-pulse-{chosen}");
    let mut watch = Interactive::spawn(
        &dir,
        "watch",
        &[
            "watch",
            "--client-id",
            &chosen_id,
            "--kind",
            "ping_response",
            &daemon_url(&daemon),
        ],
    );
    // Three round trips of the chosen client: the other one had as many
    // chances (same keep-alive) to show, had the selection not held.
    for seq in 1..=3 {
        watch.wait_for_line("with a round trip of the chosen client", WITHIN, |line| {
            line.starts_with(&format!("{chosen_id}: seq={seq} rtt="))
        });
    }
    let (status, lines) = watch.interrupt(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert_eq!(
        lines[0],
        format!(
            "WATCH {}, client id {chosen_id}, kinds ping_response",
            daemon_url(&daemon)
        )
    );
    let events: Vec<&String> = lines
        .iter()
        .skip(1)
        .take_while(|line| !line.starts_with("--- "))
        .collect();
    assert!(
        events
            .iter()
            .all(|line| line.starts_with(&format!("{chosen_id}: seq="))),
        "only the chosen client's round trips, no status lines: {events:?}"
    );
    assert!(!lines.join("\n").contains(&other), "{lines:?}");
}

/// The daemon serves https with basic auth: the right password reaches the
/// stream (the CA given with --ca-file); a wrong one is refused at once with
/// a line that says what to check, exit status 1, and the password nowhere.
#[test]
fn basic_auth_over_https_lets_the_right_password_in_and_refuses_a_wrong_one_clearly() {
    let dir = TempDir::new("watch-auth");
    let pki = TestPki::generate(dir.path());
    let broker = Broker::start();
    let name = format!("watch-auth-{}", std::process::id());
    let (password, wrong) = ("watch-pass-51c2", "not-the-watch-pass-7d0e");
    let web = dir.join("web.yml");
    fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  watcher: {}\n",
            pki.server_cert_path.display(),
            pki.server_key_path.display(),
            bcrypt::hash(password, 4).unwrap()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(
        &dir,
        &[
            "--config.file",
            &config(&dir, &broker, &[&name]),
            "--web.config.file",
            web.to_str().unwrap(),
        ],
        |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let url = format!("https://127.0.0.1:{}", daemon.port());
    let (right_file, wrong_file) = (dir.join("right"), dir.join("wrong"));
    fs::write(&right_file, format!("{password}\n")).unwrap();
    fs::write(&wrong_file, format!("{wrong}\n")).unwrap();
    let watch = |password_file: &Path| {
        Interactive::spawn(
            &dir,
            password_file.file_name().unwrap().to_str().unwrap(),
            &[
                "watch",
                "--username",
                "watcher",
                "--password-file",
                password_file.to_str().unwrap(),
                "--ca-file",
                pki.ca_pem_path.to_str().unwrap(),
                &url,
            ],
        )
    };

    let mut allowed = watch(&right_file);
    allowed.wait_for_line("saying the target is up", WITHIN, |line| {
        line == format!("mqtt-pulse-{name}: up")
    });
    let (status, _) = allowed.interrupt(Duration::from_secs(5));
    assert!(status.success(), "{status}");

    let refused = watch(&wrong_file);
    let stderr_path = dir.join("wrong.stderr");
    let (status, lines) = refused.wait(Duration::from_secs(10));
    let stderr = fs::read_to_string(stderr_path).unwrap();
    assert_eq!(status.code(), Some(1), "{lines:?}\n{stderr}");
    assert_eq!(
        stderr,
        format!(
            "mqtt-pulse: watch {url}: the daemon refused the credentials (401 Unauthorized): \
             check --username and --password-file against its basic_auth_users\n"
        )
    );
    assert!(
        !lines.iter().any(|line| line.contains(" reconnecting ")),
        "a refusal is not retried: {lines:?}"
    );
    for output in [&lines.join("\n"), &stderr, &daemon.stderr()] {
        assert!(
            !output.contains(wrong) && !output.contains(password),
            "{output}"
        );
    }
}

#[test]
fn a_daemon_never_reached_is_retried_with_backoff_and_ends_with_status_1() {
    let dir = TempDir::new("watch-unreachable");
    let url = format!("http://127.0.0.1:{}", support::free_port());
    let mut watch = Interactive::spawn(&dir, "watch", &["watch", &url]);
    watch.wait_for_line("retrying after 1s", WITHIN, |line| {
        line.starts_with(&format!("{url}: unreachable (")) && line.ends_with("; reconnecting in 1s")
    });
    watch.wait_for_line("then after 2s", WITHIN, |line| {
        line.ends_with("; reconnecting in 2s")
    });
    let stderr_path = dir.join("watch.stderr");
    let (status, lines) = watch.interrupt(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert!(
        lines.join("\n").contains("0 clients, connected 0.0 s of "),
        "{lines:?}"
    );
    let stderr = fs::read_to_string(stderr_path).unwrap();
    assert!(
        stderr.starts_with(&format!("mqtt-pulse: watch {url}: never connected (last: ")),
        "{stderr}"
    );
}

/// The daemon restarts: the stream it ended is reported lost, the watch
/// reconnects (with the backoff while nothing listens) and carries on with
/// the new daemon's present state.
#[test]
fn a_lost_stream_is_followed_again_when_the_daemon_comes_back() {
    let dir = TempDir::new("watch-reconnect");
    let broker = Broker::start();
    let name = format!("watch-again-{}", std::process::id());
    let client_id = format!("mqtt-pulse-{name}");
    let config = config(&dir, &broker, &[&name]);
    // Both daemons also listen here (the flag is repeatable), where the
    // watch follows them.
    let listen = format!("127.0.0.1:{}", support::free_port());
    let start = || {
        Daemon::start(
            &dir,
            &["--config.file", &config, "--web.listen-address", &listen],
            ready,
        )
    };
    let url = format!("http://{listen}");
    let mut first = start();
    let mut watch = Interactive::spawn(&dir, "watch", &["watch", &url]);
    watch.wait_for_line("saying the target is up", WITHIN, |line| {
        line == format!("{client_id}: up")
    });

    assert!(first.terminate(Duration::from_secs(10)).success());
    watch.wait_for_line("saying the stream was lost", WITHIN, |line| {
        line == format!("{url}: stream lost (the daemon ended it); reconnecting in 1s")
    });
    watch.wait_for_line("backing off while nothing listens", WITHIN, |line| {
        line.starts_with(&format!("{url}: unreachable (")) && line.ends_with("; reconnecting in 2s")
    });
    let _second = start();
    watch.wait_for_line("with the new daemon's present state", WITHIN, |line| {
        line == format!("{client_id}: up")
    });

    let (status, lines) = watch.interrupt(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    let text = lines.join("\n");
    assert!(text.contains(", 2 connects, 0 events dropped"), "{text}");
}
