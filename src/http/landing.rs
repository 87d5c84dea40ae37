//! The landing page at `/`: the version, links to the endpoints, and one
//! table row per client the hub knows — and the script and style sheet that
//! keep that table live from `/events` in a browser.
//!
//! It owns the page's HTML and its two assets (`landing/mqtt-pulse.js`,
//! `landing/mqtt-pulse.css`, compiled into the binary: the page loads nothing
//! from anywhere else). It must never render on an async worker (the handler
//! hands the work to `spawn_blocking`), never put a value from outside (client
//! ids, brokers) on the page without escaping it, and never inline script or
//! style, which a `Content-Security-Policy` header would block.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};

use crate::events::ClientState;
use crate::exporter::metrics::{ClientSummary, MetricsHandle};

/// `GET /`: the page, rendered on a blocking thread.
pub(super) async fn landing_page(State(handle): State<MetricsHandle>) -> Response {
    let page = tokio::task::spawn_blocking(move || {
        landing_page_html(&handle.clients(), env!("CARGO_PKG_VERSION"))
    });
    match page.await {
        Ok(page) => Html(page).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering the landing page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the page failed\n",
            )
                .into_response()
        }
    }
}

/// The script that keeps the table live: EventSource on `events`, filter,
/// sort, sparklines. Plain JavaScript, no library.
const SCRIPT: &str = include_str!("landing/mqtt-pulse.js");
/// The page's style sheet, phone widths included.
const STYLE: &str = include_str!("landing/mqtt-pulse.css");

/// `GET …/mqtt-pulse.js` and `GET …/mqtt-pulse.css`: the page's assets, by
/// the last segment of the path, so the route works wherever it is mounted.
/// `no-cache`: a browser asks again (the files are small) and never runs an
/// old script against a newer page.
pub(super) async fn landing_asset(uri: Uri) -> Response {
    let (body, content_type) = match uri.path().rsplit('/').next() {
        Some("mqtt-pulse.js") => (SCRIPT, "text/javascript; charset=utf-8"),
        Some("mqtt-pulse.css") => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Where the page finds its script and style sheet, relative to itself:
/// `landing_asset` answers them (the daemon mounts it at `/static/{asset}`).
const SCRIPT_PATH: &str = "static/mqtt-pulse.js";
const STYLE_PATH: &str = "static/mqtt-pulse.css";

/// The page at `/`: version, links, and one table row per client. Every value
/// from outside (client ids, brokers) is HTML-escaped.
///
/// The table is complete without JavaScript. The served script
/// ([`SCRIPT`]) then keeps it live from `events`: each row carries what the
/// script starts from in `data-` attributes (client id, status, reason, since
/// when in Unix seconds, last RTT in seconds), and the filter box is hidden
/// here and shown by the script, as only the script makes it work. Script and style
/// are files of their own, never inline, so a `Content-Security-Policy` such
/// as `default-src 'self'` in the web config leaves the page working.
fn landing_page_html(clients: &[ClientSummary], version: &str) -> String {
    let up = clients.iter().filter(|c| c.state.status.is_up()).count();
    let mut page = String::with_capacity(2_048 + clients.len() * 384);
    let _ = write!(
        page,
        concat!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
            "<title>mqtt-pulse</title>\n",
            "<link rel=\"stylesheet\" href=\"{style}\">\n",
            "<script src=\"{script}\" defer></script>\n",
            "</head>\n<body>\n<h1>mqtt-pulse</h1>\n",
        ),
        style = STYLE_PATH,
        script = SCRIPT_PATH,
    );
    let _ = writeln!(
        page,
        "<p>MQTT 3.1.1 client-health monitor, version {}.</p>",
        escape_html(version)
    );
    page.push_str(concat!(
        "<ul class=\"links\">\n<li><a href=\"metrics\">Metrics</a></li>\n",
        "<li><a href=\"events\">Events</a> (live, Server-Sent Events)</li>\n",
        "<li><a href=\"-/healthy\">Health</a></li>\n",
        "<li><a href=\"-/ready\">Readiness</a></li>\n</ul>\n",
    ));
    let _ = write!(
        page,
        "<h2>Clients</h2>\n<p id=\"summary\">{} clients, {} up.</p>\n",
        clients.len(),
        up
    );
    page.push_str(concat!(
        "<div id=\"controls\" hidden>\n",
        "<label for=\"filter\">Filter by name</label>\n",
        "<input type=\"search\" id=\"filter\" autocomplete=\"off\" ",
        "placeholder=\"client id or broker\">\n",
        "<span id=\"shown\"></span>\n",
        "<span id=\"live\" role=\"status\">connecting…</span>\n",
        "</div>\n",
        "<p id=\"changes\" aria-live=\"polite\" aria-atomic=\"true\"></p>\n",
        "<div class=\"scroll\">\n<table id=\"clients\">\n",
        "<thead><tr><th scope=\"col\">Client id</th><th scope=\"col\">Status</th>",
        "<th scope=\"col\">Status since (UTC)</th><th scope=\"col\">Last ping RTT</th>",
        "<th scope=\"col\">Broker</th></tr></thead>\n<tbody>\n",
    ));
    for client in clients {
        let state = &client.state;
        let status = state.status;
        // Status next to the name, the broker last: on a phone the first
        // columns are what shows before scrolling. The status doubles as the
        // cell's CSS class (`up`, `down`, …); the `data-` attributes are what
        // the script starts from.
        let _ = write!(
            page,
            "<tr data-client-id=\"{}\" data-status=\"{}\" data-since=\"{}\"",
            escape_html(state.client_id.as_str()),
            status.as_str(),
            unix_seconds(state.since),
        );
        if let Some(reason) = state.reason {
            let _ = write!(page, " data-reason=\"{}\"", reason.as_str());
        }
        if let Some(rtt) = client.last_ping_rtt {
            let _ = write!(page, " data-rtt=\"{:.6}\"", rtt.as_secs_f64());
        }
        let _ = writeln!(
            page,
            "><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(state.client_id.as_str()),
            status.as_str(),
            status_text(state),
            format_utc(state.since),
            client
                .last_ping_rtt
                .map_or_else(|| "–".to_owned(), format_rtt),
            escape_html(&state.info.broker),
        );
    }
    page.push_str("</tbody>\n</table>\n</div>\n</body>\n</html>\n");
    page
}

/// `since` in Unix seconds to the millisecond, for the script; a time before
/// 1970 (a broken clock) as 0.
fn unix_seconds(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "{}.{:03}",
        since_epoch.as_secs(),
        since_epoch.subsec_millis()
    )
}

/// `up`, or `down (connection_refused)` when the hub knows why: the reason is
/// what a newcomer needs to fix it. Reasons are fixed snake_case words, never
/// text from outside.
fn status_text(state: &ClientState) -> String {
    match state.reason {
        Some(reason) => format!("{} ({reason})", state.status),
        None => state.status.to_string(),
    }
}

fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

fn format_rtt(rtt: Duration) -> String {
    if rtt < Duration::from_secs(1) {
        format!("{:.3} ms", rtt.as_secs_f64() * 1e3)
    } else {
        format!("{:.3} s", rtt.as_secs_f64())
    }
}

/// The first second httpdate cannot show: 10000-01-01 00:00:00 UTC (it
/// panics from there on).
const YEAR_10000: Duration = Duration::from_secs(253_402_300_800);

/// `YYYY-MM-DD hh:mm:ss`, UTC; times before 1970 or from the year 10000 on (a
/// broken clock) show as such.
///
/// The calendar is httpdate's (already in the tree through hyper). It prints
/// only the HTTP form, `Sun, 06 Nov 1994 08:49:37 GMT`, so the fields are
/// taken from there and the month name turned back into its number; no crate
/// in the tree prints this form.
fn format_utc(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let Ok(since_epoch) = time.duration_since(UNIX_EPOCH) else {
        return "before 1970".to_owned();
    };
    if since_epoch >= YEAR_10000 {
        return "after 9999".to_owned();
    }
    let http_date = httpdate::fmt_http_date(time);
    // The fields of `Sun, 06 Nov 1994 08:49:37 GMT`: weekday, day, month, year, time.
    let fields: Vec<&str> = http_date.split(' ').collect();
    let month = MONTHS
        .iter()
        .position(|name| *name == fields[2])
        .map_or(0, |index| index + 1);
    format!("{}-{month:02}-{} {}", fields[3], fields[1], fields[4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping_neutralises_markup_and_attribute_quotes() {
        assert_eq!(
            escape_html(r#"<script>alert('x')</script>&"q""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;q&quot;"
        );
    }

    #[test]
    fn utc_times_follow_the_calendar_across_leap_days_and_centuries() {
        let at = |seconds: u64| format_utc(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "1970-01-01 00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00"); // 2000 is a leap year
        assert_eq!(at(951_868_800), "2000-03-01 00:00:00");
        assert_eq!(at(1_709_164_799), "2024-02-28 23:59:59");
        assert_eq!(at(1_735_689_599), "2024-12-31 23:59:59");
        assert_eq!(at(4_107_542_400), "2100-03-01 00:00:00"); // 2100 is not
        assert_eq!(
            format_utc(UNIX_EPOCH - Duration::from_secs(1)),
            "before 1970"
        );
        assert_eq!(at(253_402_300_799), "9999-12-31 23:59:59");
        assert_eq!(format_utc(UNIX_EPOCH + YEAR_10000), "after 9999");
    }

    #[test]
    fn a_down_client_shows_why_next_to_its_status() {
        use crate::events::{ClientId, ClientInfo, FailureReason, Status};
        let client = |status, reason| ClientSummary {
            state: ClientState {
                client_id: ClientId::from("plant-a"),
                status,
                since: UNIX_EPOCH,
                reason,
                info: ClientInfo::new("broker:1883"),
                keep_alive: None,
            },
            last_ping_rtt: None,
        };
        let page = landing_page_html(
            &[
                client(Status::Down, Some(FailureReason::ConnectionRefused)),
                client(Status::Up, None),
            ],
            "1.0",
        );
        assert!(
            page.contains("<td class=\"down\">down (connection_refused)</td>"),
            "{page}"
        );
        assert!(page.contains("<td class=\"up\">up</td>"), "{page}");
    }

    #[test]
    fn round_trips_read_in_milliseconds_below_a_second() {
        assert_eq!(format_rtt(Duration::from_micros(153)), "0.153 ms");
        assert_eq!(format_rtt(Duration::from_millis(1_250)), "1.250 s");
    }
}
