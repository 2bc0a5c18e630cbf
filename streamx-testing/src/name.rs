//! Names unique to one call, so tests sharing a server never share keys.

use std::sync::atomic::{AtomicU64, Ordering};

/// A key or stream name that no other call in this process returns, and that another run
/// of the tests is very unlikely to return: `{prefix}-{pid}-{counter}-{random}`.
///
/// The result contains no `{`/`}`, so it can itself be used as a cluster hash tag.
///
/// ```
/// use streamx_testing::unique_name;
///
/// let a = unique_name("orders");
/// let b = unique_name("orders");
/// assert!(a.starts_with("orders-"));
/// assert_ne!(a, b);
/// ```
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Tells apart runs that reuse a pid against a long-lived server.
    let random: u32 = rand::random();
    format!("{prefix}-{}-{count}-{random:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_across_threads() {
        let handles: Vec<_> =
            (0..4).map(|_| std::thread::spawn(|| (0..250).map(|_| unique_name("t")).collect::<Vec<_>>())).collect();
        let mut seen = HashSet::new();
        for handle in handles {
            for name in handle.join().expect("thread panicked") {
                assert!(name.starts_with(&format!("t-{}-", std::process::id())));
                assert!(!name.contains(['{', '}', ' ']));
                assert!(seen.insert(name));
            }
        }
        assert_eq!(seen.len(), 1000);
    }
}
