//! `mqtt-pulse ping <url>` (issue 18): the real binary against a Mosquitto
//! from the fixture, a port nothing listens on, and SIGINT.
#![cfg(feature = "daemon")]

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use support::daemon::run;
use support::{Broker, text};

fn rtt_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|line| line.contains(" rtt="))
        .collect()
}

#[test]
fn count_3_prints_three_round_trips_and_a_summary_and_exits_0() {
    let broker = Broker::start();
    let client_id = format!("ping-count-{}", std::process::id());
    let output = run(&[
        "ping",
        "--count",
        "3",
        "--client-id",
        &client_id,
        &broker.url(),
    ]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("PING {} as {client_id}, keep-alive 1s", broker.url()),
        "{stdout}"
    );
    assert_eq!(lines[1], format!("{}: up", broker.addr()), "{stdout}");
    let rtts = rtt_lines(&stdout);
    assert_eq!(rtts.len(), 3, "{stdout}");
    for (seq, line) in rtts.iter().enumerate() {
        let prefix = format!("{}: seq={} rtt=", broker.addr(), seq + 1);
        assert!(line.starts_with(&prefix) && line.ends_with(" ms"), "{line}");
    }
    assert!(
        stdout.contains("3 round trips, 0 lost, 0 failed connects, 0 downs, up "),
        "{stdout}"
    );
    assert!(
        stdout.contains(", up at the end\nrtt min/avg/max/stddev = "),
        "{stdout}"
    );
    // The broker saw our client, and its clean goodbye.
    broker.wait_for_log(
        &format!("Received DISCONNECT from {client_id}"),
        Duration::from_secs(5),
    );
}

#[test]
fn a_closed_port_prints_the_reason_and_exits_non_zero() {
    let url = format!("mqtt://127.0.0.1:{}", support::free_port());
    let output = run(&["ping", "--count", "2", &url]);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let refused: Vec<_> = stdout
        .lines()
        .filter(|line| line.ends_with(": cannot connect (connection_refused)"))
        .collect();
    assert_eq!(refused.len(), 2, "{stdout}");
    assert!(
        stdout.contains("0 round trips, 0 lost, 2 failed connects, 0 downs, up 0.0 s of "),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("down at the end"), "{stdout}");
    assert!(
        stderr.ends_with(&format!("mqtt-pulse: ping {url}: not up at the end\n")),
        "{stderr}"
    );
}

/// Guards `report::shown_url`: a password written in the broker URL is used
/// but never printed — not in the `PING` line, the summary's header or the
/// error line — and neither is one in a URL that does not parse.
#[test]
fn a_password_in_the_url_is_never_printed() {
    let url = format!("mqtt://user:s3cret-9f1@127.0.0.1:{}", support::free_port());
    let output = run(&["ping", "--count", "1", &url]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        !stdout.contains("s3cret") && !stderr.contains("s3cret"),
        "{stdout}{stderr}"
    );
    let shown = url.replace("s3cret-9f1", "xxxxx");
    assert!(stdout.starts_with(&format!("PING {shown} as ")), "{stdout}");
    assert!(
        stdout.contains(&format!("--- {shown} ping statistics ---")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("ping {shown}: not up at the end")),
        "{stderr}"
    );

    let output = run(&[
        "ping",
        "--count",
        "1",
        "mqtt://user:s3cret-9f1@127.0.0.1:99999",
    ]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_ne!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        !stdout.contains("s3cret") && !stderr.contains("s3cret"),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("mqtt://xxxxx@127.0.0.1:99999"), "{stderr}");
}

#[test]
fn sigint_prints_the_summary_and_exits_0_while_up() {
    let broker = Broker::start();
    let mut child = support::daemon::command()
        .args(["ping", &broker.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait for a first round trip: up, and measured.
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a round trip within 10 s");
        if line.contains(" seq=1 rtt=") {
            break;
        }
    }
    signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let exited = support::wait_until(Duration::from_secs(5), || {
        child.try_wait().unwrap().is_some()
    });
    assert!(exited, "still running 5 s after SIGINT");
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.iter().collect();
    let rest = rest.join("\n");
    assert!(status.success(), "{status}: {rest}");
    assert!(
        rest.contains(&format!("--- {} ping statistics ---", broker.url())),
        "{rest}"
    );
    assert!(
        rest.contains(" lost, 0 failed connects, 0 downs, up "),
        "{rest}"
    );
    assert!(
        rest.contains("up at the end\nrtt min/avg/max/stddev = "),
        "{rest}"
    );
}

/// The target options as flags: a TLS broker that demands a client
/// certificate and a password, reached with --ca-file, --cert-file,
/// --key-file, --username and --password-file; a wrong password is the
/// broker's refusal, printed with its reason.
#[test]
fn tls_files_and_a_password_file_reach_a_broker_that_demands_them() {
    let dir = support::TempDir::new("ping-tls");
    let pki = support::TestPki::generate(dir.path());
    let broker = Broker::builder()
        .tls(pki.server_files())
        .password("probe", "s3cret-ping")
        .extra_config("require_certificate true\n")
        .start();
    let password_file = dir.join("password");
    std::fs::write(&password_file, "s3cret-ping\n").unwrap();
    let wrong_file = dir.join("wrong");
    std::fs::write(&wrong_file, "not-it\n").unwrap();
    let ping = |password_file: &std::path::Path| {
        run(&[
            "ping",
            "--count",
            "1",
            "--ca-file",
            pki.ca_pem_path.to_str().unwrap(),
            "--cert-file",
            pki.client_cert_path.to_str().unwrap(),
            "--key-file",
            pki.client_key_path.to_str().unwrap(),
            "--username",
            "probe",
            "--password-file",
            password_file.to_str().unwrap(),
            &broker.url(),
        ])
    };

    let output = ping(&password_file);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains(": up\n"), "{stdout}");
    assert_eq!(rtt_lines(&stdout).len(), 1, "{stdout}");

    let refused = ping(&wrong_file);
    let stdout = text(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{stdout}");
    // Mosquitto 2 answers a wrong password on MQTT 3.1.1 with CONNACK 5.
    assert!(
        stdout.contains(": cannot connect (not_authorized)\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("not-it") && !text(&refused.stderr).contains("not-it"));
}
