//! docs/brokers.md shows the matrix as [`matrix`] defines it, which is what
//! the other tests of this binary assert: its two generated tables must be
//! exactly [`matrix::table`] and [`matrix::quirks_table`]. After changing an
//! expectation, rewrite them with
//! `MQTT_PULSE_BLESS=1 cargo test --test brokers docs`.

use std::fs;
use std::path::PathBuf;

use crate::matrix;

fn page() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/brokers.md")
}

/// The text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` lines,
/// and its byte range.
fn block(text: &str, name: &str) -> (String, std::ops::Range<usize>) {
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->");
    let start = text
        .find(&begin)
        .unwrap_or_else(|| panic!("docs/brokers.md has no {begin:?}"))
        + begin.len();
    let stop = start
        + text[start..]
            .find(&end)
            .unwrap_or_else(|| panic!("docs/brokers.md has no {end:?}"));
    (text[start..stop].to_owned(), start..stop)
}

#[test]
fn docs_brokers_md_shows_the_tested_matrix() {
    let path = page();
    let mut text = fs::read_to_string(&path).expect("docs/brokers.md");
    let bless = std::env::var_os("MQTT_PULSE_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, want) in [
        ("matrix", matrix::table()),
        ("quirks", matrix::quirks_table()),
    ] {
        let (have, range) = block(&text, name);
        if have != want {
            if bless {
                text.replace_range(range, &want);
            } else {
                stale.push(format!(
                    "--- {name}: the page has ---\n{have}--- the tests assert ---\n{want}"
                ));
            }
        }
    }
    if bless {
        fs::write(&path, text).expect("write docs/brokers.md");
    }
    assert!(
        stale.is_empty(),
        "docs/brokers.md is not the tested matrix; rewrite its tables with \
         `MQTT_PULSE_BLESS=1 cargo test --test brokers docs`:\n{}",
        stale.join("\n")
    );
}
