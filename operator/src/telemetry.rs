//! Logs: one JSON object per line by default, text for a person at a terminal.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `format` is `json` or `text`, `filter` is env-filter syntax.
pub fn init(format: &str, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "text" {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    }
}
