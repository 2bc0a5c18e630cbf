//! Reading `CLUSTER NODES`: who serves which slots and who replicates whom, as one node
//! sees it.

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NodeEntry {
    id: String,
    pub(super) port: u16,
    /// The id of this node's master, for replicas.
    master_id: Option<String>,
    flags: Vec<String>,
    /// Slot ranges served, inclusive; migrating/importing markers are left out.
    pub(super) slots: Vec<(u16, u16)>,
}

impl NodeEntry {
    pub(super) fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub(super) fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    pub(super) fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| lo <= slot && slot <= hi)
    }
}

/// Parses `CLUSTER NODES`:
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`.
/// Malformed lines are skipped.
pub(super) fn parse_cluster_nodes(text: &str) -> Vec<NodeEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let addr = fields[1].split(['@', ',']).next()?;
            let port = addr.rsplit_once(':')?.1.parse().ok()?;
            let flags = fields[2].split(',').map(str::to_owned).collect();
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((lo, hi)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            let master_id = Some(fields[3]).filter(|m| *m != "-").map(str::to_owned);
            Some(NodeEntry { id: fields[0].to_owned(), port, master_id, flags, slots })
        })
        .collect()
}

/// Who serves what, in a comparable form: sorted `(first slot, last slot, port)`.
pub(super) fn slot_map(entries: &[NodeEntry]) -> Vec<(u16, u16, u16)> {
    let mut map: Vec<(u16, u16, u16)> = entries
        .iter()
        .filter(|e| e.is_master())
        .flat_map(|e| e.slots.iter().map(move |&(lo, hi)| (lo, hi, e.port)))
        .collect();
    map.sort_unstable();
    map
}

/// Who replicates whom, in a comparable form: sorted `(port, master port)`, with
/// `None` for masters.
pub(super) fn roles(entries: &[NodeEntry]) -> Vec<(u16, Option<u16>)> {
    let mut roles: Vec<(u16, Option<u16>)> = entries
        .iter()
        .map(|e| {
            let master = e.master_id.as_ref().map(|id| entries.iter().find(|m| &m.id == id).map_or(0, |m| m.port));
            (e.port, master)
        })
        .collect();
    roles.sort_unstable();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,hostname4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [5461-<-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 16000
garbage
";

    #[test]
    fn parses_cluster_nodes() {
        let entries = parse_cluster_nodes(NODES);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].port, 30004);
        assert!(!entries[0].is_master());
        assert_eq!(entries[0].master_id.as_deref(), Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca"));
        assert_eq!(entries[1].master_id, None);
        assert_eq!(roles(&entries), vec![(30001, None), (30002, None), (30003, None), (30004, Some(30001))]);
        assert_eq!(entries[2].slots, vec![(10923, 16383)]);
        assert!(entries[3].has_flag("myself"));
        assert!(entries[3].serves(0) && entries[3].serves(5460) && entries[3].serves(16000));
        assert!(!entries[3].serves(5461));
        assert_eq!(
            slot_map(&entries),
            vec![(0, 5460, 30001), (5461, 10922, 30002), (10923, 16383, 30003), (16000, 16000, 30001)]
        );
    }
}
