//! `diff`: what a reload sees as unchanged, changed, added and removed.

use std::path::Path;

use mqtt_pulse::config::{Config, diff, diff_paths};

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("mqtt-pulse.toml")).unwrap()
}

const BASE: &str = r#"
[defaults]
labels = { env = "prod" }

[[target]]
name = "a"
url = "mqtt://a.example"
username = "probe"
password = "one"

[[target]]
name = "b"
url = "mqtt://b.example"

[[target]]
name = "c"
url = "mqtt://c.example"
"#;

fn names(targets: &[&mqtt_pulse::config::TargetConfig]) -> Vec<String> {
    targets.iter().map(|t| t.name().to_owned()).collect()
}

#[test]
fn the_same_file_changes_nothing() {
    let (old, new) = (parse(BASE), parse(BASE));
    let changes = diff(&old, &new);
    assert_eq!(names(&changes.unchanged), ["a", "b", "c"]);
    assert!(changes.added.is_empty() && changes.removed.is_empty());
    assert!(changes.changed.is_empty());
}

#[test]
fn moving_a_target_to_another_line_is_not_a_change() {
    let moved = BASE.replace("[defaults]", "# a comment\n\n[defaults]");
    let (old, new) = (parse(BASE), parse(&moved));
    assert_ne!(old.targets()[0].location(), new.targets()[0].location());
    assert_eq!(names(&diff(&old, &new).unchanged), ["a", "b", "c"]);
}

#[test]
fn a_new_password_a_new_default_and_a_rename_are_seen() {
    let edited = BASE
        .replace("password = \"one\"", "password = \"two\"")
        .replace("env = \"prod\"", "env = \"staging\"")
        .replace("name = \"c\"", "name = \"d\"");
    let (old, new) = (parse(BASE), parse(&edited));
    let changes = diff(&old, &new);
    // `b` inherits the changed default label.
    assert_eq!(names(&changes.changed), ["a", "b"]);
    assert_eq!(names(&changes.added), ["d"]);
    assert_eq!(names(&changes.removed), ["c"]);
    assert!(changes.unchanged.is_empty());
}

#[test]
fn writing_a_default_out_explicitly_is_not_a_change() {
    let explicit = BASE.replace(
        "name = \"b\"\n",
        "name = \"b\"\nkeep_alive = \"5s\"\nclient_id = \"mqtt-pulse-b\"\n",
    );
    let (old, new) = (parse(BASE), parse(&explicit));
    assert_eq!(names(&diff(&old, &new).unchanged), ["a", "b", "c"]);
}

fn path_names(paths: &[&mqtt_pulse::config::PathConfig]) -> Vec<String> {
    paths.iter().map(|p| p.name().to_owned()).collect()
}

#[test]
fn paths_are_matched_by_name_and_restart_with_a_changed_target() {
    let with_paths = format!(
        "{BASE}\n[[path]]\nfrom = \"a\"\nto = \"b\"\n\n[[path]]\nfrom = \"b\"\nto = \"c\"\n\n\
         [[path]]\nfrom = \"c\"\nto = \"b\"\nqos = 0\n"
    );
    let old = parse(&with_paths);
    assert_eq!(
        path_names(&diff_paths(&old, &parse(&with_paths)).unchanged),
        ["a->b", "b->c", "c->b"]
    );

    // `a` changes (its password): the path through it restarts with it; a
    // path's own setting changes; one path goes, one comes.
    let edited = with_paths
        .replace("password = \"one\"", "password = \"two\"")
        .replace("qos = 0", "qos = 2")
        .replace("from = \"b\"\nto = \"c\"", "from = \"c\"\nto = \"a\"");
    let new = parse(&edited);
    let changes = diff_paths(&old, &new);
    assert_eq!(path_names(&changes.changed), ["a->b", "c->b"]);
    assert_eq!(path_names(&changes.added), ["c->a"]);
    assert_eq!(path_names(&changes.removed), ["b->c"]);
    assert!(changes.unchanged.is_empty());
}
