//! A broker URL taken apart and checked: its scheme (one of four), host and
//! port, with the credentials it may carry split off so that no secret stays
//! in the URL handed to rumqttc or shown by `Debug`.

use url::Url;

use super::error::OptionsError;

/// A broker URL, checked: one of the four schemes, a host, a port; without
/// the credentials it may have carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BrokerUrl {
    pub(super) url: Url,
    pub(super) scheme: Scheme,
    pub(super) host: String,
    pub(super) port: u16,
}

/// A broker URL taken apart: the URL without credentials, and the user name
/// and password it carried.
pub(crate) type UrlParts = (BrokerUrl, Option<String>, Option<String>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scheme {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}

impl BrokerUrl {
    /// Checks `url` and splits off the user name and password it may carry.
    pub(crate) fn from_url(mut url: Url) -> Result<UrlParts, OptionsError> {
        let (scheme, default_port) = match url.scheme() {
            "mqtt" | "tcp" => (Scheme::Mqtt, 1883),
            "mqtts" | "ssl" => (Scheme::Mqtts, 8883),
            "ws" => (Scheme::Ws, 80),
            "wss" => (Scheme::Wss, 443),
            other => return Err(OptionsError::Scheme(other.to_owned())),
        };
        if matches!(scheme, Scheme::Ws | Scheme::Wss) && !cfg!(feature = "websocket") {
            return Err(OptionsError::NoWebSocket(if scheme == Scheme::Ws {
                "ws"
            } else {
                "wss"
            }));
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.trim_matches(['[', ']']).to_owned(),
            _ => return Err(OptionsError::NoHost),
        };
        let port = url.port().unwrap_or(default_port);
        let username = match url.username() {
            "" => None,
            user => Some(decode(user)),
        };
        let password = url.password().map(decode);
        // Keep the secret out of the URL handed to rumqttc (ws) and out of Debug.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let broker = Self {
            url,
            scheme,
            host,
            port,
        };
        Ok((broker, username, password))
    }

    /// Whether the connection runs over TLS (`mqtts://`, `wss://`).
    pub(crate) fn uses_tls(&self) -> bool {
        matches!(self.scheme, Scheme::Mqtts | Scheme::Wss)
    }

    /// The scheme as written in a URL.
    pub(crate) fn scheme(&self) -> &'static str {
        match self.scheme {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

fn decode(component: &str) -> String {
    percent_encoding::percent_decode_str(component)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use crate::connection::ConnectionOptions;

    #[test]
    fn parses_each_scheme_with_its_default_port() {
        for (url, broker) in [
            ("mqtt://broker.example", "broker.example:1883"),
            ("mqtts://broker.example", "broker.example:8883"),
            ("ws://broker.example/mqtt", "broker.example:80"),
            ("wss://broker.example/mqtt", "broker.example:443"),
            ("mqtt://127.0.0.1:1884", "127.0.0.1:1884"),
            ("mqtt://[::1]:1884", "[::1]:1884"),
        ] {
            let options = ConnectionOptions::new("c", url).unwrap();
            assert_eq!(options.broker(), broker, "{url}");
        }
    }
}
