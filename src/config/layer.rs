//! The settings `[defaults]` and `[[target]]` share — durations, backoff,
//! clean session, labels and TLS — read as written in one table (a [`Layer`])
//! and then merged: the target's own over `[defaults]` over the defaults of
//! [`ConnectionOptions`], which owns them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

use super::error::{ConfigError, Problem};
use super::keys::{
    BACKOFF_KEYS, DEFAULTS_ONLY_KEYS, DEFAULTS_TEMPLATE_KEYS, LAYER_KEYS, NESTED_KEYS, PROBE_KEYS,
    TARGET_ONLY_KEYS, TLS_KEYS,
};
use super::reader::{Place, Read, Span, TableReader, Value, in_file_order, key_text};
use crate::connection::{
    Backoff, BrokerUrl, ClientCertificate, ConnectionOptions, ProbeOptions, Protocol, TlsOptions,
    check_keep_alive, label_name_problem, label_value_problem, probe_topic_problem,
};

/// The settings `[defaults]` and `[[target]]` share, as written in one table:
/// `None` where the table does not set them.
#[derive(Default)]
pub(super) struct Layer {
    keep_alive: Option<Duration>,
    connect_timeout: Option<Duration>,
    ping_timeout: Option<Duration>,
    backoff_initial: Option<Spanned<Duration>>,
    backoff_max: Option<Spanned<Duration>>,
    clean_session: Option<bool>,
    protocol: Option<Protocol>,
    labels: BTreeMap<String, String>,
    pub(super) tls: Option<TlsLayer>,
    pub(super) probe: Option<ProbeLayer>,
}

/// A `probe` table as written: its presence turns the probe on (unless
/// `enabled = false`); each key set here overrides `[defaults.probe]`'s.
#[derive(Default)]
pub(super) struct ProbeLayer {
    enabled: Option<bool>,
    topic: Option<Spanned<String>>,
    interval: Option<Spanned<Duration>>,
    qos: Option<rumqttc::QoS>,
    timeout: Option<Spanned<Duration>>,
}

impl Layer {
    /// `options` with what this table sets; labels merge key by key. Backoff
    /// and TLS merge by their own rules ([`TableReader::backoff`],
    /// [`TableReader::merged_tls`]).
    pub(super) fn apply(&self, mut options: ConnectionOptions) -> ConnectionOptions {
        if let Some(keep_alive) = self.keep_alive {
            options = options.with_keep_alive(keep_alive);
        }
        if let Some(timeout) = self.connect_timeout {
            options = options.with_connect_timeout(timeout);
        }
        if let Some(timeout) = self.ping_timeout {
            options = options.with_ping_timeout(timeout);
        }
        if let Some(clean_session) = self.clean_session {
            options = options.with_clean_session(clean_session);
        }
        if let Some(protocol) = self.protocol {
            options = options.with_protocol(protocol);
        }
        if !self.labels.is_empty() {
            let mut labels = options.labels().clone();
            labels.extend(self.labels.clone());
            options = options.with_labels(labels);
        }
        options
    }
}

/// A `tls` table as written.
#[derive(Default)]
pub(super) struct TlsLayer {
    span: Span,
    ca_file: Option<PathBuf>,
    client_certificate: Option<ClientCertificate>,
    insecure_skip_verify: Option<bool>,
}

/// The most `connect_concurrency` may be: more than any broker's listen
/// queue, so a larger number can only be a mistake (0 turns pacing off).
const MAX_CONNECT_CONCURRENCY: usize = 65_535;

/// `[defaults]` as written, with its backoff merged over the built-in one.
pub(super) struct Defaults {
    pub(super) layer: Layer,
    pub(super) backoff: Backoff,
    /// `connect_concurrency`, a setting of all the targets of a broker
    /// together, hence of `[defaults]` only.
    pub(super) connect_concurrency: Option<usize>,
    /// `client_id` as written: a template holding `{name}`, for every target
    /// that sets none.
    pub(super) client_id: Option<Spanned<String>>,
    /// `rtt_buckets`: the exporter's classic histogram bounds, a setting of
    /// the process, hence of `[defaults]` only.
    pub(super) rtt_buckets: Option<Vec<f64>>,
    /// `rtt_native_schema`: the resolution of the exporter's native
    /// histograms, a setting of the process like `rtt_buckets`.
    pub(super) rtt_native_schema: Option<i32>,
}

impl Defaults {
    pub(super) fn builtin() -> Defaults {
        Defaults {
            layer: Layer::default(),
            backoff: Backoff::default(),
            connect_concurrency: None,
            client_id: None,
            rtt_buckets: None,
            rtt_native_schema: None,
        }
    }

    /// `options` with the settings only `[defaults]` has.
    pub(super) fn apply(&self, options: ConnectionOptions) -> ConnectionOptions {
        match self.connect_concurrency {
            Some(limit) => options.with_connect_concurrency(limit),
            None => options,
        }
    }
}

impl TableReader<'_> {
    pub(super) fn defaults(&mut self, value: &Value<'_>) -> Result<Defaults, ConfigError> {
        let place = Place::Table("[defaults]".to_owned());
        let table = self.table("defaults", &Place::Top, value)?;
        let mut layer = Layer::default();
        let mut connect_concurrency = None;
        let mut client_id = None;
        let mut rtt_buckets = None;
        let mut rtt_native_schema = None;
        for (key, value) in in_file_order(table) {
            let name = key.get_ref().as_ref();
            if self.layer_entry(&mut layer, name, value, &place)? {
                continue;
            }
            if name == "connect_concurrency" {
                let limit = self.count(name, &place, value, MAX_CONNECT_CONCURRENCY)?;
                connect_concurrency = Some(limit);
                continue;
            }
            if name == "client_id" {
                client_id = Some(self.client_id_template(&place, value)?);
                continue;
            }
            if name == "rtt_buckets" {
                rtt_buckets = Some(self.rtt_buckets(name, &place, value)?);
                continue;
            }
            if name == "rtt_native_schema" {
                rtt_native_schema = Some(self.rtt_native_schema(name, &place, value)?);
                continue;
            }
            if TARGET_ONLY_KEYS.contains(&name) {
                let problem = Problem::NotADefault {
                    key: name.to_owned(),
                };
                return Err(self.error(&key.span(), problem));
            }
            let known = [LAYER_KEYS, DEFAULTS_ONLY_KEYS, DEFAULTS_TEMPLATE_KEYS].concat();
            return Err(self.unknown_key(key, &place, &known, NESTED_KEYS));
        }
        let backoff = self.backoff(&layer, Backoff::default(), &place)?;
        Ok(Defaults {
            layer,
            backoff,
            connect_concurrency,
            client_id,
            rtt_buckets,
            rtt_native_schema,
        })
    }

    /// `rtt_native_schema`: an integer from −4 to 3, checked by the
    /// exporter's rule.
    fn rtt_native_schema(&self, key: &str, place: &Place, value: &Value<'_>) -> Read<i32> {
        const EXPECTED: &str = "an integer from -4 (coarsest) to 3 (finest)";
        let DeValue::Integer(number) = value.get_ref() else {
            return Err(self.wrong_type(key, place, value, EXPECTED));
        };
        let schema = i64::from_str_radix(number.as_str(), number.radix()).ok();
        let problem = match schema.map(i32::try_from) {
            Some(Ok(schema)) => match crate::exporter::metrics::native_schema_problem(schema) {
                None => return Ok(schema),
                Some(problem) => problem,
            },
            _ => "out of range",
        };
        let reason = format!(
            "{problem}: must be {EXPECTED}; a bucket of schema s spans a factor of 2^(2^-s) \
             (0: 2, 1: 1.41, 2: 1.19, 3: 1.09)"
        );
        Err(self.bad_value(key, place, &value.span(), reason))
    }

    /// `rtt_buckets`: a list of seconds, checked by the exporter's rule; the
    /// error points at the bound at fault, or at the list.
    fn rtt_buckets(&self, key: &str, place: &Place, value: &Value<'_>) -> Read<Vec<f64>> {
        const EXPECTED: &str = "a list of seconds such as [0.001, 0.01, 0.1]";
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.wrong_type(key, place, value, EXPECTED));
        };
        let mut bounds = Vec::with_capacity(items.len());
        for item in items.iter() {
            let bound = match item.get_ref() {
                DeValue::Float(number) => number.as_str().parse::<f64>().ok(),
                DeValue::Integer(number) => i64::from_str_radix(number.as_str(), number.radix())
                    .ok()
                    .map(|n| n as f64),
                _ => None,
            };
            match bound {
                Some(bound) => bounds.push(bound),
                None => {
                    let reason = format!("must be {EXPECTED}: every bound a number");
                    return Err(self.bad_value(key, place, &item.span(), reason));
                }
            }
        }
        if let Some((at, problem)) = crate::exporter::bucket_problem_at(&bounds) {
            let span = at
                .and_then(|index| items.get(index))
                .map_or(value.span(), |item| item.span());
            let reason = format!(
                "{problem}: give 1 to {} finite, positive upper bounds in seconds, \
                 strictly increasing (+Inf is always added)",
                crate::exporter::MAX_RTT_BUCKETS
            );
            return Err(self.bad_value(key, place, &span, reason));
        }
        Ok(bounds)
    }

    /// Reads `key` if it is one of the keys `[defaults]` and `[[target]]`
    /// share; `false` if it is not.
    pub(super) fn layer_entry(
        &mut self,
        layer: &mut Layer,
        key: &str,
        value: &Value<'_>,
        place: &Place,
    ) -> Result<bool, ConfigError> {
        match key {
            "keep_alive" => {
                let keep_alive = self.duration(key, place, value)?;
                // The rule is the connection's; the wording is the file's.
                if check_keep_alive(keep_alive).is_err() {
                    let reason = format!(
                        "must be whole seconds from 1s to 65535s, not {}",
                        humantime::format_duration(keep_alive)
                    );
                    return Err(self.bad_value(key, place, &value.span(), reason));
                }
                layer.keep_alive = Some(keep_alive);
            }
            "connect_timeout" => {
                layer.connect_timeout = Some(self.positive_duration(key, place, value)?)
            }
            "ping_timeout" => layer.ping_timeout = Some(self.positive_duration(key, place, value)?),
            "clean_session" => layer.clean_session = Some(self.boolean(key, place, value)?),
            "protocol" => {
                let name = self.string(key, place, value)?;
                let Some(protocol) = Protocol::from_name(name) else {
                    let reason = format!("must be \"3.1.1\" or \"5\", not {name:?}");
                    return Err(self.bad_value(key, place, &value.span(), reason));
                };
                layer.protocol = Some(protocol);
            }
            "backoff" => self.backoff_table(layer, value, place)?,
            "labels" => layer.labels = self.labels(value, place)?,
            "tls" => layer.tls = Some(self.tls(value, place)?),
            "probe" => layer.probe = Some(self.probe(value, place)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn backoff_table(
        &self,
        layer: &mut Layer,
        value: &Value<'_>,
        place: &Place,
    ) -> Result<(), ConfigError> {
        let inner = place.nested("backoff");
        for (key, value) in in_file_order(self.table("backoff", place, value)?) {
            let name = key.get_ref().as_ref();
            let duration = match name {
                "initial" | "max" => self.positive_duration(name, &inner, value)?,
                _ => return Err(self.unknown_key(key, &inner, BACKOFF_KEYS, &[])),
            };
            let duration = Some(Spanned::new(value.span(), duration));
            if name == "initial" {
                layer.backoff_initial = duration;
            } else {
                layer.backoff_max = duration;
            }
        }
        Ok(())
    }

    /// The backoff of `layer` over `inherited`, checking that `max` is not
    /// below `initial`. The error points at whichever of the two this layer set.
    pub(super) fn backoff(
        &self,
        layer: &Layer,
        inherited: Backoff,
        place: &Place,
    ) -> Result<Backoff, ConfigError> {
        let own = |duration: &Option<Spanned<Duration>>| duration.as_ref().map(|d| *d.get_ref());
        let backoff = Backoff {
            initial: own(&layer.backoff_initial).unwrap_or(inherited.initial),
            max: own(&layer.backoff_max).unwrap_or(inherited.max),
        };
        if backoff.max >= backoff.initial {
            return Ok(backoff);
        }
        let inner = place.nested("backoff");
        let (key, span, reason) = match (&layer.backoff_max, &layer.backoff_initial) {
            (Some(max), _) => (
                "max",
                max.span(),
                format!(
                    "must not be shorter than `initial` ({})",
                    humantime::format_duration(backoff.initial)
                ),
            ),
            (None, Some(initial)) => (
                "initial",
                initial.span(),
                format!(
                    "must not be longer than `max` ({})",
                    humantime::format_duration(backoff.max)
                ),
            ),
            // Neither is set here, so `inherited` was already checked.
            (None, None) => return Ok(inherited),
        };
        Err(self.bad_value(key, &inner, &span, reason))
    }

    fn labels(
        &mut self,
        value: &Value<'_>,
        place: &Place,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let inner = place.nested("labels");
        let mut labels = BTreeMap::new();
        for (key, value) in in_file_order(self.table("labels", place, value)?) {
            let name = key.get_ref().as_ref();
            if let Some(reason) = label_name_problem(name) {
                let problem = Problem::BadLabel {
                    name: key_text(name),
                    place: inner.phrase(),
                    reason,
                };
                return Err(self.error(&key.span(), problem));
            }
            let text = self.string(name, &inner, value)?;
            if let Some(reason) = label_value_problem(text) {
                return Err(self.bad_value(name, &inner, &value.span(), reason.to_owned()));
            }
            if matches!(name, "job" | "instance") {
                // Prometheus sets these from the scrape config and, unless it
                // has `honor_labels: true`, renames ours to `exported_*`.
                let message = format!(
                    "label `{name}` {}: Prometheus renames it to `exported_{name}` unless the \
                     scrape config sets `honor_labels: true`",
                    inner.phrase()
                );
                self.warn(&key.span(), message);
            }
            labels.insert(name.to_owned(), text.to_owned());
        }
        Ok(labels)
    }

    fn probe(&self, value: &Value<'_>, place: &Place) -> Result<ProbeLayer, ConfigError> {
        let inner = place.nested("probe");
        let mut probe = ProbeLayer::default();
        for (key, value) in in_file_order(self.table("probe", place, value)?) {
            let name = key.get_ref().as_ref();
            match name {
                "enabled" => probe.enabled = Some(self.boolean(name, &inner, value)?),
                "topic" => {
                    let topic = self.string(name, &inner, value)?;
                    if let Some(reason) = probe_topic_problem(topic) {
                        return Err(self.bad_value(name, &inner, &value.span(), reason));
                    }
                    probe.topic = Some(Spanned::new(value.span(), topic.to_owned()));
                }
                "interval" | "timeout" => {
                    let duration = self.positive_duration(name, &inner, value)?;
                    let duration = Some(Spanned::new(value.span(), duration));
                    if name == "interval" {
                        probe.interval = duration;
                    } else {
                        probe.timeout = duration;
                    }
                }
                "qos" => {
                    probe.qos = Some(match self.count(name, &inner, value, 2)? {
                        0 => rumqttc::QoS::AtMostOnce,
                        1 => rumqttc::QoS::AtLeastOnce,
                        _ => rumqttc::QoS::ExactlyOnce,
                    });
                }
                _ => return Err(self.unknown_key(key, &inner, PROBE_KEYS, &[])),
            }
        }
        Ok(probe)
    }

    /// The probe of a target: its own `probe` table over `[defaults.probe]`,
    /// key by key; on when either table is there, unless the merged
    /// `enabled` is false. Checked against the target's keep-alive, the
    /// error pointing at whichever table set the bad duration.
    pub(super) fn merged_probe(
        &self,
        options: ConnectionOptions,
        own: Option<&ProbeLayer>,
        defaults: Option<&ProbeLayer>,
        (place, target): (&Place, &Span),
    ) -> Result<ConnectionOptions, ConfigError> {
        if own.is_none() && defaults.is_none() {
            return Ok(options);
        }
        fn pick<T: Clone>(
            own: Option<&ProbeLayer>,
            defaults: Option<&ProbeLayer>,
            get: impl Fn(&ProbeLayer) -> Option<T>,
        ) -> Option<T> {
            own.and_then(&get).or_else(|| defaults.and_then(&get))
        }
        if pick(own, defaults, |p| p.enabled) == Some(false) {
            return Ok(options);
        }
        let mut probe = ProbeOptions::new();
        let topic = pick(own, defaults, |p| p.topic.clone());
        if let Some(topic) = &topic {
            probe = probe.with_topic(topic.get_ref().clone());
        }
        let interval = pick(own, defaults, |p| p.interval.clone());
        if let Some(interval) = &interval {
            probe = probe.with_interval(*interval.get_ref());
        }
        let timeout = pick(own, defaults, |p| p.timeout.clone());
        if let Some(timeout) = &timeout {
            probe = probe.with_timeout(*timeout.get_ref());
        }
        if let Some(qos) = pick(own, defaults, |p| p.qos) {
            probe = probe.with_qos(qos);
        }
        let client_id = options.client_id().as_str();
        if let Some((key, reason)) = probe.problem_for(options.keep_alive(), client_id) {
            let inner = place.nested("probe");
            let span = match key {
                "interval" => interval.map(|d| d.span()),
                "timeout" => timeout.map(|d| d.span()).or(interval.map(|d| d.span())),
                "topic" => topic.map(|t| t.span()),
                _ => None,
            };
            // Every problem comes from a duration written in one of the
            // tables, or from the topic as the client id expands it: at the
            // topic if written, else at the target (its id made it wrong).
            let span = span.unwrap_or_else(|| target.clone());
            return Err(self.bad_value(key, &inner, &span, reason));
        }
        Ok(options.with_probe(probe))
    }

    fn tls(&mut self, value: &Value<'_>, place: &Place) -> Result<TlsLayer, ConfigError> {
        let inner = place.nested("tls");
        let mut tls = TlsLayer {
            span: value.span(),
            ..TlsLayer::default()
        };
        let mut cert_file = None;
        let mut key_file = None;
        for (key, value) in in_file_order(self.table("tls", place, value)?) {
            match key.get_ref().as_ref() {
                "ca_file" => tls.ca_file = Some(self.readable_file("ca_file", &inner, value)?),
                "cert_file" => {
                    let path = self.readable_file("cert_file", &inner, value)?;
                    cert_file = Some((path, key.span()));
                }
                "key_file" => {
                    let path = self.readable_file("key_file", &inner, value)?;
                    key_file = Some((path, key.span()));
                }
                "insecure_skip_verify" => {
                    let skip = self.boolean("insecure_skip_verify", &inner, value)?;
                    if skip {
                        let message = format!(
                            "`insecure_skip_verify` is on {}: the broker's certificate is not verified",
                            inner.phrase()
                        );
                        self.warn(&key.span(), message);
                    }
                    tls.insecure_skip_verify = Some(skip);
                }
                _ => return Err(self.unknown_key(key, &inner, TLS_KEYS, &[])),
            }
        }
        let unpaired = |present, missing, span: &Span| {
            let problem = Problem::Unpaired {
                present,
                missing,
                place: inner.phrase(),
                advice: "set both for a client certificate, or neither",
            };
            self.error(span, problem)
        };
        tls.client_certificate = match (cert_file, key_file) {
            (Some((cert_file, _)), Some((key_file, _))) => Some(ClientCertificate {
                cert_file,
                key_file,
            }),
            (Some((_, span)), None) => return Err(unpaired("cert_file", "key_file", &span)),
            (None, Some((_, span))) => return Err(unpaired("key_file", "cert_file", &span)),
            (None, None) => None,
        };
        Ok(tls)
    }

    /// The TLS options of a target: its own `tls` over `[defaults.tls]`, for
    /// `mqtts://` and `wss://` only.
    pub(super) fn merged_tls(
        &self,
        broker: &BrokerUrl,
        own: Option<&TlsLayer>,
        defaults: Option<&TlsLayer>,
        place: &Place,
    ) -> Result<TlsOptions, ConfigError> {
        if !broker.uses_tls() {
            return match own {
                Some(tls) => {
                    let problem = Problem::TlsOnPlainUrl {
                        place: place.phrase(),
                        scheme: broker.scheme().to_owned(),
                    };
                    Err(self.error(&tls.span, problem))
                }
                // `[defaults.tls]` is for the targets that use TLS.
                None => Ok(TlsOptions::default()),
            };
        }
        Ok(TlsOptions {
            ca_file: pick(own, defaults, |tls| tls.ca_file.clone()),
            // The certificate and its key belong together: never one from each table.
            client_certificate: pick(own, defaults, |tls| tls.client_certificate.clone()),
            insecure_skip_verify: pick(own, defaults, |tls| tls.insecure_skip_verify)
                .unwrap_or(false),
        })
    }
}

/// A TLS setting from the target's own table, else from `[defaults.tls]`.
fn pick<T>(
    own: Option<&TlsLayer>,
    defaults: Option<&TlsLayer>,
    get: impl Fn(&TlsLayer) -> Option<T>,
) -> Option<T> {
    own.and_then(&get).or_else(|| defaults.and_then(&get))
}
