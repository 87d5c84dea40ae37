//! `/metrics` for many scrapers at once: one render serves every request
//! waiting for it, compressed at most once, and `/metrics` answers are counted
//! in the `promhttp_metric_handler_*` families.
//!
//! It owns the render queue of one [`metrics_route`](super::metrics_route). It must never
//! serve a request a page rendered before the request arrived — a scrape
//! reflects every event dispatched before it, as [`MetricsHandle::render`]
//! promises — and never render on an async worker thread.
//!
//! Why: a render of 10,000 clients is ~10 ms of CPU and ~20 MB; rendering it
//! once per request made a scrape storm cost N renders (and N gzips) and had to
//! be capped with `503`s. Here N waiting scrapes cost one render and one gzip,
//! and the page's bytes are shared, not copied, by every response.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::watch;

use super::METRICS_CONTENT_TYPE;
use crate::exporter::metrics::{MetricsHandle, ScrapeStats};
use crate::sync::lock;

/// The renders of `/metrics` shared by the routes of one router.
#[derive(Clone)]
pub(crate) struct Scrapes {
    handle: MetricsHandle,
    queue: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    /// Whether a blocking thread is rendering (and will look at `next` when done).
    rendering: bool,
    /// The requests that arrived since the running render started: the next
    /// render is theirs.
    next: Option<Batch>,
}

struct Batch {
    gzip: bool,
    done: watch::Sender<Option<Arc<Page>>>,
}

/// One render, as every waiting request gets it.
struct Page {
    text: Bytes,
    gzip: Option<Bytes>,
}

impl Scrapes {
    pub(crate) fn new(handle: MetricsHandle) -> Self {
        Scrapes {
            handle,
            queue: Arc::default(),
        }
    }

    /// The page of a render that starts after this call, gzipped if `gzip`;
    /// `None` if the render failed (it panicked).
    async fn page(&self, gzip: bool) -> Option<(Bytes, bool)> {
        let mut done = {
            let mut queue = lock(&self.queue);
            let batch = queue.next.get_or_insert_with(|| Batch {
                gzip: false,
                done: watch::Sender::new(None),
            });
            batch.gzip |= gzip;
            let done = batch.done.subscribe();
            if !queue.rendering {
                queue.rendering = true;
                let scrapes = self.clone();
                tokio::task::spawn_blocking(move || scrapes.render_batches());
            }
            done
        };
        let page = done.wait_for(Option::is_some).await.ok()?.clone()?;
        Some(match (&page.gzip, gzip) {
            (Some(compressed), true) => (compressed.clone(), true),
            _ => (page.text.clone(), false),
        })
    }

    /// Renders for each batch that is waiting, until none is.
    fn render_batches(&self) {
        // If a render panics, the batch's sender is dropped, so its requests
        // get `None`, and the queue is left for the next request to restart.
        struct OnPanic<'a>(&'a Mutex<Queue>);
        impl Drop for OnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut queue = lock(self.0);
                    queue.rendering = false;
                    queue.next = None;
                }
            }
        }
        let _on_panic = OnPanic(&self.queue);
        loop {
            let batch = {
                let mut queue = lock(&self.queue);
                match queue.next.take() {
                    Some(batch) => batch,
                    None => {
                        // Under the same lock a request checks `rendering`
                        // under, so none can queue a batch nobody renders.
                        queue.rendering = false;
                        return;
                    }
                }
            };
            let text = Bytes::from(self.handle.render());
            let gzip = batch.gzip.then(|| gzip(&text));
            batch.done.send_replace(Some(Arc::new(Page { text, gzip })));
        }
    }
}

/// Fastest gzip: a 10,000-client page still shrinks ~15× at a fraction of the
/// default level's CPU.
fn gzip(text: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(text.len() / 8), Compression::fast());
    // Writing into a Vec cannot fail.
    encoder.write_all(text).expect("gzip into memory");
    Bytes::from(encoder.finish().expect("gzip into memory"))
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(scrapes): State<Scrapes>, headers: HeaderMap) -> Response {
    match scrapes.page(accepts_gzip(&headers)).await {
        Some((body, gzipped)) => {
            let mut response = (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(METRICS_CONTENT_TYPE),
                    ),
                    (header::VARY, HeaderValue::from_static("accept-encoding")),
                ],
                body,
            )
                .into_response();
            if gzipped {
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        }
        None => {
            tracing::error!("rendering /metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed\n",
            )
                .into_response()
        }
    }
}

/// Whether `Accept-Encoding` allows gzip: named (or `x-gzip`) with a nonzero
/// quality, or not named and allowed by `*` (RFC 9110, section 12.5.3).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut named = None;
    let mut any = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let quality = parts
                .filter_map(|param| {
                    let (name, value) = param.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| value.trim().parse::<f32>().ok())?
                })
                .next()
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                named = Some(quality > 0.0);
            } else if coding == "*" {
                any = Some(quality > 0.0);
            }
        }
    }
    named.or(any).unwrap_or(false)
}

/// Middleware on `/metrics`: counts its answers by status code, and the
/// requests in flight, as promhttp's handler instrumentation does.
pub(crate) async fn count(
    State(stats): State<Option<ScrapeStats>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(stats) = stats else {
        return next.run(request).await;
    };
    // A guard, so a request dropped mid-way (client gone, timeout) leaves the gauge.
    struct InFlight(prometheus::IntGauge);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    stats.in_flight.inc();
    let _in_flight = InFlight(stats.in_flight.clone());
    let response = next.run(request).await;
    stats
        .requests
        .with_label_values(&[response.status().as_str()])
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Events;
    use crate::exporter::metrics::MetricsBuilder;
    use axum::body::Body;
    use prometheus::core::{Collector, Desc};
    use prometheus::proto::MetricFamily;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;
    use tower::ServiceExt as _;

    /// A collector that shows how many times it was collected, and holds the
    /// collection after it is armed until the test lets it go.
    struct RenderNumber {
        gauge: prometheus::IntGauge,
        renders: AtomicI64,
        armed: Arc<AtomicBool>,
        entered: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Collector for RenderNumber {
        fn desc(&self) -> Vec<&Desc> {
            self.gauge.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let number = self.renders.fetch_add(1, Ordering::SeqCst) + 1;
            if self.armed.swap(false, Ordering::SeqCst) {
                self.entered.lock().unwrap().send(()).unwrap();
                self.release.lock().unwrap().recv().unwrap();
            }
            self.gauge.set(number);
            self.gauge.collect()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn scrapes_waiting_during_a_render_share_the_next_one() {
        const LATECOMERS: usize = 50;
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let registry = prometheus::Registry::new();
        let armed = Arc::new(AtomicBool::new(false));
        registry
            .register(Box::new(RenderNumber {
                gauge: prometheus::IntGauge::new("test_render_number", "Which render this is.")
                    .unwrap(),
                renders: AtomicI64::new(0),
                armed: Arc::clone(&armed),
                entered: Mutex::new(entered_tx),
                release: Mutex::new(release_rx),
            }))
            .unwrap();
        let events = Events::new();
        let (handle, _consumer) = MetricsBuilder::new(&events)
            .with_registry(registry)
            .with_process_metrics(false)
            .build()
            .unwrap();
        let stats = handle.scrape_stats().unwrap().clone();
        let router = super::super::router(handle);
        let scrape = || {
            let router = router.clone();
            tokio::spawn(async move {
                let request = Request::get("/metrics").body(Body::empty()).unwrap();
                let response = router.oneshot(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let page = String::from_utf8(body.to_vec()).unwrap();
                page.lines()
                    .find_map(|line| line.strip_prefix("test_render_number "))
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
            })
        };

        armed.store(true, Ordering::SeqCst);
        let first = scrape();
        tokio::task::spawn_blocking(move || entered.recv().unwrap())
            .await
            .unwrap();
        let latecomers: Vec<_> = (0..LATECOMERS).map(|_| scrape()).collect();
        // On this single-threaded runtime a scrape is queued in the same poll
        // that counts it in flight, so once all are counted all are queued.
        while stats.in_flight.get() < 1 + LATECOMERS as i64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).unwrap();

        let first = first.await.unwrap();
        for latecomer in latecomers {
            // Not the render already running when they arrived: the next one, all of them.
            assert_eq!(latecomer.await.unwrap(), first + 1);
        }
        assert_eq!(stats.requests.with_label_values(&["200"]).get(), 51);
        assert_eq!(stats.in_flight.get(), 0);
    }

    fn accept(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        accepts_gzip(&headers)
    }

    #[test]
    fn gzip_is_used_only_when_the_client_allows_it() {
        assert!(accept(&["gzip"]));
        assert!(accept(&["GZIP"]));
        assert!(accept(&["x-gzip"]));
        assert!(accept(&["br, gzip;q=0.5"]));
        assert!(accept(&["deflate", "gzip"]));
        assert!(accept(&["*"]));
        assert!(accept(&["identity, *;q=0.1"]));
        assert!(!accept(&[]));
        assert!(!accept(&["identity"]));
        assert!(!accept(&["br, deflate"]));
        assert!(!accept(&["gzip;q=0"]));
        assert!(!accept(&["gzip; q=0.000"]));
        assert!(!accept(&["*, gzip;q=0"]));
        assert!(!accept(&["*;q=0"]));
        // An unreadable quality counts as the default, 1.
        assert!(accept(&["gzip;q=high"]));
    }
}
