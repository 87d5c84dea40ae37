//! What an embedding service compiles: with `default-features = false` the
//! library is the hub, the driver, the Prometheus exporter and the router —
//! none of the daemon's crates — and `examples/embed.rs` builds that way.
//!
//! Both tests run cargo itself, offline, on this package: the figures are the
//! ones the README quotes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The crates (name and version) of the library's normal dependency graph
/// without default features, the library itself included.
fn lean_crates() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--no-default-features",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
        .map(|line| line.trim_end_matches(" (*)").to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

#[test]
fn an_embedder_without_default_features_compiles_under_120_crates_and_none_of_the_daemons() {
    let crates = lean_crates();
    let names: BTreeSet<&str> = crates
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for daemon_only in [
        "clap",
        "toml",
        "tracing-subscriber",
        "bcrypt",
        "axum-server",
        "serde-saphyr",
    ] {
        assert!(
            !names.contains(daemon_only),
            "{daemon_only} is in the lean build: {names:?}"
        );
    }
    assert!(
        crates.len() < 120,
        "{} crates in the lean build: {names:?}",
        crates.len()
    );
}

#[test]
fn the_embed_example_builds_without_default_features() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A target directory of its own: the one `cargo test` uses is locked
    // while this test runs.
    let target_dir = manifest_dir.join("target").join("lean-build");
    let output = Command::new(env!("CARGO"))
        .current_dir(manifest_dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--offline", "--locked", "--no-default-features"])
        .args(["--example", "embed"])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "the embed example does not build without default features:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn an_embedder_without_default_features_gets_no_rustls_crypto_provider_from_us() {
    // With two providers compiled in, rustls cannot pick the process default
    // from its features and a host's `ClientConfig::builder()` panics: the
    // host's TLS must stay the host's.
    let output = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "--locked", "-e", "features"])
        // The rustls our library links (0.23); rumqttd, a dev-dependency of
        // the broker matrix, brings a 0.22 of its own, which makes a bare
        // `-i rustls` ambiguous.
        .args(["--no-default-features", "-i", "rustls@0.23"])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    for provider in ["ring", "aws_lc_rs", "aws-lc-rs"] {
        assert!(
            !tree.contains(&format!("rustls feature \"{provider}\"")),
            "the lean build turns on rustls's {provider} provider:\n{tree}"
        );
    }
}
