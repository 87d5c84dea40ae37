//! HTTPS for the exporter: the rustls server config built from a web config's
//! `tls_server_config`, client-certificate policies, and following certificate
//! renewals on disk.
//!
//! It owns turning PEM files into a rustls `ServerConfig` and swapping in a new
//! one when the files change. Design: the acceptor of every new connection
//! first reads the certificate, key and client CA files (on a blocking thread,
//! one connection at a time — a few KB, cheaper than the handshake that
//! follows) and compares them with what was loaded; only when the bytes
//! differ is a new config built, which that very connection already uses.
//! Comparing contents rather than modification times cannot miss a rewrite
//! within one clock tick. A failed reload (half-written files, a key that
//! does not match) is logged and the previous config kept, and the same
//! contents are not retried until they change again. Checking per connection
//! rather than on a timer means a renewed certificate is served from the very
//! next connection, with no background task to stop.
//!
//! It must never put key material in an error or a log line (PEM parse errors
//! can quote a line of the file, so they are reported without detail), and
//! never block an async worker on the file system.

mod settings;
mod verify;

pub(crate) use settings::ClientAuthType;
pub(crate) use settings::{
    PemSource, TlsBuildError, TlsSettings, TlsVersions, kx_groups, tls12_suites,
};

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use settings::FileContents;

/// The TLS side of a web config while serving: the current rustls config,
/// the settings it was built from and what their files looked like then.
pub(crate) struct TlsServer {
    rustls: RustlsConfig,
    /// Locked while a connection checks the files, or a reload replaces it.
    loaded: tokio::sync::Mutex<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    settings: Arc<TlsSettings>,
    files: FileContents,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the settings: reading them would mean waiting for the lock.
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Reads the files and builds the first config. Blocking.
    pub(crate) fn new(settings: TlsSettings) -> Result<Self, TlsBuildError> {
        // What the files held, then the config from them: a change made in
        // between is built again on the next connection, never missed.
        let files = settings.file_contents();
        let config = settings.server_config()?;
        Ok(TlsServer {
            rustls: RustlsConfig::from_config(Arc::new(config)),
            loaded: tokio::sync::Mutex::new(Loaded {
                settings: Arc::new(settings),
                files,
            }),
        })
    }

    /// The acceptor for a listener: TLS with this config, reloading it before
    /// a handshake when the files changed, and at most `handshake_timeout`
    /// for the handshake.
    pub(crate) fn acceptor(
        self: &Arc<Self>,
        handshake_timeout: Duration,
    ) -> RustlsAcceptor<RefreshCertificates> {
        RustlsAcceptor::new(self.rustls.clone())
            .handshake_timeout(handshake_timeout)
            .acceptor(RefreshCertificates {
                tls: Arc::clone(self),
            })
    }

    /// Serves `newer`'s settings and certificate from the next connection on.
    pub(crate) async fn replace_with(&self, newer: &TlsServer) {
        let mut loaded = self.loaded.lock().await;
        // `newer` is not serving, so nothing else holds its lock.
        *loaded = newer.loaded.lock().await.clone();
        self.rustls.reload_from_config(newer.rustls.get_inner());
    }

    /// Reloads the config if a followed file changed since it was loaded.
    async fn refresh(&self) {
        // One check at a time: a burst of connections does not start a burst
        // of reloads.
        let mut loaded = self.loaded.lock().await;
        if !loaded.settings.follows_files() {
            return;
        }
        let settings = Arc::clone(&loaded.settings);
        let previous = loaded.files.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let now = settings.file_contents();
            if now == previous {
                return (now, None);
            }
            let config = settings.server_config();
            (now, Some(config))
        })
        .await;
        let web_config = loaded.settings.web_config.display().to_string();
        match checked {
            Ok((_, None)) => {}
            Ok((now, Some(Ok(config)))) => {
                self.rustls.reload_from_config(Arc::new(config));
                loaded.files = now;
                tracing::info!(%web_config, "TLS files changed; serving the new certificate");
            }
            Ok((now, Some(Err(error)))) => {
                // Not retried until the files change again.
                loaded.files = now;
                tracing::warn!(
                    %web_config,
                    %error,
                    "TLS files changed but cannot be loaded; still serving the previous certificate"
                );
            }
            Err(error) => tracing::warn!(%web_config, %error, "checking the TLS files failed"),
        }
    }
}

/// The inner acceptor: runs before the TLS handshake, so a renewed
/// certificate is used by the connection that noticed it.
#[derive(Clone)]
pub(crate) struct RefreshCertificates {
    tls: Arc<TlsServer>,
}

impl<I, S> Accept<I, S> for RefreshCertificates
where
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = I;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(I, S)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let tls = Arc::clone(&self.tls);
        Box::pin(async move {
            tls.refresh().await;
            Ok((stream, service))
        })
    }
}
