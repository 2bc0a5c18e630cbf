//! Which `Host` (and, on changes, `Origin`) the dashboard answers: against DNS rebinding,
//! where a web page on a name its owner controls re-points that name at 127.0.0.1 and then
//! reads the loopback dashboard as its own origin. Such a request carries the attacker's
//! name in `Host`, so only the listen address, loopback names on a loopback listener, and
//! the names given with `--allowed-host` are answered.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::api::refusal;
use crate::error::{CliError, Result};

/// The hosts a request may name.
#[derive(Debug)]
pub struct AllowedHosts {
    /// The address the dashboard listens on (with the port it got).
    listen: SocketAddr,
    /// `--allowed-host` names, lowercase, each with its port if one was given.
    names: Vec<(String, Option<u16>)>,
}

impl AllowedHosts {
    /// The listen address (as bound: the real port) and the `--allowed-host` values.
    pub fn new(listen: SocketAddr, extra: &[String]) -> Result<Self> {
        let names = extra
            .iter()
            .map(|given| {
                split_authority(given).filter(|(host, _)| !host.is_empty()).ok_or_else(|| CliError::InvalidInput {
                    what: format!("--allowed-host `{given}`"),
                    reason: "expected a host name, optionally with :port".to_string(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(AllowedHosts { listen, names })
    }

    /// Whether `authority` (a `Host` header: `name`, `name:port`, `[::1]:port`) is ours;
    /// `default_port` is the port a missing one stands for.
    pub fn allows(&self, authority: &str, default_port: u16) -> bool {
        let Some((host, port)) = split_authority(authority) else { return false };
        let port = port.unwrap_or(default_port);
        if self.names.iter().any(|(name, p)| *name == host && p.is_none_or(|p| p == port)) {
            return true;
        }
        if port != self.listen.port() {
            return false;
        }
        let ip = self.listen.ip();
        let local = ip.is_loopback() || ip.is_unspecified();
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            // An address cannot be re-pointed: any address the listener answers on is fine.
            Ok(given) => given == ip || ip.is_unspecified() || (ip.is_loopback() && given.is_loopback()),
            Err(_) => local && host == "localhost",
        }
    }

    /// Whether an `Origin` header (`http://name:port`) names one of our hosts.
    fn allows_origin(&self, origin: &str) -> bool {
        let (scheme, authority) = match origin.split_once("://") {
            Some(parts) => parts,
            None => return false,
        };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        self.allows(authority, default_port)
    }
}

/// `name` / `name:port` / `[v6]:port`, lowercase and without a trailing dot; `None` when the
/// port is not a number.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (format!("[{inside}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port.parse().ok()?)),
            None => (authority.to_string(), None),
        }
    };
    Some((host.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// Refuses a request whose `Host` is not ours (421 Misdirected Request), and a change
/// (anything but GET and HEAD) whose `Origin` is not ours (403).
pub async fn check(State(allowed): State<Arc<AllowedHosts>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    if !host.as_deref().is_some_and(|h| allowed.allows(h, 80)) {
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard does not answer for this host name (see --allowed-host)",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            if !origin.to_str().is_ok_and(|o| allowed.allows_origin(o)) {
                return refusal(StatusCode::FORBIDDEN, "changes are only accepted from the dashboard's own page");
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listen: &str, extra: &[&str]) -> AllowedHosts {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        AllowedHosts::new(listen.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 1))), &extra)
            .unwrap_or(AllowedHosts { listen: SocketAddr::from(([0, 0, 0, 0], 1)), names: Vec::new() })
    }

    #[test]
    fn a_loopback_listener_answers_loopback_names_on_its_port() {
        let h = hosts("127.0.0.1:8080", &[]);
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080", "localhost.:8080"] {
            assert!(h.allows(ok, 80), "{ok}");
        }
        for refused in ["evil.example:8080", "localhost:8081", "127.0.0.1", "localhost", "10.0.0.1:8080", "", "a:b"] {
            assert!(!h.allows(refused, 80), "{refused}");
        }
        assert!(h.allows_origin("http://localhost:8080"));
        assert!(!h.allows_origin("http://evil.example:8080"));
        assert!(!h.allows_origin("null"));
    }

    #[test]
    fn allowed_host_names_with_and_without_ports() {
        let h = hosts("0.0.0.0:9000", &["dash.example.com", "proxy.example.com:8443"]);
        assert!(h.allows("dash.example.com", 80));
        assert!(h.allows("Dash.Example.com:1234", 80));
        assert!(h.allows("proxy.example.com:8443", 80));
        assert!(!h.allows("proxy.example.com", 80));
        assert!(h.allows("192.168.1.20:9000", 80), "an address the listener answers on");
        assert!(!h.allows("evil.example:9000", 80));
        assert!(h.allows_origin("https://proxy.example.com:8443"));
        assert!(h.allows_origin("https://dash.example.com"));
        assert!(AllowedHosts::new(SocketAddr::from(([127, 0, 0, 1], 1)), &["x:notaport".to_string()]).is_err());
    }
}
