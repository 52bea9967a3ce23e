//! Relaying through members: the rules. A member that cannot be dialled (behind a NAT
//! with no mapping) stays reachable through a neighbour that can: the neighbour relays
//! a byte stream between the two, who run their own mutual TLS inside it, so the relay
//! sees ciphertext only. The I/O is `node::relay`; here are the limits that keep a
//! member from making another a free proxy, and the choice of relays to try.
//!
//! - A relay holds at most [`MAX_CIRCUITS_PER_MEMBER`] circuits asked for by one member
//!   and [`MAX_CIRCUITS`] in all; one member may ask at most [`REQUESTS_PER_MINUTE`]
//!   times a minute (refused or not), so it cannot make the relay pester a target.
//! - A circuit carries at most [`CIRCUIT_BYTES`] each way and lasts at most
//!   [`CIRCUIT_LIFETIME`]: whispers fit many times over; bulk traffic does not.
//! - A member takes at most [`OFFERS_PER_MINUTE`] relay offers a minute from one relay
//!   (each makes it dial that relay), so a hostile relay cannot keep it dialling.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::member::MemberId;

/// Most circuits one member may hold open through a relay.
pub const MAX_CIRCUITS_PER_MEMBER: usize = 4;
/// Most circuits a relay holds open in all.
pub const MAX_CIRCUITS: usize = 16;
/// Most circuit requests one member may make of a relay per minute.
pub const REQUESTS_PER_MINUTE: u32 = 20;
/// Most bytes a circuit carries in each direction.
pub const CIRCUIT_BYTES: u64 = 4 * 1024 * 1024;
/// Longest a circuit stays open.
pub const CIRCUIT_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Most relay offers a member acts on from one relay per minute, in all.
pub const OFFERS_PER_MINUTE: u32 = 20;
/// Most relay offers a member acts on from one relay for one asker per minute, so one
/// asker cannot spend the budget of all the others.
pub const OFFERS_PER_ASKER: u32 = 4;
/// Soonest a hole punch with one member is tried again (each costs a few SYNs to an
/// address a relay reported).
pub const PUNCH_EVERY: Duration = Duration::from_secs(60);
/// Most relays a member names in its presence.
pub const MAX_RELAYS: usize = 3;

/// Why a relay refused a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The member already holds this many circuits here.
    PerMember(usize),
    /// The relay holds this many circuits in all.
    Full(usize),
    /// The member asked more than this many times in the last minute.
    TooFast(u32),
    /// The target is not connected to the relay.
    NotConnected,
    /// A member asked for a circuit to itself or to the relay.
    Pointless,
    /// The target did not take the circuit in time.
    NoAnswer,
    /// The asker or the target is revoked.
    Revoked,
    /// The relay could not make a token.
    Internal,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::PerMember(n) => write!(f, "relay limit: {n} circuits per member are open already"),
            Refusal::Full(n) => write!(f, "relay limit: {n} circuits are open already"),
            Refusal::TooFast(n) => write!(f, "relay limit: more than {n} requests a minute"),
            Refusal::NotConnected => f.write_str("that member is not connected to this relay"),
            Refusal::Pointless => f.write_str("a circuit to oneself or to the relay"),
            Refusal::NoAnswer => f.write_str("the member did not take the relayed connection in time"),
            Refusal::Revoked => f.write_str("a revoked member"),
            Refusal::Internal => f.write_str("the relay cannot make a circuit now"),
        }
    }
}

/// The offers a member took from its relays: in all per relay, and per (relay, asker).
#[derive(Debug, Default)]
pub struct Offers {
    per_relay: HashMap<MemberId, PerMinute>,
    per_asker: HashMap<(MemberId, MemberId), PerMinute>,
}

impl Offers {
    /// Counts an offer from `relay` for `from`; false when over either budget.
    pub fn allow(&mut self, relay: MemberId, from: MemberId, now: Instant) -> bool {
        let live = |w: &PerMinute| now.duration_since(w.since) < Duration::from_secs(60);
        self.per_relay.retain(|_, w| live(w));
        self.per_asker.retain(|_, w| live(w));
        let asker = self
            .per_asker
            .entry((relay, from))
            .or_insert_with(|| PerMinute::new(now))
            .allow(OFFERS_PER_ASKER, now);
        let relay = self
            .per_relay
            .entry(relay)
            .or_insert_with(|| PerMinute::new(now))
            .allow(OFFERS_PER_MINUTE, now);
        asker && relay
    }
}

/// Whether others on the internet could dial this address: unicast and outside
/// every private, shared, loopback, link-local, documentation and reserved range.
pub fn is_global(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && c == 0))
        }
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            // Global unicast is 2000::/3, less the documentation prefix 2001:db8::/32.
            (first & 0xe000) == 0x2000 && !(first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// A window counter: at most `limit` events per minute.
#[derive(Debug, Clone, Copy)]
pub struct PerMinute {
    since: Instant,
    count: u32,
}

impl PerMinute {
    /// A window starting now.
    pub fn new(now: Instant) -> PerMinute {
        PerMinute { since: now, count: 0 }
    }

    /// Counts one event; false when it is over `limit` in this minute.
    pub fn allow(&mut self, limit: u32, now: Instant) -> bool {
        if now.duration_since(self.since) >= Duration::from_secs(60) {
            *self = PerMinute::new(now);
        }
        self.count += 1;
        self.count <= limit
    }

    /// Whether this minute's count so far is within `limit` (without counting).
    pub fn allow_count(&self, limit: u32) -> bool {
        self.count <= limit
    }

    /// Whether the window's minute is over (it counts nothing any more).
    pub fn ended(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= Duration::from_secs(60)
    }
}

/// A relay's circuits: how many each member holds, and its request rate.
#[derive(Debug, Default)]
pub struct Circuits {
    open: HashMap<MemberId, usize>,
    total: usize,
    requests: HashMap<MemberId, PerMinute>,
}

impl Circuits {
    /// Judges a request by `from` for a circuit to `target`, at relay `me`; when
    /// admitted, the circuit counts until [`Circuits::release`].
    pub fn admit(&mut self, me: MemberId, from: MemberId, target: MemberId, now: Instant) -> Result<(), Refusal> {
        // Windows that ended are forgotten, so the map holds only members asking now.
        self.requests.retain(|_, w| !w.ended(now));
        let window = self.requests.entry(from).or_insert_with(|| PerMinute::new(now));
        if !window.allow(REQUESTS_PER_MINUTE, now) {
            return Err(Refusal::TooFast(REQUESTS_PER_MINUTE));
        }
        if target == from || target == me {
            return Err(Refusal::Pointless);
        }
        let mine = self.open.get(&from).copied().unwrap_or(0);
        if mine >= MAX_CIRCUITS_PER_MEMBER {
            return Err(Refusal::PerMember(MAX_CIRCUITS_PER_MEMBER));
        }
        if self.total >= MAX_CIRCUITS {
            return Err(Refusal::Full(MAX_CIRCUITS));
        }
        *self.open.entry(from).or_insert(0) += 1;
        self.total += 1;
        Ok(())
    }

    /// A circuit `from` asked for ended (or was never completed).
    pub fn release(&mut self, from: MemberId) {
        if let Some(n) = self.open.get_mut(&from) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.open.remove(&from);
            }
        }
    }

    /// Circuits open in all.
    #[cfg(test)]
    pub fn total(&self) -> usize {
        self.total
    }
}

/// A relay to try: the member and where to dial it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The relay.
    pub relay: MemberId,
    /// Its address.
    pub addr: SocketAddr,
}

/// The relays to try for `target`, in the order its presence names them: each but
/// this node and the target, with the first address that parses (`address_of`).
pub fn hops(
    me: MemberId,
    target: MemberId,
    named: &[MemberId],
    address_of: impl Fn(&MemberId) -> Option<SocketAddr>,
) -> Vec<Hop> {
    named
        .iter()
        .filter(|r| **r != me && **r != target)
        .take(MAX_RELAYS)
        .filter_map(|r| address_of(r).map(|addr| Hop { relay: *r, addr }))
        .collect()
}

/// The relays named in a presence record's `relays` attribute: comma-separated member
/// ids; what does not parse is left out, and at most [`MAX_RELAYS`] are taken.
pub fn parse_relays(attr: &str) -> Vec<MemberId> {
    attr.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .take(MAX_RELAYS)
        .collect()
}

/// Whether presence should be published again for its relays: a member some other
/// member has dialled is reachable and names none; otherwise when it names none yet
/// and has some, or a relay it names is no longer a neighbour. A new neighbour alone
/// is no reason, so neighbour churn does not become presence churn.
pub fn relays_stale(published: &[MemberId], current: &[MemberId], reachable: bool) -> bool {
    if reachable {
        return false;
    }
    (published.is_empty() && !current.is_empty()) || published.iter().any(|r| !current.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> MemberId {
        MemberId::repeat(c)
    }

    #[test]
    fn circuits_are_limited_per_member_and_in_all() {
        let t = Instant::now();
        let mut c = Circuits::default();
        let (me, b) = (id('0'), id('b'));
        for _ in 0..MAX_CIRCUITS_PER_MEMBER {
            assert_eq!(c.admit(me, id('a'), b, t), Ok(()));
        }
        assert_eq!(
            c.admit(me, id('a'), b, t),
            Err(Refusal::PerMember(MAX_CIRCUITS_PER_MEMBER))
        );
        c.release(id('a'));
        assert_eq!(c.admit(me, id('a'), b, t), Ok(()), "a released circuit frees its place");
        let others = ['c', 'd', 'e', 'f'];
        for m in others {
            for _ in 0..MAX_CIRCUITS_PER_MEMBER {
                let _ = c.admit(me, id(m), b, t);
            }
        }
        assert_eq!(c.total(), MAX_CIRCUITS);
        assert_eq!(c.admit(me, id('9'), b, t), Err(Refusal::Full(MAX_CIRCUITS)));
        // Releasing what was never admitted changes nothing.
        c.release(id('8'));
        assert_eq!(c.total(), MAX_CIRCUITS);
    }

    #[test]
    fn requests_are_limited_per_minute_refused_or_not() {
        let t = Instant::now();
        let mut c = Circuits::default();
        let me = id('0');
        for _ in 0..REQUESTS_PER_MINUTE {
            assert_eq!(c.admit(me, id('a'), id('a'), t), Err(Refusal::Pointless));
        }
        assert_eq!(
            c.admit(me, id('a'), id('b'), t),
            Err(Refusal::TooFast(REQUESTS_PER_MINUTE))
        );
        assert_eq!(
            c.admit(me, id('c'), id('b'), t),
            Ok(()),
            "another member is not held back"
        );
        let later = t + Duration::from_secs(60);
        assert_eq!(c.admit(me, id('a'), id('b'), later), Ok(()));
        assert_eq!(c.admit(me, id('a'), me, later), Err(Refusal::Pointless));
    }

    #[test]
    fn hops_skip_this_node_and_the_target_and_members_without_an_address() {
        let addr: SocketAddr = "192.0.2.1:7".parse().unwrap();
        let named = [id('a'), id('0'), id('b'), id('c'), id('d'), id('e')];
        let got = hops(id('0'), id('b'), &named, |m| (*m != id('c')).then_some(addr));
        assert_eq!(
            got.iter().map(|h| h.relay).collect::<Vec<_>>(),
            [id('a'), id('d')],
            "at most three named relays are considered, then those with an address"
        );
        let parsed = parse_relays(&format!("{},junk,,{}", id('a'), id('b')));
        assert_eq!(parsed, [id('a'), id('b')]);
        assert_eq!(parse_relays("").len(), 0);
    }

    #[test]
    fn presence_names_relays_again_only_when_one_is_lost_or_none_was_named() {
        let (a, b, c) = (id('a'), id('b'), id('c'));
        assert!(relays_stale(&[], &[a], false));
        assert!(!relays_stale(&[], &[], false));
        assert!(!relays_stale(&[a], &[a, b], false), "a new neighbour is no reason");
        assert!(relays_stale(&[a, c], &[a, b], false), "c is gone");
        assert!(!relays_stale(&[], &[a], true), "a reachable member needs no relay");
    }

    #[test]
    fn one_asker_cannot_spend_the_offers_of_all_the_others() {
        let t = Instant::now();
        let mut o = Offers::default();
        let (r, h, a) = (id('0'), id('e'), id('a'));
        for _ in 0..OFFERS_PER_ASKER {
            assert!(o.allow(r, h, t));
        }
        assert!(!o.allow(r, h, t), "the hostile asker's share is spent");
        assert!(o.allow(r, a, t), "an honest asker still gets through the same relay");
        // Made-up askers share the relay's budget.
        let mut n = 0;
        for i in 0..200u8 {
            if o.allow(r, MemberId::from_bytes([i; 20]), t) {
                n += 1;
            }
        }
        assert!(
            n <= OFFERS_PER_MINUTE as usize,
            "{n} offers taken from one relay in a minute"
        );
        assert!(o.allow(id('1'), a, t), "another relay has its own budget");
    }

    #[test]
    fn offers_per_minute() {
        let t = Instant::now();
        let mut w = PerMinute::new(t);
        for _ in 0..OFFERS_PER_MINUTE {
            assert!(w.allow(OFFERS_PER_MINUTE, t));
        }
        assert!(!w.allow(OFFERS_PER_MINUTE, t + Duration::from_secs(59)));
        assert!(w.allow(OFFERS_PER_MINUTE, t + Duration::from_secs(60)));
    }
}
