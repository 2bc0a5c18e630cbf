use std::time::Duration;

use super::{ParseRateLimitError, RateLimit};

fn parse(text: &str) -> Result<RateLimit, ParseRateLimitError> {
    text.parse()
}

#[test]
fn parses_counts_per_unit() {
    assert_eq!(parse("500/s"), Ok(RateLimit::per_second(500)));
    assert_eq!(parse("500/sec"), Ok(RateLimit::per_second(500)));
    assert_eq!(parse("30/min"), Ok(RateLimit::per_minute(30)));
    assert_eq!(parse("30/m"), Ok(RateLimit::per_minute(30)));
    assert_eq!(parse("1000/h"), Ok(RateLimit::per_hour(1000)));
    assert_eq!(parse("1000/hour"), Ok(RateLimit::per_hour(1000)));
    assert_eq!(parse(" 10 / 500ms "), Ok(RateLimit::new(10, Duration::from_millis(500))));
    assert_eq!(parse("7/2s"), Ok(RateLimit::new(7, Duration::from_secs(2))));
    assert_eq!(parse("1/24h"), Ok(RateLimit::new(1, Duration::from_secs(86_400))));
}

#[test]
fn refuses_bad_text_with_its_reason() {
    assert_eq!(parse("500"), Err(ParseRateLimitError::Shape));
    assert_eq!(parse("many/s"), Err(ParseRateLimitError::Count("many".into())));
    assert_eq!(parse("-1/s"), Err(ParseRateLimitError::Count("-1".into())));
    assert_eq!(parse("0/s"), Err(ParseRateLimitError::Zero));
    assert_eq!(parse("5/fortnight"), Err(ParseRateLimitError::Period("fortnight".into())));
    assert_eq!(parse("5/0s"), Err(ParseRateLimitError::Period("0s".into())));
    assert_eq!(parse("5/25h"), Err(ParseRateLimitError::Period("25h".into())));
    assert_eq!(
        parse("500").unwrap_err().to_string(),
        "expected `<count>/<period>`, e.g. \"500/s\", \"30/min\", \"1000/h\" or \"10/500ms\""
    );
    assert!(parse("0/s").unwrap_err().to_string().contains("at least 1"));
}

#[test]
fn displays_as_it_parses() {
    for text in ["500/s", "30/min", "1000/h", "10/500ms"] {
        assert_eq!(parse(text).unwrap().to_string(), text);
    }
}

#[test]
fn window_has_a_small_margin_and_pacing_splits_the_limit() {
    assert_eq!(RateLimit::per_second(100).window(), Duration::from_millis(1050));
    assert_eq!(RateLimit::per_minute(100).window(), Duration::from_millis(60_050));
    assert_eq!(RateLimit::new(1, Duration::from_millis(100)).window(), Duration::from_millis(105));
    assert_eq!(RateLimit::per_second(100).pacing(), (10, 10));
    assert_eq!(RateLimit::per_second(15).pacing(), (10, 2));
    assert_eq!(RateLimit::per_second(3).pacing(), (3, 1));
}

/// The scripts against a `redis-server` spawned for the test (`STREAMX_REDIS_SERVER`, else
/// `redis-server` on the PATH), on a free port, without persistence.
mod scripts {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use fred::clients::Client;
    use fred::interfaces::{ClientLike, KeysInterface};
    use fred::types::config::Config;
    use fred::types::Value;
    use fred::types::{ClusterHash, CustomCommand};

    use super::super::{Limiter, RateLimit, GRANT, REFUND};

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn start() -> (Server, Client) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let binary = std::env::var("STREAMX_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server(child);
        let config = Config::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
        for _ in 0..100 {
            let client = Client::new(config.clone(), None, None, None);
            if client.init().await.is_ok() {
                return (server, client);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    async fn grant(client: &Client, limiter: &Limiter, want: usize) -> (u64, u64, String) {
        let (args, unique) = limiter.grant_args(want);
        let reply: Value = GRANT.evalsha_with_reload(client, vec![limiter.key.clone()], args).await.unwrap();
        let parts: Vec<u64> = reply.into_array().into_iter().map(|v| v.as_u64().unwrap()).collect();
        (parts[0], parts[1], format!("{}:{unique}", parts[0]))
    }

    async fn refund(client: &Client, limiter: &Limiter, member: &str, unused: u64) -> u64 {
        let args = vec![member.to_string(), unused.to_string()];
        REFUND.evalsha_with_reload(client, vec![limiter.key.clone()], args).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grants_paces_refuses_with_a_wait_refunds_once_and_expires() {
        let (_server, client) = start().await;
        // 20 per 200 ms: a window of 210 ms, parts of 21 ms of at most 2.
        let limiter = Limiter::new("s", "g", "m", RateLimit::new(20, Duration::from_millis(200)));
        assert_eq!(limiter.key, "{s}:ratelimit:g");
        let (granted, wait, first) = grant(&client, &limiter, 50).await;
        assert_eq!((granted, wait), (2, 0), "at most a part's worth per grant");
        let (granted, wait, _) = grant(&client, &limiter, 2).await;
        assert_eq!(granted, 0, "the part is full");
        assert!((1..=21).contains(&wait), "refused with the time until the part frees: {wait} ms");
        // Unused starts go back, once.
        assert_eq!(refund(&client, &limiter, &first, 1).await, 1);
        assert_eq!(refund(&client, &limiter, &first, 1).await, 0, "a re-sent refund returns nothing");
        let zrange = CustomCommand::new_static("ZRANGE", ClusterHash::FirstKey, false);
        let args = vec![Value::from(limiter.key.as_str()), Value::from(0), Value::from(-1)];
        let log: Vec<String> = client.custom(zrange, args).await.unwrap();
        assert_eq!(log.len(), 2, "the grant and the running sum");
        assert!(log.contains(&"#sum".to_string()) && log.iter().any(|m| m.starts_with("1:m:")), "{log:?}");
        let (granted, _, _) = grant(&client, &limiter, 2).await;
        assert_eq!(granted, 1, "the returned start is granted again");
        // The log expires a window after the last grant.
        let ttl: i64 = client.pttl(&limiter.key).await.unwrap();
        assert!((1..=210).contains(&ttl), "expires within the window: {ttl} ms");

        // Across parts, never more than the limit in a window: keep asking for 60 ms past
        // 210 ms and count what was granted in each 210 ms.
        client.del::<(), _>(&limiter.key).await.unwrap();
        let started = std::time::Instant::now();
        let mut grants: Vec<(Duration, u64)> = Vec::new();
        while started.elapsed() < Duration::from_millis(600) {
            let (granted, wait, _) = grant(&client, &limiter, 20).await;
            if granted > 0 {
                grants.push((started.elapsed(), granted));
            } else {
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
        for (i, (at, _)) in grants.iter().enumerate() {
            let within: u64 =
                grants[i..].iter().take_while(|(t, _)| *t < *at + Duration::from_millis(200)).map(|g| g.1).sum();
            assert!(within <= 20, "at most 20 in any 200 ms, {within} from {at:?}: {grants:?}");
        }
        let total: u64 = grants.iter().map(|g| g.1).sum();
        assert!(total >= 40, "the limit is used, not starved: {total} in 600 ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stricter_member_is_refused_where_a_looser_one_is_granted() {
        let (_server, client) = start().await;
        let loose = Limiter::new("s", "g", "a", RateLimit::per_second(100));
        let strict = Limiter::new("s", "g", "b", RateLimit::per_second(5));
        // The loose member fills its first part (10); the strict one sees 10 > 5 in its window.
        assert_eq!(grant(&client, &loose, 10).await.0, 10);
        let (granted, wait, _) = grant(&client, &strict, 1).await;
        assert_eq!(granted, 0);
        assert!(wait > 200, "waits for the loose grant to leave its window: {wait} ms");
    }
}
