//! Whisper routing: a whisper goes over an open connection to its target, else waits
//! while a connection is made: first directly to the target's first advertised
//! address, then through each relay its presence names, in turn (see [`super::relay`]).
//! When every way failed, every whisper waiting for the target fails with the reasons.

use std::collections::HashMap;
use std::net::SocketAddr;

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
    /// what its presence advertises, `relays` the relays it names. Queued whispers
    /// keep `reply` for their answer.
    pub fn route(
        &mut self,
        target: MemberId,
        open: Option<ConnId>,
        addresses: &[String],
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
        let mut ways: Vec<Way> = direct
            .into_iter()
            .chain(relays.iter().copied().map(Way::Relay))
            .collect();
        if ways.is_empty() {
            return (Route::Unreachable, Some((reply, text)));
        }
        let first = ways.remove(0);
        self.waiting.insert(
            target,
            Attempt {
                waiting: vec![(reply, text)],
                left: ways,
                failures: Vec::new(),
            },
        );
        (Route::Try(first), None)
    }

    /// A way to `target` failed for `reason` (`how` names the way, for the message):
    /// the next one to try, or the whispers to fail.
    pub fn failed(&mut self, target: &MemberId, how: &str, reason: &str) -> Option<Next<R>> {
        let attempt = self.waiting.get_mut(target)?;
        attempt.failures.push(format!("{how}: {reason}"));
        if !attempt.left.is_empty() {
            return Some(Next::Try(attempt.left.remove(0)));
        }
        let attempt = self.waiting.remove(target)?;
        Some(Next::GiveUp(attempt.waiting, attempt.failures.join("; ")))
    }

    /// A connection to `member` came up: the whispers waiting for it, in order.
    pub fn take(&mut self, member: &MemberId) -> Vec<(R, String)> {
        self.waiting.remove(member).map(|a| a.waiting).unwrap_or_default()
    }
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
        let addrs = vec!["junk".to_string(), "192.0.2.1:7".to_string()];
        assert_eq!(w.route(id('a'), Some(4), &addrs, &[], 1, "hi".into()).0, Route::Send(4));
        assert_eq!(
            w.route(id('a'), None, &addrs, &[], 2, "one".into()).0,
            Route::Try(Way::Dial("192.0.2.1:7".parse().unwrap()))
        );
        assert_eq!(w.route(id('a'), None, &addrs, &[], 3, "two".into()).0, Route::Wait);
        assert_eq!(
            w.route(id('b'), None, &[], &[], 4, "x".into()),
            (Route::Unreachable, Some((4, "x".into())))
        );
        assert_eq!(w.take(&id('a')), vec![(2, "one".into()), (3, "two".into())]);
        assert!(w.take(&id('a')).is_empty());
    }

    #[test]
    fn a_failed_dial_moves_on_to_each_relay_then_gives_up_with_every_reason() {
        let mut w: Whispers<u32> = Whispers::default();
        let addrs = vec!["192.168.1.2:7400".to_string()];
        let hop = |c| Hop {
            relay: id(c),
            addr: "11.11.0.1:7400".parse().unwrap(),
        };
        let relays = [hop('c'), hop('d')];
        let (route, _) = w.route(id('b'), None, &addrs, &relays, 1, "one".into());
        assert_eq!(route, Route::Try(Way::Dial("192.168.1.2:7400".parse().unwrap())));
        assert_eq!(w.route(id('b'), None, &addrs, &relays, 2, "two".into()).0, Route::Wait);
        assert_eq!(
            w.failed(&id('b'), "direct", "connect timed out"),
            Some(Next::Try(Way::Relay(hop('c'))))
        );
        assert_eq!(
            w.failed(&id('b'), "relay", "full"),
            Some(Next::Try(Way::Relay(hop('d'))))
        );
        assert_eq!(
            w.failed(&id('b'), "relay", "gone"),
            Some(Next::GiveUp(
                vec![(1, "one".into()), (2, "two".into())],
                "direct: connect timed out; relay: full; relay: gone".into()
            ))
        );
        assert_eq!(w.failed(&id('b'), "relay", "late"), None, "nothing waits any more");
        // No address at all: the relays straight away.
        assert_eq!(
            w.route(id('e'), None, &[], &relays, 3, "x".into()).0,
            Route::Try(Way::Relay(hop('c')))
        );
    }
}
