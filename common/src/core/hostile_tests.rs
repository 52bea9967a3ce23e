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
        Bench::with_quota(members, threads, QuotaLimits::default())
    }

    /// [`Bench::new`] under the quota figures `quota`.
    pub fn with_quota(members: usize, threads: usize, quota: QuotaLimits) -> Bench {
        let sim = Sim::with_quota(7, members, 1, LinkParams::default(), quota).unwrap();
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
            chain: Vec::new(),
            addr: peer.addr,
            outbound: false,
            purpose: Purpose::Neighbour,
            tie: (i as u64, 1),
            sync_key: crate::sync::SyncKey::new([i as u8; 16]),
            via: crate::core::Via::Direct,
            observed: None,
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

/// Attack 1: `[F, G, G1 .. Gn]` in one frame (n = `PARALLEL_VERIFY_MIN`), F a copy of
/// the attacker's own G claiming alice as creator and modifier, with other text but G's
/// signature. Checked on the parallel path (n + 2 distinct records, several threads), where results were once
/// kept by (id, signature) with the last one winning. (Copies alike in every byte are
/// checked once, so the batch is made of distinct records.)
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
    let others: Vec<Record> = (0..admission::PARALLEL_VERIFY_MIN)
        .map(|k| b.chat(mallory, &format!("filler {k}")))
        .collect();
    let mut frame = vec![&f, &g];
    frame.extend(others.iter());
    b.feed(conn, records(&frame));
    let stored = b.stored(&g.id).expect("G is stored");
    assert_eq!(stored.creator, b.sim.nodes[mallory].id, "F was stored as alice's");
    assert_eq!(stored.data, g.data);
    assert!(others.iter().all(|r| b.stored(&r.id).is_some()));
}

/// Bytes of the frames among `outputs` sent on `conn`.
fn sent_to(outputs: &[Output], conn: ConnId) -> usize {
    outputs
        .iter()
        .map(|o| match o {
            Output::Transmit { conn: c, frame } if *c == conn => frame.len(),
            _ => 0,
        })
        .sum()
}

/// Attack 3: a Want naming one large record 2,048 times, and a sync message whose
/// empty id list asks for the whole database, from a member who never reads. What the
/// node queues stays within the serving budget; the rest waits as ids.
#[test]
fn asking_for_everything_queues_no_more_than_the_serving_budget() {
    let mut b = Bench::new(3, 1);
    let (alice, mallory) = (1, 2);
    let from_alice = b.connect(alice);
    let to_mallory = b.connect(mallory);
    let text = "x".repeat(record::MAX_CHAT_BYTES);
    let chats: Vec<Record> = (0..400).map(|_| b.chat(alice, &text)).collect();
    for part in chats.chunks(50) {
        b.feed(from_alice, records(&part.iter().collect::<Vec<_>>()));
    }
    let total: usize = chats.iter().map(|r| r.encode().len()).sum();
    assert!(total > 6 * 1024 * 1024);

    let one = Message::Want {
        ids: vec![chats[0].id; 2048],
    };
    let out = b.feed(to_mallory, one);
    let sent = sent_to(&out, to_mallory);
    assert!(
        sent < 2 * record::MAX_CHAT_BYTES,
        "one record asked 2,048 times: {sent} bytes"
    );

    let everything = Message::SyncRanges {
        from_initiator: true,
        ranges: crate::sync::encode_ranges(&[crate::sync::Range {
            upper: crate::sync::Bound::End,
            mode: crate::sync::Mode::IdList(Vec::new()),
        }]),
    };
    let out = b.feed(to_mallory, everything);
    let sent = sent_to(&out, to_mallory);
    assert!(
        sent <= flow::SERVE_BYTES + RECORDS_FRAME_BUDGET,
        "queued {sent} bytes of a {total}-byte database at once"
    );
    // As the peer reads, the rest follows, in order, then the sync reply.
    let mut more = 0;
    for _ in 0..100 {
        b.core.handle(b.now, Input::Queued(to_mallory, 0, 0));
        let out = b.drain();
        let n = sent_to(&out, to_mallory);
        if n == 0 {
            break;
        }
        more += n;
    }
    assert!(
        sent + more >= total,
        "only {} of {total} bytes were served",
        sent + more
    );
}

/// Attack 9: a member floods large records of a type nobody shows. Its records count
/// against its own quota (the first ones by creation time are kept, the same on every
/// node whatever the arrival order), others' records are untouched, and what was
/// refused is not fetched again by sync.
#[test]
fn a_flood_of_unknown_records_stops_at_its_creators_quota_the_same_in_any_order() {
    let quota = QuotaLimits {
        bytes: 1024 * 1024,
        records: 1000,
        ..QuotaLimits::default()
    };
    let (alice, mallory) = (1, 2);
    let make = |b: &Bench| -> Vec<Record> {
        let node = &b.sim.nodes[mallory];
        (0..40)
            .map(|k| {
                let mut r = Record::new(
                    Uuid::from_u128(77),
                    node.id,
                    b.now.unix_ms() - 40_000 + k * 1000,
                    60_000,
                );
                r.set_nonce([k as u8; 16]);
                r.data = vec![k as u8; 60_000];
                r.sign(&node.group_id(), &node.key()).unwrap();
                r
            })
            .collect()
    };
    let mut kept_sets = Vec::new();
    for reverse in [false, true] {
        let mut b = Bench::with_quota(3, 1, quota);
        let from_alice = b.connect(alice);
        let from_mallory = b.connect(mallory);
        let mut flood = make(&b);
        if reverse {
            flood.reverse();
        }
        for r in &flood {
            b.feed(from_mallory, records(&[r]));
        }
        let kept: Vec<Uuid> = flood
            .iter()
            .filter(|r| b.stored(&r.id).is_some())
            .map(|r| r.id)
            .collect();
        let bytes: usize = flood
            .iter()
            .filter(|r| kept.contains(&r.id))
            .map(|r| r.encode().len())
            .sum();
        assert!(
            bytes as u64 <= quota.bytes && kept.len() >= 10,
            "{} kept, {bytes} bytes",
            kept.len()
        );
        assert_eq!(
            b.core.items().len(),
            b.core.store().len(),
            "the sync index holds what the store holds"
        );
        let honest = b.chat(alice, "still here");
        b.feed(from_alice, records(&[&honest]));
        assert!(b.stored(&honest.id).is_some(), "another member's record was refused");
        // Sync: mallory lists everything it holds; nothing refused is asked for again.
        let mut items: Vec<Item> = flood
            .iter()
            .map(|r| Item {
                id: *r.id.as_bytes(),
                version: r.version,
                digest: r.digest(),
            })
            .collect();
        items.sort_by_key(|i| i.id);
        let offer = Message::SyncRanges {
            from_initiator: true,
            ranges: crate::sync::encode_ranges(&[crate::sync::Range {
                upper: crate::sync::Bound::End,
                mode: crate::sync::Mode::IdList(items),
            }]),
        };
        let out = b.feed(from_mallory, offer);
        let wants: usize = out
            .iter()
            .filter_map(|o| match o {
                Output::Transmit { conn, frame } if *conn == from_mallory => Message::decode(&frame[4..]).ok(),
                _ => None,
            })
            .map(|m| match m {
                Message::Want { ids } => ids.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(wants, 0, "refused records asked for again");
        let mut kept = kept;
        kept.sort();
        kept_sets.push(kept);
    }
    assert_eq!(kept_sets[0], kept_sets[1], "the arrival order decided what was kept");
}

/// Red-team: sync messages in a loop each cost a pass over every record, and replies
/// to sessions nobody opened were answered. Replies without a session are ignored; a
/// peer opening sessions faster than any honest one is cut.
#[test]
fn sync_messages_in_a_loop_are_ignored_or_cut() {
    let mut b = Bench::new(3, 1);
    let mallory = b.connect(2);
    let probe = |from_initiator| Message::SyncRanges {
        from_initiator,
        ranges: crate::sync::encode_ranges(&[crate::sync::Range {
            upper: crate::sync::Bound::End,
            mode: crate::sync::Mode::Fingerprint(crate::sync::Fingerprint {
                count: 1_000,
                hash: [7; 16],
            }),
        }]),
    };
    let out = b.feed(mallory, probe(false));
    assert_eq!(sent_to(&out, mallory), 0, "a reply to no session was answered");
    let mut closed = false;
    for _ in 0..1_000 {
        let out = b.feed(mallory, probe(true));
        if out
            .iter()
            .any(|o| matches!(o, Output::Close { conn } if *conn == mallory))
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "1,000 sync messages at once were all answered");
}

/// Red-team: a member alternating its presence addresses made every node rewrite (and
/// fsync) the known-peers file once per presence record.
#[test]
fn a_presence_flood_rewrites_known_peers_at_most_once_per_interval() {
    let mut b = Bench::new(3, 1);
    let mallory = b.connect(2);
    let node = &b.sim.nodes[2];
    let (id, group, key) = (node.id, node.group_id(), node.key());
    let mut writes = 0;
    for i in 0..1_000i64 {
        let t = b.now.unix_ms() + i;
        let mut r = Record::new(PRESENCE_TYPE, id, t, 30_000);
        r.version = t as u64;
        let addr = if i % 2 == 0 { "10.9.0.1:7400" } else { "10.9.0.2:7400" };
        r.attributes.push(("addresses".into(), AttrValue::Str(addr.into())));
        r.sign(&group, &key).unwrap();
        let out = b.feed(mallory, records(&[&r]));
        writes += out.iter().filter(|o| matches!(o, Output::KnownPeers(_))).count();
    }
    assert!(
        writes <= 1,
        "{writes} rewrites of known-peers for one member's presence flood"
    );
}

/// A node's own message beyond its quota is refused to its user, not stored.
#[test]
fn an_own_message_past_the_quota_is_refused_with_the_reason() {
    let quota = QuotaLimits {
        records: 1,
        ..QuotaLimits::default()
    };
    let mut b = Bench::with_quota(2, 1, quota);
    let publish = |b: &mut Bench, req| {
        b.core.handle(
            b.now,
            Input::Command(req, Command::Publish(format!("message {req}").into())),
        );
        b.drain()
            .into_iter()
            .find_map(|o| match o {
                Output::Reply(r, Reply::Published(p)) if r == req => Some(p),
                _ => None,
            })
            .expect("a reply")
    };
    assert!(publish(&mut b, 1).is_ok());
    b.now.unix_ns += 1_000_000;
    let items = b.core.items().len();
    assert!(matches!(publish(&mut b, 2), Err(CoreError::OverQuota)));
    assert_eq!(b.core.items().len(), items, "the refused message was kept");
}

/// Takes in frames as the driver does between two commits (no flush between them),
/// then commits; returns the outputs and the signature batches checked meanwhile
/// (batches, items in them).
fn feed_together(b: &mut Bench, frames: Vec<(ConnId, Message)>) -> (Vec<Output>, (usize, usize)) {
    let (batches, items) = crate::verify::batch_work();
    for (conn, msg) in frames {
        b.core.handle(b.now, Input::Frame(conn, msg));
    }
    b.core.flush(b.now);
    let (batches_after, items_after) = crate::verify::batch_work();
    (b.drain(), (batches_after - batches, items_after - items))
}

/// Frames of one record each, the common case under load: taken in together, their
/// signatures are one batch, not single checks one frame at a time.
#[test]
fn frames_that_arrive_together_are_checked_as_one_batch() {
    let mut b = Bench::new(3, 1);
    let alice = b.connect(1);
    let chats: Vec<Record> = (0..6).map(|k| b.chat(1, &format!("message {k}"))).collect();
    let frames = chats.iter().map(|r| (alice, records(&[r]))).collect();
    let (_, work) = feed_together(&mut b, frames);
    assert_eq!(work, (1, 6), "six frames, one batch of six");
    for r in &chats {
        assert!(b.stored(&r.id).is_some(), "a message of the batch was not stored");
    }
}

/// A record flooded by several neighbours arrives from each: its signature is checked
/// once, with the first copy.
#[test]
fn a_record_sent_by_several_neighbours_is_checked_once() {
    let mut b = Bench::new(3, 1);
    let (alice, bob) = (b.connect(1), b.connect(2));
    let chats: Vec<Record> = (0..4).map(|k| b.chat(1, &format!("message {k}"))).collect();
    let all: Vec<&Record> = chats.iter().collect();
    let (_, work) = feed_together(&mut b, vec![(alice, records(&all)), (bob, records(&all))]);
    assert_eq!(work, (1, 4), "the copies from bob were checked again");
}

/// Records whose signatures fail close, past a few, the connection that sent them
/// (honest members forward only what they verified); what it sent after is dropped,
/// what came before is taken; the others' records cost nothing more: their batch
/// passes at once.
#[test]
fn bad_signatures_close_their_connection_and_cost_the_others_nothing() {
    let mut b = Bench::new(3, 1);
    let (alice, mallory) = (b.connect(1), b.connect(2));
    let good: Vec<Record> = (0..16).map(|k| b.chat(1, &format!("alice {k}"))).collect();
    let mut own: Vec<Record> = (0..16).map(|k| b.chat(2, &format!("mallory {k}"))).collect();
    let forged = 5..=(5 + BAD_SIGNATURES_TOLERATED as usize);
    for k in forged.clone() {
        own[k].data = b"not what was signed".to_vec();
    }
    let later = b.chat(2, "after the forgery");
    let frames = vec![
        (mallory, records(&own.iter().collect::<Vec<_>>())),
        (alice, records(&good.iter().collect::<Vec<_>>())),
        (mallory, records(&[&later])),
    ];
    let (outputs, (_, items)) = feed_together(&mut b, frames);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Close { conn } if *conn == mallory)),
        "the forger's connection stays"
    );
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Event(Event::Connection {
            reason: Some(ConnReason::BadSignatures),
            ..
        })
    )));
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, Output::Close { conn } if *conn == alice))
    );
    for r in &good {
        assert!(b.stored(&r.id).is_some(), "alice's messages paid for mallory's forgery");
    }
    assert!(
        own[..5].iter().all(|r| b.stored(&r.id).is_some()),
        "what came before was lost"
    );
    assert!(
        own[5..].iter().all(|r| b.stored(&r.id).is_none()),
        "a forgery, or what followed, was stored"
    );
    assert!(
        b.stored(&later.id).is_none(),
        "what came after the forgeries was admitted"
    );
    // Alice's 16 once; mallory's 17 (the later one batched with the frame before it)
    // with their bisection, within the bound of `verify::bisect` (about 3n).
    assert!(items <= 16 + 3 * 17, "{items} batch items for 33 signatures");
}

/// A few bad signatures (a member whose store holds a damaged record sends it at every
/// sync) are refused without closing the connection.
#[test]
fn a_few_bad_signatures_are_refused_and_the_connection_stays() {
    let mut b = Bench::new(3, 1);
    let alice = b.connect(1);
    let mut chats: Vec<Record> = (0..8).map(|k| b.chat(1, &format!("alice {k}"))).collect();
    for r in chats.iter_mut().take(BAD_SIGNATURES_TOLERATED as usize) {
        r.data = b"damaged".to_vec();
    }
    let (outputs, _) = feed_together(&mut b, vec![(alice, records(&chats.iter().collect::<Vec<_>>()))]);
    assert!(!outputs.iter().any(|o| matches!(o, Output::Close { .. })));
    let held: Vec<bool> = chats.iter().map(|r| b.stored(&r.id).is_some()).collect();
    assert_eq!(held, [false, false, false, false, true, true, true, true]);
}

/// An expired record is refused before its signature is looked at; one whose
/// signature failed in a batch counts against its sender all the same (a member must
/// not make a node search batches of bad signatures for free).
#[test]
fn bad_signatures_count_whatever_else_is_wrong_with_the_record() {
    let mut b = Bench::new(3, 1);
    let mallory = b.connect(2);
    let node = &b.sim.nodes[2];
    let stale: Vec<Record> = (0..32)
        .map(|k| {
            let mut r = Record::new(CHAT_TYPE, node.id, b.now.unix_ms() - 120_000, 60_000);
            r.data = format!("stale {k}").into_bytes();
            r.sign(&node.group_id(), &node.key()).unwrap();
            r.data = b"not what was signed".to_vec();
            r
        })
        .collect();
    let (outputs, _) = feed_together(&mut b, vec![(mallory, records(&stale.iter().collect::<Vec<_>>()))]);
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Close { conn } if *conn == mallory)),
        "expired records with bad signatures cost batches and kept the connection"
    );
}

/// Altered copies of alice's records (same id, version and signature, other text) sent
/// first by mallory do not take the place of alice's genuine copies in the batches:
/// alice's pass as one batch of their own, and are stored.
#[test]
fn altered_copies_sent_first_do_not_push_the_genuine_ones_out_of_their_batch() {
    let mut b = Bench::new(3, 1);
    let (alice, mallory) = (b.connect(1), b.connect(2));
    let genuine: Vec<Record> = (0..16).map(|k| b.chat(1, &format!("alice {k}"))).collect();
    let altered: Vec<Record> = genuine
        .iter()
        .map(|r| {
            let mut a = r.clone();
            a.data = b"altered".to_vec();
            a
        })
        .collect();
    let frames = vec![
        (mallory, records(&altered.iter().collect::<Vec<_>>())),
        (alice, records(&genuine.iter().collect::<Vec<_>>())),
    ];
    let (outputs, work) = feed_together(&mut b, frames);
    // Mallory's 16 fail: one batch and its two halves; alice's 16: one batch.
    assert_eq!(work, (4, 48), "alice's records were not checked as a batch");
    assert!(
        genuine
            .iter()
            .all(|r| b.stored(&r.id).is_some_and(|s| s.data == r.data))
    );
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Close { conn } if *conn == mallory))
    );
}
