//! OpenTelemetry traces: a span per session, a child per statement, and
//! children of those for identity, policy, approval wait and masking.
//!
//! Spans are exported over OTLP/HTTP (protobuf) to the collector `[telemetry]`
//! names, batched by a task on the gateway's runtime so that no session ever
//! waits on the collector: a full queue drops spans, never statements. A
//! collector elsewhere is reached over https, its certificate checked
//! against the CA the config names (`CollectorTls`).
//! Without `[telemetry]` nothing is created at all — every [`Trace`] is
//! empty and costs a branch.
//!
//! Statement text in a span is masked as the audit trail's is (and withheld
//! when no masking plugin is loaded); every statement's audit record carries
//! its span's trace and span ids, so a trace and the record of the same
//! statement can be joined.
//!
//! A client that traces its own work can say which of its spans a statement
//! belongs to, the way sqlcommenter and the OpenTelemetry database
//! instrumentations that use it write it: a comment in the statement,
//! `/*traceparent='00-<trace id>-<span id>-<flags>'*/`. The statement's span
//! then links to the client's span ([`client_context`]). A link, not a
//! parent: the statement stays in its session's trace, and a client's
//! claim is never what decides whether sluice records a trace.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use opentelemetry::Context;
pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{
    SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

/// The attribute names sluice sets, from the semantic conventions where
/// they have one.
pub mod attribute {
    pub use opentelemetry_semantic_conventions::attribute::{
        CLIENT_ADDRESS, CLIENT_PORT, DB_COLLECTION_NAME, DB_NAMESPACE, DB_OPERATION_NAME,
        DB_QUERY_SUMMARY, DB_QUERY_TEXT, DB_RESPONSE_RETURNED_ROWS, DB_RESPONSE_STATUS_CODE,
        DB_SYSTEM_NAME, ENDUSER_ID, ERROR_TYPE, NETWORK_PEER_ADDRESS, NETWORK_PEER_PORT,
    };
    /// sluice's own number for the session (as in logs and the audit trail).
    pub const SESSION_ID: &str = "sluice.session.id";
    /// The statement's number in its session (as in the audit trail).
    pub const STATEMENT: &str = "sluice.statement";
    pub const TLS: &str = "sluice.tls";
    /// What the policies decided: allow, deny, error, unjudged.
    pub const VERDICT: &str = "sluice.decision.verdict";
    pub const PLUGIN: &str = "sluice.decision.plugin";
    pub const RULE: &str = "sluice.decision.rule";
    pub const APPROVAL_TICKET: &str = "sluice.approval.ticket";
    pub const APPROVAL_OUTCOME: &str = "sluice.approval.outcome";
    pub const APPROVER: &str = "sluice.approval.approver";
    pub const APPROVER_GROUP: &str = "sluice.approval.approver_group";
    /// Values the masking plugins changed in a result.
    pub const MASKED_VALUES: &str = "sluice.masking.values_masked";
    pub const IDENTITY_OUTCOME: &str = "sluice.identity.outcome";
}

/// Errors starting the exporter.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OpenTelemetry exporter: {0}")]
pub struct Error(String);

/// `[telemetry]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Where spans go: the collector's OTLP/HTTP traces URL
    /// (`http://host:4318/v1/traces`).
    pub traces_endpoint: String,
    pub service_name: String,
    /// The share of sessions traced, 0 to 1. A session's statements follow
    /// its decision.
    pub sample_ratio: f64,
    /// How long one export may take before it is abandoned.
    pub export_timeout: Duration,
    /// For an `https://` collector: the CA its certificate is checked
    /// against.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

/// The gateway's tracer, or nothing when telemetry is off.
#[derive(Clone, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracer>,
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.tracer.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Telemetry off: every span is empty.
    pub fn disabled() -> Telemetry {
        Telemetry::default()
    }

    /// Starts the OTLP exporter. Must run on the gateway's (multi-thread)
    /// runtime: the batching task and the HTTP client live there.
    pub fn start(settings: &TelemetrySettings) -> Result<Telemetry, Error> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(settings.traces_endpoint.clone())
            .with_timeout(settings.export_timeout);
        if let Some(ca_file) = &settings.tls_ca_file {
            let tls = crate::transport::verifying_connector(ca_file)
                .map_err(|error| Error(format!("[telemetry] tls_ca_file: {error}")))?;
            let mut tcp = HttpConnector::new();
            tcp.enforce_http(false); // the scheme is https; TLS comes next
            tcp.set_connect_timeout(Some(settings.export_timeout));
            exporter = exporter.with_http_client(opentelemetry_http::hyper::HyperClient::new(
                CollectorTls { tcp, tls },
                settings.export_timeout,
                None,
            ));
        }
        let exporter = exporter.build().map_err(|error| Error(error.to_string()))?;
        let processor =
            opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .with_attribute(KeyValue::new(
                        opentelemetry_semantic_conventions::attribute::SERVICE_VERSION,
                        env!("CARGO_PKG_VERSION"),
                    ))
                    .build(),
            )
            .build();
        Ok(Telemetry {
            tracer: Some(provider.tracer("sluice")),
            provider: Some(provider),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Starts a session's span, the root of its trace.
    pub fn session(&self, attributes: Vec<KeyValue>) -> Trace {
        let Some(tracer) = &self.tracer else {
            return Trace::none();
        };
        let span = tracer
            .span_builder("sluice session")
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &Context::new());
        Trace::started(tracer, Context::new().with_span(span))
    }

    /// Exports what is queued and stops the exporter; spans started after
    /// this are dropped. Blocks until the export ends (bounded by the
    /// export timeout), so it runs off the runtime's workers.
    pub async fn shutdown(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the span exporter did not stop cleanly"),
            Err(error) => tracing::warn!(%error, "the span exporter did not stop cleanly"),
        }
    }
}

/// A span in progress, or nothing (telemetry off, or the trace not
/// sampled). Ends when [`Trace::end`] is called or it is dropped.
#[derive(Default)]
pub struct Trace(Option<Active>);

struct Active {
    tracer: SdkTracer,
    cx: Context,
}

/// A span's ids as W3C trace context writes them, for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
}

impl Trace {
    pub fn none() -> Trace {
        Trace(None)
    }

    fn started(tracer: &SdkTracer, cx: Context) -> Trace {
        // An unsampled span records nothing: its children need not exist.
        if !cx.span().is_recording() {
            return Trace(None);
        }
        Trace(Some(Active {
            tracer: tracer.clone(),
            cx,
        }))
    }

    /// Whether anything is recorded: callers skip work (masking a text
    /// for an attribute, say) when not.
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Starts a child span, now.
    pub fn child(&self, name: &'static str, kind: SpanKind, attributes: Vec<KeyValue>) -> Trace {
        self.child_at(name, kind, attributes, None)
    }

    /// Starts a child span at `start` (now when `None`): work measured as
    /// it happened, reported when it is done.
    pub fn child_at(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        start: Option<SystemTime>,
    ) -> Trace {
        let Some(active) = &self.0 else {
            return Trace::none();
        };
        let mut builder = active
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes);
        if let Some(start) = start {
            builder = builder.with_start_time(start);
        }
        let span = builder.start_with_context(&active.tracer, &active.cx);
        Trace::started(&active.tracer, active.cx.with_span(span))
    }

    pub fn set(&self, attribute: KeyValue) {
        if let Some(active) = &self.0 {
            active.cx.span().set_attribute(attribute);
        }
    }

    /// Sets several attributes at once (one lock of the span, not one
    /// each).
    pub fn set_all(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(active) = &self.0 {
            active.cx.span().set_attributes(attributes);
        }
    }

    /// Links the span to another (a client's span the statement belongs
    /// to, say).
    pub fn link(&self, context: SpanContext) {
        if let Some(active) = &self.0 {
            active.cx.span().add_link(context, Vec::new());
        }
    }

    /// Renames the span (once what it is became known).
    pub fn rename(&self, name: String) {
        if let Some(active) = &self.0 {
            active.cx.span().update_name(name);
        }
    }

    /// Marks the span failed, with a short description.
    pub fn fail(&self, description: impl Into<std::borrow::Cow<'static, str>>) {
        if let Some(active) = &self.0 {
            active.cx.span().set_status(Status::error(description));
        }
    }

    pub fn ids(&self) -> Option<TraceIds> {
        let active = self.0.as_ref()?;
        let span = active.cx.span();
        let context = span.span_context();
        Some(TraceIds {
            trace_id: context.trace_id().to_string(),
            span_id: context.span_id().to_string(),
        })
    }

    pub fn end(self) {
        if let Some(active) = self.0 {
            active.cx.span().end();
        }
    }

    /// Ends the span at `end` rather than now.
    pub fn end_at(self, end: SystemTime) {
        if let Some(active) = self.0 {
            active.cx.span().end_with_timestamp(end);
        }
    }
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ids() {
            Some(ids) => write!(f, "Trace({}/{})", ids.trace_id, ids.span_id),
            None => f.write_str("Trace(none)"),
        }
    }
}

/// Connects the exporter's HTTP client to an `https://` collector: TCP by
/// hyper's own connector, then TLS, the collector's chain and host name
/// checked against the configured CA (no public roots: sluice carries none).
#[derive(Clone)]
struct CollectorTls {
    tcp: HttpConnector,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for CollectorTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CollectorTls")
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<hyper::Uri> for CollectorTls {
    type Response = TokioIo<CollectorStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            // Never plain text to a collector configured for TLS.
            if uri.scheme_str() != Some("https") {
                return Err(format!("the collector URL {uri} is not https").into());
            }
            let host = uri
                .host()
                .ok_or("the collector URL has no host")?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let stream = tcp.call(uri).await?.into_inner();
            let name = crate::transport::server_name(&host)?;
            let stream = tls.connect(name, stream).await?;
            Ok(TokioIo::new(CollectorStream(stream)))
        })
    }
}

/// A TLS connection to the collector, as hyper's client takes it.
struct CollectorStream(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl Connection for CollectorStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for CollectorStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for CollectorStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The span a client says a statement belongs to: the last
/// `traceparent='…'` in a comment of `text`, as sqlcommenter writes it, in
/// W3C trace context's version 00 (lowercase hex, ids not all zeros).
/// Anything else there is ignored: the client's word only adds a link.
///
/// Callers pass the statement's text as it is recorded — masked — so that
/// digits a masking plugin hid never reach a span through here either.
pub fn client_context(text: &str) -> Option<SpanContext> {
    const KEY: &str = "traceparent='";
    const VALUE_LEN: usize = 55; // 00-<32 hex>-<16 hex>-<2 hex>
    let start = text.rfind(KEY)? + KEY.len();
    // Inside a comment: one opened before it and not closed in between.
    let before = &text[..start];
    let opened = before.rfind("/*")?;
    if before[opened..].contains("*/") {
        return None;
    }
    let value = text.get(start..start + VALUE_LEN)?;
    if text.as_bytes().get(start + VALUE_LEN) != Some(&b'\'') {
        return None;
    }
    let mut fields = value.split('-');
    let (Some("00"), Some(trace_id), Some(span_id), Some(flags), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return None;
    };
    let lower_hex = |field: &str, len: usize| {
        field.len() == len
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !(lower_hex(trace_id, 32) && lower_hex(span_id, 16) && lower_hex(flags, 2)) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// The statement's span name, as the database conventions have it: the
/// operation and its one table (`SELECT payments.cards`), the operation
/// alone, or the database system.
pub fn statement_span_name(operation: &str, collection: Option<&str>) -> String {
    match (operation, collection) {
        ("", _) => "postgresql".to_owned(),
        (operation, Some(collection)) => format!("{operation} {collection}"),
        (operation, None) => operation.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_names_follow_the_database_conventions() {
        assert_eq!(
            statement_span_name("SELECT", Some("payments.cards")),
            "SELECT payments.cards"
        );
        assert_eq!(statement_span_name("BEGIN", None), "BEGIN");
        assert_eq!(statement_span_name("", None), "postgresql");
    }

    #[test]
    fn a_client_names_its_span_in_a_sqlcommenter_comment() {
        let trace = "0af7651916cd43dd8448eb211c80319c";
        let span = "b7ad6b7169203331";
        let context = |text: &str| {
            client_context(text).map(|c| (c.trace_id().to_string(), c.span_id().to_string()))
        };
        let expected = Some((trace.to_owned(), span.to_owned()));
        for text in [
            format!("SELECT 1 /*traceparent='00-{trace}-{span}-01'*/"),
            format!("SELECT 1 /*db_driver='psycopg',traceparent='00-{trace}-{span}-00'*/;"),
            format!("/* traceparent='00-{trace}-{span}-01' */ SELECT 1"),
        ] {
            assert_eq!(context(&text), expected, "{text}");
        }
        // Of the flags only the sampled bit is kept; the context is remote.
        let found = client_context(&format!("SELECT 1 /*traceparent='00-{trace}-{span}-03'*/"))
            .expect("a context");
        assert!(found.is_remote() && found.is_sampled());
        assert_eq!(found.trace_flags(), TraceFlags::SAMPLED);

        let zeros = |n| "0".repeat(n);
        for text in [
            // Not in a comment, or in one closed before it.
            format!("SELECT 'traceparent=''00-{trace}-{span}-01'''"),
            format!("SELECT 1 /* x */ traceparent='00-{trace}-{span}-01'"),
            // Another version, upper case, too short, all zeros,
            // unterminated.
            format!("SELECT 1 /*traceparent='01-{trace}-{span}-01'*/"),
            format!(
                "SELECT 1 /*traceparent='00-{}-{span}-01'*/",
                trace.to_uppercase()
            ),
            format!("SELECT 1 /*traceparent='00-{}-{span}-01'*/", &trace[1..]),
            format!("SELECT 1 /*traceparent='00-{}-{span}-01'*/", zeros(32)),
            format!("SELECT 1 /*traceparent='00-{trace}-{}-01'*/", zeros(16)),
            format!("SELECT 1 /*traceparent='00-{trace}-{span}-01"),
            // Digits a masking plugin hid are no hex.
            format!(
                "SELECT 1 /*traceparent='00-411111******1111{}-{span}-01'*/",
                &trace[16..]
            ),
            "SELECT 1 /*traceparent=''*/".to_owned(),
            "SELECT 1".to_owned(),
        ] {
            assert_eq!(context(&text), None, "{text}");
        }
    }

    #[test]
    fn disabled_telemetry_starts_nothing() {
        let telemetry = Telemetry::disabled();
        let session = telemetry.session(vec![KeyValue::new("a", 1)]);
        assert!(!session.is_recording());
        let child = session.child("policy", SpanKind::Internal, Vec::new());
        assert!(child.ids().is_none());
    }
}
