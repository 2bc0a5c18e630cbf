//! `TestRuntime` without a `redis-server` binary: a clear error saying how to install it.
//! Alone in its test binary, because it changes `STREAMX_REDIS_SERVER` for the process.
#![allow(missing_docs, clippy::unwrap_used)]

use streamx::testing::{TestRuntime, TestingError, REDIS_SERVER_ENV};

#[tokio::test]
async fn a_missing_redis_server_says_how_to_install_it() {
    std::env::set_var(REDIS_SERVER_ENV, "/nonexistent/bin/redis-server");
    let err = TestRuntime::start().await.unwrap_err();
    assert!(
        matches!(&err, TestingError::RedisServerNotFound { binary } if binary.ends_with("bin/redis-server")),
        "{err:?}"
    );
    let text = err.to_string();
    for hint in
        ["/nonexistent/bin/redis-server", "apt-get install redis-server", "brew install redis", "STREAMX_REDIS_SERVER"]
    {
        assert!(text.contains(hint), "`{hint}` missing from: {text}");
    }
}
