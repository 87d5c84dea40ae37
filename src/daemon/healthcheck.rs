//! The `healthcheck` subcommand: `GET /-/healthy` on a running daemon.
//!
//! It owns one request to this machine's own mqtt-pulse and its verdict; it
//! must never be used to reach another machine (it skips certificate checks).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::DaemonError;
use crate::connection::TlsOptions;

/// How long the whole check may take: connect, handshake, request, answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /-/healthy` on the daemon listening at `address` (`:port` and
/// wildcard hosts mean this machine), over TLS if `tls`.
pub(super) fn healthcheck(address: &str, tls: bool) -> Result<(), DaemonError> {
    let unhealthy = |reason: String| DaemonError::Unhealthy {
        address: address.to_owned(),
        reason,
    };
    let target = match address.rsplit_once(':') {
        Some(("" | "0.0.0.0" | "[::]", port)) => format!("127.0.0.1:{port}"),
        _ => address.to_owned(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let status = runtime
        .block_on(async { tokio::time::timeout(TIMEOUT, get_healthy(&target, tls)).await })
        .map_err(|_| unhealthy(format!("no answer within {TIMEOUT:?}")))?
        .map_err(unhealthy)?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(unhealthy(format!("answered {status}")))
    }
}

/// The status `GET /-/healthy` gets from `target` (`host:port`).
async fn get_healthy(target: &str, tls: bool) -> Result<StatusCode, String> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    if !tls {
        return get(tcp, target).await;
    }
    // The server is this machine's own mqtt-pulse: which certificate it
    // shows is not the question, whether it answers is.
    let config = TlsOptions {
        insecure_skip_verify: true,
        ..Default::default()
    }
    .client_config()
    .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    get(stream, target).await
}

/// One HTTP/1.1 `GET /-/healthy` over `stream`.
async fn get<S>(stream: S, host: &str) -> Result<StatusCode, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get("/-/healthy")
        .header("host", host)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status())
}
