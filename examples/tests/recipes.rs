//! Every recipe's core against a throwaway redis-server, with the outcome asserted.
#![allow(missing_docs, clippy::unwrap_used)]

use streamx::testing::{unique_name, RedisServer};
use streamx_examples::recipes;

fn server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("cannot start redis-server: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_sourcing() {
    use recipes::event_sourcing::{run, Account};
    let server = server();
    let report = run(server.url(), unique_name("es")).await.unwrap();
    assert_eq!(report.events, 9);
    assert_eq!(report.rejected, vec!["acc-1: cannot withdraw 50000, the balance is 13000".to_string()]);
    let expected = Account { owner: Some("alice".into()), balance: 110_00, version: 6 };
    assert_eq!(report.replayed, expected);
    assert_eq!(report.snapshot.state, Account { owner: Some("alice".into()), balance: 120_00, version: 4 });
    assert_eq!(report.from_snapshot, expected, "snapshot + the events after it = the full replay");
    assert_eq!(report.read_model, vec![("acc-1".into(), 110_00), ("acc-2".into(), 0)]);
}
