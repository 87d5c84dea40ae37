//! The errors of loading a config file: one line each, naming the file, the
//! line and column, and the key at fault.
//!
//! This file owns the wording users see. It must never hold or print a value
//! that could be a secret: a problem names keys, target names, paths and
//! non-secret values (durations, schemes), never a password or a header value.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a config file cannot be used.
///
/// `Display` is one line: `<path>:<line>:<column>: <problem>`, or
/// `<path>: <problem>` when the problem is the file as a whole (it cannot be
/// read, or it has no `[[target]]`). Lines and columns count from 1; columns
/// count characters, not bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read (missing, a directory, no permission).
    #[error("{}: cannot read the config file: {source}", OneLine(path))]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file was read but something in it is wrong.
    #[error("{}{}: {problem}", OneLine(path), LocationSuffix(*location))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in the file; `None` when the problem is the file as a whole.
        location: Option<Location>,
        /// What is wrong (boxed: it keeps `Result`s of this error small).
        problem: Box<Problem>,
    },
}

impl ConfigError {
    /// What is wrong, if the file could be read.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { problem, .. } => Some(problem),
        }
    }

    /// Where in the file the problem is, if it is at one place.
    pub fn location(&self) -> Option<Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { location, .. } => *location,
        }
    }
}

/// A position in a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The line, from 1.
    pub line: usize,
    /// The column in characters, from 1.
    pub column: usize,
}

impl Location {
    /// The position of byte `offset` in `text` (clamped to its end).
    pub(crate) fn of(text: &str, offset: usize) -> Location {
        Self::in_lines(text, &line_starts(text), offset)
    }

    /// As [`of`](Self::of), with `text`'s [`line_starts`] made once: a file of
    /// ten thousand targets asks for a location per target.
    pub(crate) fn in_lines(text: &str, line_starts: &[usize], offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        // The last line starting at or before `offset`; the first starts at 0.
        let line = line_starts.partition_point(|&start| start <= offset);
        let line_start = line_starts[line - 1];
        // A byte-order mark is not something an editor shows as a column.
        let column_text = text[line_start..offset].trim_start_matches('\u{feff}');
        Location {
            line,
            column: column_text.chars().count() + 1,
        }
    }
}

struct LocationSuffix(Option<Location>);

impl fmt::Display for LocationSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(Location { line, column }) => write!(f, ":{line}:{column}"),
            None => Ok(()),
        }
    }
}

/// What is wrong in a config file. Each message says where (the key, and the
/// table it is in) and, where it helps, what to write instead.
///
/// `place` fields read like `in [[target]] "plant-a"`, ``in `tls` of
/// [defaults]`` or `at the top level`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The file is not valid TOML.
    #[error("TOML syntax error: {0}")]
    Syntax(String),
    /// The file is not UTF-8 text.
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    /// A key the table does not have.
    #[error("unknown key `{key}` {place}{}", Suggestion(suggestion.as_deref()))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The table it is in.
        place: String,
        /// The closest key the table has, if one is close.
        suggestion: Option<String>,
    },
    /// A per-target key (`url`, `name`, credentials) written in `[defaults]`.
    #[error("`{key}` cannot be set in [defaults]; set it in each [[target]]")]
    NotADefault {
        /// The key.
        key: String,
    },
    /// A key of every target together (`connect_concurrency`,
    /// `rtt_buckets`, `rtt_native_schema`) written in a `[[target]]`.
    #[error("`{key}` cannot be set {place}; set it in [defaults]: {why}")]
    OnlyADefault {
        /// The key.
        key: String,
        /// The table it is in.
        place: String,
        /// Why only `[defaults]` has it.
        why: &'static str,
    },
    /// A value of the wrong TOML type.
    #[error("wrong type for `{key}` {place}: expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// The table it is in.
        place: String,
        /// The type the key takes.
        expected: &'static str,
        /// The type written.
        found: &'static str,
    },
    /// A required key is absent.
    #[error("missing `{key}` {place}")]
    MissingKey {
        /// The key.
        key: &'static str,
        /// The table it should be in.
        place: String,
    },
    /// A value of the right type that cannot be used.
    #[error("bad `{key}` {place}: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// The table it is in.
        place: String,
        /// Why the value cannot be used.
        reason: String,
    },
    /// A label name that Prometheus or mqtt-pulse does not allow.
    #[error("bad label name `{name}` {place}: {reason}")]
    BadLabel {
        /// The label name as written.
        name: String,
        /// The `labels` table it is in.
        place: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A file the config names cannot be read now.
    #[error("cannot read `{key}` {place}: {}: {source}", OneLine(path))]
    UnreadableFile {
        /// The key naming the file.
        key: &'static str,
        /// The table it is in.
        place: String,
        /// The file, resolved against the config file's directory.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// One of a pair of keys that only work together.
    #[error("`{present}` without `{missing}` {place}: {advice}")]
    Unpaired {
        /// The key that is set.
        present: &'static str,
        /// The key it needs.
        missing: &'static str,
        /// The table they belong in.
        place: String,
        /// What to do.
        advice: &'static str,
    },
    /// Two keys that exclude each other.
    #[error("`{first}` and `{second}` are both set {place}; keep one")]
    Conflict {
        /// The key written first.
        first: &'static str,
        /// The key written second.
        second: &'static str,
        /// The table they are in.
        place: String,
    },
    /// TLS settings for a target whose URL is not `mqtts://` or `wss://`.
    #[error("`tls` is set {place} but its url is {scheme}://; use mqtts:// or wss://")]
    TlsOnPlainUrl {
        /// The target.
        place: String,
        /// The URL's scheme.
        scheme: String,
    },
    /// Two targets with the same name.
    #[error("duplicate target name {name:?}: line {first_line} already uses it")]
    DuplicateName {
        /// The name.
        name: String,
        /// The line of the first target with that name.
        first_line: usize,
    },
    /// Two targets with the same client id: a broker would disconnect one
    /// whenever the other connects.
    #[error(
        "duplicate client id {client_id:?} {place}{}: [[target]] {other:?} at line {other_line} \
         uses it too{}",
        derived_note(*derived), derived_note(*other_derived)
    )]
    DuplicateClientId {
        /// The client id.
        client_id: String,
        /// The target that repeats it.
        place: String,
        /// Whether this target's client id comes from its name.
        derived: bool,
        /// The name of the first target with that client id.
        other: String,
        /// The line of that target's `name` or `client_id`.
        other_line: usize,
        /// Whether that target's client id comes from its name.
        other_derived: bool,
    },
    /// Two paths with the same name (by default `<from>-><to>`).
    #[error(
        "duplicate path name {name:?}: line {first_line} already uses it; give one of them a `name`"
    )]
    DuplicatePath {
        /// The name.
        name: String,
        /// The line of the first path with that name.
        first_line: usize,
    },
    /// More `[[path]]`s than [`MAX_PATHS`](super::MAX_PATHS).
    #[error("{count} paths; one mqtt-pulse process runs at most {max}")]
    TooManyPaths {
        /// How many the file has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A file with no `[[target]]`: nothing to monitor.
    #[error("no [[target]] in the file; add at least one target to monitor")]
    NoTargets,
    /// More `[[target]]`s than [`MAX_FILE_TARGETS`](super::MAX_FILE_TARGETS).
    #[error("{count} targets; a config file has at most {max}: split them over several files")]
    TooManyTargets {
        /// How many the file has.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The byte offset where each line of `text` starts: 0, then after each `\n`.
pub(crate) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(newline, _)| newline + 1))
        .collect()
}

struct Suggestion<'a>(Option<&'a str>);

impl fmt::Display for Suggestion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(suggestion) => write!(f, "; did you mean `{suggestion}`?"),
            None => Ok(()),
        }
    }
}

fn derived_note(derived: bool) -> &'static str {
    if derived {
        " (derived from its name)"
    } else {
        ""
    }
}

/// A path shown on one line: control characters in it (a newline in a file
/// name) are escaped, so an error stays the one line it promises to be.
struct OneLine<'a>(&'a std::path::Path);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for c in self.0.display().to_string().chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters_from_one() {
        let text = "ab\nçd = 1\n";
        assert_eq!(Location::of(text, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of(text, 3), Location { line: 2, column: 1 });
        // `ç` is two bytes but one column.
        assert_eq!(Location::of(text, 5), Location { line: 2, column: 2 });
        assert_eq!(Location::of(text, 999), Location { line: 3, column: 1 });
    }

    #[test]
    fn an_offset_inside_a_character_points_at_that_character() {
        assert_eq!(Location::of("ç", 1), Location { line: 1, column: 1 });
    }

    #[test]
    fn a_byte_order_mark_is_not_a_column() {
        assert_eq!(
            Location::of("\u{feff}[x]", 3),
            Location { line: 1, column: 1 }
        );
    }

    #[test]
    fn a_file_level_problem_has_no_line() {
        let error = ConfigError::Invalid {
            path: "a.toml".into(),
            location: None,
            problem: Box::new(Problem::NoTargets),
        };
        assert_eq!(
            error.to_string(),
            "a.toml: no [[target]] in the file; add at least one target to monitor"
        );
    }
}
