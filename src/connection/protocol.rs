//! Which MQTT protocol version a connection speaks: the one setting that
//! picks between rumqttc's two clients (the `wire` module drives either).
//! Plain data; it must never know about sockets or event loops.

use std::fmt;

/// The MQTT protocol version of a connection.
///
/// ```
/// use mqtt_pulse::connection::Protocol;
///
/// assert_eq!(Protocol::default(), Protocol::V311);
/// assert_eq!(Protocol::from_name("5"), Some(Protocol::V5));
/// assert_eq!(Protocol::V311.as_str(), "3.1.1");
/// assert_eq!(Protocol::from_name("5.0"), None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4): the default.
    #[default]
    V311,
    /// MQTT 5: reason codes in CONNACK and DISCONNECT, Server Keep Alive.
    V5,
}

impl Protocol {
    /// The name the config file uses (`protocol = "3.1.1"` or `"5"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V311 => "3.1.1",
            Protocol::V5 => "5",
        }
    }

    /// The version a config name means: `"3.1.1"` or `"5"`; `None` for
    /// anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "3.1.1" => Some(Protocol::V311),
            "5" => Some(Protocol::V5),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
