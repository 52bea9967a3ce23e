//! Whisper routing: a whisper goes over an open connection to its target, else waits
//! while a connection is made: first directly to the target's first advertised
//! address, then through each relay its presence names, in turn (see [`super::relay`]).
//! When every way failed, every whisper waiting for the target fails with the reasons.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::ConnId;
use super::relay::Hop;
use crate::member::MemberId;

/// How to reach a member for a whisper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Way {
    /// Dial this address.
    Dial(SocketAddr),
    /// Ask this relay for a circuit.
    Relay(Hop),
}

/// Where a whisper goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Over this open connection, now.
    Send(ConnId),
    /// Queued; try this way (the first whisper waiting for the target).
    Try(Way),
    /// Queued behind an attempt already under way.
    Wait,
    /// The target advertises no address and names no relay.
    Unreachable,
}

/// What to do after a way failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<R> {
    /// Try this way next; the whispers keep waiting.
    Try(Way),
    /// Nothing left to try: the whispers that waited, in order, and every reason.
    GiveUp(Vec<(R, String)>, String),
}

/// The whispers waiting for one target, the ways left to try and what went wrong.
#[derive(Debug)]
struct Attempt<R> {
    waiting: Vec<(R, String)>,
    /// The way under way: only its failure moves the attempt on.
    current: Way,
    left: Vec<Way>,
    failures: Vec<String>,
}

/// Whispers waiting for a connection, by target.
#[derive(Debug)]
pub struct Whispers<R> {
    waiting: HashMap<MemberId, Attempt<R>>,
}

impl<R> Default for Whispers<R> {
    fn default() -> Self {
        Whispers {
            waiting: HashMap::new(),
        }
    }
}

impl<R> Whispers<R> {
    /// Routes a whisper to `target`: `open` is a connection to it if any, `addresses`
    /// what its presence advertises and `own` this node's, `relays` the relays it
    /// names. Queued whispers keep `reply` for their answer.
    pub fn route(
        &mut self,
        target: MemberId,
        open: Option<ConnId>,
        (addresses, own): (&[String], &[String]),
        relays: &[Hop],
        reply: R,
        text: String,
    ) -> (Route, Option<(R, String)>) {
        if let Some(conn) = open {
            return (Route::Send(conn), Some((reply, text)));
        }
        if let Some(attempt) = self.waiting.get_mut(&target) {
            attempt.waiting.push((reply, text));
            return (Route::Wait, None);
        }
        let direct = addresses
            .iter()
            .find_map(|a| a.parse::<SocketAddr>().ok())
            .map(Way::Dial);
        let relayed = relays.iter().copied().map(Way::Relay);
        let mut ways: Vec<Way> = if !relays.is_empty() && out_of_reach(addresses, own) {
            relayed.chain(direct).collect()
        } else {
            direct.into_iter().chain(relayed).collect()
        };
        if ways.is_empty() {
            return (Route::Unreachable, Some((reply, text)));
        }
        let first = ways.remove(0);
        self.waiting.insert(
            target,
            Attempt {
                waiting: vec![(reply, text)],
                current: first.clone(),
                left: ways,
                failures: Vec::new(),
            },
        );
        (Route::Try(first), None)
    }

    /// `way` to `target` failed for `reason` (`how` names it, for the message): the
    /// next one to try, or the whispers to fail. A failure of any other way (a late one
    /// from an earlier attempt) changes nothing.
    pub fn failed(&mut self, target: &MemberId, way: &Way, how: &str, reason: &str) -> Option<Next<R>> {
        let attempt = self.waiting.get_mut(target)?;
        if attempt.current != *way {
            return None;
        }
        attempt.failures.push(format!("{how}: {reason}"));
        if !attempt.left.is_empty() {
            attempt.current = attempt.left.remove(0);
            return Some(Next::Try(attempt.current.clone()));
        }
        let attempt = self.waiting.remove(target)?;
        Some(Next::GiveUp(attempt.waiting, attempt.failures.join("; ")))
    }

    /// A connection to `member` came up: the whispers waiting for it, in order.
    pub fn take(&mut self, member: &MemberId) -> Vec<(R, String)> {
        self.waiting.remove(member).map(|a| a.waiting).unwrap_or_default()
    }
}

/// Whether a member advertising `addresses` is surely not dialled directly from a node
/// advertising `own`: every address of its is private (or otherwise not global) and
/// none lies in a /24 (IPv4) or /64 (IPv6) of ours, so it is behind another NAT. Then
/// its relays come first, and the direct dial (which would only time out) last.
pub fn out_of_reach(addresses: &[String], own: &[String]) -> bool {
    let ips = |list: &[String]| -> Vec<IpAddr> {
        list.iter()
            .filter_map(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .collect()
    };
    let (theirs, ours) = (ips(addresses), ips(own));
    let near = |a: &IpAddr, b: &IpAddr| match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    };
    theirs
        .iter()
        .all(|t| !super::relay::is_global(*t) && !t.is_loopback() && !ours.iter().any(|o| near(t, o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> MemberId {
        MemberId::repeat(c)
    }

    #[test]
    fn open_connections_first_then_one_attempt_for_all_waiting() {
        let mut w: Whispers<u32> = Whispers::default();
        let own: Vec<String> = Vec::new();
        let addrs = vec!["junk".to_string(), "192.0.2.1:7".to_string()];
        assert_eq!(
            w.route(id('a'), Some(4), (&addrs, &own), &[], 1, "hi".into()).0,
            Route::Send(4)
        );
        assert_eq!(
            w.route(id('a'), None, (&addrs, &own), &[], 2, "one".into()).0,
            Route::Try(Way::Dial("192.0.2.1:7".parse().unwrap()))
        );
        assert_eq!(
            w.route(id('a'), None, (&addrs, &own), &[], 3, "two".into()).0,
            Route::Wait
        );
        assert_eq!(
            w.route(id('b'), None, (&[], &own), &[], 4, "x".into()),
            (Route::Unreachable, Some((4, "x".into())))
        );
        assert_eq!(w.take(&id('a')), vec![(2, "one".into()), (3, "two".into())]);
        assert!(w.take(&id('a')).is_empty());
    }

    /// Red-team finding: a late failure from an attempt that ended moved a new attempt
    /// on while its own way was still under way.
    #[test]
    fn a_late_failure_of_an_earlier_attempt_changes_nothing() {
        let mut w: Whispers<u32> = Whispers::default();
        let own: Vec<String> = Vec::new();
        let addrs = vec!["192.0.2.1:7".to_string()];
        let hop = Hop {
            relay: id('c'),
            addr: "11.11.0.1:7400".parse().unwrap(),
        };
        let direct = Way::Dial("192.0.2.1:7".parse().unwrap());
        w.route(id('b'), None, (&addrs, &own), &[hop], 1, "one".into());
        assert_eq!(w.take(&id('b')).len(), 1, "the connection came up");
        w.route(id('b'), None, (&[], &own), &[hop], 2, "two".into());
        assert_eq!(w.failed(&id('b'), &direct, "direct", "late"), None);
    }

    #[test]
    fn a_failed_dial_moves_on_to_each_relay_then_gives_up_with_every_reason() {
        let mut w: Whispers<u32> = Whispers::default();
        // On the same LAN: the direct dial first.
        let own = vec!["192.168.1.9:7400".to_string()];
        let addrs = vec!["192.168.1.2:7400".to_string()];
        let hop = |c| Hop {
            relay: id(c),
            addr: "11.11.0.1:7400".parse().unwrap(),
        };
        let relays = [hop('c'), hop('d')];
        let direct = Way::Dial("192.168.1.2:7400".parse().unwrap());
        let (route, _) = w.route(id('b'), None, (&addrs, &own), &relays, 1, "one".into());
        assert_eq!(route, Route::Try(Way::Dial("192.168.1.2:7400".parse().unwrap())));
        assert_eq!(
            w.route(id('b'), None, (&addrs, &own), &relays, 2, "two".into()).0,
            Route::Wait
        );
        assert_eq!(
            w.failed(&id('b'), &direct, "direct", "connect timed out"),
            Some(Next::Try(Way::Relay(hop('c'))))
        );
        assert_eq!(
            w.failed(&id('b'), &direct, "direct", "late"),
            None,
            "not the way under way"
        );
        assert_eq!(
            w.failed(&id('b'), &Way::Relay(hop('c')), "relay", "full"),
            Some(Next::Try(Way::Relay(hop('d'))))
        );
        assert_eq!(
            w.failed(&id('b'), &Way::Relay(hop('d')), "relay", "gone"),
            Some(Next::GiveUp(
                vec![(1, "one".into()), (2, "two".into())],
                "direct: connect timed out; relay: full; relay: gone".into()
            ))
        );
        assert_eq!(
            w.failed(&id('b'), &Way::Relay(hop('d')), "relay", "late"),
            None,
            "nothing waits any more"
        );
        // No address at all: the relays straight away.
        assert_eq!(
            w.route(id('e'), None, (&[], &own), &relays, 3, "x".into()).0,
            Route::Try(Way::Relay(hop('c')))
        );
    }

    /// A member behind another NAT: its relays first, the direct dial (which would
    /// only time out) last.
    #[test]
    fn a_member_behind_another_nat_is_tried_through_its_relays_first() {
        let mut w: Whispers<u32> = Whispers::default();
        let hop = Hop {
            relay: id('c'),
            addr: "11.11.0.1:7400".parse().unwrap(),
        };
        let theirs = vec!["192.168.2.2:7400".to_string()];
        let own = vec!["192.168.1.2:7400".to_string()];
        let (route, _) = w.route(id('b'), None, (&theirs, &own), &[hop], 1, "x".into());
        assert_eq!(route, Route::Try(Way::Relay(hop)));
        let direct = Way::Dial("192.168.2.2:7400".parse().unwrap());
        assert_eq!(
            w.failed(&id('b'), &Way::Relay(hop), "relay", "gone"),
            Some(Next::Try(direct))
        );
        assert!(out_of_reach(&theirs, &own));
        assert!(!out_of_reach(&theirs, &["192.168.2.9:1".to_string()]), "the same LAN");
        assert!(!out_of_reach(&["11.11.0.5:7400".to_string()], &own), "a public address");
        assert!(!out_of_reach(&["127.0.0.1:7400".to_string()], &[]), "this host");
    }
}
