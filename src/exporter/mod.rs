//! Exporters: subscribers of the events hub that turn events into metrics.
