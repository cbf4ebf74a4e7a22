//! Choosing a gpu-host: least outstanding requests among the healthy ones.
//!
//! The state (outstanding counts, "down until" marks) lives in the
//! key-value store because concurrent requests run in separate instances;
//! this module only orders the hosts. The HTTP side is `component.rs`.

/// What the pool knows about one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostState {
    pub outstanding: i64,
    /// Marked down (a failed connection or health check) until this time, ms.
    pub down_until_ms: u64,
}

/// A host to try and whether it must pass `/health` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    /// Its down mark has expired: probe `/health` before sending to it.
    pub probe: bool,
}

/// The order to try hosts in: healthy ones by outstanding requests (ties
/// broken by `rotate`, so equal hosts share the load), then hosts whose down
/// mark has expired (to be probed). Hosts still marked down are left out.
pub fn order(states: &[HostState], now_ms: u64, rotate: usize) -> Vec<Candidate> {
    let n = states.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by_key(|&i| {
        let s = states[i];
        let class = if s.down_until_ms == 0 { 0 } else if s.down_until_ms <= now_ms { 1 } else { 2 };
        (class, s.outstanding.max(0), (i + n - rotate % n.max(1)) % n.max(1))
    });
    idx.into_iter()
        .filter(|&i| states[i].down_until_ms <= now_ms)
        .map(|i| Candidate { index: i, probe: states[i].down_until_ms != 0 })
        .collect()
}

/// Parses the `gpu_hosts` variable: comma- or whitespace-separated base URLs.
pub fn parse_hosts(var: &str) -> Vec<String> {
    var.split(|c: char| c == ',' || c.is_whitespace())
        .map(|h| h.trim().trim_end_matches('/'))
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(outstanding: i64, down_until_ms: u64) -> HostState {
        HostState { outstanding, down_until_ms }
    }

    #[test]
    fn least_outstanding_first_down_hosts_last_or_skipped() {
        let got = order(&[s(3, 0), s(1, 0), s(0, 5_000), s(0, 500)], 1_000, 0);
        let idx: Vec<(usize, bool)> = got.iter().map(|c| (c.index, c.probe)).collect();
        assert_eq!(idx, vec![(1, false), (0, false), (3, true)]);
        assert!(order(&[s(0, 5_000)], 1_000, 0).is_empty());
    }

    #[test]
    fn ties_rotate() {
        let a = order(&[s(0, 0), s(0, 0)], 0, 0)[0].index;
        let b = order(&[s(0, 0), s(0, 0)], 0, 1)[0].index;
        assert_ne!(a, b);
    }

    #[test]
    fn hosts_parse() {
        assert_eq!(parse_hosts(" http://a:1/, http://b:2 "), vec!["http://a:1", "http://b:2"]);
        assert!(parse_hosts("").is_empty());
    }
}
