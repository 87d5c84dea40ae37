//! A real browser for the tests: headless Chromium driven through
//! `chromedriver` (Debian packages `chromium` and `chromium-driver`, which
//! `scripts/test` installs).
//!
//! This module owns [`ChromeDriver`] (the driver process on a free port, killed
//! on drop) and [`Session`] (one browser, deleted on drop), and the few
//! WebDriver commands the tests use: open a URL, run a script and take its
//! value, resize the window, take a screenshot.
//!
//! Written by hand rather than with a client crate (fantoccini, thirtyfour):
//! WebDriver is JSON over HTTP/1.1 and these are five requests, made with the
//! blocking HTTP helper of [`super::http`] and serde_json, both already here.
//! (chromedriver answers `Connection: close` but keeps the connection open, so
//! a response is read up to its `Content-Length`, not to the end.)
//! fantoccini would bring its own hyper client stack, cookie and TLS crates
//! and an async API these blocking, polling tests do not need.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::http::{connect, request};
use super::process::Process;
use super::{free_port, tmp_dir, wait_until};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A `chromedriver` listening on 127.0.0.1 on a free port.
pub struct ChromeDriver {
    port: u16,
    dir: PathBuf,
    _process: Process,
}

impl ChromeDriver {
    /// Starts `chromedriver` and waits until its `/status` says it is ready.
    pub fn start() -> ChromeDriver {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: install the Debian packages chromium and chromium-driver \
                 (scripts/test does)"
            );
        }
        let port = free_port();
        let dir = tmp_dir("chromedriver");
        let mut process = Process::spawn(
            std::process::Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1"),
            dir.join("chromedriver.log"),
        );
        process.await_until("chromedriver", Duration::from_secs(20), || {
            exchange(port, &request("GET", "/status", &[]))
                .ok()
                .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true))
        });
        ChromeDriver {
            port,
            dir,
            _process: process,
        }
    }

    /// A new headless browser, `width`×`height`, with JavaScript on or off.
    pub fn session(&self, javascript: bool, width: u32, height: u32) -> Session<'_> {
        let profile = tmp_dir("chromium-profile");
        let mut options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                // Tests run as root in CI containers, where the sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        if !javascript {
            // Chromium's content setting, as a user turning JavaScript off gets:
            // page scripts do not run; WebDriver's own scripts still do.
            options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
        }
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        });
        let reply = self.call("POST", "/session", Some(&capabilities));
        let id = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {reply}"))
            .to_owned();
        Session {
            driver: self,
            id,
            profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(Value::to_string).unwrap_or_default();
        let length = body.len().to_string();
        let mut bytes = request(
            method,
            path,
            &[
                ("Content-Type", "application/json; charset=utf-8"),
                ("Content-Length", &length),
            ],
        );
        bytes.extend_from_slice(body.as_bytes());
        let (status, body) = exchange(self.port, &bytes)
            .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
        let value: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("chromedriver {method} {path}: not JSON ({e}): {body}"));
        assert_eq!(status, 200, "chromedriver {method} {path}: {value}");
        value["value"].clone()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One browser window, closed on drop.
pub struct Session<'a> {
    driver: &'a ChromeDriver,
    id: String,
    profile: PathBuf,
}

impl Session<'_> {
    /// Navigates to `url` and returns once the page has loaded.
    pub fn goto(&self, url: &str) {
        self.command("POST", "url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn execute(&self, script: &str) -> Value {
        self.command(
            "POST",
            "execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Polls `script` until it returns `true`, for at most `within`; returns
    /// how long it took, or panics with `what` and the script's last value
    /// given by `explain`.
    pub fn wait_for(&self, what: &str, within: Duration, script: &str, explain: &str) -> Duration {
        let start = Instant::now();
        // wait_until pauses 10 ms between polls, so the page's own script gets the CPU.
        assert!(
            wait_until(within, || self.execute(script) == json!(true)),
            "{what}: not within {within:?}; the page says {}",
            self.execute(explain)
        );
        start.elapsed()
    }

    /// Resizes the window (its outer size).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "window/rect",
            Some(&json!({"width": width, "height": height})),
        );
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        let encoded = self.command("GET", "screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("valid base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// The text of the first element matching the CSS `selector`, read by the
    /// driver (works with the page's JavaScript off).
    pub fn text_of(&self, selector: &str) -> String {
        let element = self.find(selector);
        self.command("GET", &format!("element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether the first element matching `selector` is displayed.
    pub fn is_displayed(&self, selector: &str) -> bool {
        let element = self.find(selector);
        self.command("GET", &format!("element/{element}/displayed"), None) == json!(true)
    }

    fn find(&self, selector: &str) -> String {
        let found = self.command(
            "POST",
            "element",
            Some(&json!({"using": "css selector", "value": selector})),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {selector}: {found}"))
            .to_owned()
    }

    fn command(&self, method: &str, command: &str, body: Option<&Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}/{command}", self.id), body)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.id);
        let _ = exchange(self.driver.port, &request("DELETE", &path, &[]));
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Sends `request` to 127.0.0.1:`port` on a new connection; the status and
/// the body, read up to its `Content-Length` (chromedriver always sends one).
fn exchange(port: u16, request: &[u8]) -> std::io::Result<(u16, String)> {
    use std::io::{Error, ErrorKind, Read as _, Write as _};
    let mut stream = connect(port)?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    let invalid = |what: &str| Error::new(ErrorKind::InvalidData, what.to_owned());
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Err(invalid("closed before the whole response"));
        }
        raw.extend_from_slice(&buffer[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(&head))?;
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .ok_or_else(|| invalid(&head))?;
        if raw.len() >= end + 4 + length {
            let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]).into_owned();
            return Ok((status, body));
        }
    }
}
