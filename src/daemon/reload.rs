//! What asks for a reload: `POST /-/reload` and SIGHUP.
//!
//! It owns turning those into requests to the supervisor and its answer into
//! an HTTP response; it must never reload by itself — the supervisor does,
//! one reload at a time.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::{mpsc, oneshot};

use super::supervisor::ReloadSummary;

/// A reload asked for over HTTP, answered when it is done.
pub(super) struct ReloadRequest {
    pub(super) reply: oneshot::Sender<Result<ReloadSummary, String>>,
}

pub(super) fn reload_router(requests: mpsc::Sender<ReloadRequest>) -> Router {
    Router::new()
        .route("/-/reload", post(reload))
        .with_state(requests)
}

async fn reload(State(requests): State<mpsc::Sender<ReloadRequest>>) -> (StatusCode, String) {
    let (reply, answer) = oneshot::channel();
    if requests.send(ReloadRequest { reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match answer.await {
        Ok(Ok(summary)) => (StatusCode::OK, format!("config reloaded: {summary}\n")),
        Ok(Err(error)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("config reload failed: {error}\n"),
        ),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
    }
}

/// SIGHUP as a stream of `()`; empty (never yields) if the handler cannot be
/// installed, which is logged.
pub(super) fn hangup_signals() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    // A reload already pending covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(error) => tracing::warn!(%error, "cannot handle SIGHUP; reload with POST /-/reload"),
    }
    rx
}
