//! One resolution of URL + environment for every entry point: with `STREAMX_REDIS_TLS_CA`
//! set and a `rediss://` URL, the producer, the tools and the runtime all trust that CA.
//!
//! The environment is process-wide, so this file is its own test binary with one test that
//! changes it only between steps, while nothing connects.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start_runtime, tls_or_skip, wait_until, Job};
use futures_util::TryStreamExt;
use streamx::testing::RedisServer;
use streamx::{
    Consumer, DeadLetters, Error, HandlerError, History, Inspector, Message, MessageId, Producer, RedisUrl,
    REDIS_TLS_CA_ENV,
};

/// A server with TLS, or `None` where the binary has none (see [`tls_or_skip`]).
fn tls_server() -> Option<RedisServer> {
    tls_or_skip(RedisServer::builder().tls(true).start())
}

/// The text of the error of a connect that must fail.
fn refused<T>(result: Result<T, Error>) -> String {
    match result {
        Ok(_) => panic!("the connect should have failed"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_point_takes_the_ca_from_the_environment() {
    let Some(server) = tls_server() else { return };
    let Some(other) = tls_server() else { return };
    let ca = server.tls_files().unwrap().ca_cert.clone();
    let other_ca = other.tls_files().unwrap().ca_cert.clone();
    let url = server.tls_url().unwrap();
    std::env::set_var(REDIS_TLS_CA_ENV, &ca);

    // The producer, with the URL as a string and as a parsed `RedisUrl`.
    let producer = Producer::connect(&url).await.unwrap();
    let jobs: Vec<Job> = (0..20).map(Job::ok).collect();
    let mut ids = producer.publish_batch("orders", &jobs).await.unwrap();
    let parsed = Producer::connect_with(&RedisUrl::parse(&url).unwrap()).await.unwrap();
    ids.push(parsed.publish("orders", &Job::ok(20)).await.unwrap());

    // The runtime, with the URL from the builder: every message handled, job 13 refused
    // for good (so the dead-letter stream has something to show).
    let seen: Arc<Mutex<Vec<MessageId>>> = Arc::default();
    let s = seen.clone();
    let consumer = Consumer::new("orders", "billing", move |msg: Message<Job>| {
        let s = s.clone();
        async move {
            if msg.payload().n == 13 {
                return Err(HandlerError::permanent("refused on purpose"));
            }
            s.lock().unwrap().push(msg.id());
            Ok(())
        }
    });
    let runtime = start_runtime(url.clone(), vec![consumer]).await;
    let dlq = DeadLetters::connect(&url, "{orders}:dlq").await.unwrap();
    wait_until(Duration::from_secs(20), "20 handled and 1 dead-lettered over TLS", || async {
        seen.lock().unwrap().len() >= 20 && dlq.count().await.unwrap_or(0) >= 1
    })
    .await
    .unwrap();
    runtime.shutdown().await.unwrap();
    let handled: HashSet<MessageId> = seen.lock().unwrap().iter().copied().collect();
    let expected: HashSet<MessageId> = ids.iter().copied().filter(|id| *id != ids[13]).collect();
    assert_eq!(handled, expected);
    assert_eq!(dlq.list(None, 10).await.unwrap().entries[0].origin_id, Some(ids[13]));

    // The tools.
    let history = History::connect(&url).await.unwrap();
    let read: Vec<Message<Job>> = history.read("orders", ..).try_collect().await.unwrap();
    assert_eq!(read.iter().map(|m| m.id()).collect::<Vec<_>>(), ids);
    let group = Inspector::connect(&url).await.unwrap().group("orders", "billing").await.unwrap().unwrap();
    assert_eq!(group.pending, 0);

    // A CA given explicitly wins over the environment (this one did not sign the server's
    // certificate), and the error names it.
    let explicit = RedisUrl::parse(&url).unwrap().with_tls_ca_file(&other_ca).unwrap();
    let text = refused(Producer::connect_with(&explicit).await);
    assert!(text.contains("UnknownIssuer") && text.contains(&other_ca.display().to_string()), "{text}");
    assert!(text.contains("tls_ca_file"), "{text}");

    // The hint says what is wrong: the variable is set, to a CA that did not sign it...
    std::env::set_var(REDIS_TLS_CA_ENV, &other_ca);
    let text = refused(Inspector::connect(&url).await);
    let wanted = format!(
        "STREAMX_REDIS_TLS_CA is set to {} but the server's certificate is not signed by it",
        other_ca.display()
    );
    assert!(text.contains("UnknownIssuer") && text.contains(&wanted), "{text}");

    // ...or no CA is configured at all.
    std::env::remove_var(REDIS_TLS_CA_ENV);
    let text = refused(Producer::connect(&url).await);
    assert!(text.contains("UnknownIssuer") && text.contains("no CA was configured"), "{text}");
    assert!(text.contains("set STREAMX_REDIS_TLS_CA"), "{text}");

    // The variable needs a TLS URL, as `STREAMX_REDIS_URL` does.
    std::env::set_var(REDIS_TLS_CA_ENV, &ca);
    let err = Producer::connect(&server.url()).await.err().expect("a plain URL with a CA");
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("STREAMX_REDIS_TLS_CA") && err.to_string().contains("use rediss://"), "{err}");
    std::env::remove_var(REDIS_TLS_CA_ENV);
}
