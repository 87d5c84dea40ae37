//! The `healthcheck` subcommand: `GET /-/healthy` on a running daemon.
//!
//! It owns one request to this machine's own mqtt-pulse and its verdict; it
//! must never be used to reach another machine (it skips certificate checks).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};

use super::DaemonError;
use super::client::connect;
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
    // The server is this machine's own mqtt-pulse: which certificate it
    // shows is not the question, whether it answers is.
    let any_certificate = TlsOptions {
        insecure_skip_verify: true,
        ..Default::default()
    };
    let mut sender = connect(target, tls.then_some((&any_certificate, "localhost"))).await?;
    let request = Request::get("/-/healthy")
        .header("host", target)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status())
}
