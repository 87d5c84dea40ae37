//! Reading the files a connection names — the password file and the CA,
//! certificate and key PEM files — so that none can block or explode.
//!
//! * Only regular files: a FIFO, a directory or a device (`/dev/zero`) is
//!   refused. The file is opened non-blocking and checked again after opening,
//!   so even a file swapped for a FIFO in between cannot hold the reader.
//! * A size cap: a password file holds at most [`MAX_PASSWORD_BYTES`] of
//!   password (what MQTT's 16-bit length carries) plus a line ending, a PEM
//!   file at most [`MAX_PEM_FILE_BYTES`]. A larger file is refused without
//!   being read whole.
//! * A time limit: async code reads on a blocking thread and gives up after
//!   [`READ_TIMEOUT`] (a hung network file system), so no task that handles
//!   signals, reloads or a connection waits on a file.
//!
//! These files are read at every connect attempt (see
//! [`ConnectionOptions`](super::ConnectionOptions)): a rotated password or
//! certificate is used from the next attempt on.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use super::OptionsError;

/// The longest password MQTT can carry: a 16-bit length.
pub const MAX_PASSWORD_BYTES: usize = 65_535;
/// The largest password file: the longest password and a `\r\n`.
pub const MAX_PASSWORD_FILE_BYTES: u64 = MAX_PASSWORD_BYTES as u64 + 2;
/// The largest CA, certificate or key file: 4 MiB, twenty times a full
/// system CA bundle.
pub const MAX_PEM_FILE_BYTES: u64 = 4 << 20;
/// The largest config file: 16 MiB, a thousand bytes and more for each of
/// the most targets a file may have.
#[cfg(feature = "daemon")]
pub const MAX_CONFIG_FILE_BYTES: u64 = 16 << 20;
/// How long reading the files of one connect attempt may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a file is used for: its size cap and how errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A password file.
    Password,
    /// A PEM file (CA certificates, a certificate chain, a private key).
    Pem,
    /// The daemon's config file.
    #[cfg(feature = "daemon")]
    Config,
}

impl FileKind {
    /// The most bytes a file of this kind may have.
    pub(crate) fn max_bytes(self) -> u64 {
        match self {
            FileKind::Password => MAX_PASSWORD_FILE_BYTES,
            FileKind::Pem => MAX_PEM_FILE_BYTES,
            #[cfg(feature = "daemon")]
            FileKind::Config => MAX_CONFIG_FILE_BYTES,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            FileKind::Password => "a password file",
            FileKind::Pem => "a PEM file",
            #[cfg(feature = "daemon")]
            FileKind::Config => "a config file",
        }
    }
}

/// Checks that `path` is a regular file within `kind`'s size cap and can be
/// opened for reading, without reading it and without blocking on it.
///
/// # Errors
/// The operating system's error, or one saying what the file is instead of a
/// regular file, or how large it is.
#[cfg(feature = "daemon")]
pub(crate) fn check_readable(path: &Path, kind: FileKind) -> io::Result<()> {
    open(path, kind).map(drop)
}

/// Reads the whole of `path` under the rules of [`check_readable`].
///
/// # Errors
/// As [`check_readable`], and a file that grew past the cap while read.
pub(crate) fn read(path: &Path, kind: FileKind) -> io::Result<Vec<u8>> {
    let (file, metadata) = open(path, kind)?;
    let max = kind.max_bytes();
    // Within the cap, so the conversion cannot truncate.
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64, kind));
    }
    Ok(bytes)
}

fn open(path: &Path, kind: FileKind) -> io::Result<(File, Metadata)> {
    // Before opening: opening a FIFO for reading would wait for a writer.
    check_metadata(&std::fs::metadata(path)?, kind)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // Again on what was opened, in case the path was replaced in between.
    let metadata = file.metadata()?;
    check_metadata(&metadata, kind)?;
    Ok((file, metadata))
}

fn check_metadata(metadata: &Metadata, kind: FileKind) -> io::Result<()> {
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        // The config file's message has always been the OS error of reading
        // a directory; the files it names say "is a directory".
        #[cfg(feature = "daemon")]
        if kind == FileKind::Config {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        return Err(io::ErrorKind::IsADirectory.into());
    }
    if !file_type.is_file() {
        let what = if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "something"
        };
        let message = format!("is {what}, not a regular file");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    if metadata.len() > kind.max_bytes() {
        return Err(too_large(metadata.len(), kind));
    }
    Ok(())
}

fn too_large(len: u64, kind: FileKind) -> io::Error {
    let message = format!(
        "is {len} bytes, more than the {} bytes {} may have",
        kind.max_bytes(),
        kind.noun()
    );
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The password in the file at `path`, without one trailing line ending.
///
/// # Errors
/// [`OptionsError::PasswordFile`] if the file cannot be read under the rules
/// above, is not UTF-8, or holds a password longer than MQTT can carry. The
/// error never contains the password.
pub(crate) fn read_password(path: &Path) -> Result<String, OptionsError> {
    password_in(path).map_err(|source| OptionsError::PasswordFile {
        path: path.to_owned(),
        source,
    })
}

/// Checks that the file at `path` holds a password MQTT can carry, as
/// [`read_password`] would read it now: the config reader calls it so that
/// `--config.check` and a reload report a password one byte too long with
/// the place of its `password_file` key, not only when a connection reads it.
/// A password file is at most [`MAX_PASSWORD_FILE_BYTES`], so reading it
/// whole is cheap.
///
/// # Errors
/// As [`check_readable`], and a password that is not UTF-8 or too long.
#[cfg(feature = "daemon")]
pub(crate) fn check_password_file(path: &Path) -> io::Result<()> {
    password_in(path).map(drop)
}

fn password_in(path: &Path) -> io::Result<String> {
    let bytes = read(path, FileKind::Password)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the password is not UTF-8"))?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.len() > MAX_PASSWORD_BYTES {
        let message = format!(
            "the password is {} bytes long; MQTT carries at most {MAX_PASSWORD_BYTES}",
            password.len()
        );
        return Err(io::Error::new(io::ErrorKind::InvalidData, message));
    }
    Ok(password.to_owned())
}

/// Runs `read` (which reads files) on a blocking thread, giving up after
/// [`READ_TIMEOUT`]: for async code, which must not wait on a file.
///
/// # Errors
/// `read`'s error, or [`OptionsError::ReadTimedOut`].
pub(crate) async fn off_the_runtime<T, F>(read: F) -> Result<T, OptionsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, OptionsError> + Send + 'static,
{
    match tokio::time::timeout(READ_TIMEOUT, tokio::task::spawn_blocking(read)).await {
        Ok(Ok(result)) => result,
        // The closure panicked: no file reader here panics, but say so anyway.
        Ok(Err(_)) => Err(OptionsError::ReadTimedOut(Duration::ZERO)),
        Err(_) => Err(OptionsError::ReadTimedOut(READ_TIMEOUT)),
    }
}

/// Runs `read` on a thread of its own, giving up after [`READ_TIMEOUT`]: for
/// code without a runtime (`--config.check`). A read that never ends leaves
/// its thread behind; the caller goes on.
///
/// # Errors
/// `read`'s error, or [`OptionsError::ReadTimedOut`].
#[cfg(feature = "daemon")]
pub(crate) fn on_a_thread<T, F>(read: F) -> Result<T, OptionsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, OptionsError> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("mqtt-pulse-read".into())
        .spawn(move || {
            let _ = tx.send(read());
        });
    if spawned.is_err() {
        return Err(OptionsError::ReadTimedOut(Duration::ZERO));
    }
    rx.recv_timeout(READ_TIMEOUT)
        .map_err(|_| OptionsError::ReadTimedOut(READ_TIMEOUT))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mqtt-pulse-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let path = temp("fifo");
        let _ = std::fs::remove_file(&path);
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let error = read(&path, FileKind::Password).unwrap_err();
        assert_eq!(error.to_string(), "is a FIFO, not a regular file");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn devices_and_directories_are_refused() {
        let error = read(Path::new("/dev/zero"), FileKind::Pem).unwrap_err();
        assert_eq!(
            error.to_string(),
            "is a character device, not a regular file"
        );
        let error = check_readable(Path::new("/"), FileKind::Pem).unwrap_err();
        assert_eq!(error.to_string(), "is a directory");
    }

    #[test]
    fn a_password_longer_than_mqtt_carries_is_refused_and_not_shown() {
        let path = temp("long-password");
        std::fs::write(&path, format!("{}\n", "p".repeat(MAX_PASSWORD_BYTES))).unwrap();
        assert_eq!(read_password(&path).unwrap().len(), MAX_PASSWORD_BYTES);
        std::fs::write(&path, format!("{}\n", "p".repeat(MAX_PASSWORD_BYTES + 1))).unwrap();
        let error = read_password(&path).unwrap_err().to_string();
        assert!(
            error.ends_with("the password is 65536 bytes long; MQTT carries at most 65535"),
            "{error}"
        );
        assert!(!error.contains("ppp"));
        std::fs::write(&path, "p".repeat(70_000)).unwrap();
        let error = read_password(&path).unwrap_err().to_string();
        assert!(
            error.ends_with("is 70000 bytes, more than the 65537 bytes a password file may have"),
            "{error}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
