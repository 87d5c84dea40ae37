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
    /// Which encodings the waiting requests want, and which of those gzipped.
    wants: [Wants; Format::COUNT],
    done: watch::Sender<Option<Arc<Page>>>,
}

#[derive(Clone, Copy, Default)]
struct Wants {
    plain: bool,
    gzip: bool,
}

/// An exposition format `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// The text format, version 0.0.4: what everyone gets unless they ask
    /// for protobuf.
    Text,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages, with
    /// native histograms (feature `native-histograms`).
    #[cfg_attr(not(feature = "native-histograms"), allow(dead_code))]
    Protobuf,
}

impl Format {
    const COUNT: usize = 2;

    fn index(self) -> usize {
        self as usize
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => METRICS_CONTENT_TYPE,
            #[cfg(feature = "native-histograms")]
            Format::Protobuf => crate::exporter::metrics::protobuf::CONTENT_TYPE,
            #[cfg(not(feature = "native-histograms"))]
            Format::Protobuf => unreachable!("never negotiated without the feature"),
        }
    }
}

/// One render, as every waiting request gets it: each format someone in the
/// batch asked for, and its gzip if someone wanted that.
struct Page {
    encoded: [Option<Encoded>; Format::COUNT],
}

struct Encoded {
    plain: Bytes,
    gzip: Option<Bytes>,
}

impl Scrapes {
    pub(crate) fn new(handle: MetricsHandle) -> Self {
        Scrapes {
            handle,
            queue: Arc::default(),
        }
    }

    /// The page of a render that starts after this call, in `format`,
    /// gzipped if `gzip`; `None` if the render failed (it panicked).
    async fn page(&self, format: Format, gzip: bool) -> Option<(Bytes, bool)> {
        let mut done = {
            let mut queue = lock(&self.queue);
            let batch = queue.next.get_or_insert_with(|| Batch {
                wants: [Wants::default(); Format::COUNT],
                done: watch::Sender::new(None),
            });
            let wants = &mut batch.wants[format.index()];
            wants.plain |= !gzip;
            wants.gzip |= gzip;
            let done = batch.done.subscribe();
            if !queue.rendering {
                queue.rendering = true;
                let scrapes = self.clone();
                tokio::task::spawn_blocking(move || scrapes.render_batches());
            }
            done
        };
        let page = done.wait_for(Option::is_some).await.ok()?.clone()?;
        let encoded = page.encoded[format.index()].as_ref()?;
        Some(match (&encoded.gzip, gzip) {
            (Some(compressed), true) => (compressed.clone(), true),
            _ => (encoded.plain.clone(), false),
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
            let encode = |format: Format| {
                let wants = batch.wants[format.index()];
                if !(wants.plain || wants.gzip) {
                    return None;
                }
                let plain = self.render(format);
                let gzip = wants.gzip.then(|| gzip(&plain));
                Some(Encoded { plain, gzip })
            };
            let encoded = [encode(Format::Text), encode(Format::Protobuf)];
            batch.done.send_replace(Some(Arc::new(Page { encoded })));
        }
    }

    fn render(&self, format: Format) -> Bytes {
        match format {
            Format::Text => Bytes::from(self.handle.render()),
            #[cfg(feature = "native-histograms")]
            Format::Protobuf => Bytes::from(self.handle.render_protobuf()),
            #[cfg(not(feature = "native-histograms"))]
            Format::Protobuf => unreachable!("never negotiated without the feature"),
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

/// `GET /metrics`: protobuf to a scraper that prefers it, text to everyone else.
pub(crate) async fn metrics(State(scrapes): State<Scrapes>, headers: HeaderMap) -> Response {
    let format = negotiate(&headers);
    match scrapes.page(format, accepts_gzip(&headers)).await {
        Some((body, gzipped)) => {
            let mut response = (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    ),
                    (header::VARY, HeaderValue::from_static(VARY)),
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

/// What the answer varies with.
const VARY: &str = if cfg!(feature = "native-histograms") {
    "accept, accept-encoding"
} else {
    "accept-encoding"
};

/// The format to answer in: protobuf when `Accept` names the delimited
/// `io.prometheus.client.MetricFamily` exposition with a quality at least that
/// of every text type it accepts (Prometheus with native histograms sends it
/// first, at q=0.8 in 2.42), text otherwise — also when the header is absent,
/// unreadable, or the build has no protobuf.
fn negotiate(headers: &HeaderMap) -> Format {
    if !cfg!(feature = "native-histograms") {
        return Format::Text;
    }
    let mut protobuf: f32 = 0.0;
    let mut text: f32 = 0.0;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let media_type = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let (mut quality, mut proto, mut delimited) = (1.0f32, false, false);
            for param in parts {
                let Some((name, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "q" => quality = value.parse().unwrap_or(1.0),
                    "proto" => proto = value == "io.prometheus.client.MetricFamily",
                    "encoding" => delimited = value.eq_ignore_ascii_case("delimited"),
                    _ => {}
                }
            }
            match media_type.as_str() {
                "application/vnd.google.protobuf" if proto && delimited => {
                    protobuf = protobuf.max(quality);
                }
                "text/plain" | "application/openmetrics-text" | "text/*" | "*/*" => {
                    text = text.max(quality);
                }
                _ => {}
            }
        }
    }
    if protobuf > 0.0 && protobuf >= text {
        Format::Protobuf
    } else {
        Format::Text
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

    fn format_for(accept: &str) -> Format {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        negotiate(&headers)
    }

    #[cfg(feature = "native-histograms")]
    #[test]
    fn protobuf_only_for_a_scraper_that_prefers_the_delimited_metric_family() {
        // What Prometheus 2.42 sends with --enable-feature=native-histograms.
        let prometheus = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                          encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.5,\
                          text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(format_for(prometheus), Format::Protobuf);
        assert_eq!(
            format_for(
                "application/vnd.google.protobuf; proto=\"io.prometheus.client.MetricFamily\"; encoding=delimited"
            ),
            Format::Protobuf
        );
        // Without the feature flag Prometheus asks for text only.
        assert_eq!(
            format_for(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            Format::Text
        );
        // Text preferred, another message, another encoding, or refused.
        assert_eq!(
            format_for(
                "text/plain;q=0.9,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5"
            ),
            Format::Text
        );
        assert_eq!(
            format_for("application/vnd.google.protobuf;proto=other.Message;encoding=delimited"),
            Format::Text
        );
        assert_eq!(
            format_for(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
            ),
            Format::Text
        );
        assert_eq!(
            format_for(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0"
            ),
            Format::Text
        );
    }

    #[test]
    fn text_for_a_browser_curl_or_no_accept_at_all() {
        assert_eq!(negotiate(&HeaderMap::new()), Format::Text);
        assert_eq!(format_for("*/*"), Format::Text);
        assert_eq!(
            format_for("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Format::Text
        );
        assert_eq!(format_for("garbage;;;=,=q"), Format::Text);
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
