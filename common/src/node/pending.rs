//! Handshakes in progress, counted per address so no one host can hold every slot. The
//! accept loop asks [`Pending::admit`] before it spawns a handshake and refuses the
//! connection at once when told no; the slot is freed when the [`Slot`] is dropped. No
//! I/O here: only counting, testable without sockets.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use thiserror::Error;

/// What pending handshakes are counted against: one IPv4 address, or one IPv6 /64. A
/// /64 is the least one host is given (SLAAC needs it), so counting single IPv6
/// addresses would let one machine pose as 2^64 clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    /// An IPv4 address (also when it arrives IPv4-mapped on a dual-stack socket).
    V4(Ipv4Addr),
    /// An IPv6 address with its low 64 bits cleared.
    V6(Ipv6Addr),
}

impl AddressKey {
    /// The key `ip` is counted against.
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4),
                None => AddressKey::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
            },
        }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressKey::V4(v4) => write!(f, "{v4}"),
            AddressKey::V6(prefix) => write!(f, "{prefix}/64"),
        }
    }
}

/// Why a connection was refused before its handshake began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Refused {
    /// Its address already has as many handshakes in progress as one address may.
    #[error("{0} already has {1} handshakes in progress")]
    Address(AddressKey, usize),
    /// As many handshakes are in progress as the node takes at once.
    #[error("{0} handshakes already in progress")]
    Full(usize),
}

/// The counts of handshakes in progress, shared by the accept loop and the slots it
/// hands out (a std mutex: it is held for a map lookup, never across an await).
#[derive(Debug, Clone)]
pub struct Pending {
    counts: Arc<Mutex<Counts>>,
    per_address: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct Counts {
    /// Only keys with a handshake in progress: the map never outgrows `total` entries.
    by_key: HashMap<AddressKey, usize>,
    total: usize,
}

impl Pending {
    /// At most `per_address` handshakes per [`AddressKey`] and `total` in all.
    pub fn new(per_address: usize, total: usize) -> Pending {
        Pending {
            counts: Arc::new(Mutex::new(Counts::default())),
            per_address,
            total,
        }
    }

    /// A slot for a handshake from `ip`, or why not. The address's own limit is checked
    /// first, so one address that is over it never counts against the total.
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let key = AddressKey::of(ip);
        let mut counts = self.lock();
        let mine = counts.by_key.get(&key).copied().unwrap_or(0);
        if mine >= self.per_address {
            return Err(Refused::Address(key, mine));
        }
        if counts.total >= self.total {
            return Err(Refused::Full(counts.total));
        }
        counts.total += 1;
        *counts.by_key.entry(key).or_insert(0) += 1;
        Ok(Slot {
            pending: self.clone(),
            key,
        })
    }

    /// Handshakes in progress from `ip`'s key.
    pub fn of(&self, ip: IpAddr) -> usize {
        self.lock().by_key.get(&AddressKey::of(ip)).copied().unwrap_or(0)
    }

    /// Handshakes in progress in all.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Nothing panics while the lock is held; a poisoned lock still has sound counts.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One handshake in progress; dropping it frees its slot.
#[derive(Debug)]
#[must_use = "the slot is freed as soon as it is dropped"]
pub struct Slot {
    pending: Pending,
    key: AddressKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.pending.lock();
        counts.total -= 1;
        if let Some(n) = counts.by_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.by_key.remove(&self.key);
            }
        }
    }
}

/// At most so many reports in any one-second window: refusals are counted for the node
/// only as fast as it can show them, whatever rate they arrive at.
#[derive(Debug)]
pub struct ReportRate {
    per_second: u32,
    window: Option<(Instant, u32)>,
}

impl ReportRate {
    /// At most `per_second` reports a second.
    pub fn new(per_second: u32) -> ReportRate {
        ReportRate {
            per_second,
            window: None,
        }
    }

    /// Whether a report at `now` is within the rate (and counts it if so).
    pub fn allow(&mut self, now: Instant) -> bool {
        let (start, n) = self.window.get_or_insert((now, 0));
        if now.saturating_duration_since(*start) >= Duration::from_secs(1) {
            (*start, *n) = (now, 0);
        }
        if *n < self.per_second {
            *n += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv4_address_is_its_own_key() {
        assert_eq!(
            AddressKey::of(ip("192.0.2.7")),
            AddressKey::V4("192.0.2.7".parse().unwrap())
        );
        assert_ne!(AddressKey::of(ip("192.0.2.7")), AddressKey::of(ip("192.0.2.8")));
        assert_eq!(AddressKey::of(ip("192.0.2.7")).to_string(), "192.0.2.7");
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_counts_as_its_ipv4_address() {
        assert_eq!(AddressKey::of(ip("::ffff:192.0.2.7")), AddressKey::of(ip("192.0.2.7")));
    }

    #[test]
    fn two_ipv6_addresses_in_one_slash_64_share_a_key() {
        let a = AddressKey::of(ip("2001:db8:1:2::1"));
        let b = AddressKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv6_addresses_in_different_slash_64s_do_not_share_a_key() {
        assert_ne!(
            AddressKey::of(ip("2001:db8:1:2::1")),
            AddressKey::of(ip("2001:db8:1:3::1"))
        );
        // Differing only in the lowest bit of the prefix.
        assert_ne!(AddressKey::of(ip("2001:db8::1")), AddressKey::of(ip("2001:db8:0:1::1")));
    }

    #[test]
    fn an_address_over_its_limit_is_refused_and_others_are_not() {
        let pending = Pending::new(2, 10);
        let _a = pending.admit(ip("192.0.2.1")).unwrap();
        let _b = pending.admit(ip("::ffff:192.0.2.1")).unwrap();
        let key = AddressKey::of(ip("192.0.2.1"));
        assert_eq!(pending.admit(ip("192.0.2.1")).unwrap_err(), Refused::Address(key, 2));
        assert_eq!(pending.of(ip("192.0.2.1")), 2);
        let _c = pending.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(pending.total(), 3);
    }

    #[test]
    fn a_refusal_by_address_holds_nothing() {
        let pending = Pending::new(1, 10);
        let _a = pending.admit(ip("192.0.2.1")).unwrap();
        for _ in 0..1000 {
            assert!(pending.admit(ip("192.0.2.1")).is_err());
        }
        assert_eq!(pending.total(), 1);
    }

    #[test]
    fn the_total_is_enforced_but_one_address_cannot_reach_it() {
        let pending = Pending::new(2, 3);
        let _held: Vec<Slot> = (0..5).filter_map(|_| pending.admit(ip("192.0.2.1")).ok()).collect();
        assert_eq!(pending.total(), 2, "one address holds only its share");
        let _b = pending.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(pending.admit(ip("2001:db8:0:1::1")).unwrap_err(), Refused::Full(3));
    }

    #[test]
    fn dropping_a_slot_frees_it() {
        let pending = Pending::new(1, 1);
        let slot = pending.admit(ip("192.0.2.1")).unwrap();
        assert!(pending.admit(ip("192.0.2.1")).is_err());
        drop(slot);
        assert_eq!(pending.total(), 0);
        assert_eq!(pending.of(ip("192.0.2.1")), 0);
        assert!(pending.lock().by_key.is_empty(), "no entry left for an idle address");
        let _again = pending.admit(ip("192.0.2.1")).unwrap();
    }

    #[test]
    fn reports_are_limited_per_second() {
        let mut rate = ReportRate::new(3);
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| rate.allow(t0)).count();
        assert_eq!(allowed, 3);
        assert!(!rate.allow(t0 + Duration::from_millis(999)));
        assert!(rate.allow(t0 + Duration::from_secs(1)), "a new window");
        assert_eq!((0..100).filter(|_| rate.allow(t0 + Duration::from_secs(1))).count(), 2);
    }
}
