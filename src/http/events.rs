//! `GET /events`: the events hub as Server-Sent Events, selected as
//! [`Events::register`] selects — one client id or every client, one or more
//! kinds.
//!
//! It owns the query's meaning, the events' names and JSON, and each stream's
//! life: one hub subscription with its own bounded queue, the present state
//! first, a `dropped` event when its queue overflowed, and its end when the
//! [`Server`](super::Server) shuts down. It must never make the hub wait for a
//! slow reader (the subscription drops and counts, as every subscription does)
//! and never hold more than [`MAX_EVENT_STREAMS`] streams open.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::events::{
    ClientFilter, ClientId, ClientState, DEFAULT_QUEUE_CAPACITY, Event, EventKind, Events,
    FailureReason, Message, Status, Subscription,
};

/// How many `/events` streams may be open at once (the clones of one route
/// share the cap); more are answered `503` with `Retry-After` at once. Each
/// open stream is a hub subscription whose queue holds up to
/// [`EVENT_STREAM_QUEUE`] messages (about 64 KiB when full), so the cap bounds
/// that memory to about 16 MiB, and the copies dispatch makes per event.
pub const MAX_EVENT_STREAMS: usize = 256;

/// How many hub messages one `/events` stream queues for a reader that has
/// not taken them yet; past that, its new events are dropped — for that
/// stream only — counted in `mqtt_pulse_events_dropped_total`, and announced
/// to the reader with a `dropped` event.
pub const EVENT_STREAM_QUEUE: usize = DEFAULT_QUEUE_CAPACITY;

/// The route's state: the hub and the cap on open streams.
#[derive(Clone)]
pub(super) struct EventStreams {
    events: Events,
    permits: Arc<Semaphore>,
}

impl EventStreams {
    pub(super) fn new(events: &Events) -> Self {
        Self {
            events: events.clone(),
            permits: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        }
    }
}

/// Set by [`Server`](super::Server) on every request: becomes `true` when the
/// server starts shutting down, which ends every open stream so none holds
/// the graceful shutdown.
#[derive(Clone, Debug)]
pub(crate) struct Closing(pub(crate) watch::Receiver<bool>);

/// `GET /events?client_id=…&kind=…`.
pub(super) async fn event_stream(
    State(streams): State<EventStreams>,
    RawQuery(query): RawQuery,
    closing: Option<Extension<Closing>>,
) -> Response {
    let selection = match Selection::parse(query.as_deref().unwrap_or("")) {
        Ok(selection) => selection,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("400 {error}\n")).into_response(),
    };
    let Ok(permit) = Arc::clone(&streams.permits).try_acquire_owned() else {
        tracing::debug!(
            limit = MAX_EVENT_STREAMS,
            "refused: too many open /events streams"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            format!("503 already {MAX_EVENT_STREAMS} open /events streams; try again\n"),
        )
            .into_response();
    };
    let mut subscription = streams.events.subscribe_with_capacity(EVENT_STREAM_QUEUE);
    for kind in &selection.kinds {
        subscription.register(selection.filter.clone(), *kind);
    }
    // Read after registering: the hub records a status before it queues the
    // event, so no change falls between the present state and the stream (one
    // may show in both).
    let present = if selection.kinds.contains(&EventKind::Status) {
        streams
            .events
            .clients()
            .iter()
            .filter(|state| selection.covers(&state.client_id))
            .map(present_state)
            .collect()
    } else {
        VecDeque::new()
    };
    let closing = closing.map(|Extension(Closing(mut closing))| {
        Box::pin(async move {
            // A sender gone (the server finished) ends the stream too.
            let _ = closing.wait_for(|closing| *closing).await;
        }) as Pin<Box<dyn Future<Output = ()> + Send>>
    });
    let stream = EventStream {
        present,
        subscription,
        closing,
        reported_drops: 0,
        _permit: permit,
    };
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What a request asked for, in [`Events::register`]'s terms.
#[derive(Debug, PartialEq, Eq)]
struct Selection {
    filter: ClientFilter,
    kinds: Vec<EventKind>,
}

impl Selection {
    /// `client_id` at most once (`*` or absent: every client); `kind` any
    /// number of times, each a kind or a comma-separated list (absent: every
    /// kind). Anything else is refused with a message naming it.
    fn parse(query: &str) -> Result<Self, String> {
        let mut filter = None;
        let mut kinds = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "client_id" if filter.is_some() => {
                    return Err(
                        "client_id given twice: one client id, or * for every client".to_owned(),
                    );
                }
                "client_id" if value == "*" => filter = Some(ClientFilter::Any),
                "client_id" => filter = Some(ClientFilter::Id(ClientId::from(&*value))),
                "kind" => {
                    for name in value.split(',').filter(|name| !name.is_empty()) {
                        let kind = EventKind::ALL
                            .into_iter()
                            .find(|kind| kind.as_str() == name)
                            .ok_or_else(|| {
                                format!("unknown kind `{}`; one of {}", name, kind_names())
                            })?;
                        if !kinds.contains(&kind) {
                            kinds.push(kind);
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "unknown query parameter `{other}`; use client_id and kind"
                    ));
                }
            }
        }
        if kinds.is_empty() {
            kinds = EventKind::ALL.to_vec();
        }
        Ok(Self {
            filter: filter.unwrap_or(ClientFilter::Any),
            kinds,
        })
    }

    fn covers(&self, client_id: &ClientId) -> bool {
        match &self.filter {
            ClientFilter::Any => true,
            ClientFilter::Id(id) => id == client_id,
        }
    }
}

fn kind_names() -> String {
    EventKind::ALL.map(EventKind::as_str).join(", ")
}

/// One stream: the present state, then the subscription's messages, with a
/// `dropped` event before the next message whenever its queue overflowed.
struct EventStream {
    present: VecDeque<SseEvent>,
    subscription: Subscription,
    closing: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The subscription's drops already announced to the reader.
    reported_drops: u64,
    _permit: OwnedSemaphorePermit,
}

impl futures_core::Stream for EventStream {
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(closing) = &mut this.closing
            && closing.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        if let Some(event) = this.present.pop_front() {
            return Poll::Ready(Some(Ok(event)));
        }
        // Drops happen only while the queue is full, so every one is seen
        // here before the reader has taken what is queued.
        let dropped = this.subscription.stats().dropped;
        if dropped > this.reported_drops {
            let new = dropped - this.reported_drops;
            this.reported_drops = dropped;
            return Poll::Ready(Some(Ok(SseEvent::default()
                .event("dropped")
                .data(format!("{{\"dropped\":{new},\"total\":{dropped}}}")))));
        }
        Pin::new(&mut this.subscription)
            .poll_next(cx)
            .map(|message| message.map(|message| Ok(message_event(&message))))
    }
}

/// A client's present state as the `status` event that brought it about,
/// stamped with the time it did.
fn present_state(state: &ClientState) -> SseEvent {
    status_event(&state.client_id, state.status, state.reason, state.since)
}

// Within the crate the match is exhaustive: a new kind of event must be
// given its JSON here before the crate compiles.
fn message_event(message: &Message) -> SseEvent {
    match message.event {
        Event::Status(status) => {
            status_event(&message.client_id, status, message.reason, message.at)
        }
        Event::PingResponse(rtt) => {
            let mut data = String::with_capacity(128);
            data.push_str("{\"client_id\":");
            push_json_string(&mut data, message.client_id.as_str());
            data.push_str(",\"event\":\"ping_response\",\"rtt_seconds\":");
            data.push_str(&format_seconds(rtt));
            push_at(&mut data, message.at);
            SseEvent::default().event("ping_response").data(data)
        }
        Event::RoundTrip(ref trip) => {
            let mut data = String::with_capacity(160);
            data.push_str("{\"client_id\":");
            push_json_string(&mut data, message.client_id.as_str());
            data.push_str(",\"event\":\"round_trip\"");
            if let Some(path) = &trip.path {
                data.push_str(",\"path\":");
                push_json_string(&mut data, path);
            }
            data.push_str(",\"seq\":");
            data.push_str(&trip.seq.to_string());
            data.push_str(",\"outcome\":\"");
            data.push_str(trip.outcome.as_str());
            data.push('"');
            if let Some(rtt) = trip.outcome.rtt() {
                data.push_str(",\"rtt_seconds\":");
                data.push_str(&format_seconds(rtt));
            }
            push_at(&mut data, message.at);
            SseEvent::default().event("round_trip").data(data)
        }
    }
}

fn status_event(
    client_id: &ClientId,
    status: Status,
    reason: Option<FailureReason>,
    at: SystemTime,
) -> SseEvent {
    let mut data = String::with_capacity(128);
    data.push_str("{\"client_id\":");
    push_json_string(&mut data, client_id.as_str());
    data.push_str(",\"event\":\"status\",\"status\":\"");
    data.push_str(status.as_str());
    data.push('"');
    if let Some(reason) = reason {
        data.push_str(",\"reason\":\"");
        data.push_str(reason.as_str());
        data.push('"');
    }
    push_at(&mut data, at);
    SseEvent::default().event("status").data(data)
}

/// `,"at":<Unix seconds>}`, to the microsecond; a time before 1970 (a broken
/// clock) as 0.
fn push_at(data: &mut String, at: SystemTime) {
    data.push_str(",\"at\":");
    data.push_str(&format_seconds(
        at.duration_since(UNIX_EPOCH).unwrap_or_default(),
    ));
    data.push('}');
}

fn format_seconds(duration: Duration) -> String {
    format!("{}.{:06}", duration.as_secs(), duration.subsec_micros())
}

/// `text` as a JSON string. Client ids come from configuration and hosts, so
/// quotes, backslashes and control characters are escaped; an SSE data line
/// then cannot be split either (no raw newline survives).
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_selects_one_client_or_every_client_and_one_or_more_kinds() {
        let parse = |query| Selection::parse(query);
        assert_eq!(
            parse(""),
            Ok(Selection {
                filter: ClientFilter::Any,
                kinds: EventKind::ALL.to_vec()
            })
        );
        assert_eq!(
            parse("client_id=plant%20a&kind=status"),
            Ok(Selection {
                filter: ClientFilter::from("plant a"),
                kinds: vec![EventKind::Status]
            })
        );
        assert_eq!(
            parse("client_id=*&kind=ping_response&kind=status,ping_response"),
            Ok(Selection {
                filter: ClientFilter::Any,
                kinds: vec![EventKind::PingResponse, EventKind::Status]
            })
        );
        assert_eq!(
            parse("kind=pings"),
            Err("unknown kind `pings`; one of status, ping_response, round_trip".to_owned())
        );
        assert_eq!(
            parse("client=a"),
            Err("unknown query parameter `client`; use client_id and kind".to_owned())
        );
        assert_eq!(
            parse("client_id=a&client_id=b"),
            Err("client_id given twice: one client id, or * for every client".to_owned())
        );
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_line_breaks() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}e\u{2028}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001e\u2028é""#);
    }

    #[test]
    fn times_and_round_trips_are_seconds_to_the_microsecond() {
        assert_eq!(format_seconds(Duration::from_micros(153)), "0.000153");
        assert_eq!(format_seconds(Duration::from_millis(1_250)), "1.250000");
    }
}
