//! The admin HTTP port: `/metrics` (the Prometheus/OpenMetrics text
//! format), `/healthz` (the process answers) and `/readyz` (it serves new
//! sessions: not draining, audit trail writable).
//!
//! It is for operators and their scrapers, on an address of its own. It
//! reads nothing but the request line and headers: no body, bounded
//! connections, and a deadline per connection so an idle or slow client
//! cannot hold one open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::gateway::Shared;

/// Admin connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 64;
/// A connection's whole life, keep-alive included.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// Time for a request's head to arrive.
const HEADER_DEADLINE: Duration = Duration::from_secs(5);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin port until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let registry = Arc::new(crate::metrics::registry(shared.clone()));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &shared, &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(tcp), service);
            match tokio::time::timeout(CONNECTION_DEADLINE, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "admin connection ended"),
                Err(_) => tracing::debug!(%peer, "admin connection closed at its deadline"),
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    shared: &Shared,
    registry: &prometheus_client::registry::Registry,
) -> Response<Full<Bytes>> {
    let route = request.uri().path();
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
    }
    match route {
        "/metrics" => {
            let mut response = text(StatusCode::OK, crate::metrics::render(registry));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(OPENMETRICS),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => match crate::metrics::readiness(shared) {
            Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
