//! Serving a router: the [`Server`] builder and [`run`](super::run)'s engine.
//!
//! It owns the accept loop, the layers every request passes (tracing,
//! request timeout, body limit and, with a web config, its checks), the
//! header-read timeout and graceful shutdown. Plain HTTP is served by hyper
//! directly (HTTP/1 only, as the exporter-toolkit does without TLS); TLS, with
//! the `web-config` feature, by axum-server with the web config's acceptor.
//! It must never let a stalled client hold shutdown past [`REQUEST_TIMEOUT`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::middleware::from_fn;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower_http::add_extension::AddExtension;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

#[cfg(feature = "web-config")]
use super::WebConfig;
use super::events::Closing;
use super::{HEADER_READ_TIMEOUT, REQUEST_TIMEOUT, limits};

/// Serves a router with the limits described in the [module docs](super),
/// over plain HTTP or, with a [`WebConfig`] (feature `web-config`), as it
/// says: TLS, basic auth, response headers, rate limit.
///
/// Build one per listener; clones of one `WebConfig` share the certificate
/// state and the basic-auth memory.
///
#[cfg_attr(feature = "web-config", doc = "[`WebConfig`]: WebConfig")]
#[cfg_attr(not(feature = "web-config"), doc = "[`WebConfig`]: crate#features")]
#[derive(Debug, Clone)]
#[must_use]
pub struct Server {
    #[cfg(feature = "web-config")]
    web_config: WebConfig,
    header_read_timeout: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// Plain HTTP, no auth, [`HEADER_READ_TIMEOUT`].
    pub fn new() -> Self {
        Server {
            #[cfg(feature = "web-config")]
            web_config: WebConfig::default(),
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }

    /// TLS, basic auth, response headers and rate limit as `web_config` says.
    /// Defaults to [`WebConfig::default()`]: plain HTTP without auth.
    #[cfg(feature = "web-config")]
    pub fn with_web_config(mut self, web_config: WebConfig) -> Self {
        self.web_config = web_config;
        self
    }

    /// How long a client may take to send a request's headers, to complete
    /// the TLS handshake, to send its first request, or to start the next one
    /// on an idle keep-alive connection. Defaults to [`HEADER_READ_TIMEOUT`].
    /// For HTTP/2 (TLS with ALPN `h2`), the handshake and the first request
    /// are bounded; later streams rely on the request timeout.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Serves `router` on `listener` until `shutdown` completes, then stops
    /// accepting, lets the requests in flight finish — for at most
    /// [`REQUEST_TIMEOUT`] — and returns.
    ///
    /// # Errors
    ///
    /// The listener's error if its address cannot be read.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let address = listener.local_addr()?;
        // Tells the open `/events` streams to end when shutdown starts: they
        // would otherwise hold it for the whole grace period.
        let (closing, closing_seen) = tokio::sync::watch::channel(false);
        let app = self.protect(router.layer(Extension(Closing(closing_seen))));
        let shutdown = async move {
            shutdown.await;
            let _ = closing.send(true);
        };
        #[cfg(feature = "web-config")]
        {
            let (tls, basic_auth) = (self.web_config.is_tls(), self.web_config.has_basic_auth());
            tracing::info!(%address, tls, basic_auth, "serving HTTP");
            if tls {
                return self.serve_tls(listener, app, shutdown, address).await;
            }
        }
        #[cfg(not(feature = "web-config"))]
        tracing::info!(%address, tls = false, basic_auth = false, "serving HTTP");
        serve_plain(listener, app, self.header_read_timeout, shutdown, address).await;
        Ok(())
    }

    /// The router with the web config's checks and the server's limits around
    /// it, outermost first: tracing, response headers, request timeout, body
    /// limit, rate limit, basic auth. The web config's checks read its policy
    /// on every request, so an update applies to the next one.
    fn protect(&self, router: Router) -> Router {
        #[cfg(feature = "web-config")]
        let router = self.web_config.check_requests(router);
        let router =
            router
                .layer(from_fn(limits::limit_body))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    REQUEST_TIMEOUT,
                ));
        #[cfg(feature = "web-config")]
        let router = self.web_config.set_configured_headers(router);
        router.layer(TraceLayer::new_for_http())
    }

    /// HTTPS with the web config's certificates, through axum-server (which
    /// bounds the handshake and, for HTTP/2, the first request).
    #[cfg(feature = "web-config")]
    async fn serve_tls(
        self,
        listener: TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
        address: SocketAddr,
    ) -> io::Result<()> {
        let Server {
            web_config,
            header_read_timeout,
        } = self;
        let Some(tls) = web_config.tls.clone() else {
            return Ok(());
        };
        let handle = axum_server::Handle::<SocketAddr>::new();
        let mut server = axum_server::Server::<SocketAddr>::from_listener(listener)
            .handle(handle.clone())
            .first_request_timeout(header_read_timeout)
            .accept_error_handler(|remote, error| {
                // Failed handshakes, clients gone before their first request:
                // normal on an open port, not worth more than a debug line.
                tracing::debug!(?remote, %error, "connection dropped before its first request");
            });
        server
            .http_builder()
            .http1()
            .header_read_timeout(header_read_timeout);
        let server = server.acceptor(tls.acceptor(header_read_timeout));
        // The client's address, for basic auth's failure budget.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let serving = async move {
            if web_config.http2 {
                server.serve(app).await
            } else {
                server.http1_only().serve(app).await
            }
        };
        tokio::pin!(serving);
        tokio::select! {
            served = &mut serving => return served,
            () = shutdown => {}
        }
        tracing::info!(%address, "shutting down the HTTP server");
        handle.graceful_shutdown(None);
        tokio::select! {
            served = &mut serving => served,
            () = tokio::time::sleep(REQUEST_TIMEOUT) => {
                tracing::warn!(%address, "connections still open after the grace period; closing them");
                handle.shutdown();
                serving.await
            }
        }
    }
}

/// Plain HTTP/1 with hyper: every connection in its own task, with the
/// header-read timeout (which hyper starts as soon as it waits for a request,
/// so it also closes a connection that never sends one, or idles between
/// requests). After `shutdown`, stops accepting, lets every connection finish
/// its request, and aborts what is left after [`REQUEST_TIMEOUT`].
async fn serve_plain(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    address: SocketAddr,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather
                    // than spin, and keep serving the connections there are.
                    tracing::warn!(%address, %error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connections so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        // The client's address as `ConnectInfo`, for basic auth's failure
        // budget (as axum's `into_make_service_with_connect_info` does).
        let service = AddExtension::new(app.clone(), ConnectInfo(remote));
        let connection =
            http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection closed with an error");
            }
        });
    }
    // Refuse new connections from now on rather than let them queue.
    drop(listener);
    tracing::info!(%address, "shutting down the HTTP server");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(REQUEST_TIMEOUT) => {
            tracing::warn!(%address, "connections still open after the grace period; closing them");
        }
    }
    connections.shutdown().await;
}
