//! Why a web config file cannot be used, and where in it: [`WebConfigError`]
//! and [`WebConfigPosition`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Line and column of a value, for errors; `None` where not known.
pub(crate) type At = Option<(u64, u64)>;

/// Where in a web config file something is: the file, and the line and column
/// when known. Displays as `file:line:column` or `file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfigPosition {
    path: PathBuf,
    line_column: At,
}

impl WebConfigPosition {
    pub(crate) fn new(path: &Path, at: At) -> Self {
        WebConfigPosition {
            path: path.to_owned(),
            line_column: at,
        }
    }

    /// The web config file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line (from 1), when known.
    #[must_use]
    pub fn line(&self) -> Option<u64> {
        self.line_column.map(|(line, _)| line)
    }

    /// The column (from 1), when known.
    #[must_use]
    pub fn column(&self) -> Option<u64> {
        self.line_column.map(|(_, column)| column)
    }
}

impl fmt::Display for WebConfigPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line_column {
            Some((line, column)) => write!(f, "{}:{line}:{column}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Why a web config file cannot be used. `Display` is one line naming the
/// file (and the line and key where known), and never holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebConfigError {
    /// The file cannot be read.
    #[error("cannot read the web config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The file is not YAML of the web-config shape: a syntax error, an
    /// unknown or repeated key, a value of the wrong type.
    #[error("{at}: {message}")]
    Parse {
        /// Where.
        at: WebConfigPosition,
        /// What is wrong.
        message: String,
    },
    /// A value has the right shape but cannot be used: an unknown
    /// `client_auth_type`, a missing key file, a malformed bcrypt hash, …
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: WebConfigPosition,
        /// What is wrong and what to do.
        message: String,
    },
    /// A reloaded file changes what the listeners were started with; see
    /// [`WebConfig::update`](super::WebConfig::update).
    #[error(
        "{}: {what}, which takes a restart; nothing in the file was applied",
        path.display()
    )]
    NeedsRestart {
        /// The file.
        path: PathBuf,
        /// What changed.
        what: &'static str,
    },
}
