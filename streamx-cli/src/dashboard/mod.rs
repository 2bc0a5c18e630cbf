//! `streamx dashboard`: one page served by the binary (assets embedded), a JSON API it
//! polls, and a sampler that keeps the last minutes of figures for the charts.
//!
//! - `auth`: the token or basic authentication (required off loopback), and the guard on
//!   changes (read-only mode, a header no cross-site form can send);
//! - `hosts`: the `Host` and `Origin` a request may name (against DNS rebinding);
//! - `api`: the JSON endpoints of the overview, pending entries and consumers;
//! - `dead_letters`: the dead-letter endpoints (pages, filters, replay, delete, purge);
//! - `retries`: a group's retry schedule (list, run one now, delete one);
//! - `history`: the samples behind the charts.
//!
//! Every response carries [`SECURITY_HEADERS`]: no framing, a strict content security
//! policy (the page runs only its own script file), no sniffing, no referrer.

mod api;
mod auth;
mod dead_letters;
mod history;
mod hosts;
mod pause;
mod retries;

use std::sync::Arc;

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Mutex;

use crate::cli::DashboardArgs;
use crate::connection::Connection;
use crate::error::{CliError, Result};
use auth::Access;
use history::History;
use hosts::AllowedHosts;

/// Sent with every response. The page loads only its own script and style files (no
/// inline script), reaches only its own API, and may not be framed.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What every request handler shares.
pub struct Shared {
    conn: Connection,
    read_only: bool,
    history: Mutex<History>,
    /// `--sample-every`: figures much older than this are stale (see [`api::overview`]).
    sample_every: std::time::Duration,
}

/// Serves the dashboard until Ctrl-C (or SIGTERM).
pub async fn serve(conn: Connection, args: &DashboardArgs) -> Result<()> {
    let access = Access::from_args(args.token.as_deref(), args.basic_auth.as_deref())?;
    if let Some(warning) = access.check_exposure(args.listen, args.insecure_no_auth)? {
        eprintln!("{warning}");
    }
    let shared = Arc::new(Shared {
        conn,
        read_only: args.read_only,
        history: Mutex::new(History::new(args.sample_every)),
        sample_every: args.sample_every,
    });
    let sampler = tokio::spawn(history::sample_forever(shared.clone(), args.sample_every));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Io { what: format!("cannot listen on {}", args.listen), source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| CliError::Io { what: format!("cannot listen on {}", args.listen), source })?;
    let hosts = AllowedHosts::new(addr, &args.allowed_hosts)?;
    let app = router(shared.clone(), access, hosts);
    let mode = if args.read_only { " (read-only)" } else { "" };
    println!("streamx dashboard on http://{addr}/{mode} for {}", shared.conn.redacted_url());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await;
    sampler.abort();
    served.map_err(|source| CliError::Io { what: format!("serving on {addr}"), source })
}

fn router(shared: Arc<Shared>, access: Access, hosts: AllowedHosts) -> Router {
    let page = Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }))
        .route("/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }));
    // What the page polls answers within REFRESH_TIMEOUT, Redis dead or not (else 504).
    let polled = Router::new()
        .route("/api/overview", get(api::overview))
        .route("/api/topics", get(api::topics))
        .route("/api/streams/{stream}/groups/{group}/pending", get(api::pending))
        .route("/api/streams/{stream}/groups/{group}/consumers", get(api::consumers))
        .route("/api/streams/{stream}/groups/{group}/retries", get(retries::list))
        .route("/api/streams/{stream}/dead-letters", get(dead_letters::list))
        .layer(axum::middleware::from_fn(api::deadline));
    // Counting before a bulk action, and the actions, are asked for by a click and read a
    // whole dead-letter stream: cut off, a replay would stop half done. fred's own command
    // timeout bounds them.
    let reads = polled.route("/api/streams/{stream}/dead-letters/matching", get(dead_letters::matching));
    let changes = Router::new()
        .route("/api/streams/{stream}/groups/{group}/retries/{id}/run", post(retries::run_now))
        .route("/api/streams/{stream}/groups/{group}/retries/{id}/delete", post(retries::delete))
        .route("/api/streams/{stream}/dead-letters/{id}/replay", post(dead_letters::replay_one))
        .route("/api/streams/{stream}/dead-letters/{id}/delete", post(dead_letters::delete_one))
        .route("/api/streams/{stream}/dead-letters/replay", post(dead_letters::replay_all))
        .route("/api/streams/{stream}/dead-letters/purge", post(dead_letters::purge))
        .route("/api/streams/{stream}/groups/{group}/pause", post(pause::pause))
        .route("/api/streams/{stream}/groups/{group}/resume", post(pause::resume))
        .layer(axum::middleware::from_fn_with_state(shared.read_only, auth::guard_changes));
    // The page and its assets hold no data: only the API asks for credentials, so that
    // `?token=` on the page's URL is enough for the browser.
    let api = reads.merge(changes).layer(axum::middleware::from_fn_with_state(Arc::new(access), auth::require));
    page.merge(api)
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found").into_response() })
        .layer(axum::middleware::from_fn_with_state(Arc::new(hosts), hosts::check))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared)
}

/// Adds [`SECURITY_HEADERS`] to a response.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    response
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
