//! Whisper routing: a whisper goes over an open connection to its target, else waits
//! while one direct connection is dialled to the target's first advertised address;
//! when that dial fails every whisper waiting for it fails with the reason.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::ConnId;
use crate::member::MemberId;

/// Where a whisper goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Over this open connection, now.
    Send(ConnId),
    /// Queued; dial this address for it (the first whisper waiting for the target).
    Dial(SocketAddr),
    /// Queued behind a dial already under way.
    Wait,
    /// The target advertises no address to dial.
    Unreachable,
}

/// Whispers waiting for a direct connection, by target.
#[derive(Debug)]
pub struct Whispers<R> {
    waiting: HashMap<MemberId, Vec<(R, String)>>,
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
    /// what its presence advertises. Queued whispers keep `reply` for their answer.
    pub fn route(
        &mut self,
        target: MemberId,
        open: Option<ConnId>,
        addresses: &[String],
        reply: R,
        text: String,
    ) -> (Route, Option<(R, String)>) {
        if let Some(conn) = open {
            return (Route::Send(conn), Some((reply, text)));
        }
        let Some(addr) = addresses.iter().find_map(|a| a.parse::<SocketAddr>().ok()) else {
            return (Route::Unreachable, Some((reply, text)));
        };
        let queue = self.waiting.entry(target).or_default();
        queue.push((reply, text));
        if queue.len() == 1 {
            (Route::Dial(addr), None)
        } else {
            (Route::Wait, None)
        }
    }

    /// A connection to `member` came up (or its dial failed): the whispers waiting
    /// for it, in order.
    pub fn take(&mut self, member: &MemberId) -> Vec<(R, String)> {
        self.waiting.remove(member).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> MemberId {
        MemberId::repeat(c)
    }

    #[test]
    fn open_connections_first_then_one_dial_for_all_waiting() {
        let mut w: Whispers<u32> = Whispers::default();
        let addrs = vec!["junk".to_string(), "192.0.2.1:7".to_string()];
        assert_eq!(w.route(id('a'), Some(4), &addrs, 1, "hi".into()).0, Route::Send(4));
        assert_eq!(
            w.route(id('a'), None, &addrs, 2, "one".into()).0,
            Route::Dial("192.0.2.1:7".parse().unwrap())
        );
        assert_eq!(w.route(id('a'), None, &addrs, 3, "two".into()).0, Route::Wait);
        assert_eq!(
            w.route(id('b'), None, &[], 4, "x".into()),
            (Route::Unreachable, Some((4, "x".into())))
        );
        assert_eq!(w.take(&id('a')), vec![(2, "one".into()), (3, "two".into())]);
        assert!(w.take(&id('a')).is_empty());
    }
}
