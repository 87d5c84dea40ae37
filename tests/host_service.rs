//! A real host service embedding mqtt-pulse the README's way:
//! `hosts/axum-service/` is its own package (not in this workspace) with its
//! own axum router, registry, metric, `/metrics`, `/` and 404, and rumqttc with
//! its DEFAULT features over TLS — so rustls with aws-lc-rs, which panicked at
//! connect while mqtt-pulse turned on ring (issue 20). This builds it with
//! cargo (offline, its own target directory under target/), runs it against a
//! real Mosquitto with a TLS listener, and checks what the host sees.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::http::fetch;
use support::metrics::sample;
use support::pki::TestPki;
use support::prometheus::promtool_problems;
use support::{Broker, TempDir, wait_until};

/// The host's process; killed (and reaped) when dropped.
struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Host {
    fn stderr(&mut self) -> String {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut text = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

fn build_host() -> std::path::PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A target directory of its own: the one `cargo test` uses is locked
    // while this test runs.
    let target_dir = manifest_dir.join("target").join("host-service");
    let output = Command::new(env!("CARGO"))
        .current_dir(manifest_dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--offline", "--locked", "--manifest-path"])
        .arg(manifest_dir.join("hosts/axum-service/Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "hosts/axum-service does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    target_dir.join("debug").join("axum-service")
}

#[test]
fn a_host_with_rumqttc_defaults_keeps_its_tls_routes_and_404_and_serves_our_metrics_beside_its_own()
{
    let binary = build_host();
    let dir = TempDir::new("host-service");
    let pki = TestPki::generate(dir.path());
    let broker = Broker::builder().tls(pki.server_files()).start();

    let mut host = Host(
        Command::new(&binary)
            .arg("127.0.0.1")
            .arg(broker.port().to_string())
            .arg(&pki.ca_pem_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the host starts"),
    );
    let mut first_line = String::new();
    BufReader::new(host.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let Some(address) = first_line.trim().strip_prefix("listening on ") else {
        panic!(
            "no address from the host: {first_line:?}\n{}",
            host.stderr()
        );
    };
    let port: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();

    // Its TLS connection comes up: its own gauge and our mqtt_client_up say so.
    let up = r#"mqtt_client_up{client_id="axum-service",broker="127.0.0.1:PORT"}"#
        .replace("PORT", &broker.port().to_string());
    let mut page = String::new();
    let came_up = wait_until(Duration::from_secs(20), || {
        page = fetch(port, "GET", "/metrics")
            .map(|r| r.body)
            .unwrap_or_default();
        sample(&page, "app_mqtt_connected") == Some(1.0) && sample(&page, &up) == Some(1.0)
    });
    assert!(came_up, "not up over TLS:\n{page}\n---\n{}", host.stderr());
    assert!(page.contains("app_pages_served_total"), "{page}");
    assert!(page.contains("mqtt_pulse_build_info"), "{page}");
    assert!(
        !page.contains("process_"),
        "process metrics only when asked for:\n{page}"
    );
    assert!(
        !page.contains("promhttp_"),
        "our route is not mounted:\n{page}"
    );
    if let Some(problems) = promtool_problems(&page) {
        panic!("promtool: {problems}\n---\n{page}");
    }

    // Its own routes and 404, untouched.
    let home = fetch(port, "GET", "/").unwrap();
    assert_eq!((home.status, home.body.as_str()), (200, "axum-service\n"));
    for path in ["/nope", "/-/healthy", "/-/ready"] {
        let missing = fetch(port, "GET", path).unwrap();
        assert_eq!(
            (missing.status, missing.body.as_str()),
            (404, "axum-service: no such page\n"),
            "{path}"
        );
    }
    let page = fetch(port, "GET", "/metrics").unwrap().body;
    assert_eq!(sample(&page, "app_pages_served_total"), Some(1.0), "{page}");

    let stderr = host.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("mqtt:"),
        "the host's MQTT had errors: {stderr}"
    );
}
