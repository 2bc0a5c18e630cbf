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

/// `url` with its passwords replaced by `***`; `None` if it has no host to hold a user, or
/// an `@` outside its user-info (`redis:///u:pw@host`, `redis://host/u:pw@x`: a mistyped
/// URL whose credentials the `url` crate reads as a path). Then it is not a URL this crate
/// connects to, and [`redact`] falls back to text rules.
pub(super) fn redacted(mut url: Url) -> Option<Url> {
    if url.host_str().is_none_or(|h| h.is_empty()) {
        return None;
    }
    let misplaced_at = url.path().contains('@') || url.fragment().is_some_and(|f| f.contains('@'));
    if misplaced_at {
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

/// For text the `url` crate does not accept, or accepts as something other than a server
/// URL (only ever shown in an invalid-URL error). The user-info is what precedes the last
/// `@`, after a `scheme:/` or `scheme://` prefix when there is one (so `redis//u:pw@h`,
/// `redis:/u:pw@h` and `redis:///u:pw@h` are covered): everything in it after the first
/// `:` is hidden, and all of it when there is no scheme prefix (`secret@host`). When in
/// doubt more is hidden, never less. Query parameters naming a password are hidden too.
fn redact_unparsed(text: &str) -> String {
    let Some(at) = text.rfind('@') else {
        return match text.split_once('?') {
            Some((head, query)) => format!("{head}?{}", redact_query(query)),
            None => text.to_string(),
        };
    };
    let (userinfo, host_and_rest) = (&text[..at], &text[at + 1..]);
    let prefix_len = scheme_prefix_len(userinfo);
    let (prefix, userinfo) = userinfo.split_at(prefix_len);
    let userinfo = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{HIDDEN}"),
        None if prefix.is_empty() => HIDDEN.to_string(),
        None => userinfo.to_string(),
    };
    let rest = match host_and_rest.split_once('?') {
        Some((host, query)) => format!("{host}?{}", redact_query(query)),
        None => host_and_rest.to_string(),
    };
    format!("{prefix}{userinfo}@{rest}")
}

/// The length of a leading `scheme:` followed by one or more `/` (`redis://`, `redis:/`),
/// or 0.
fn scheme_prefix_len(text: &str) -> usize {
    let Some(colon) = text.find(':') else { return 0 };
    let scheme = &text[..colon];
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let slashes = text[colon + 1..].chars().take_while(|c| *c == '/').count();
    if is_scheme && slashes > 0 {
        colon + 1 + slashes
    } else {
        0
    }
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

    #[test]
    fn malformed_urls_are_redacted_too() {
        for (text, shown) in [
            ("redis//user:hunter2@host", "redis//user:***@host"),
            ("redis:/user:hunter2@host", "redis:/user:***@host"),
            ("redis:///user:hunter2@host:6379", "redis:///user:***@host:6379"),
            ("redis:user:hunter2@host", "redis:***@host"),
            ("redis://host/user:hunter2@x", "redis://host/user:***@x"),
            ("redis://user:hun@ter2@host/0", "redis://user:***@host/0"),
            ("redis:/user:hunter2@h?sentinelPassword=hunter2", "redis:/user:***@h?sentinelPassword=***"),
            ("redis:\\\\user:hunter2@host", "redis:***@host"),
            ("//user:hunter2@host", "//user:***@host"),
            ("redis//user@host", "***@host"),
        ] {
            assert_eq!(redact(text), shown, "{text}");
            assert!(!redact(text).contains("hunter2"), "{text}");
        }
    }
}
