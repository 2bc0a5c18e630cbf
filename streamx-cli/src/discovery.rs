//! Which streams exist, found without scanning the whole keyspace on every refresh:
//! the registry of stream names that streamx's runtime and producers keep
//! (`streamx:streams`, one `SMEMBERS`), plus the streams other clients wrote, found by a
//! `SCAN ... TYPE stream` that advances one page (`COUNT 1000`) per refresh and per master,
//! and remembers what it found. So a refresh costs one `SMEMBERS` and one `SCAN` per master,
//! however many keys Redis holds; a stream written only by other clients shows within one
//! pass of the scan (one refresh per 1,000 keys per master). `streams` asks for a whole pass
//! at once ([`Discovery::full`]).

use std::collections::{BTreeMap, BTreeSet};

use fred::clients::Client;
use fred::interfaces::{ClientLike, ClusterInterface, KeysInterface};
use fred::prelude::Server;
use fred::types::scan::ScanType;
use fred::types::Value;
use streamx_runtime::keys::STREAM_NAMES;

use crate::connection::{dead_letter_key, Connection};
use crate::error::{exit, redis, CliError, Result};

/// Keys a SCAN call looks at (per master).
const SCAN_COUNT: u32 = 1000;

/// Streams found so far, and where each master's scan is.
#[derive(Default)]
pub struct Discovery {
    /// Per master (`""` on a single server): its cursor and what it found.
    scans: BTreeMap<String, NodeScan>,
    /// The user may not read the registry: it is not asked again.
    registry_denied: bool,
}

/// One master's scan.
#[derive(Default)]
struct NodeScan {
    /// Where the next page starts (`0`: a new pass).
    cursor: String,
    /// Streams found in the current pass.
    current: BTreeSet<String>,
    /// Streams found in the last complete pass.
    previous: BTreeSet<String>,
    /// A pass has ended at least once.
    complete: bool,
}

impl NodeScan {
    fn names(&self) -> impl Iterator<Item = &String> {
        self.previous.iter().chain(self.current.iter())
    }
}

impl Discovery {
    /// Nothing found yet.
    pub fn new() -> Self {
        Discovery::default()
    }

    /// One refresh's discovery: the registry and one SCAN page per master. Returns the
    /// streams known, sorted, matching `pattern` (a glob, see [`glob_match`]), without the
    /// dead-letter streams of other streams in the list.
    pub async fn tick(&mut self, conn: &Connection, pattern: Option<&str>) -> Result<Vec<String>> {
        let client = conn.client();
        let mut names = self.registry(&client).await?;
        for (name, node) in nodes(&client) {
            let scan = self.scans.entry(name).or_default();
            scan_page(&client, node, scan, pattern).await?;
        }
        self.forget_gone_nodes(&client);
        names.extend(self.scans.values().flat_map(NodeScan::names).cloned());
        Ok(shown(names, pattern))
    }

    /// The registry and a whole pass of the scan on every master: what `streams` lists.
    /// Costs one SCAN call per 1,000 keys of the keyspace.
    pub async fn full(&mut self, conn: &Connection, pattern: Option<&str>) -> Result<Vec<String>> {
        let client = conn.client();
        let mut names = self.registry(&client).await?;
        for (_, node) in nodes(&client) {
            let mut scan = NodeScan::default();
            loop {
                scan_page(&client, node.clone(), &mut scan, pattern).await?;
                if scan.complete {
                    break;
                }
            }
            names.extend(scan.previous);
        }
        Ok(shown(names, pattern))
    }

    /// Every stream key a whole pass of the scan finds on every master, dead-letter streams
    /// included, sorted (no registry: custom dead-letter streams are not in it). Costs one
    /// SCAN call per 1,000 keys of the keyspace.
    pub async fn scan_all(&mut self, conn: &Connection) -> Result<Vec<String>> {
        let client = conn.client();
        let mut names = BTreeSet::new();
        for (_, node) in nodes(&client) {
            let mut scan = NodeScan::default();
            while !scan.complete {
                scan_page(&client, node.clone(), &mut scan, None).await?;
            }
            names.extend(scan.previous);
        }
        Ok(names.into_iter().collect())
    }

    /// The registry's streams only, matching `pattern`: one SMEMBERS.
    pub async fn registered(&mut self, conn: &Connection, pattern: Option<&str>) -> Result<Vec<String>> {
        let names = self.registry(&conn.client()).await?;
        Ok(shown(names, pattern))
    }

    /// The registry's names (none once the user was refused it).
    async fn registry(&mut self, client: &Client) -> Result<BTreeSet<String>> {
        if self.registry_denied {
            return Ok(BTreeSet::new());
        }
        match streamx_runtime::Inspector::with_client(client.clone()).registered_streams().await {
            Ok(names) => Ok(names.into_iter().collect()),
            Err(e) => {
                let e = CliError::from(e);
                if e.code() == exit::PERMISSION {
                    self.registry_denied = true;
                    return Ok(BTreeSet::new());
                }
                Err(e)
            }
        }
    }

    fn forget_gone_nodes(&mut self, client: &Client) {
        let live: BTreeSet<String> = nodes(client).into_iter().map(|(name, _)| name).collect();
        self.scans.retain(|node, _| live.contains(node));
    }
}

/// The masters to scan, by name: `("", None)` for a single server.
fn nodes(client: &Client) -> Vec<(String, Option<Server>)> {
    if !client.is_clustered() {
        return vec![(String::new(), None)];
    }
    client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes().into_iter().map(|s| (s.to_string(), Some(s))).collect())
        .unwrap_or_default()
}

/// One SCAN call on `node` from its cursor; a pass that ends replaces what the last found.
async fn scan_page(client: &Client, node: Option<Server>, scan: &mut NodeScan, pattern: Option<&str>) -> Result<()> {
    let cursor = if scan.cursor.is_empty() { "0".to_string() } else { scan.cursor.clone() };
    // The registry's own key is a set, never a stream: no need to exclude it.
    let pattern = pattern.unwrap_or("*").to_string();
    let reply: Value = match node {
        None => client.scan_page(cursor, pattern, Some(SCAN_COUNT), Some(ScanType::Stream)).await,
        Some(node) => {
            client.with_cluster_node(node).scan_page(cursor, pattern, Some(SCAN_COUNT), Some(ScanType::Stream)).await
        }
    }
    .map_err(|e| redis("SCAN", "*", e))?;
    let mut parts = reply.into_array().into_iter();
    let next = parts.next().and_then(|v| v.as_string()).unwrap_or_else(|| "0".to_string());
    let keys = parts.next().map(Value::into_array).unwrap_or_default();
    scan.current.extend(keys.into_iter().filter_map(|k| k.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned())));
    if next == "0" {
        scan.previous = std::mem::take(&mut scan.current);
        scan.complete = true;
    }
    scan.cursor = next;
    Ok(())
}

/// `names` matching `pattern`, sorted, without the registry key and without the dead-letter
/// streams of other names in the list (they show as their origin's dead letters).
fn shown(names: BTreeSet<String>, pattern: Option<&str>) -> Vec<String> {
    let dead_letter_streams: BTreeSet<String> = names.iter().map(|n| dead_letter_key(n)).collect();
    names
        .into_iter()
        .filter(|n| n != STREAM_NAMES && !dead_letter_streams.contains(n))
        .filter(|n| pattern.is_none_or(|p| glob_match(p.as_bytes(), n.as_bytes())))
        .collect()
}

/// Redis's glob (as `SCAN MATCH` and `KEYS`): `*` any run, `?` one character, `[abc]`,
/// `[^a]`, `[a-z]` a set, `\x` the character `x`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&c, text_rest)) = text.split_first() else { return false };
            let (negate, mut set) = match rest.split_first() {
                Some((b'^', set)) => (true, set),
                _ => (false, rest),
            };
            let mut found = false;
            loop {
                match set {
                    [] => return false, // an unclosed set matches nothing
                    [b']', after @ ..] => {
                        set = after;
                        break;
                    }
                    [b'\\', x, after @ ..] => {
                        found |= *x == c;
                        set = after;
                    }
                    [lo, b'-', hi, after @ ..] if *hi != b']' => {
                        let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                        found |= (lo..=hi).contains(&c);
                        set = after;
                    }
                    [x, after @ ..] => {
                        found |= *x == c;
                        set = after;
                    }
                }
            }
            found != negate && glob_match(set, text_rest)
        }
        Some((b'\\', [x, rest @ ..])) => text.first() == Some(x) && glob_match(rest, &text[1..]),
        Some((&p, rest)) => text.first() == Some(&p) && glob_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_does() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("orders*", "orders") && m("orders*", "orders-eu") && !m("orders*", "my-orders"));
        assert!(m("*", "") && m("o?d", "old") && !m("o?d", "od"));
        assert!(m("[ab]x", "bx") && !m("[ab]x", "cx") && m("[^ab]x", "cx") && m("[a-c]x", "bx"));
        assert!(m("a\\*", "a*") && !m("a\\*", "ab"));
        assert!(m("{orders}:*", "{orders}:dlq"));
    }

    #[test]
    fn dead_letter_streams_show_with_their_origin() {
        let names: BTreeSet<String> =
            ["orders", "{orders}:dlq", "{gone}:dlq", STREAM_NAMES].iter().map(|s| s.to_string()).collect();
        assert_eq!(shown(names.clone(), None), ["orders", "{gone}:dlq"]);
        assert_eq!(shown(names, Some("ord*")), ["orders"]);
    }
}
