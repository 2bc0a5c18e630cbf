//! The HTTP endpoint (feature `http`): `/metrics` in the Prometheus text format, `/healthz`
//! (200 while the process runs) and `/readyz` (200 when every consumer loop reads; 503 with
//! `{"ready":false,"reasons":[...]}` otherwise).
//!
//! `/metrics` renders the [recorder](super::recorder) installed as the global `metrics`
//! recorder when the endpoint starts, unless the application installed one of its own
//! first: then its own exporter has the metrics, and `/metrics` answers 404 saying so.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::readiness::Loops;
use super::recorder::Exporter;
use crate::error::{Error, Result};

/// How often histogram samples are folded in when nobody scrapes (bounds their memory).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Parses the endpoint's address.
pub(crate) fn parse_addr(addr: &str) -> Result<SocketAddr> {
    addr.trim()
        .parse()
        .map_err(|e| Error::Http { addr: addr.to_string(), reason: format!("not an IP address and port: {e}") })
}

/// Binds the endpoint's address.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| Error::Http { addr: addr.to_string(), reason: e.to_string() })
}

#[derive(Clone)]
struct Endpoint {
    prometheus: Option<Exporter>,
    loops: Loops,
}

/// The running endpoint.
pub(crate) struct HttpServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Serves on `listener` until [`stop`](Self::stop).
    pub fn start(listener: TcpListener, prometheus: Option<Exporter>, loops: Loops) -> Result<Self> {
        let addr = listener.local_addr().map_err(|e| Error::Http { addr: "?".to_string(), reason: e.to_string() })?;
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(Endpoint { prometheus: prometheus.clone(), loops });
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let upkeep = prometheus.map(|handle| tokio::spawn(upkeep(handle, stop.clone())));
                let served = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned()).await;
                if let Err(e) = served {
                    tracing::error!(%addr, error = %e, "the HTTP endpoint stopped");
                }
                stop.cancel();
                if let Some(upkeep) = upkeep {
                    let _ = upkeep.await;
                }
            }
        });
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        Ok(HttpServer { addr, stop, task })
    }

    /// Stops serving (requests in progress finish).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn upkeep(handle: Exporter, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(UPKEEP_EVERY) => handle.run_upkeep(),
        }
    }
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    match &endpoint.prometheus {
        Some(handle) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "the application installed its own metrics recorder; streamx records into it\n".to_string(),
        ),
    }
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], r#"{"alive":true}"#)
}

async fn readyz(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let reasons = endpoint.loops.reasons();
    let (status, body) = if reasons.is_empty() {
        (StatusCode::OK, serde_json::json!({ "ready": true }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "ready": false, "reasons": reasons }))
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}
