//! A string from the web config that is never shown: a bcrypt hash, an
//! inline private key.

use std::fmt;

use serde::Deserialize;

/// A string that is never shown: `Debug` prints `<secret>`, and a value of
/// the wrong type is reported without its content.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}
