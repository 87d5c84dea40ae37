//! Records the source revision and the compiler version for `--version` and
//! `mqtt_pulse_build_info`. Either falls back to "unknown" (a source tarball,
//! a Docker build without `.git`); the build never fails for want of them.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MQTT_PULSE_REVISION");
    // What moves HEAD: HEAD itself (a checkout), the branch refs (a commit)
    // and packed-refs. Asked of git rather than spelled `.git/...`: in a git
    // worktree `.git` is a file and HEAD lives elsewhere, and without a
    // watched HEAD the revision would stay at the first build's. Only watch
    // files that exist: a missing one would rerun this every build.
    for name in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(watched) = output("git", &["rev-parse", "--git-path", name])
            && Path::new(&watched).exists()
        {
            println!("cargo:rerun-if-changed={watched}");
        }
    }
    let revision = std::env::var("MQTT_PULSE_REVISION")
        .ok()
        .filter(|revision| !revision.trim().is_empty())
        .or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // "rustc 1.95.0 (59807616e 2026-04-14)" -> "1.95.0"
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MQTT_PULSE_REVISION={revision}");
    println!("cargo:rustc-env=MQTT_PULSE_RUSTC_VERSION={rustc_version}");
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
