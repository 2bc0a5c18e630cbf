//! Who may see the dashboard (an optional token or basic authentication) and what may
//! change things (not in read-only mode, and only requests carrying [`ACTION_HEADER`],
//! which a cross-site form cannot send).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::error::{CliError, Result};

/// The header the page sends with every change (replay, purge).
pub const ACTION_HEADER: &str = "x-streamx-action";

/// What a request must show.
pub enum Access {
    /// Nothing (the default: loopback only).
    Open,
    /// `Authorization: Bearer TOKEN` or `?token=TOKEN`.
    Token(String),
    /// `Authorization: Basic ...` with these credentials, as sent (`user:password`).
    Basic(String),
}

impl Access {
    /// From `--token` / `--basic-auth`.
    pub fn from_args(token: Option<&str>, basic: Option<&str>) -> Result<Self> {
        match (token, basic) {
            (Some(""), _) => Err(invalid("--token", "it is empty")),
            (Some(t), _) => Ok(Access::Token(t.to_string())),
            (None, Some(b)) if !b.contains(':') => Err(invalid("--basic-auth", "expected user:password")),
            (None, Some(b)) => Ok(Access::Basic(b.to_string())),
            (None, None) => Ok(Access::Open),
        }
    }

    fn allows(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        match self {
            Access::Open => true,
            Access::Token(token) => {
                let from_header = credentials(authorization, "bearer").is_some_and(|t| same(t, token));
                let from_query = query.is_some_and(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .any(|(name, value)| name == "token" && same(&value, token))
                });
                from_header || from_query
            }
            Access::Basic(expected) => credentials(authorization, "basic")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .is_some_and(|given| same(&String::from_utf8_lossy(&given), expected)),
        }
    }

    /// Whether anything is asked of a request.
    pub fn is_open(&self) -> bool {
        matches!(self, Access::Open)
    }

    /// Refuses to serve `listen` openly when it is not a loopback address, unless
    /// `--insecure-no-auth` says so (then the warning to print is returned).
    pub fn check_exposure(&self, listen: SocketAddr, insecure_no_auth: bool) -> Result<Option<String>> {
        if !self.is_open() || listen.ip().is_loopback() {
            return Ok(None);
        }
        if insecure_no_auth {
            return Ok(Some(format!(
                "warning: the dashboard on {listen} has no authentication (--insecure-no-auth): anyone who can \
                 reach it sees every stream and can replay and purge dead letters"
            )));
        }
        Err(CliError::InvalidInput {
            what: format!("--listen {listen}"),
            reason: "a dashboard on a non-loopback address needs --token (or STREAMX_DASHBOARD_TOKEN) or \
                     --basic-auth; --insecure-no-auth serves it to anyone who can reach it"
                .to_string(),
        })
    }
}

/// The credentials of an `Authorization` header in `scheme` (the scheme's case does not
/// matter, RFC 9110 11.1).
fn credentials<'a>(authorization: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = authorization.trim_start().split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn invalid(what: &str, reason: &str) -> CliError {
    CliError::InvalidInput { what: what.to_string(), reason: reason.to_string() }
}

/// Compares secrets in time independent of where they differ.
fn same(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses requests without the credentials `--token` or `--basic-auth` asked for.
pub async fn require(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    if access.allows(request.headers(), request.uri().query()) {
        return next.run(request).await;
    }
    match *access {
        Access::Basic(_) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"streamx\", charset=\"UTF-8\"")],
            "authentication required",
        )
            .into_response(),
        _ => (StatusCode::UNAUTHORIZED, "a token is required: open the page with ?token=...").into_response(),
    }
}

/// Refuses every change in read-only mode, and changes without [`ACTION_HEADER`].
pub async fn guard_changes(State(read_only): State<bool>, request: Request, next: Next) -> Response {
    if read_only {
        return super::api::refusal(StatusCode::FORBIDDEN, "the dashboard is read-only (--read-only)");
    }
    if !request.headers().contains_key(ACTION_HEADER) {
        return super::api::refusal(StatusCode::FORBIDDEN, &format!("changes need the {ACTION_HEADER} header"));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, authorization.parse().unwrap_or(header::HeaderValue::from_static("")));
        h
    }

    #[test]
    fn tokens_and_basic_credentials_are_checked() {
        let token = Access::from_args(Some("s3cret"), None).unwrap_or(Access::Open);
        assert!(token.allows(&headers("Bearer s3cret"), None));
        assert!(token.allows(&HeaderMap::new(), Some("a=1&token=s3cret")));
        assert!(!token.allows(&headers("Bearer s3cre"), None));
        assert!(!token.allows(&HeaderMap::new(), Some("token=nope")));
        let basic = Access::from_args(None, Some("ops:pa ss")).unwrap_or(Access::Open);
        let encoded = base64::engine::general_purpose::STANDARD.encode("ops:pa ss");
        assert!(basic.allows(&headers(&format!("Basic {encoded}")), None));
        assert!(!basic.allows(&headers("Basic b3BzOm5v"), None));
        assert!(Access::from_args(None, Some("nocolon")).is_err());
        assert!(token.allows(&HeaderMap::new(), Some("token=s3%63ret")));
        assert!(token.allows(&headers("bearer s3cret"), None));
        assert!(token.allows(&headers("BEARER s3cret"), None));
        assert!(basic.allows(&headers(&format!("BASIC {encoded}")), None));
        assert!(!token.allows(&headers("Bearers3cret"), None));
    }

    #[test]
    fn only_loopback_may_be_served_without_credentials() {
        let open = Access::Open;
        let loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let any: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 8080));
        assert!(matches!(open.check_exposure(loopback, false), Ok(None)));
        assert!(open.check_exposure(any, false).is_err());
        assert!(matches!(open.check_exposure(any, true), Ok(Some(w)) if w.contains("no authentication")));
        let token = Access::Token("t".to_string());
        assert!(matches!(token.check_exposure(any, false), Ok(None)));
    }
}
