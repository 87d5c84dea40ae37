//! [`Prometheus`]: the real `prometheus` server (Debian package `prometheus`)
//! on a free port, for the tests that let it scrape and query what they serve:
//! started with a config of the test's own ([`Prometheus::start`]) or scraping
//! one target every second ([`Prometheus::scraping`]); queried through its
//! HTTP API. Blocking (std::net); async tests call it inside
//! `tokio::task::block_in_place`.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::http::{Response, fetch, percent_encode};
use super::process::{Process, output_with_input};
use super::{TempDir, free_port};

/// How long Prometheus may take to answer `/-/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(40);

/// A `prometheus` serving on a free port, killed (by its pid) on drop.
pub struct Prometheus {
    // Dropped in this order: the process is killed before its files go.
    process: Process,
    port: u16,
    /// The directory [`Prometheus::scraping`] made for its files, removed on drop.
    _dir: Option<TempDir>,
}

impl Prometheus {
    /// `/usr/bin/prometheus` with `config`, its data and its log
    /// (`prometheus.log`) in `dir`; returns once it is ready.
    pub fn start(dir: &Path, config: &Path) -> Prometheus {
        Prometheus::start_with(dir, config, &[])
    }

    /// [`start`](Self::start) with extra command-line arguments, such as
    /// `--enable-feature=native-histograms`.
    pub fn start_with(dir: &Path, config: &Path, args: &[&str]) -> Prometheus {
        let port = free_port();
        let mut process = Process::spawn(
            Command::new("/usr/bin/prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("prometheus-data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args(args),
            dir.join("prometheus.log"),
        );
        process.await_ready("prometheus", port, READY_TIMEOUT);
        Prometheus {
            process,
            port,
            _dir: None,
        }
    }

    /// A Prometheus of its own (files in a temp dir) scraping `target` every
    /// second as job `job`.
    pub fn scraping(job: &str, target: SocketAddr) -> Prometheus {
        Prometheus::scraping_with(job, target, &[])
    }

    /// [`scraping`](Self::scraping) with extra command-line arguments.
    pub fn scraping_with(job: &str, target: SocketAddr, args: &[&str]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let mut prometheus = Prometheus::start_with(&dir, &config, args);
        prometheus._dir = Some(dir);
        prometheus
    }

    /// The server's process id (for its CPU and memory in /proc).
    pub fn pid(&self) -> i32 {
        self.process.child.id() as i32
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `data` of a successful API answer, or the error Prometheus gave.
    pub fn api(&self, path: &str) -> Result<Value, String> {
        let Response { status, body, .. } =
            fetch(self.port, "GET", path).map_err(|e| e.to_string())?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if answer["status"] == "success" {
            Ok(answer["data"].clone())
        } else {
            Err(format!(
                "HTTP {status}: {} {}",
                answer["errorType"], answer["error"]
            ))
        }
    }

    /// The samples of an instant query (a scalar counts as one sample).
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(promql)))?;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            _ => Ok(vec![data["result"].clone()]),
        }
    }

    /// The value of `promql`'s first sample, if any.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let samples = self.query(promql).ok()?;
        samples.first()?["value"][1].as_str()?.parse().ok()
    }

    /// What Prometheus has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// What `promtool check metrics` says of an exposition `page`: `None` when it
/// exits 0 and reports nothing (no lint problem either), else its output.
pub fn promtool_problems(page: &str) -> Option<String> {
    let output = output_with_input(
        Command::new("promtool").args(["check", "metrics"]),
        page.as_bytes(),
        "prometheus",
    );
    let problems = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (!output.status.success() || !problems.trim().is_empty()).then_some(problems)
}
