//! The daemon's own HTTP/1.1 client: `healthcheck` and `watch` ask a running
//! mqtt-pulse, over plain TCP or TLS (hyper's client connection; no pool, one
//! request per connection).
//!
//! It owns opening the connection and its TLS trust; it must never pick the
//! trust itself — each caller says whom it trusts — nor log a request's
//! headers (they may carry credentials).

use axum::body::Body;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::connection::TlsOptions;

/// A connection to `address` (`host:port`) ready for requests, over TLS with
/// `tls` when given, checking the server's certificate against `server_name`
/// (a DNS name or an IP address) as `tls` says. Its I/O runs on a spawned
/// task that ends with the connection.
///
/// # Errors
/// The reason, in words, if the connection, the TLS handshake or the HTTP
/// handshake fails, or `tls` cannot be built (a bad CA file).
pub(super) async fn connect(
    address: &str,
    tls: Option<(&TlsOptions, &str)>,
) -> Result<SendRequest<Body>, String> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let Some((tls, server_name)) = tls else {
        return handshake(tcp).await;
    };
    let config = tls.client_config().map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("{server_name:?} is not a server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    handshake(stream).await
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Body>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}
