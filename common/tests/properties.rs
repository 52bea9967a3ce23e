//! Property tests of the core's rules: any two record sets reconcile to their union
//! (the newest copy of each id), and the set a node ends with does not depend on the
//! order in which records arrive (real signed records, the real admission path).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::core::session;
use common::core::{ConnReason, ConnUp, Core, Input, MemStore, Now, QuotaLimits};
use common::record::{CHAT_TYPE, Record};
use common::sim::{LinkParams, SIM_EPOCH_SECS, Sim};
use common::sync::{Item, ItemSet};
use common::wire::{Message, Purpose};
use proptest::prelude::*;

fn item(id: u8, version: u64, digest: u8) -> Item {
    let mut i = [0u8; 16];
    i[0] = id;
    i[15] = id.wrapping_mul(97);
    Item {
        id: i,
        version,
        digest: [digest; 16],
    }
}

fn set(items: &[(u8, u64, u8)]) -> ItemSet {
    let mut s = ItemSet::new();
    for &(id, v, d) in items {
        let new = item(id, v, d);
        // An ItemSet holds one copy per id: the higher version, as a node keeps.
        if s.get(&new.id).is_none_or(|old| old.version < new.version) {
            s.insert(new);
        }
    }
    s
}

/// Runs a session as two nodes would over one ordered stream; each side takes what
/// the other sends (the newer copy of an id).
fn reconcile(a: &mut ItemSet, b: &mut ItemSet) {
    let take = |to: &mut ItemSet, it: Item| {
        if to.get(&it.id).is_none_or(|old| old.version < it.version) {
            to.insert(it);
        }
    };
    let key = common::sync::SyncKey::new([5; 16]);
    let mut msg = session::initiate(a, &key);
    for round in 0.. {
        assert!(round < 64, "a session that does not end");
        let Message::SyncRanges { from_initiator, ranges } = msg else {
            return;
        };
        let (me, peer) = if round % 2 == 0 {
            (&mut *b, &mut *a)
        } else {
            (&mut *a, &mut *b)
        };
        let step = session::on_ranges(me, &key, from_initiator, &ranges).unwrap();
        for id in &step.send {
            take(peer, me.get(id.as_bytes()).unwrap());
        }
        for w in &step.want {
            let Message::Want { ids } = w else { unreachable!() };
            for id in ids {
                if let Some(it) = peer.get(id.as_bytes()) {
                    take(me, it);
                }
            }
        }
        msg = step.reply.unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_two_sets_reconcile_to_their_union(
        a in proptest::collection::vec((0u8..200, 1u64..4, 0u8..2), 0..300),
        b in proptest::collection::vec((0u8..200, 1u64..4, 0u8..2), 0..300),
    ) {
        let (mut sa, mut sb) = (set(&a), set(&b));
        let mut union: BTreeMap<[u8; 16], u64> = BTreeMap::new();
        for it in sa.iter().chain(sb.iter()) {
            let v = union.entry(it.id).or_insert(0);
            *v = (*v).max(it.version);
        }
        reconcile(&mut sa, &mut sb);
        let versions = |s: &ItemSet| s.iter().map(|i| (i.id, i.version)).collect::<BTreeMap<_, _>>();
        prop_assert_eq!(versions(&sa), union.clone());
        prop_assert_eq!(versions(&sb), union);
    }
}

/// Signed records of three members (chat messages, some edited by their creator to a
/// higher version, each member's membership record), made once; member 3 turns hostile
/// and adds a flood past its quota (six records an hour in this group), a record under
/// member 1's id, one above the version ceiling and one in member 2's name.
struct Fixture {
    sim: Sim,
    records: Vec<Record>,
    /// The one in member 2's name, whose signature fails: it comes from member 3
    /// itself (honest members forward only what they verified), whose connection
    /// it ends.
    forged: usize,
}

fn fixture() -> Fixture {
    let quota = QuotaLimits {
        bytes: 1024 * 1024,
        records: 6,
        ..QuotaLimits::default()
    };
    let sim = Sim::with_quota(7, 4, 1, LinkParams::default(), quota).unwrap();
    let mut records = Vec::new();
    let t = SIM_EPOCH_SECS * 1000;
    for n in 1..4 {
        let node = &sim.nodes[n];
        // Its membership record, as the node published it.
        let core = node.core.as_ref().unwrap();
        let membership = core
            .store()
            .records()
            .find(|r| r.creator == node.id && r.rtype == common::record::MEMBERSHIP_TYPE)
            .unwrap()
            .clone();
        records.push(membership);
        for k in 0..4 {
            let mut r = Record::new(CHAT_TYPE, node.id, t + k, 3_600_000);
            r.set_nonce(*uuid::Uuid::from_u64_pair(n as u64, k as u64).as_bytes());
            r.data = format!("{n}/{k}").into_bytes();
            r.sign(&node.group_id(), &node.key()).unwrap();
            records.push(r.clone());
            if k % 2 == 0 {
                r.version = 2;
                r.modified_ms += 1;
                r.data = format!("{n}/{k} edited").into_bytes();
                r.sign(&node.group_id(), &node.key()).unwrap();
                records.push(r);
            }
        }
    }
    let (victim, hostile) = (&sim.nodes[1], &sim.nodes[3]);
    let sign = |mut r: Record| {
        r.sign(&hostile.group_id(), &hostile.key()).unwrap();
        r
    };
    for k in 0..6u8 {
        let mut flood = Record::new(uuid::Uuid::from_u128(99), hostile.id, t + 10 + i64::from(k), 3_600_000);
        flood.set_nonce([k; 16]);
        flood.data = vec![k; 1000];
        records.push(sign(flood));
    }
    let mut squat = Record::new(CHAT_TYPE, hostile.id, t, 3_600_000);
    squat.id = records[1].id;
    squat.version = 9;
    squat.data = b"rewritten".to_vec();
    records.push(sign(squat));
    let mut pinned = Record::new(CHAT_TYPE, hostile.id, t, 3_600_000);
    pinned.set_nonce([42; 16]);
    pinned.version = 1 << 40;
    records.push(sign(pinned));
    let mut posing = Record::new(CHAT_TYPE, sim.nodes[2].id, t, 3_600_000);
    posing.set_nonce([43; 16]);
    records.push(sign(posing));
    assert_ne!(victim.id, hostile.id);
    let forged = records.len() - 1;
    Fixture { sim, records, forged }
}

/// What node 0 ends with after the records arrive in `order`, in frames of `chunk`,
/// over one connection from node 1 (memberships of nodes 2 and 3 unknown until their
/// records come: records before them are held, then released), but for the forged one,
/// which comes over node 3's connection in its turn. Frames are committed `together`
/// at a time, as the driver commits what arrived meanwhile.
fn ends_with(f: &Fixture, order: &[usize], chunk: usize, together: usize) -> Vec<Item> {
    let now = Now {
        instant: Instant::now(),
        unix_ns: SIM_EPOCH_SECS * 1_000_000_000 + 1_000_000,
    };
    let mut core: Core<MemStore> = f.sim.fresh_core(0, now);
    for (id, n) in [(1, 1), (3, 3)] {
        let peer = &f.sim.nodes[n];
        let addr: SocketAddr = peer.addr;
        core.handle(
            now,
            Input::Up(Box::new(ConnUp {
                id,
                member: peer.id,
                cert: peer.membership_cert().clone(),
                chain: Vec::new(),
                addr,
                outbound: false,
                purpose: Purpose::Neighbour,
                tie: (id, 2),
                sync_key: common::sync::SyncKey::new([id as u8; 16]),
                via: common::core::Via::Direct,
                observed: None,
            })),
        );
    }
    let frame = |bodies: Vec<Vec<u8>>| Message::Records { sync: false, bodies };
    // The records node 1 relays before the forgery arrives, and after.
    let forged_at = order.iter().position(|&i| i == f.forged).unwrap_or(0);
    let (before, after): (Vec<usize>, Vec<usize>) = (order[..forged_at].to_vec(), order[forged_at + 1..].to_vec());
    let mut frames = Vec::new();
    let relay = |frames: &mut Vec<(u64, Message)>, part: &[usize]| {
        for p in part.chunks(chunk.max(1)) {
            frames.push((1, frame(p.iter().map(|&i| f.records[i].encode()).collect())));
        }
    };
    relay(&mut frames, &before);
    frames.push((3, frame(vec![f.records[f.forged].encode()])));
    relay(&mut frames, &after);
    for group in frames.chunks(together.max(1)) {
        for (conn, msg) in group {
            core.handle(now, Input::Frame(*conn, msg.clone()));
        }
        core.flush(now);
    }
    core.handle(now, Input::Down(1, ConnReason::Transport("done".into())));
    while core.poll_output().is_some() {}
    core.items().iter().collect()
}

#[test]
fn the_set_a_node_ends_with_does_not_depend_on_arrival_order() {
    let f = fixture();
    let all: Vec<usize> = (0..f.records.len()).collect();
    let expected = ends_with(&f, &all, all.len(), 1);
    // Own membership and presence, 3 memberships, 12 chat ids, and of the hostile
    // member's flood the two that fit its quota after its four chat ids.
    assert_eq!(
        expected.len(),
        2 + 3 + 12 + 2,
        "every record admitted once, newest version"
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
    runner
        .run(
            &(Just(all.clone()).prop_shuffle(), 1usize..8, 1usize..5),
            |(order, chunk, together)| {
                prop_assert_eq!(ends_with(&f, &order, chunk, together), expected.clone());
                Ok(())
            },
        )
        .unwrap();
    let _ = Duration::ZERO;
}
