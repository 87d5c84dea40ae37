//! `[[target]]`: each table read into a [`TargetConfig`] — its name, where it
//! is written and its [`ConnectionOptions`] with `[defaults]` merged in — and
//! the rules across targets (unique names, unique client ids, how many).

use std::collections::HashMap;

use toml::Spanned;
use toml::de::{DeTable, DeValue};
use url::Url;

use super::error::{ConfigError, Problem};
use super::keys::{DEFAULTS_ONLY_KEYS, LAYER_KEYS, NESTED_KEYS, TARGET_ONLY_KEYS};
use super::layer::{Defaults, Layer};
use super::reader::{Place, Span, TableReader, Value, in_file_order};
use super::{CLIENT_ID_PREFIX, MAX_FILE_TARGETS, TargetConfig};
use crate::connection::{BrokerUrl, ConnectionOptions, MAX_LABEL_VALUE_LENGTH, Password};
use crate::events::ClientId;

/// Names and client ids seen so far, for the duplicate checks.
#[derive(Default)]
struct Seen {
    /// Name → line of its `name`.
    names: HashMap<String, usize>,
    /// Client id → (target name, line, derived from the name).
    client_ids: HashMap<ClientId, (String, usize, bool)>,
}

/// The keys of one `[[target]]` as written, before defaults are applied.
#[derive(Default)]
struct WrittenTarget {
    url: Option<BrokerUrl>,
    client_id: Option<Spanned<ClientId>>,
    /// Whether `client_id` holds `{hostname}`.
    client_id_per_host: bool,
    username: Option<String>,
    /// The password's source and the span of its key.
    password: Option<(Password, Span)>,
    layer: Layer,
}

/// The config key a password is written with.
fn password_key(password: &Password) -> &'static str {
    match password {
        Password::Inline(_) => "password",
        Password::File(_) => "password_file",
    }
}

impl TableReader<'_> {
    pub(super) fn targets(
        &mut self,
        value: Option<&Value<'_>>,
        defaults: &Defaults,
    ) -> Result<Vec<TargetConfig>, ConfigError> {
        let Some(value) = value else {
            return Err(self.file_error(Problem::NoTargets));
        };
        let DeValue::Array(items) = value.get_ref() else {
            let expected = "an array of tables, written [[target]]";
            return Err(self.wrong_type("target", &Place::Top, value, expected));
        };
        if items.is_empty() {
            return Err(self.error(&value.span(), Problem::NoTargets));
        }
        if let Some(first_too_many) = items.get(MAX_FILE_TARGETS) {
            let problem = Problem::TooManyTargets {
                count: items.len(),
                max: MAX_FILE_TARGETS,
            };
            return Err(self.error(&first_too_many.span(), problem));
        }
        let mut seen = Seen::default();
        let mut targets = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            targets.push(self.target(index, item, defaults, &mut seen)?);
        }
        Ok(targets)
    }

    fn target(
        &mut self,
        index: usize,
        item: &Value<'_>,
        defaults: &Defaults,
        seen: &mut Seen,
    ) -> Result<TargetConfig, ConfigError> {
        let DeValue::Table(table) = item.get_ref() else {
            return Err(self.wrong_type("target", &Place::Top, item, "a table"));
        };
        let header = item.span();
        let name = self.target_name(index, table, &header, seen)?;
        let place = Place::Table(format!("[[target]] {:?}", name.get_ref()));
        let written = self.target_keys(table, name.get_ref(), &place)?;
        let Some(broker) = written.url else {
            let problem = Problem::MissingKey {
                key: "url",
                place: place.phrase(),
            };
            return Err(self.error(&header, problem));
        };
        self.check_password(&written.username, &written.password, &place)?;
        let templated = written.client_id.is_none() && defaults.client_id.is_some();
        let (written_id, client_id_per_host) = match (written.client_id, &defaults.client_id) {
            (Some(id), _) => (Some(id), written.client_id_per_host),
            (None, Some(template)) => {
                let id = self.templated_client_id(template, &name)?;
                (Some(id), names_the_host(template.get_ref()))
            }
            (None, None) => (None, false),
        };
        let client_id = self.unique_client_id(&name, written_id, templated, &place, seen)?;

        let layer = written.layer;
        let inherited = &defaults.layer;
        let tls = self.merged_tls(&broker, layer.tls.as_ref(), inherited.tls.as_ref(), &place)?;
        let backoff = self.backoff(&layer, defaults.backoff, &place)?;
        let password = written.password.map(|(password, _)| password);
        let options = ConnectionOptions::for_broker(client_id, broker)
            .with_login(written.username, password)
            .with_tls(tls)
            .with_backoff(backoff);
        let options = layer.apply(inherited.apply(defaults.apply(options)));
        let options = self.merged_probe(
            options,
            layer.probe.as_ref(),
            inherited.probe.as_ref(),
            (&place, &header),
        )?;
        Ok(TargetConfig {
            name: name.into_inner(),
            location: self.location(&header),
            client_id_per_host,
            options,
        })
    }

    /// The target's `name`, read first so that every other message can name
    /// the target; unique among the targets.
    fn target_name(
        &self,
        index: usize,
        table: &DeTable<'_>,
        header: &Span,
        seen: &mut Seen,
    ) -> Result<Spanned<String>, ConfigError> {
        let unnamed = Place::Table(format!("[[target]] #{}", index + 1));
        let Some(value) = table.get("name") else {
            let problem = Problem::MissingKey {
                key: "name",
                place: unnamed.phrase(),
            };
            return Err(self.error(header, problem));
        };
        let name = self.string("name", &unnamed, value)?;
        if let Some(reason) = text_problem(name) {
            return Err(self.bad_value("name", &unnamed, &value.span(), reason));
        }
        if let Some(&first_line) = seen.names.get(name) {
            let problem = Problem::DuplicateName {
                name: name.to_owned(),
                first_line,
            };
            return Err(self.error(&value.span(), problem));
        }
        let line = self.location(&value.span()).line;
        seen.names.insert(name.to_owned(), line);
        Ok(Spanned::new(value.span(), name.to_owned()))
    }

    /// Every key of a `[[target]]` but `name`, each checked on its own.
    fn target_keys(
        &mut self,
        table: &DeTable<'_>,
        name: &str,
        place: &Place,
    ) -> Result<WrittenTarget, ConfigError> {
        let mut written = WrittenTarget::default();
        for (key, value) in in_file_order(table) {
            let key_name = key.get_ref().as_ref();
            match key_name {
                "name" => {}
                "url" => {
                    let text = self.string("url", place, value)?;
                    written.url = Some(self.url(text, place, &value.span())?);
                }
                "client_id" => {
                    let written_id = self.string("client_id", place, value)?;
                    let bad = |reason| self.bad_value("client_id", place, &value.span(), reason);
                    let id = expand_client_id(written_id, name).map_err(bad)?;
                    if let Some(reason) =
                        text_problem(&id).or_else(|| client_id_length_problem(&id))
                    {
                        return Err(bad(reason));
                    }
                    written.client_id = Some(Spanned::new(value.span(), ClientId::from(id)));
                    written.client_id_per_host = names_the_host(written_id);
                }
                "username" => written.username = Some(self.mqtt_string("username", place, value)?),
                "password" | "password_file" => {
                    let password = if key_name == "password" {
                        Password::Inline(self.mqtt_string("password", place, value)?)
                    } else {
                        Password::File(self.readable_file("password_file", place, value)?)
                    };
                    if let Some((first, _)) = &written.password {
                        let problem = Problem::Conflict {
                            first: password_key(first),
                            second: password_key(&password),
                            place: place.phrase(),
                        };
                        return Err(self.error(&key.span(), problem));
                    }
                    written.password = Some((password, key.span()));
                }
                _ if DEFAULTS_ONLY_KEYS.contains(&key_name) => {
                    let problem = Problem::OnlyADefault {
                        key: key_name.to_owned(),
                        place: place.phrase(),
                        why: if key_name.starts_with("rtt_") {
                            "every target's histograms share one bucket layout"
                        } else {
                            "it paces all the targets of a broker together"
                        },
                    };
                    return Err(self.error(&key.span(), problem));
                }
                _ => {
                    if !self.layer_entry(&mut written.layer, key_name, value, place)? {
                        let known = [TARGET_ONLY_KEYS, LAYER_KEYS].concat();
                        return Err(self.unknown_key(key, place, &known, NESTED_KEYS));
                    }
                }
            }
        }
        Ok(written)
    }

    /// A password needs a user name (MQTT 3.1.1 sends none without one); an
    /// inline one is warned about.
    fn check_password(
        &mut self,
        username: &Option<String>,
        password: &Option<(Password, Span)>,
        place: &Place,
    ) -> Result<(), ConfigError> {
        let Some((password, key_span)) = password else {
            return Ok(());
        };
        if username.is_none() {
            let problem = Problem::Unpaired {
                present: password_key(password),
                missing: "username",
                place: place.phrase(),
                advice: "MQTT sends a password only with a user name",
            };
            return Err(self.error(key_span, problem));
        }
        if let Password::Inline(_) = password {
            let message = format!(
                "inline `password` {}: put it in a file readable only by mqtt-pulse and set `password_file`",
                place.phrase()
            );
            self.warn(key_span, message);
        }
        Ok(())
    }

    /// `[defaults]`' `client_id` template read: a string whose placeholders
    /// are known, holding `{name}` — every target's id, and two cannot share one.
    pub(super) fn client_id_template(
        &self,
        place: &Place,
        value: &Value<'_>,
    ) -> Result<Spanned<String>, ConfigError> {
        let template = self.string("client_id", place, value)?;
        let bad = |reason| self.bad_value("client_id", place, &value.span(), reason);
        expand_client_id(template, "name").map_err(bad)?;
        if !template.replace("{{", "").contains("{name}") {
            return Err(bad(
                "must hold {name}: it is the client id of every target that sets none, \
                 and two targets cannot share one"
                    .to_owned(),
            ));
        }
        Ok(Spanned::new(value.span(), template.to_owned()))
    }

    /// `[defaults]`' `client_id` template expanded for the target `name`, its
    /// problems placed at the template.
    fn templated_client_id(
        &self,
        template: &Spanned<String>,
        name: &Spanned<String>,
    ) -> Result<Spanned<ClientId>, ConfigError> {
        let place = Place::Table("[defaults]".to_owned());
        let bad = |reason: String| {
            let reason = format!("{reason} (for [[target]] {:?})", name.get_ref());
            self.bad_value("client_id", &place, &template.span(), reason)
        };
        let id = expand_client_id(template.get_ref(), name.get_ref()).map_err(&bad)?;
        if let Some(reason) = text_problem(&id).or_else(|| client_id_length_problem(&id)) {
            return Err(bad(reason));
        }
        // Placed at the target's name, as a client id derived from it.
        Ok(Spanned::new(name.span(), ClientId::from(id)))
    }

    /// The target's client id — `client_id`, or derived from the name — unique
    /// among the targets: a broker disconnects the older of two connections
    /// with one id.
    /// `templated`: `written` comes from `[defaults]`' `client_id`, and so
    /// from the name too.
    fn unique_client_id(
        &self,
        name: &Spanned<String>,
        written: Option<Spanned<ClientId>>,
        templated: bool,
        place: &Place,
        seen: &mut Seen,
    ) -> Result<ClientId, ConfigError> {
        let (client_id, span, derived) = match written {
            Some(id) => (id.get_ref().clone(), id.span(), templated),
            None => {
                let id = format!("{CLIENT_ID_PREFIX}{}", name.get_ref());
                if let Some(reason) = client_id_length_problem(&id) {
                    let reason = format!("the client id derived from it {reason}; set `client_id`");
                    return Err(self.bad_value("name", place, &name.span(), reason));
                }
                (ClientId::from(id), name.span(), true)
            }
        };
        if let Some((other, other_line, other_derived)) = seen.client_ids.get(&client_id) {
            let problem = Problem::DuplicateClientId {
                client_id: client_id.to_string(),
                place: place.phrase(),
                derived,
                other: other.clone(),
                other_line: *other_line,
                other_derived: *other_derived,
            };
            return Err(self.error(&span, problem));
        }
        let line = self.location(&span).line;
        let first = (name.get_ref().clone(), line, derived);
        seen.client_ids.insert(client_id.clone(), first);
        Ok(client_id)
    }

    /// A broker URL: one of the four schemes, a host, no credentials. The URL
    /// itself is never quoted back: it could hold a password.
    fn url(&self, text: &str, place: &Place, span: &Span) -> Result<BrokerUrl, ConfigError> {
        let bad = |reason: String| self.bad_value("url", place, span, reason);
        if !text.contains("://") {
            return Err(bad(
                "must start with mqtt://, mqtts://, ws:// or wss://, like \"mqtt://broker.example:1883\""
                    .to_owned(),
            ));
        }
        let url = Url::parse(text).map_err(|error| {
            bad(format!(
                "not a URL ({error}); write it like \"mqtt://broker.example:1883\""
            ))
        })?;
        if !matches!(url.scheme(), "mqtt" | "mqtts" | "ws" | "wss") {
            return Err(bad(format!(
                "unsupported scheme {:?}; use mqtt://, mqtts://, ws:// or wss://",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "must not contain a user name or password; set `username` and `password_file`"
                    .to_owned(),
            ));
        }
        // The connection's own checks (a host, among others) decide the rest.
        let (broker, _, _) = BrokerUrl::from_url(url).map_err(|error| bad(error.to_string()))?;
        Ok(broker)
    }
}

/// The placeholders a `client_id` may hold.
pub(super) const CLIENT_ID_PLACEHOLDERS: &str = "{name} or {hostname}";

/// `written` with `{name}` replaced by the target's name and `{hostname}` by
/// this host's name ([`hostname`]); `{{` and `}}` stand for `{` and `}`.
fn expand_client_id(written: &str, name: &str) -> Result<String, String> {
    let mut id = String::with_capacity(written.len());
    let mut rest = written;
    while let Some(at) = rest.find(['{', '}']) {
        id.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            id.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            id.push('}');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{name}") {
            id.push_str(name);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{hostname}") {
            id.push_str(
                &hostname()
                    .map_err(|reason| format!("needs the host name for {{hostname}}: {reason}"))?,
            );
            rest = after;
        } else {
            let placeholder = match tail.find('}') {
                Some(end) if tail.starts_with('{') => &tail[..=end],
                _ => &tail[..1],
            };
            return Err(format!(
                "has an unknown placeholder `{placeholder}`; use {CLIENT_ID_PLACEHOLDERS} \
                 (write {{{{ and }}}} for braces)"
            ));
        }
    }
    id.push_str(rest);
    Ok(id)
}

/// Whether a written `client_id` holds the `{hostname}` placeholder (not
/// `{{hostname}}`, which is literal text).
fn names_the_host(written: &str) -> bool {
    written
        .replace("{{", "")
        .replace("}}", "")
        .contains("{hostname}")
}

/// The name `{hostname}` stands for: the `HOSTNAME` environment variable if
/// it is set (a Kubernetes pod's name, a container's id; set it to tell two
/// instances on one machine apart), the kernel's host name otherwise.
pub(crate) fn hostname() -> Result<String, String> {
    if let Some(name) = std::env::var_os("HOSTNAME") {
        return match name.into_string() {
            Ok(name) if !name.trim().is_empty() => Ok(name.trim().to_owned()),
            _ => Err("the HOSTNAME environment variable is empty or not UTF-8".to_owned()),
        };
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|error| format!("/proc/sys/kernel/hostname cannot be read ({error})"))?;
    match name.trim() {
        "" => Err("the kernel's host name is empty".to_owned()),
        name => Ok(name.to_owned()),
    }
}

/// Why `text` cannot be a name or client id, if it cannot.
fn text_problem(text: &str) -> Option<String> {
    if text.is_empty() {
        Some("must not be empty".to_owned())
    } else if text.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    }
}

/// Why `id` is too long for a client id: MQTT's limit, and the label's.
fn client_id_length_problem(id: &str) -> Option<String> {
    (id.len() > MAX_LABEL_VALUE_LENGTH).then(|| {
        format!(
            "must be at most {MAX_LABEL_VALUE_LENGTH} bytes long (it is the client_id label of every series)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_placeholders_take_the_name_and_the_host_name() {
        let host = hostname().unwrap();
        assert_eq!(
            expand_client_id("probe-{hostname}-{name}", "plant-a").unwrap(),
            format!("probe-{host}-plant-a")
        );
        assert_eq!(expand_client_id("plain", "a").unwrap(), "plain");
        assert_eq!(
            expand_client_id("{{name}}-{name}", "a").unwrap(),
            "{name}-a"
        );
    }

    #[test]
    fn a_client_id_names_the_host_only_with_the_placeholder() {
        assert!(names_the_host("mqtt-pulse-{hostname}-{name}"));
        assert!(names_the_host("{{{hostname}}}"));
        assert!(!names_the_host("mqtt-pulse-{name}"));
        assert!(!names_the_host("{{hostname}}"));
    }

    #[test]
    fn an_unknown_placeholder_or_a_lone_brace_is_an_error() {
        let error = |written| expand_client_id(written, "a").unwrap_err();
        assert_eq!(
            error("probe-{host}"),
            "has an unknown placeholder `{host}`; use {name} or {hostname} (write {{ and }} for braces)"
        );
        assert!(error("probe-{").contains("`{`"));
        assert!(error("probe-}").contains("`}`"));
    }
}
