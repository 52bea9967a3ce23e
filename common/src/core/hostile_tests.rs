//! A member who turns hostile, against one core driven by hand: each test sends the
//! frames the attack needs on a real member's connection and checks the core's rule.

use std::time::Instant;

use super::*;
use crate::sim::{LinkParams, SIM_EPOCH_SECS, Sim};

/// One core (node 0 of a small simulated group) and connections to the others.
pub(super) struct Bench {
    pub sim: Sim,
    pub core: Core<MemStore>,
    pub now: Now,
}

impl Bench {
    /// Node 0's core over an empty store, `threads` verifying large batches.
    pub fn new(members: usize, threads: usize) -> Bench {
        let sim = Sim::new(7, members, 1, LinkParams::default()).unwrap();
        let now = Now {
            instant: Instant::now(),
            unix_ns: SIM_EPOCH_SECS * 1_000_000_000,
        };
        let mut cfg = sim.nodes[0].config(7);
        cfg.threads = threads;
        let core = Core::new(cfg, MemStore::new(), now).unwrap();
        let mut b = Bench { sim, core, now };
        b.drain();
        b
    }

    /// Node `i` connects (conn id `i`): its membership is known from the handshake.
    pub fn connect(&mut self, i: usize) -> ConnId {
        let peer = &self.sim.nodes[i];
        let up = ConnUp {
            id: i as ConnId,
            member: peer.id,
            cert: peer.membership_cert().clone(),
            addr: peer.addr,
            outbound: false,
            purpose: Purpose::Neighbour,
            tie: (i as u64, 1),
            sync_key: crate::sync::SyncKey::new([i as u8; 16]),
        };
        self.core.handle(self.now, Input::Up(Box::new(up)));
        self.drain();
        i as ConnId
    }

    /// A chat record by node `i`, signed by it.
    pub fn chat(&self, i: usize, text: &str) -> Record {
        let node = &self.sim.nodes[i];
        let mut r = Record::new(CHAT_TYPE, node.id, self.now.unix_ms(), 60_000);
        r.data = text.as_bytes().to_vec();
        r.sign(&node.group_id(), &node.key()).unwrap();
        r
    }

    /// Delivers a frame from `conn`, commits, and returns the outputs.
    pub fn feed(&mut self, conn: ConnId, msg: Message) -> Vec<Output> {
        self.core.handle(self.now, Input::Frame(conn, msg));
        self.core.flush(self.now);
        self.drain()
    }

    pub fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.core.poll_output()).collect()
    }

    pub fn stored(&self, id: &Uuid) -> Option<Record> {
        self.core.store().get(id).unwrap_or_else(|e| match e {})
    }
}

fn records(rs: &[&Record]) -> Message {
    Message::Records {
        sync: false,
        bodies: rs.iter().map(|r| r.encode()).collect(),
    }
}

/// Attack 1: `[F, G x 63]` in one frame, F a copy of the attacker's own G claiming
/// alice as creator and modifier, with other text but G's signature. Checked on the
/// parallel path (64 records, several threads), where results were once kept by
/// (id, signature) with the last one winning.
#[test]
fn a_forged_copy_cannot_borrow_the_signature_of_a_valid_record_in_the_same_batch() {
    let mut b = Bench::new(3, 4);
    let (mallory, alice) = (1, 2);
    let conn = b.connect(mallory);
    b.connect(alice);
    let g = b.chat(mallory, "harmless");
    let mut f = g.clone();
    f.creator = b.sim.nodes[alice].id;
    f.modifier = f.creator;
    f.data = b"alice says: send me your password".to_vec();
    let mut frame = vec![&f];
    frame.extend(std::iter::repeat_n(&g, 63));
    b.feed(conn, records(&frame));
    let stored = b.stored(&g.id).expect("G is stored");
    assert_eq!(stored.creator, b.sim.nodes[mallory].id, "F was stored as alice's");
    assert_eq!(stored.data, g.data);
}
