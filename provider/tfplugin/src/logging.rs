//! Logging through `tracing` to stderr, one JSON object per line in the form go-hclog
//! writes and Terraform's plugin client parses:
//! `{"@level":"debug","@message":"…","@module":"provider.x","@timestamp":"…", "key":"value"}`.
//!
//! Terraform relays those lines into its own log, filtered by `TF_LOG_PROVIDER` (or
//! `TF_LOG`). The plugin inherits Terraform's environment, so the same variables decide
//! here which events are formatted at all: nothing is formatted when logging is off.

use std::io::Write as _;

use serde_json::{Map, Value as Json};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::prelude::*;

/// The level Terraform's environment asks for: `TF_LOG_PROVIDER`, else `TF_LOG`.
///
/// Unset, empty or `OFF` disables logging; `JSON` and unrecognised values mean trace, as
/// in Terraform itself.
pub fn level_from_env(lookup: impl Fn(&str) -> Option<String>) -> LevelFilter {
    let value = lookup("TF_LOG_PROVIDER")
        .filter(|v| !v.is_empty())
        .or_else(|| lookup("TF_LOG").filter(|v| !v.is_empty()));
    match value.map(|v| v.trim().to_ascii_uppercase()).as_deref() {
        None | Some("OFF") => LevelFilter::OFF,
        Some("ERROR") => LevelFilter::ERROR,
        Some("WARN") => LevelFilter::WARN,
        Some("INFO") => LevelFilter::INFO,
        Some("DEBUG") => LevelFilter::DEBUG,
        Some(_) => LevelFilter::TRACE,
    }
}

/// A `tracing` layer that writes hclog-style JSON lines to stderr.
#[derive(Debug, Clone, Default)]
pub struct HclogJsonLayer {
    _private: (),
}

impl HclogJsonLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Formats one event as an hclog JSON line (without newline). Public for testing and for
/// callers that route logs elsewhere.
pub fn format_event(
    level: &Level,
    target: &str,
    timestamp: time::OffsetDateTime,
    fields: Map<String, Json>,
) -> String {
    let mut object = Map::new();
    let level = match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    };
    object.insert("@level".into(), Json::from(level));
    let mut fields = fields;
    let message = fields.remove("message").unwrap_or(Json::from(""));
    let message = match message {
        Json::String(s) => s,
        other => other.to_string(),
    };
    object.insert("@message".into(), Json::from(message));
    object.insert("@module".into(), Json::from(module_name(target)));
    object.insert("@timestamp".into(), Json::from(hclog_timestamp(timestamp)));
    for (key, value) in fields {
        // Keys starting with '@' are hclog's own; keep user fields from shadowing them.
        let key = if key.starts_with('@') {
            format!("_{key}")
        } else {
            key
        };
        object.insert(key, value);
    }
    Json::Object(object).to_string()
}

/// `provider.<crate>` from a tracing target such as `my_provider::resources::file`.
fn module_name(target: &str) -> String {
    let first = target.split("::").next().unwrap_or(target);
    if first.is_empty() {
        "provider".to_owned()
    } else {
        format!("provider.{first}")
    }
}

/// go-hclog's timestamp layout `2006-01-02T15:04:05.000000Z07:00`; Terraform's parser
/// rejects lines with another layout, so exactly six fractional digits, in UTC.
fn hclog_timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

struct JsonVisitor<'a>(&'a mut Map<String, Json>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Json::from(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Json::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Json::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Json::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Json::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Json::from(value));
    }
}

impl<S: Subscriber> Layer<S> for HclogJsonLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let metadata = event.metadata();
        let line = format_event(
            metadata.level(),
            metadata.target(),
            time::OffsetDateTime::now_utc(),
            fields,
        );
        let mut stderr = std::io::stderr().lock();
        // A closed stderr must not take the provider down; the log line is lost either way.
        let _ = writeln!(stderr, "{line}");
    }
}

/// Transport crates whose debug/trace output is about HTTP/2 frames and TLS records, not
/// about the provider; they are capped at WARN so `TF_LOG=trace` stays readable and cheap.
const TRANSPORT_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "rustls",
    "tokio_rustls",
];

/// The per-target filter for `level`.
pub fn filter_for(level: LevelFilter) -> Targets {
    let capped = level.min(LevelFilter::WARN);
    TRANSPORT_TARGETS
        .iter()
        .fold(Targets::new().with_default(level), |targets, target| {
            targets.with_target(*target, capped)
        })
}

/// Installs the hclog JSON layer as the global subscriber, at the level from the
/// environment. Does nothing when logging is off or a global subscriber already exists.
/// Records of the `log` crate are not bridged (they would only add transport noise).
pub fn init_from_env() {
    let level = level_from_env(|name| std::env::var(name).ok());
    if level == LevelFilter::OFF {
        return;
    }
    let subscriber =
        tracing_subscriber::registry().with(HclogJsonLayer::new().with_filter(filter_for(level)));
    let _ = tracing::subscriber::set_global_default(subscriber);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_selection() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(level_from_env(env(&[])), LevelFilter::OFF);
        assert_eq!(
            level_from_env(env(&[("TF_LOG", "trace")])),
            LevelFilter::TRACE
        );
        assert_eq!(
            level_from_env(env(&[("TF_LOG", "JSON")])),
            LevelFilter::TRACE
        );
        assert_eq!(
            level_from_env(env(&[("TF_LOG", "trace"), ("TF_LOG_PROVIDER", "warn")])),
            LevelFilter::WARN
        );
        assert_eq!(level_from_env(env(&[("TF_LOG", "off")])), LevelFilter::OFF);
        assert_eq!(
            level_from_env(env(&[("TF_LOG", "DEBUG")])),
            LevelFilter::DEBUG
        );
    }

    #[test]
    fn transport_noise_is_capped() {
        let filter = filter_for(LevelFilter::TRACE);
        assert!(filter.would_enable("my_provider", &Level::TRACE));
        assert!(filter.would_enable("tfplugin::server", &Level::DEBUG));
        assert!(!filter.would_enable("h2::codec", &Level::DEBUG));
        assert!(!filter.would_enable("rustls::server", &Level::INFO));
        assert!(filter.would_enable("rustls::server", &Level::WARN));
        let filter = filter_for(LevelFilter::ERROR);
        assert!(!filter.would_enable("h2", &Level::WARN));
    }

    #[test]
    fn line_has_hclog_shape() {
        let mut fields = Map::new();
        fields.insert("message".into(), Json::from("configured"));
        fields.insert("count".into(), Json::from(3));
        fields.insert("@level".into(), Json::from("spoof"));
        let ts =
            time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let line = format_event(&Level::DEBUG, "my_provider::res", ts, fields);
        let parsed: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["@level"], "debug");
        assert_eq!(parsed["@message"], "configured");
        assert_eq!(parsed["@module"], "provider.my_provider");
        assert_eq!(parsed["@timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(parsed["count"], 3);
        assert_eq!(parsed["_@level"], "spoof");
        assert!(!line.contains('\n'));
    }
}
