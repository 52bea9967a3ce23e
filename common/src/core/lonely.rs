//! Saying plainly when no member can be reached: a node that has had no neighbour for
//! [`LONELY_AFTER`] while every dial failed says once which addresses it tried and why,
//! instead of waiting silently (members all behind NAT with no one others can dial,
//! say, or every other member offline).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a node goes without a neighbour, dials failing, before it says so.
pub const LONELY_AFTER: Duration = Duration::from_secs(15);
/// Most addresses named in the line.
const MAX_NAMED: usize = 8;

/// The state of one lonely spell: since when, and the last failure at each address.
#[derive(Debug)]
pub struct Lonely {
    since: Option<Instant>,
    failures: BTreeMap<SocketAddr, String>,
    told: bool,
}

impl Lonely {
    /// A node starting at `now`, with no neighbour yet.
    pub fn new(now: Instant) -> Lonely {
        Lonely {
            since: Some(now),
            failures: BTreeMap::new(),
            told: false,
        }
    }

    /// A dial to `addr` failed for `reason`.
    pub fn failed(&mut self, addr: SocketAddr, reason: String) {
        if self.since.is_some() && (self.failures.len() < MAX_NAMED || self.failures.contains_key(&addr)) {
            self.failures.insert(addr, reason);
        }
    }

    /// The neighbour count changed: a spell ends with a neighbour, starts without one.
    pub fn neighbours(&mut self, count: usize, now: Instant) {
        if count > 0 {
            self.since = None;
            self.failures.clear();
            self.told = false;
        } else if self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// The line to say now, once per spell: after [`LONELY_AFTER`] without a
    /// neighbour, when dials were tried and all failed.
    pub fn due(&mut self, now: Instant) -> Option<String> {
        let since = self.since?;
        if self.told || self.failures.is_empty() || now.duration_since(since) < LONELY_AFTER {
            return None;
        }
        self.told = true;
        let tried: Vec<String> = self.failures.iter().map(|(a, why)| format!("{a} ({why})")).collect();
        Some(format!(
            "no member reachable for {} s; tried {}. The others may be offline; if every member is behind NAT, one needs an address the others can dial (a public address, or a forwarded port with --advertise)",
            LONELY_AFTER.as_secs(),
            tried.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([11, 11, 0, 1], port))
    }

    #[test]
    fn a_node_without_neighbours_whose_dials_fail_says_so_once_naming_what_it_tried() {
        let t0 = Instant::now();
        let mut l = Lonely::new(t0);
        l.failed(addr(1), "connection refused".into());
        assert_eq!(l.due(t0 + Duration::from_secs(5)), None, "not yet");
        let line = l.due(t0 + LONELY_AFTER).expect("said");
        assert!(line.contains("11.11.0.1:1 (connection refused)"), "{line}");
        assert_eq!(l.due(t0 + 2 * LONELY_AFTER), None, "once per spell");
        // A neighbour ends the spell; losing it starts another.
        l.neighbours(1, t0 + 2 * LONELY_AFTER);
        l.neighbours(0, t0 + 3 * LONELY_AFTER);
        assert_eq!(l.due(t0 + 5 * LONELY_AFTER), None, "nothing tried in this spell");
        l.failed(addr(2), "timed out".into());
        assert!(l.due(t0 + 5 * LONELY_AFTER).is_some());
    }

    #[test]
    fn a_node_alone_with_nobody_to_dial_says_nothing_and_the_list_is_bounded() {
        let t0 = Instant::now();
        let mut l = Lonely::new(t0);
        assert_eq!(l.due(t0 + 10 * LONELY_AFTER), None);
        for p in 0..100 {
            l.failed(addr(p), "refused".into());
        }
        let line = l.due(t0 + 10 * LONELY_AFTER).unwrap();
        assert_eq!(line.matches("(refused)").count(), MAX_NAMED);
    }
}
