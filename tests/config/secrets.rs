//! Secrets: no error, warning or `Debug` output shows a password.

use std::path::Path;

use mqtt_pulse::config::{Config, diff};

use crate::{SECRET, SECRET_PART, testdata};

/// Configs with the secret on or next to the line in error.
fn broken_configs() -> Vec<String> {
    let target = "[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\nusername = \"u\"\n";
    [
        format!("{target}password = {SECRET}\n"),
        format!("{target}password = \"{SECRET}\n"),
        format!("{target}password = '{SECRET}\n"),
        format!("{target}password = \"\"\"{SECRET}\n"),
        format!("{target}password = \"{SECRET}\" trailing\n"),
        format!("{target}password = \"{SECRET}\\q\"\n"),
        format!("{target}password = [\"{SECRET}\"]\n"),
        format!("{target}password = {{ value = \"{SECRET}\" }}\n"),
        format!("{target}password = \"{SECRET}\"\npassword = \"{SECRET}\"\n"),
        format!("{target}password = \"{SECRET}\"\npassword_file = \"missing\"\n"),
        format!("{target}password = \"{SECRET}\"\nkeep_alive = \"forever\"\n"),
        format!("{target}password = \"{SECRET}\"\npasword = \"{SECRET}\"\n"),
        format!("{target}password = \"{SECRET}\" = 1\n"),
        format!("{target}password = \"{SECRET}{}\"\n", "x".repeat(70_000)),
        format!("[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\npassword = \"{SECRET}\"\n"),
        format!("[[target]]\nname = \"a\"\nurl = \"mqtt://u:{SECRET}@h\"\n"),
        format!("[[target]]\nname = \"a\"\nurl = \"mqtt://u:{SECRET}@h:99999\"\n"),
        format!("[[target]]\nname = \"a\"\nurl = \"http://u:{SECRET}@h\"\n"),
        format!("[defaults]\npassword = \"{SECRET}\"\n{target}"),
        format!("{target}\n[otlp]\nheaders = {{ authorization = \"{SECRET}\\n\" }}\n"),
        format!("{target}\n[otlp]\nheaders = {{ authorization = [\"{SECRET}\"] }}\n"),
    ]
    .into()
}

fn assert_hidden(text: &str, what: &str, input: &str) {
    assert!(
        !text.contains(SECRET) && !text.contains(SECRET_PART),
        "the secret leaked into {what}: {text}\n--- input:\n{input}"
    );
}

#[test]
fn no_error_shows_the_password() {
    for text in broken_configs() {
        let error = Config::parse(&text, Path::new("secret.toml"))
            .expect_err(&format!("should not load:\n{text}"));
        assert_hidden(&error.to_string(), "an error", &text);
        assert_hidden(&format!("{error:?}"), "an error's Debug", &text);
        assert!(!error.to_string().contains('\n'), "not one line: {error}");
    }
}

#[test]
fn an_integer_password_is_not_echoed_either() {
    let text = "[[target]]\nname = \"a\"\nurl = \"mqtt://h\"\nusername = \"u\"\npassword = 3141592653589\n";
    let error = Config::parse(text, Path::new("secret.toml")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "secret.toml:5:12: wrong type for `password` in [[target]] \"a\": expected a string, found an integer"
    );
}

#[test]
fn a_loaded_inline_password_is_in_no_warning_and_no_debug_output() {
    let config = Config::load(&testdata("good-inline-password.toml")).unwrap();
    let input = "good-inline-password.toml";
    assert_eq!(config.warnings().len(), 1);
    for warning in config.warnings() {
        assert_hidden(warning, "a warning", input);
    }
    let target = &config.targets()[0];
    assert_hidden(&format!("{config:?}"), "the config's Debug", input);
    assert_hidden(&format!("{config:#?}"), "the config's pretty Debug", input);
    assert_hidden(&format!("{target:?}"), "the target's Debug", input);
    assert_hidden(
        &format!("{:?}", target.options()),
        "the options' Debug",
        input,
    );
    assert_hidden(
        &format!("{:?}", diff(&config, &config)),
        "a diff's Debug",
        input,
    );
}
