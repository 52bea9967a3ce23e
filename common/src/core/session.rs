//! A sync session with one neighbour, step by step: the dialler initiates with its
//! fingerprints, each answer narrows the ranges that differ (see [`crate::sync`]), and
//! each step says which records to send, which to ask for, and what to reply.
//!
//! The initiator's session is complete when it holds the union: after the responder's
//! empty reply (everything owed came before it on the one ordered stream), or after
//! SyncEndAck when it still owed or wanted records.

use uuid::Uuid;

use crate::sync::{self, ItemSet, SyncError, SyncKey};
use crate::wire::{MAX_WANT_IDS, Message};

/// What to do after a SyncRanges message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// Records the peer lacks: send their bodies.
    pub send: Vec<Uuid>,
    /// Want messages asking for records we lack (each within the wire's limit).
    pub want: Vec<Message>,
    /// The reply after the records and wants, if any.
    pub reply: Option<Message>,
    /// Our session with this peer is complete: we hold the union.
    pub finished: bool,
}

/// The first message of a session this node initiates, keyed by the connection's key.
pub fn initiate(items: &ItemSet, key: &SyncKey) -> Message {
    Message::SyncRanges {
        from_initiator: true,
        ranges: sync::encode_ranges(&sync::initiate(items, key)),
    }
}

/// Answers one SyncRanges message.
pub fn on_ranges(items: &ItemSet, key: &SyncKey, from_initiator: bool, bytes: &[u8]) -> Result<Step, SyncError> {
    let incoming = sync::decode_ranges(bytes)?;
    if !from_initiator && incoming.is_empty() {
        // The responder answered our last wants before this empty reply (one ordered
        // stream): we hold the union now, without waiting for SyncEndAck.
        return Ok(Step {
            reply: Some(Message::SyncEnd),
            finished: true,
            ..Step::default()
        });
    }
    let outcome = sync::reconcile(items, &incoming, key)?;
    let mut step = Step {
        send: outcome.send.iter().map(|b| Uuid::from_bytes(*b)).collect(),
        want: outcome
            .want
            .chunks(MAX_WANT_IDS)
            .map(|c| Message::Want {
                ids: c.iter().map(|b| Uuid::from_bytes(*b)).collect(),
            })
            .collect(),
        ..Step::default()
    };
    step.reply = Some(if from_initiator {
        Message::SyncRanges {
            from_initiator: false,
            ranges: sync::encode_ranges(&outcome.reply),
        }
    } else if outcome.reply.is_empty() {
        // Nothing outstanding either way (what we pushed is only the peer's once it
        // acknowledges): no need to wait for SyncEndAck.
        step.finished = outcome.want.is_empty() && outcome.send.is_empty();
        Message::SyncEnd
    } else {
        Message::SyncRanges {
            from_initiator: true,
            ranges: sync::encode_ranges(&outcome.reply),
        }
    });
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: SyncKey = SyncKey::new([3; 16]);
    use crate::sync::Item;

    fn item(n: u8, version: u64) -> Item {
        let mut id = [0u8; 16];
        id[0] = n;
        id[15] = n.wrapping_mul(37);
        Item {
            id,
            version,
            digest: [n; 16],
        }
    }

    fn set(items: &[Item]) -> ItemSet {
        let mut s = ItemSet::new();
        for i in items {
            s.insert(*i);
        }
        s
    }

    /// Runs a whole session between two sets, as two nodes would over one stream,
    /// applying sends and wants at once; returns the number of round trips.
    fn run(a: &mut ItemSet, b: &mut ItemSet) -> usize {
        let mut msg = initiate(a, &KEY);
        let mut rounds = 0;
        let mut at_b = true;
        loop {
            rounds += 1;
            assert!(rounds < 50, "no end");
            let Message::SyncRanges { from_initiator, ranges } = msg else {
                return rounds;
            };
            let (me, peer) = if at_b { (&mut *b, &mut *a) } else { (&mut *a, &mut *b) };
            let step = on_ranges(me, &KEY, from_initiator, &ranges).unwrap();
            for id in &step.send {
                peer.insert(me.get(id.as_bytes()).unwrap());
            }
            for w in &step.want {
                let Message::Want { ids } = w else { panic!() };
                for id in ids {
                    me.insert(peer.get(id.as_bytes()).unwrap());
                }
            }
            if step.finished {
                assert!(!at_b, "only the initiator finishes");
            }
            msg = step.reply.unwrap();
            at_b = !at_b;
        }
    }

    #[test]
    fn a_session_ends_with_both_holding_the_union() {
        let common: Vec<Item> = (0..100).map(|n| item(n, 1)).collect();
        let mut a = set(&common);
        let mut b = set(&common);
        a.insert(item(200, 1));
        b.insert(item(201, 1));
        b.insert(item(5, 2));
        run(&mut a, &mut b);
        let all = |s: &ItemSet| s.iter().collect::<Vec<_>>();
        assert_eq!(all(&a), all(&b));
        assert_eq!(a.get(&item(5, 2).id).unwrap().version, 2, "the newer copy wins");
        assert_eq!(a.len(), 102);
    }

    #[test]
    fn equal_sets_finish_in_one_round_trip() {
        let items: Vec<Item> = (0..50).map(|n| item(n, 1)).collect();
        let (a, b) = (set(&items), set(&items));
        let Message::SyncRanges { ranges, .. } = initiate(&a, &KEY) else {
            panic!()
        };
        let step = on_ranges(&b, &KEY, true, &ranges).unwrap();
        assert!(step.send.is_empty() && step.want.is_empty());
        let Some(Message::SyncRanges {
            ranges,
            from_initiator: false,
        }) = step.reply
        else {
            panic!()
        };
        let end = on_ranges(&a, &KEY, false, &ranges).unwrap();
        assert!(end.finished);
        assert_eq!(end.reply, Some(Message::SyncEnd));
    }

    #[test]
    fn garbage_ranges_are_an_error_not_a_panic() {
        assert!(on_ranges(&ItemSet::new(), &KEY, true, &[0xff, 0, 1]).is_err());
    }
}
