//! `scripts/demo`: runs the stack on free ports and leaves nothing behind on
//! Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::alerts::{alert_rules, recording_rules};
use crate::support::daemon;
use crate::support::http::fetch;
use crate::support::process::Process;
use crate::support::{TempDir, free_port};
use crate::{DEADLINE, JOB, poll, repo};

/// Pids of the processes whose parent is `pid`, with their command names.
pub(crate) fn children(pid: u32) -> BTreeMap<u32, String> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let (comm, rest) = stat.rsplit_once(')')?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            let name = comm.split_once('(')?.1.to_owned();
            (ppid == pid).then_some((child, name))
        })
        .collect()
}

/// scripts/demo and whatever it started, stopped by pid on drop should the test
/// fail before the script cleans up itself.
pub(crate) struct Demo {
    pub(crate) script: Process,
    pub(crate) started: BTreeMap<u32, String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if !self.script.exited() {
            let _ = signal::kill(
                Pid::from_raw(self.script.child.id() as i32),
                Signal::SIGTERM,
            );
            poll(Duration::from_secs(15), || {
                self.script.exited().then_some(())
            });
        }
        for pid in self.started.keys() {
            let _ = signal::kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}

/// The number after `label` up to the next non-digit in `text`.
pub(crate) fn port_after(text: &str, label: &str) -> u16 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        + label.len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn demo_script_runs_the_stack_on_free_ports_and_ctrl_c_leaves_nothing_behind() {
    let dir = TempDir::new("deploy-demo");
    let mqtt_port = free_port();
    let mut demo = Demo {
        // A runner that starts tests in the background of a non-interactive
        // shell leaves SIGINT ignored, which bash inherits and cannot trap:
        // `env --default-signal` gives the script the Ctrl-C a user's
        // terminal would (env execs it, so the pid is the script's).
        script: Process::spawn(
            Command::new("env")
                .arg("--default-signal=INT")
                .arg(repo("scripts/demo"))
                .arg("--mqtt-port")
                .arg(mqtt_port.to_string())
                .env("MQTT_PULSE_BIN", daemon::binary())
                .env("TMPDIR", dir.path()),
            dir.join("demo.out"),
        ),
        started: BTreeMap::new(),
    };
    let output = poll(DEADLINE, || {
        let out = demo.script.log();
        assert!(!demo.script.exited(), "scripts/demo exited:\n{out}");
        out.contains("Ctrl-C stops everything").then_some(out)
    })
    .unwrap_or_else(|| {
        panic!(
            "scripts/demo did not start within {DEADLINE:?}:\n{}",
            demo.script.log()
        )
    });
    let services = BTreeSet::from([
        "mosquitto".to_owned(),
        "mqtt-pulse".to_owned(),
        "prometheus".to_owned(),
    ]);
    // The banner is written by a `cat` that may not have exited yet when its
    // last line is read: wait for the script's children to be its services.
    let script = demo.script.child.id();
    demo.started = poll(DEADLINE, || {
        let started = children(script);
        (started.values().cloned().collect::<BTreeSet<_>>() == services).then_some(started)
    })
    .unwrap_or_else(|| children(script));
    assert_eq!(
        demo.started.values().cloned().collect::<BTreeSet<_>>(),
        services,
        "{output}"
    );
    let web_port = port_after(&output, "mqtt-pulse   http://127.0.0.1:");
    let prometheus_port = port_after(&output, "Prometheus   http://127.0.0.1:");
    assert_eq!(
        port_after(&output, "MQTT broker  mqtt://127.0.0.1:"),
        mqtt_port
    );
    assert!(!output.contains(":1883"), "{output}");

    // The deploy broker config lets the deploy exporter config in, on our port
    // only; the deploy config's extra label rides along.
    let up = format!(
        r#"mqtt_client_up{{client_id="mqtt-pulse-mosquitto",broker="127.0.0.1:{mqtt_port}",site="demo"}} 1"#
    );
    let page = poll(DEADLINE, || {
        let page = fetch(web_port, "GET", "/metrics").ok()?.body;
        page.lines().any(|l| l == up).then_some(page)
    })
    .unwrap_or_else(|| panic!("no {up:?} from the demo's exporter:\n{}", demo.script.log()));
    assert!(
        !page.contains(":1883\""),
        "the demo watches the system broker:\n{page}"
    );

    // Its Prometheus scrapes that exporter under the deploy job, with the deploy rules.
    let api = |path: &str| -> Value {
        let body = fetch(prometheus_port, "GET", path).unwrap().body;
        serde_json::from_str::<Value>(&body).unwrap()["data"].clone()
    };
    // (Prometheus lists a target once service discovery has synced, after ready.)
    let scrape_url = format!("http://127.0.0.1:{web_port}/metrics");
    let scraped = poll(DEADLINE, || {
        let targets = api("/api/v1/targets");
        let urls: Vec<String> = targets["activeTargets"]
            .as_array()?
            .iter()
            .filter(|t| t["labels"]["job"] == JOB)
            .filter_map(|t| t["scrapeUrl"].as_str().map(str::to_owned))
            .collect();
        (!urls.is_empty()).then_some(urls)
    });
    assert_eq!(scraped, Some(vec![scrape_url]), "{}", demo.script.log());
    let rules = api("/api/v1/rules")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_array().unwrap().len())
        .sum::<usize>();
    assert_eq!(rules, alert_rules().len() + recording_rules().len());

    // Ctrl-C: the script stops all three and removes its temporary directory.
    let temp = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Logs"))
        .and_then(|l| l.trim().split("/{").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no Logs line in:\n{output}"));
    assert!(
        temp.starts_with(dir.path()) && temp.is_dir(),
        "{}",
        temp.display()
    );
    signal::kill(Pid::from_raw(demo.script.child.id() as i32), Signal::SIGINT).unwrap();
    let status = poll(Duration::from_secs(20), || {
        demo.script.child.try_wait().unwrap()
    })
    .unwrap_or_else(|| {
        panic!(
            "scripts/demo still running after SIGINT:\n{}",
            demo.script.log()
        )
    });
    assert_eq!(status.code(), Some(130), "{}", demo.script.log());
    for (pid, name) in &demo.started {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) left running"
        );
    }
    assert!(!temp.exists(), "{} left behind", temp.display());
}
