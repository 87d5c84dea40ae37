//! HTTP server (placeholder).
