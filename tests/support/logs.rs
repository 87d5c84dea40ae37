//! Capturing `tracing` output as text, for assertions about what is logged (and
//! what never is). Two scopes: [`capture_thread`] for one test on a
//! current-thread runtime, [`capture_process`] for tests whose tasks log from
//! runtime worker threads.

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

/// Log lines captured so far, shared with the subscriber that writes them.
#[derive(Clone, Debug, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Everything captured so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Captures every event (TRACE and up) logged on the current thread until the
/// guard drops. A test on a current-thread runtime sees its tasks' logs too.
pub fn capture_thread() -> (Logs, tracing::subscriber::DefaultGuard) {
    interest_anchor();
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// Keeps a second, always-interested dispatcher alive for the rest of the
/// process, so that tracing never caches a callsite as disabled for everyone.
///
/// Why: tracing caches each callsite's interest process-wide. With exactly
/// one dispatcher registered (a test's thread-local capture), a callsite first
/// reached on a thread without a subscriber (a sibling test) is asked of that
/// thread's default, `NoSubscriber`, and cached as "never" — and the capturing
/// test then never sees that line (tokio-rs/tracing#3611; it made
/// `a_wrong_password_is_refused_by_reason_and_never_logged` miss its warn line
/// under load). With two dispatchers registered, interest is the union over
/// all of them. The anchor has no layers: it keeps nothing and prints nothing.
fn interest_anchor() {
    static ANCHOR: OnceLock<tracing::Dispatch> = OnceLock::new();
    ANCHOR.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
}

/// Every event (DEBUG and up) of this test binary, from every thread: the
/// global subscriber, installed by the first call; later calls share it.
pub fn capture_process() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(logs.clone())
            .init();
        logs
    })
    .clone()
}
