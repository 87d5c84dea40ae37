//! What keeps one client from taking the exporter down: caps on concurrent
//! requests and a request body limit. (The web config's rate limit is in
//! `web::rate_limit`.)
//!
//! It owns those axum middlewares and their answers (`503`, `413`).
//! It must never wait for capacity — an excess request is answered at once —
//! and never rate-limit or cap the health endpoints, which probes poll.

use std::sync::Arc;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

/// How many `/metrics` requests may be answered at once; more are answered
/// `503` at once. Waiting scrapes share one render (see [`metrics_route`](super::metrics_route)),
/// so this bounds connections held, not CPU: room for a thousand scrapers.
pub const MAX_CONCURRENT_SCRAPES: usize = 1024;

/// How many landing pages may be rendered at once; more are answered `503` at
/// once. The page is for people, rendered per request: a table of 10,000
/// clients is milliseconds of CPU and megabytes, and eight is plenty of people.
pub const MAX_CONCURRENT_RENDERS: usize = 8;

/// The largest request body accepted; a larger one is answered `413`. No
/// endpoint reads a body (`POST /-/reload` ignores it), so this only bounds
/// what a client can make the server buffer.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// A cap on the requests one route answers at once, shared by the clones of a
/// [`router`](super::router).
#[derive(Clone, Debug)]
pub(crate) struct Cap {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Cap {
    pub(crate) fn new(limit: usize) -> Self {
        Cap {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

/// Middleware: runs the request while holding one of the cap's permits, or
/// answers `503` with `Retry-After` when all are taken.
pub(crate) async fn cap(State(cap): State<Cap>, request: Request, next: Next) -> Response {
    let Ok(_permit) = cap.permits.try_acquire() else {
        tracing::debug!(
            path = request.uri().path(),
            limit = cap.limit,
            "refused: too many concurrent requests"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            "503 too many concurrent requests; try again\n",
        )
            .into_response();
    };
    next.run(request).await
}

/// Middleware: `413` for a body over [`MAX_REQUEST_BODY`] — at once when
/// `Content-Length` says so, else after reading at most that much.
pub(crate) async fn limit_body(request: Request, next: Next) -> Response {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("413 request body larger than {MAX_REQUEST_BODY} bytes\n"),
        )
            .into_response()
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_REQUEST_BODY as u64 => too_large(),
        Some(_) => next.run(request).await,
        // No body at all: the usual GET.
        None if request.body().is_end_stream() => next.run(request).await,
        // A body of unknown length (HTTP/1 chunked, HTTP/2 without a
        // length): buffer it, up to the limit.
        None => {
            let (parts, body) = request.into_parts();
            match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
                Ok(bytes) => {
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
                Err(_) => too_large(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::{get, post};
    use tower::ServiceExt as _;

    async fn status(router: &Router, request: Request) -> StatusCode {
        router.clone().oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn requests_beyond_the_cap_are_answered_503_at_once_and_the_cap_frees_up() {
        let entered = Arc::new(Semaphore::new(0));
        // Semaphores rather than `Notify`: a permit given before the handler
        // waits is not lost.
        let release = Arc::new(Semaphore::new(0));
        let cap = Cap::new(MAX_CONCURRENT_RENDERS);
        let router = Router::new()
            .route(
                "/render",
                get({
                    let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
                    move || async move {
                        entered.add_permits(1);
                        release.acquire().await.unwrap().forget();
                        "rendered"
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(cap, super::cap));
        let get_render = || Request::get("/render").body(Body::empty()).unwrap();

        let held: Vec<_> = (0..MAX_CONCURRENT_RENDERS)
            .map(|_| tokio::spawn(router.clone().oneshot(get_render())))
            .collect();
        // Every one of them is inside the handler, holding a permit.
        let _all = entered
            .acquire_many(MAX_CONCURRENT_RENDERS as u32)
            .await
            .unwrap();
        let refused = router.clone().oneshot(get_render()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");

        release.add_permits(MAX_CONCURRENT_RENDERS);
        for request in held {
            assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
        }
        let again = tokio::spawn(router.clone().oneshot(get_render()));
        let _entered = entered.acquire().await.unwrap();
        release.add_permits(1);
        assert_eq!(again.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413_by_length_or_by_reading() {
        let router = Router::new()
            .route("/", post(|| async { "ok" }))
            .layer(axum::middleware::from_fn(limit_body));
        let with_length = |length: usize| {
            Request::post("/")
                .header(header::CONTENT_LENGTH, length)
                .body(Body::from(vec![b'x'; length]))
                .unwrap()
        };
        assert_eq!(
            status(&router, with_length(MAX_REQUEST_BODY)).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&router, with_length(MAX_REQUEST_BODY + 1)).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let chunked = |length: usize| {
            let chunks = vec![Ok::<_, std::io::Error>(vec![b'x'; length])];
            Request::post("/")
                .header(header::TRANSFER_ENCODING, "chunked")
                .body(Body::from_stream(futures_stream(chunks)))
                .unwrap()
        };
        assert_eq!(status(&router, chunked(10)).await, StatusCode::OK);
        // HTTP/2 has no chunked encoding: a body of unknown length is read up
        // to the limit all the same.
        let unknown_length = Request::post("/")
            .body(Body::from_stream(futures_stream(vec![Ok::<
                _,
                std::io::Error,
            >(
                vec![b'x'; MAX_REQUEST_BODY + 1],
            )])))
            .unwrap();
        assert_eq!(
            status(&router, unknown_length).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(&router, chunked(MAX_REQUEST_BODY + 1)).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    /// A stream of ready items, without a futures dependency.
    fn futures_stream<T: Send + Unpin + 'static>(
        items: Vec<T>,
    ) -> impl futures_core::Stream<Item = T> + Send + 'static {
        struct Items<T>(std::vec::IntoIter<T>);
        impl<T> futures_core::Stream for Items<T>
        where
            T: Unpin,
        {
            type Item = T;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<T>> {
                std::task::Poll::Ready(self.0.next())
            }
        }
        Items(items.into_iter())
    }
}
