//! What operators watch: spans exported over OTLP to a receiver the test
//! runs (the real exporter, the real protocol), and the admin port's
//! metrics, health and readiness.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::Value;
use sluice::plugin::builtin::test_guests as guest;
use sluice_tests::{TestEnv, code_and_message, eventually, http_request};

const PAN: &str = "4111111111111111";
/// The span of a client that traces its own work, as it names it in a
/// statement's sqlcommenter comment.
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// An OTLP/HTTP receiver: every span of every export request, and the
/// service name each came with.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::start_with(None).await
    }

    /// A receiver behind TLS with `certs`' server certificate.
    async fn start_tls(certs: &sluice_tests::TestCerts) -> Receiver {
        let acceptor = sluice::transport::server_acceptor(&sluice::config::ListenTls {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
        })
        .unwrap()
        .acceptor;
        Receiver::start_with(Some(acceptor)).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let received = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let received = received.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let received = received.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(export(request, &received).await)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let io = hyper_util::rt::TokioIo::new(tcp);
                            let _ = http.serve_connection(io, service).await;
                        }
                        Some(tls) => {
                            // A client that does not trust the certificate
                            // ends here, with nothing received.
                            let Ok(stream) = tls.accept(tcp).await else {
                                return;
                            };
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            spans,
            _task: task,
        }
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }
}

/// Answers one export request as a collector does.
async fn export(
    request: hyper::Request<hyper::body::Incoming>,
    received: &Mutex<Vec<(String, Span)>>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let status = |code: u16| {
        let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
        *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
        response
    };
    let protobuf = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|t| t == "application/x-protobuf");
    if request.uri().path() != "/v1/traces" || request.method() != hyper::Method::POST || !protobuf
    {
        return status(400);
    }
    let Ok(body) = request.into_body().collect().await else {
        return status(400);
    };
    let Ok(export) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return status(400);
    };
    let mut received = received.lock().unwrap();
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(AnyValue::StringValue(name)) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            received.extend(scope_spans.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(
        ExportTraceServiceResponse::default().encode_to_vec(),
    )));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

/// A span attribute's value as text.
fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        AnyValue::StringValue(text) => Some(text.clone()),
        AnyValue::IntValue(n) => Some(n.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_error(span: &Span) -> bool {
    span.status.as_ref().is_some_and(|s| s.code == 2)
}

/// The shipped masker, the deny-rule policy (denying `forbidden`, holding
/// statements on `orders` for the `dba` group), the test approval plugin
/// with `alice` to answer for `dba`, and the audit trail.
fn watched_config(extra: &str) -> String {
    format!(
        "[audit]\nfile = \"audit/audit.jsonl\"\nfsync = \"batch\"\n\n{extra}\n\
         [approvals.approvers]\nalice = {{ principal = \"alice\", groups = [\"dba\"] }}\n\n\
         [[plugins]]\nname = \"pans\"\nhook = \"masking\"\npath = \"builtin:luhn-masker\"\n\n\
         [[plugins]]\nname = \"rules\"\nhook = \"policy\"\npath = \"{}\"\n\
         [plugins.config]\ndeny_words = [\"forbidden\"]\ndeny_kinds = []\napproval_words = [\"orders\"]\n\n\
         [[plugins]]\nname = \"approvers\"\nhook = \"approval\"\npath = \"{}\"\n",
        guest::GUEST_DENY_RULE,
        guest::GUEST_APPROVAL,
    )
}

/// Runs an approved statement: held until `alice` approves its ticket.
async fn approved(env: &TestEnv, client: &Arc<tokio_postgres::Client>, sql: &'static str) {
    let held = {
        let client = client.clone();
        tokio::spawn(async move { client.simple_query(sql).await })
    };
    let shared = env.gateway.shared.clone();
    let mut ticket = None;
    let opened = eventually(Duration::from_secs(10), || {
        ticket = shared.approvals.pending().into_iter().next();
        std::future::ready(ticket.is_some())
    })
    .await;
    assert!(opened, "no approval ticket was opened");
    let plugins = shared.plugins.current();
    shared
        .approvals
        .interaction(&plugins, &format!("approve {} alice", ticket.unwrap().id))
        .await
        .unwrap();
    held.await.unwrap().expect("the approved statement runs");
}

/// A session's spans arrive at an OTLP receiver as one trace: the session
/// (a server span with the principal), identity under it, a client span
/// per statement named and attributed by the database conventions (masked
/// text, operation, table), with policy, approval wait and masking under
/// the statements that had them; a denied statement marked failed with its
/// rule. The audit records carry the same trace and span ids, and no span
/// holds a card number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_traced_as_one_tree_joined_to_its_audit_records() {
    let receiver = Receiver::start().await;
    let config = watched_config(&format!(
        "[telemetry]\notlp_endpoint = \"http://{}\"\nservice_name = \"sluice-under-test\"\n",
        receiver.addr
    ));
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    let client = Arc::new(env.connect("agent").await);
    client
        .simple_query(&format!("SELECT '{PAN}' AS card"))
        .await
        .unwrap();
    let rows = client
        .query(
            &format!(
                "SELECT id, pan FROM cards WHERE id = $1 \
                 /*db_driver='tokio-postgres',traceparent='00-{CLIENT_TRACE}-{CLIENT_SPAN}-01'*/"
            ),
            &[&1i64],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let denied = client.simple_query("SELECT 'forbidden'").await.unwrap_err();
    assert_eq!(code_and_message(&denied).0, "42501");
    approved(&env, &client, "SELECT count(*) FROM orders").await;
    drop(client);
    // Shutting down exports what is queued.
    let trail = env.config_path.with_file_name("audit").join("audit.jsonl");
    let database = env.database.clone();
    env.gateway.shutdown().await;

    let spans = receiver.spans();
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "sluice-under-test")
    );
    let spans: Vec<Span> = spans.into_iter().map(|(_, span)| span).collect();
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let children = |parent: &Span| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.parent_span_id == parent.span_id)
            .collect()
    };

    let sessions = named("sluice session");
    assert_eq!(sessions.len(), 1, "{spans:#?}");
    let session = sessions[0];
    assert!(session.parent_span_id.is_empty(), "the session is the root");
    assert_eq!(session.kind, SpanKind::Server as i32);
    assert_eq!(attr(session, "enduser.id").as_deref(), Some("agent"));
    assert_eq!(attr(session, "db.namespace"), Some(database.clone()));
    assert_eq!(
        attr(session, "client.address").as_deref(),
        Some("127.0.0.1")
    );
    assert!(
        spans.iter().all(|s| s.trace_id == session.trace_id),
        "one trace"
    );

    let identity = named("identity");
    assert_eq!(identity.len(), 1);
    assert_eq!(identity[0].parent_span_id, session.span_id);
    assert_eq!(
        attr(identity[0], "sluice.identity.outcome").as_deref(),
        Some("authenticated")
    );

    let statements: Vec<&Span> = children(session)
        .into_iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(statements.len(), 4, "{statements:#?}");
    for statement in &statements {
        assert_eq!(
            attr(statement, "db.system.name").as_deref(),
            Some("postgresql")
        );
        assert_eq!(attr(statement, "enduser.id").as_deref(), Some("agent"));
        assert_eq!(
            attr(statement, "db.operation.name").as_deref(),
            Some("SELECT")
        );
        let policy: Vec<_> = children(statement)
            .into_iter()
            .filter(|c| c.name == "policy")
            .collect();
        assert_eq!(
            policy.len(),
            1,
            "every statement was judged: {statement:#?}"
        );
    }
    let by_text = |needle: &str| -> &Span {
        statements
            .iter()
            .find(|s| attr(s, "db.query.text").is_some_and(|t| t.contains(needle)))
            .unwrap_or_else(|| panic!("no statement span with {needle:?}: {statements:#?}"))
    };

    // The card number in the text is masked; the rows were masked in a
    // burst timed as a child span.
    let literal = by_text("411111******1111");
    assert_eq!(
        attr(literal, "db.response.returned_rows").as_deref(),
        Some("1")
    );
    assert!(children(literal).iter().any(|c| c.name == "masking"));
    assert!(literal.links.is_empty(), "{:?}", literal.links);

    let cards = by_text("FROM cards");
    assert_eq!(cards.name, "SELECT cards");
    assert_eq!(attr(cards, "db.collection.name").as_deref(), Some("cards"));
    assert!(!is_error(cards));
    // The client's span it named: linked, the statement still in the
    // session's trace.
    let linked: Vec<(String, String)> = cards
        .links
        .iter()
        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
        .collect();
    assert_eq!(linked, [(CLIENT_TRACE.to_owned(), CLIENT_SPAN.to_owned())]);
    assert_eq!(cards.trace_id, session.trace_id);

    let denied = by_text("forbidden");
    assert!(is_error(denied));
    assert_eq!(
        attr(denied, "sluice.decision.verdict").as_deref(),
        Some("deny")
    );
    assert!(attr(denied, "sluice.decision.rule").is_some());
    assert_eq!(
        attr(denied, "db.response.status_code").as_deref(),
        Some("42501")
    );

    let held = by_text("FROM orders");
    let waits: Vec<_> = children(held)
        .into_iter()
        .filter(|c| c.name == "approval wait")
        .collect();
    assert_eq!(waits.len(), 1, "{:#?}", children(held));
    assert_eq!(
        attr(waits[0], "sluice.approval.outcome").as_deref(),
        Some("approved")
    );
    assert_eq!(
        attr(waits[0], "sluice.approval.approver").as_deref(),
        Some("alice")
    );
    assert_eq!(
        attr(waits[0], "sluice.approval.approver_group").as_deref(),
        Some("dba")
    );

    // No raw card number in any span, nor in a link's ids.
    let exported = format!("{spans:?}");
    assert!(!exported.contains(PAN), "a card number reached a span");
    for link in spans.iter().flat_map(|span| &span.links) {
        assert!(
            !hex(&link.trace_id).contains(PAN),
            "a card number in a link"
        );
    }

    // The audit records name the same spans.
    let records = sluice::audit::read::read(&trail).unwrap().records;
    let start = records
        .iter()
        .find(|r| r["event"] == "session_start")
        .unwrap();
    assert_eq!(start["trace_id"], Value::from(hex(&session.trace_id)));
    assert_eq!(start["span_id"], Value::from(hex(&session.span_id)));
    for statement in &statements {
        let span_id = hex(&statement.span_id);
        let record = records
            .iter()
            .find(|r| r["event"] == "statement" && r["span_id"] == span_id.as_str())
            .unwrap_or_else(|| panic!("no audit record for span {span_id}"));
        assert_eq!(record["trace_id"], Value::from(hex(&statement.trace_id)));
        assert_eq!(
            record["statement"].to_string(),
            attr(statement, "sluice.statement").unwrap()
        );
    }
    // Every record of the session is joined to its trace: outcomes to
    // their statement's span, the end to the session's.
    let mine: Vec<&Value> = records
        .iter()
        .filter(|r| r["session"] == start["session"])
        .collect();
    assert!(mine.len() >= 10, "{mine:#?}");
    for record in &mine {
        assert_eq!(
            record["trace_id"],
            Value::from(hex(&session.trace_id)),
            "{record}"
        );
    }
    let statement_spans: Vec<String> = statements.iter().map(|s| hex(&s.span_id)).collect();
    let outcomes: Vec<&&Value> = mine.iter().filter(|r| r["event"] == "outcome").collect();
    assert_eq!(outcomes.len(), 4, "{outcomes:#?}");
    for outcome in outcomes {
        let span = outcome["span_id"].as_str().unwrap_or_default();
        assert!(statement_spans.iter().any(|id| id == span), "{outcome}");
    }
    let end = mine.iter().find(|r| r["event"] == "session_end").unwrap();
    assert_eq!(end["span_id"], Value::from(hex(&session.span_id)));
}

/// A refused login's record names the span of the session it would have
/// been.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_is_joined_to_its_trace() {
    let receiver = Receiver::start().await;
    let config = watched_config(&format!(
        "[telemetry]\notlp_endpoint = \"http://{}\"\n",
        receiver.addr
    ));
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    let mut wrong = env.config("analyst");
    wrong.password("not the token");
    sluice_tests::connect(&wrong)
        .await
        .expect_err("a wrong password is refused");
    let trail = env.config_path.with_file_name("audit").join("audit.jsonl");
    env.gateway.shutdown().await;

    let spans: Vec<Span> = receiver.spans().into_iter().map(|(_, span)| span).collect();
    let session = spans
        .iter()
        .find(|s| s.name == "sluice session")
        .expect("the refused session's span");
    let records = sluice::audit::read::read(&trail).unwrap().records;
    let failed = records
        .iter()
        .find(|r| r["event"] == "login_failed")
        .expect("the failed login is on the record");
    assert_eq!(failed["trace_id"], Value::from(hex(&session.trace_id)));
    assert_eq!(failed["span_id"], Value::from(hex(&session.span_id)));
}

/// Sampling at 0 exports nothing and puts no trace ids in the trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_sessions_export_nothing() {
    let receiver = Receiver::start().await;
    let config = watched_config(&format!(
        "[telemetry]\notlp_endpoint = \"http://{}/v1/traces\"\nsample_ratio = 0.0\n",
        receiver.addr
    ));
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    let client = env.connect("analyst").await;
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    let trail = env.config_path.with_file_name("audit").join("audit.jsonl");
    env.gateway.shutdown().await;
    assert!(receiver.spans().is_empty());
    let records = sluice::audit::read::read(&trail).unwrap().records;
    assert!(records.iter().any(|r| r["event"] == "statement"));
    assert!(records.iter().all(|r| r.get("trace_id").is_none()));
}

/// A table's name is the client's text: one named like a card number is
/// masked in the span's name and collection, as the statement's text is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_named_like_a_card_number_is_masked_in_spans() {
    let receiver = Receiver::start().await;
    let config = watched_config(&format!(
        "[telemetry]\notlp_endpoint = \"http://{}\"\n",
        receiver.addr
    ));
    let env = TestEnv::start_with_config(&config, false).await.unwrap();
    let client = env.connect("analyst").await;
    // No such table: the server refuses it, after the span was named.
    let missing = client
        .simple_query(&format!("SELECT 1 FROM \"{PAN}\""))
        .await
        .unwrap_err();
    assert_eq!(code_and_message(&missing).0, "42P01");
    // A statement the parser does not read: its text masked all the same.
    client
        .simple_query(&format!("CREATE {PAN} x"))
        .await
        .unwrap_err();
    drop(client);
    env.gateway.shutdown().await;

    let spans: Vec<Span> = receiver.spans().into_iter().map(|(_, span)| span).collect();
    let exported = format!("{spans:?}");
    assert!(!exported.contains(PAN), "a raw card number was exported");
    let statement = spans
        .iter()
        .find(|s| attr(s, "db.operation.name").as_deref() == Some("SELECT"))
        .expect("the statement's span");
    assert_eq!(
        attr(statement, "db.collection.name").as_deref(),
        Some("411111******1111")
    );
    assert_eq!(statement.name, "SELECT 411111******1111");
}

/// To a collector elsewhere, over https: spans arrive when the collector's
/// certificate was signed by the CA the config names (and is for the host
/// the URL names); a collector whose certificate another CA signed gets
/// nothing — the gateway serves its statements all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_https_to_a_collector_the_configured_ca_vouches_for() {
    let certs = sluice_tests::TestCerts::generate();
    let traced_session = async |receiver: &Receiver| {
        let config = watched_config(&format!(
            "[telemetry]\notlp_endpoint = \"https://localhost:{}\"\ntls_ca_file = \"{}\"\n\
             export_timeout_ms = 2000\n",
            receiver.addr.port(),
            certs.ca.display()
        ));
        let env = TestEnv::start_with_config(&config, false).await.unwrap();
        let client = env.connect("analyst").await;
        client.simple_query("SELECT 1").await.unwrap();
        drop(client);
        env.gateway.shutdown().await;
    };

    let collector = Receiver::start_tls(&certs).await;
    traced_session(&collector).await;
    let names: Vec<String> = collector
        .spans()
        .into_iter()
        .map(|(_, span)| span.name)
        .collect();
    assert!(names.iter().any(|n| n == "sluice session"), "{names:?}");
    assert!(names.iter().any(|n| n == "SELECT"), "{names:?}");

    let impostor = Receiver::start_tls(&sluice_tests::TestCerts::generate()).await;
    traced_session(&impostor).await;
    assert!(impostor.spans().is_empty());
}

/// A metric's value from the Prometheus text, by its exact series.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The admin port answers `/metrics` with the gateway's counters as
/// traffic moved them — sessions, statements by verdict, approvals, failed
/// logins, masked values, plugin calls and their latency, audit writes —
/// and `/healthz` and `/readyz`; other paths and methods are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_serves_metrics_health_and_readiness() {
    let env = TestEnv::start_with_config(
        &watched_config("[admin]\nlisten = \"127.0.0.1:0\"\n"),
        false,
    )
    .await
    .unwrap();
    let admin = env.gateway.admin_addr.expect("the admin port is served");
    let client = Arc::new(env.connect("agent").await);
    client.simple_query("SELECT 1").await.unwrap();
    client
        .simple_query(&format!("SELECT '{PAN}' AS a, '{PAN}' AS b"))
        .await
        .unwrap();
    client.simple_query("SELECT 'forbidden'").await.unwrap_err();
    approved(&env, &client, "SELECT count(*) FROM orders").await;
    let mut wrong = env.config("analyst");
    wrong.password("not-the-token");
    assert!(sluice_tests::connect(&wrong).await.is_err());

    let (status, text) = http_request(admin, "GET", "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let value =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(value("sluice_ready"), 1.0);
    assert_eq!(value("sluice_sessions_total{outcome=\"accepted\"}"), 2.0);
    // The failed login's connection may still be closing.
    assert!((1.0..=2.0).contains(&value("sluice_sessions_active")));
    assert_eq!(value("sluice_failed_logins_total"), 1.0);
    assert_eq!(value("sluice_statements_total{verdict=\"allow\"}"), 3.0);
    assert_eq!(value("sluice_statements_total{verdict=\"deny\"}"), 1.0);
    assert_eq!(value("sluice_approvals_total{outcome=\"approved\"}"), 1.0);
    for none_could_answer in sluice::audit::NOT_OBTAINED {
        let series = format!("sluice_approvals_total{{outcome=\"{none_could_answer}\"}}");
        assert_eq!(value(&series), 0.0, "{series}");
    }
    assert_eq!(value("sluice_masked_values_total{plugin=\"pans\"}"), 2.0);
    assert!(value("sluice_plugin_calls_total{plugin=\"rules\",hook=\"policy\"}") >= 4.0);
    assert_eq!(
        value("sluice_plugin_faults_total{plugin=\"rules\",kind=\"trap\"}"),
        0.0
    );
    let calls =
        value("sluice_plugin_call_duration_seconds_count{plugin=\"rules\",hook=\"policy\"}");
    assert!(calls >= 4.0);
    assert_eq!(
        value(
            "sluice_plugin_call_duration_seconds_bucket{le=\"+Inf\",plugin=\"rules\",hook=\"policy\"}"
        ),
        calls
    );
    assert_eq!(
        value("sluice_plugin_reloads_total{result=\"applied\"}"),
        0.0
    );
    // The session's start, its four statements and the approval request
    // of the one held were awaited records.
    assert_eq!(value("sluice_audit_write_duration_seconds_count"), 6.0);
    assert!(value("sluice_audit_records_total") >= 6.0);
    assert_eq!(value("sluice_audit_failed"), 0.0);
    assert!(text.ends_with("# EOF\n"));

    assert_eq!(
        http_request(admin, "GET", "/healthz").await,
        (200, "ok\n".into())
    );
    assert_eq!(
        http_request(admin, "GET", "/readyz").await,
        (200, "ready\n".into())
    );
    assert_eq!(http_request(admin, "GET", "/nothing").await.0, 404);
    assert_eq!(http_request(admin, "POST", "/metrics").await.0, 405);

    // Reloads are counted by result: one refused (a plugin that does not
    // exist), one applied (a changed rule).
    let extra = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let plugins = &env.gateway.shared.plugins;
    env.rewrite_config(&watched_config(extra).replace("builtin:luhn-masker", "builtin:nothing"));
    assert!(
        sluice::plugin::reload::reload_from(plugins, &env.config_path)
            .await
            .is_err()
    );
    env.rewrite_config(&watched_config(extra).replace("\"forbidden\"", "\"forbidden\", \"other\""));
    sluice::plugin::reload::reload_from(plugins, &env.config_path)
        .await
        .expect("a changed rule loads");
    let (_, text) = http_request(admin, "GET", "/metrics").await;
    for (result, count) in [("applied", 1.0), ("rejected", 1.0)] {
        let series = format!("sluice_plugin_reloads_total{{result=\"{result}\"}}");
        assert_eq!(metric(&text, &series), Some(count), "{series} in:\n{text}");
    }
}
