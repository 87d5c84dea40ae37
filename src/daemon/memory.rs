//! What the daemon's allocator does with memory a reconnect storm freed.
//!
//! It owns the jemalloc tuning of the binary (feature `jemalloc`); it must
//! never pick the allocator — only the binary (and a benchmark that measures
//! what the daemon would use) installs one.

/// With jemalloc as the allocator (feature `jemalloc`, the binary's default),
/// starts its background purging: pages freed by a reconnect storm go back to
/// the OS about ten seconds later, even in a process that then sits quiet —
/// without it jemalloc purges only while it allocates. Does nothing without
/// the feature. The binary's `main` calls it; a benchmark that measures what
/// the daemon would use calls it too.
pub fn return_freed_memory() {
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        // Memory is still returned, only later (on the next allocations).
        tracing::warn!(%error, "cannot start jemalloc's background purge thread");
    }
}
