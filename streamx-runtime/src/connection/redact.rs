//! URLs shown without their passwords: the `user:password@` part and query parameters such
//! as `sentinelPassword=`.

use url::Url;

/// What replaces a password.
const HIDDEN: &str = "***";

/// Replaces the password of a URL (`user:password@`, and the value of any query parameter
/// whose name contains `password`, such as `sentinelPassword=`) with `***`.
///
/// ```
/// assert_eq!(
///     streamx_runtime::redact("redis://app:s3cret@redis.internal:6379/0"),
///     "redis://app:***@redis.internal:6379/0"
/// );
/// ```
pub fn redact(url: &str) -> String {
    match Url::parse(url).ok().and_then(redacted) {
        Some(url) => url.into(),
        None => redact_unparsed(url),
    }
}

/// `url` with its passwords replaced by `***`; `None` if it has no host to hold a user
/// (then it is not a URL this crate connects to, and [`redact`] falls back to text rules).
pub(super) fn redacted(mut url: Url) -> Option<Url> {
    if !url.has_host() {
        return None;
    }
    if url.password().is_some() {
        url.set_password(Some(HIDDEN)).ok()?;
    }
    if let Some(query) = url.query() {
        let query = redact_query(query);
        url.set_query(Some(&query));
    }
    Some(url)
}

/// A query string with the value of every parameter whose (decoded) name contains
/// `password` replaced by `***`; everything else as it was.
fn redact_query(query: &str) -> String {
    let hides_a_password = |pair: &str| {
        url::form_urlencoded::parse(pair.as_bytes())
            .next()
            .is_some_and(|(name, _)| name.to_ascii_lowercase().contains("password"))
    };
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if hides_a_password(pair) => format!("{name}={HIDDEN}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// For text the `url` crate does not accept (only ever shown in an invalid-URL error):
/// whatever follows the user name before the last `@` of the authority is hidden, and so is
/// a user-info part without a scheme (`secret@host`).
fn redact_unparsed(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{HIDDEN}@{host}"),
            None if scheme.is_empty() => format!("{HIDDEN}@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_query(query)),
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://user:secret@host:6379/0"), "redis://user:***@host:6379/0");
        assert_eq!(redact("rediss://:secret@host"), "rediss://:***@host");
        assert_eq!(
            redact("redis-sentinel://u:p@h:1?sentinelPassword=x&node=h:2"),
            "redis-sentinel://u:***@h:1?sentinelPassword=***&node=h:2"
        );
        assert_eq!(redact("redis://user@host"), "redis://user@host");
    }

    #[test]
    fn redacts_what_the_url_crate_decodes() {
        // A percent-encoded `@` or `:` in the password, an encoded parameter name.
        assert_eq!(redact("redis://u:p%40ss%3Aw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis-sentinel://h:1?sentinel%50assword=x"), "redis-sentinel://h:1?sentinel%50assword=***");
        assert_eq!(redact("redis://h:1?password=x&db=2"), "redis://h:1?password=***&db=2");
        // An `@` inside the password: the host is what follows the last one.
        let shown = redact("redis://u:a@b@h:1");
        assert!(shown.ends_with("@h:1") && !shown.contains("a@b") && !shown.contains(":a"), "{shown}");
    }

    #[test]
    fn text_that_is_not_a_url_is_redacted_too() {
        assert_eq!(redact("redis://bob:hunter2@x:notaport"), "redis://bob:***@x:notaport");
        assert_eq!(redact("bob:hunter2@host:6379"), "bob:***@host:6379");
        assert_eq!(redact("hunter2@host:6379"), "***@host:6379");
        assert_eq!(
            redact("redis://u:p@h:notaport?sentinelPassword=x&node=h:2"),
            "redis://u:***@h:notaport?sentinelPassword=***&node=h:2"
        );
        assert_eq!(redact("localhost:6379"), "localhost:6379");
    }
}
