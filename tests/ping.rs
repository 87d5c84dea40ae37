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
