//! `crate = path` for a renamed dependency: the expansion must use the given path.
extern crate streamx as sx;

use sx::prelude::*;

#[derive(serde::Deserialize)]
struct Order {}

#[stream_consumer(crate = sx, stream = "orders", group = "billing", block = "1s")]
async fn charge(_msg: Message<Order>) -> Result<(), HandlerError> {
    Ok(())
}

mod nested {
    use sx::prelude::*;

    #[stream_consumer(crate = ::sx, stream = "orders", group = "nested", dlq = false)]
    async fn charge(_msg: Message<super::Order>) {}

    /// Through a re-export, as a wrapper crate around streamx would do.
    mod facade {
        pub use sx::*;
    }

    #[stream_consumer(crate = self::facade, stream = "orders", group = "facade")]
    async fn via_facade(_msg: Message<super::Order>) {}
}

fn main() {
    let mut groups: Vec<_> = sx::registered()
        .iter()
        .map(|registration| registration.to_consumer().group().to_string())
        .collect();
    groups.sort();
    assert_eq!(groups, ["billing", "facade", "nested"]);
}
