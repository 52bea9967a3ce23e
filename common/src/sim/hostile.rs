//! A member who turns hostile, in the simulation: a real member (its core keeps
//! running, it stays in the mesh) that also sends, on every connection it has, the
//! frames of the attacks in issue 10, one kind per round and per connection:
//!
//! 0. a forged copy of its own record in another member's name, in one frame with 63
//!    copies of the genuine one (the parallel-verification forgery);
//! 1. a record under someone else's record id, at the highest version;
//! 2. a Want naming one record 2,048 times, and a sync message asking for everything;
//! 3. records of members nobody knows, 60 KB each (held before any signature check);
//! 4. a flood of records of a type nobody shows, past its own quota;
//! 5. two different records, one to each half of its neighbours (the two sides of a
//!    partition that sync must reconcile);
//! 6. direct connections, more than any node keeps from one member, and a whisper over
//!    the size limit.
//!
//! A k-sum collision over signed records (attack 5 proper) would take millions of
//! signatures per round; the collision itself is tested on the sync functions.

use super::*;
use crate::record::{CHAT_TYPE, Record};
use crate::sync::{Bound, Mode, Range};

/// The most any honest node was seen holding against its budgets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Bytes queued to one connection.
    pub queued: usize,
    /// Items owed to one connection.
    pub owed: usize,
    /// Bytes of held records.
    pub held_bytes: usize,
    /// Direct connections from one member.
    pub direct_per_member: usize,
}

impl Budgets {
    pub(super) fn sample(&mut self, core: &Core<MemStore>) {
        let (queued, owed) = core.queue_peaks();
        self.queued = self.queued.max(queued);
        self.owed = self.owed.max(owed);
        self.held_bytes = self.held_bytes.max(core.held_bytes());
        self.direct_per_member = self.direct_per_member.max(core.direct_counts().1);
    }
}

/// A record type nobody shows.
const UNKNOWN_TYPE: Uuid = Uuid::from_u128(0x0bad_0bad_0bad_0bad_0bad_0bad_0bad_0bad);

impl Sim {
    /// Node `h` turns hostile: `rounds` rounds of attacks, the first at `from`, one
    /// every `every`.
    pub fn turn_hostile(&mut self, h: usize, from: Duration, every: Duration, rounds: u64) {
        self.hostile = Some(h);
        for round in 0..rounds {
            let at = from + every * round as u32;
            let after = at.saturating_sub(self.now);
            self.schedule(after, Happening::Attack { node: h, round });
        }
    }

    /// One round: a frame (or a few) of one attack on each of node `h`'s connections.
    pub(super) fn attack_round(&mut self, h: usize, round: u64) {
        let boot = self.nodes[h].boots;
        let Some(core) = self.nodes[h].core.as_ref() else {
            return;
        };
        let conns: Vec<(ConnId, usize)> = self
            .ends
            .iter()
            .filter(|(_, e)| e.alive && e.node == h && e.boot == boot)
            .filter_map(|(id, e)| self.ends.get(&e.peer).map(|p| (*id, p.node)))
            .collect();
        let me = self.nodes[h].id;
        let mut theirs: Vec<Record> = core
            .store()
            .records()
            .filter(|r| r.creator != me && r.rtype == CHAT_TYPE)
            .cloned()
            .collect();
        // In id order: a simulation replays the same way from its seed.
        theirs.sort_by_key(|r| r.id);
        let now_ms = self.clock().unix_ms();
        for (k, &(conn, peer)) in conns.iter().enumerate() {
            let kind = (round + k as u64) % 7;
            let frames = match kind {
                0 => self.forgery(h, peer, round, now_ms),
                1 => theirs
                    .get((round as usize + k) % theirs.len().max(1))
                    .map(|victim| self.squat(h, victim, now_ms))
                    .unwrap_or_default(),
                2 => ask_everything(theirs.first()),
                3 => self.unknown_signers(h, round, now_ms),
                4 => self.quota_flood(h, round, k, now_ms),
                5 => self.split_view(h, round, k, now_ms),
                _ => {
                    self.direct_flood(h, peer);
                    vec![Message::Whisper {
                        text: "x".repeat(crate::wire::MAX_WHISPER_BYTES + 1),
                    }]
                }
            };
            for m in frames {
                self.transmit(conn, &Arc::new(m.encode()));
            }
        }
    }

    fn signed(&self, h: usize, mut r: Record) -> Record {
        let node = &self.nodes[h];
        r.sign(&node.group_id(), &node.key()).expect("a simulated key signs");
        r
    }

    fn own_chat(&self, h: usize, text: String, now_ms: i64, nonce: [u8; 16]) -> Record {
        let mut r = Record::new(CHAT_TYPE, self.nodes[h].id, now_ms, 600_000);
        r.set_nonce(nonce);
        r.data = text.into_bytes();
        self.signed(h, r)
    }

    /// Attack 1: `[F, G x 63]`, F claiming the neighbour as its author.
    fn forgery(&self, h: usize, peer: usize, round: u64, now_ms: i64) -> Vec<Message> {
        let g = self.own_chat(h, format!("harmless {round}"), now_ms, nonce(1, round));
        let mut f = g.clone();
        f.creator = self.nodes[peer].id;
        f.modifier = f.creator;
        f.data = format!("forged in {}'s name", self.nodes[peer].id.short()).into_bytes();
        if round % 2 == 1 {
            // Under the id the claimed author's name calls for, too.
            f.set_nonce(f.nonce);
        }
        let mut bodies = vec![f.encode()];
        bodies.extend(std::iter::repeat_n(g.encode(), 63));
        vec![Message::Records { sync: false, bodies }]
    }

    /// Attack 2: someone else's record id, the highest version, other text.
    fn squat(&self, h: usize, victim: &Record, now_ms: i64) -> Vec<Message> {
        let mut r = Record::new(CHAT_TYPE, self.nodes[h].id, now_ms, 600_000);
        r.id = victim.id;
        r.version = u64::MAX;
        r.data = b"rewritten".to_vec();
        let r = self.signed(h, r);
        vec![Message::Records {
            sync: false,
            bodies: vec![r.encode()],
        }]
    }

    /// Attack 4: records of members nobody knows, large, signed by anyone.
    fn unknown_signers(&mut self, h: usize, round: u64, now_ms: i64) -> Vec<Message> {
        let bodies = (0..5)
            .map(|_| {
                let mut id = [0u8; 20];
                for chunk in id.chunks_mut(8) {
                    let b = self.rng.next_u64().to_be_bytes();
                    chunk.copy_from_slice(&b[..chunk.len()]);
                }
                let mut r = Record::new(UNKNOWN_TYPE, MemberId::from_bytes(id), now_ms, 600_000);
                r.data = vec![round as u8; 60_000];
                self.signed(h, r).encode()
            })
            .collect();
        vec![Message::Records { sync: false, bodies }]
    }

    /// Attack 9: valid records of a type nobody shows, past the member's quota.
    fn quota_flood(&self, h: usize, round: u64, k: usize, now_ms: i64) -> Vec<Message> {
        let bodies = (0..20u64)
            .map(|i| {
                let mut r = Record::new(UNKNOWN_TYPE, self.nodes[h].id, now_ms - i as i64, 600_000);
                r.set_nonce(nonce(4, round * 1000 + k as u64 * 50 + i));
                r.data = vec![i as u8; 8_000];
                self.signed(h, r).encode()
            })
            .collect();
        vec![Message::Records { sync: false, bodies }]
    }

    /// Attack 5's setting: one record for the even neighbours, another for the odd.
    fn split_view(&self, h: usize, round: u64, k: usize, now_ms: i64) -> Vec<Message> {
        let side = k % 2;
        let r = self.own_chat(
            h,
            format!("only side {side} of round {round}"),
            now_ms,
            nonce(5, round * 2 + side as u64),
        );
        vec![Message::Records {
            sync: false,
            bodies: vec![r.encode()],
        }]
    }

    /// Attack 7: more direct connections to `peer` than it keeps from one member.
    fn direct_flood(&mut self, h: usize, peer: usize) {
        let (addr, id) = (self.nodes[peer].addr, self.nodes[peer].id);
        for _ in 0..6 {
            let n = self.rng.next_u64();
            self.dial(h, addr, Some(id), Purpose::Direct, n);
        }
    }
}

/// Attack 3: one record asked for 2,048 times, and a sync message whose empty item
/// list asks for the whole database.
fn ask_everything(some: Option<&Record>) -> Vec<Message> {
    let mut out = Vec::new();
    if let Some(r) = some {
        out.push(Message::Want { ids: vec![r.id; 2048] });
    }
    out.push(Message::SyncRanges {
        from_initiator: true,
        ranges: crate::sync::encode_ranges(&[Range {
            upper: Bound::End,
            mode: Mode::IdList(Vec::new()),
        }]),
    });
    out
}

/// A nonce for the hostile member's records: its attack and a counter.
fn nonce(attack: u8, n: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = 0xee;
    b[1] = attack;
    b[8..].copy_from_slice(&n.to_be_bytes());
    b
}
