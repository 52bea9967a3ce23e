//! Micro-benchmarks: where a record's cost goes (sign, verify, encode, store), what sync
//! of large sets costs, and catch-up of a joining member through real nodes on loopback.
//! Run in release: `cargo run --release -p peergroup-common --example microbench`
//! (scripts/bench runs it after the side-by-side comparison).

use std::time::{Duration, Instant};

use common::clock;
use common::group::{self, GroupSpec};
use common::home::Home;
use common::identity::Identity;
use common::invitation::{self, Invitation, InviteSpec};
use common::membership;
use common::node::{self, Event, NodeConfig, PeerSpec};
use common::pki::{self, KeyType, Role};
use common::record::{CHAT_TYPE, Record};
use common::store::{Durability, Put, STORE_FILE, Store};
use common::sync::{self, Item, ItemSet};

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>9.0}/s ({:.1} µs each)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64() * 1e6 / n as f64
    )
}

fn chats(key: &rcgen::KeyPair, creator: common::member::MemberId, group: &uuid::Uuid, n: usize) -> Vec<Record> {
    let now = clock::now().unix_timestamp() * 1000;
    (0..n)
        .map(|k| {
            let mut r = Record::new(CHAT_TYPE, creator, now, 3_600_000);
            r.data = format!("message {k} {}", "x".repeat(160)).into_bytes();
            r.sign(group, key).unwrap();
            r
        })
        .collect()
}

/// Ed25519 record signatures three ways: aws-lc one at a time (RFC 8032: what records
/// were checked with before), ZIP-215 one at a time, and ZIP-215 in batches (what
/// frames of several records now take). 20,000 chat records by 64 members in turn, as
/// a sync from a group brings them (a batch of one signer's records would be faster
/// still: ed25519-zebra merges their key terms).
fn ed25519_paths() {
    use common::verify::{Check, verify_all};
    let group = uuid::Uuid::new_v4();
    let signers: Vec<(rcgen::KeyPair, pki::Cert)> = (0..64)
        .map(|_| {
            let key = KeyType::Ed25519.generate().unwrap();
            let spec = pki::CertSpec {
                common_name: "m".into(),
                claim: pki::Claim::Identity,
                not_before: clock::now(),
                not_after: clock::add(clock::now(), Duration::from_secs(60)),
            };
            let cert = pki::Cert::parse(&pki::self_signed(&spec, &key).unwrap(), "c").unwrap();
            (key, cert)
        })
        .collect();
    let n = 20_000;
    let records: Vec<(Record, &pki::Cert)> = (0..n)
        .map(|k| {
            let (key, cert) = &signers[k % signers.len()];
            let r = chats(key, common::member::MemberId::from_bytes([1; 20]), &group, 1).remove(0);
            (r, cert)
        })
        .collect();
    let signed: Vec<Vec<u8>> = records.iter().map(|(r, _)| r.signed_bytes(&group)).collect();
    let checks: Vec<Check<'_>> = records
        .iter()
        .zip(&signed)
        .map(|((r, cert), m)| Check::by(cert, m, &r.signature))
        .collect();
    let t = Instant::now();
    for ((r, cert), m) in records.iter().zip(&signed) {
        assert!(cert.verify(m, &r.signature));
    }
    println!("ed25519 aws-lc single (RFC 8032)  {}", rate(n, t.elapsed()));
    let t = Instant::now();
    assert!(checks.iter().all(Check::verify));
    println!("ed25519 ZIP-215 single            {}", rate(n, t.elapsed()));
    for size in [2, 4, 8, 16, 64, 256] {
        let t = Instant::now();
        for part in checks.chunks(size) {
            assert!(verify_all(part).into_iter().all(|ok| ok));
        }
        println!("ed25519 ZIP-215 batches of {size:<3}    {}", rate(n, t.elapsed()));
    }
}

fn crypto() {
    println!("## records: sign, verify, encode");
    let group = uuid::Uuid::new_v4();
    for kt in [KeyType::Ed25519, KeyType::P256, KeyType::Rsa2048] {
        let key = kt.generate().unwrap();
        let spec = pki::CertSpec {
            common_name: "b".into(),
            claim: pki::Claim::Identity,
            not_before: clock::now(),
            not_after: clock::add(clock::now(), Duration::from_secs(60)),
        };
        let cert = pki::Cert::parse(&pki::self_signed(&spec, &key).unwrap(), "c").unwrap();
        let n = if kt == KeyType::Rsa2048 { 2_000 } else { 20_000 };
        let t = Instant::now();
        let records = chats(&key, common::member::MemberId::from_bytes([1; 20]), &group, n);
        let sign = t.elapsed();
        let t = Instant::now();
        for r in &records {
            assert!(r.verify_signature(&group, &cert));
        }
        let verify = t.elapsed();
        let t = Instant::now();
        let mut bytes = 0;
        for r in &records {
            bytes += Record::decode(&r.encode()).unwrap().data.len();
        }
        let codec = t.elapsed();
        println!(
            "{:8} sign {}  verify {}  encode+decode {}",
            kt.name(),
            rate(n, sign),
            rate(n, verify),
            rate(n, codec)
        );
        assert!(bytes > 0);
    }
}

fn storage() {
    println!("\n## store: batched inserts (one transaction per batch, WAL, synchronous=NORMAL)");
    let key = KeyType::Ed25519.generate().unwrap();
    let group = uuid::Uuid::new_v4();
    let records = chats(&key, common::member::MemberId::from_bytes([1; 20]), &group, 100_000);
    for batch in [1usize, 100, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        let n = if batch == 1 { 5_000 } else { 100_000 };
        let puts: Vec<Put> = records[..n].iter().map(|r| Put::new(r.clone(), false, 0)).collect();
        let t = Instant::now();
        for chunk in puts.chunks(batch) {
            store.put_batch(chunk).unwrap();
        }
        println!("batch {batch:>5}: {}", rate(n, t.elapsed()));
    }
}

fn reconciliation() {
    println!("\n## sync: range reconciliation of 100,000 items (function level, no I/O)");
    let item = |k: u64| {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        Item {
            id,
            version: 1,
            digest: [k as u8; 16],
        }
    };
    for diff in [0usize, 10, 1_000, 10_000] {
        let mut a = ItemSet::new();
        let mut b = ItemSet::new();
        for k in 0..100_000u64 {
            a.insert(item(k));
            if k as usize >= diff {
                b.insert(item(k));
            }
        }
        let key = sync::SyncKey::new([9; 16]);
        let t = Instant::now();
        let (mut msg, mut bytes, mut rounds, mut moved) = (sync::initiate(&a, &key), 0usize, 0, 0usize);
        let mut sides = [&b, &a];
        loop {
            let enc = sync::encode_ranges(&msg);
            bytes += enc.len();
            rounds += 1;
            let out = sync::reconcile(sides[0], &sync::decode_ranges(&enc).unwrap(), &key).unwrap();
            moved += out.send.len() + out.want.len();
            if out.reply.is_empty() {
                break;
            }
            msg = out.reply;
            sides.swap(0, 1);
        }
        println!(
            "differ by {diff:>6}: {:>8} range bytes, {rounds} messages, {moved} ids to move, {:.1} ms",
            bytes,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    // The keyed fingerprint of the whole set: what a session's first message costs.
    let mut set = ItemSet::new();
    for k in 0..100_000u64 {
        set.insert(item(k));
    }
    let key = sync::SyncKey::new([9; 16]);
    let runs = 20;
    let t = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(set.fingerprint(&sync::Bound::MIN, &sync::Bound::End, &key));
    }
    println!(
        "keyed fingerprint of 100,000 items: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(runs)
    );
}

/// A group of two in a temporary home: m0 (creator) and m1.
fn pair() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::resolve(Some(dir.path())).unwrap();
    let creator = Identity::create(&home, "m0", KeyType::Ed25519, "m0").unwrap();
    let spec = GroupSpec {
        name: "B".into(),
        classifier: String::new(),
        listen: "127.0.0.1:0".parse().unwrap(),
        message_lifetime: Duration::from_secs(86_400),
        member_lifetime: Duration::from_secs(86_400 * 30),
        presence_lifetime: common::membership::DEFAULT_PRESENCE_LIFETIME,
    };
    let m = group::create(&home, &creator, &spec).unwrap();
    let id = Identity::create(&home, "m1", KeyType::Ed25519, "m1").unwrap();
    let inv = Invitation::create(
        &creator,
        &m,
        &id.public(),
        &InviteSpec {
            role: Role::Member,
            valid_for: None,
            expires: Duration::from_secs(600),
            addresses: vec![],
        },
    )
    .unwrap();
    invitation::join(&home, &id, &inv, "127.0.0.1:0".parse().unwrap()).unwrap();
    (dir, home)
}

async fn start(home: &Home, name: &str, peers: Vec<PeerSpec>) -> (node::Handle, tokio::sync::mpsc::Receiver<Event>) {
    let cfg = NodeConfig {
        identity: Identity::load(home, name).unwrap(),
        membership: membership::find(home, name, "B").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: vec![],
        peers,
        max_neighbours: 8,
        durability: Durability::Normal,
        initial_messages: vec![],
        discover: false,
        port_mapping: false,
        mdns: false,
        check_reach: true,
        record_events: false,
    };
    let (h, e, _task) = node::start(cfg).await.unwrap();
    (h, e)
}

async fn catch_up(total: usize, missing: usize) {
    let (_dir, home) = pair();
    let m0 = Identity::load(&home, "m0").unwrap();
    let group = membership::find(&home, "m0", "B").unwrap().group.id;
    let records = chats(&m0.key, m0.member_id(), &group, total);
    let seed = |name: &str, rs: &[Record]| {
        let path = membership::find(&home, name, "B").unwrap().dir.join(STORE_FILE);
        let mut store = Store::open(&path, Durability::Normal).unwrap();
        let puts: Vec<Put> = rs.iter().map(|r| Put::new(r.clone(), false, 0)).collect();
        for chunk in puts.chunks(10_000) {
            store.put_batch(chunk).unwrap();
        }
    };
    seed("m0", &records);
    seed("m1", &records[..total - missing]);
    // What a node's start spends on the store: every record's summary, for the sync
    // index and the quotas (cold in SQLite's cache, warm in the kernel's).
    let path = membership::find(&home, "m1", "B").unwrap().dir.join(STORE_FILE);
    let t = Instant::now();
    let summaries = Store::open_read_only(&path).unwrap().summaries().unwrap().len();
    let scan = t.elapsed();
    let (a, _ea) = start(&home, "m0", vec![]).await;
    let t = Instant::now();
    let (b, mut eb) = start(
        &home,
        "m1",
        vec![PeerSpec {
            member: None,
            addr: a.addresses[0].parse().unwrap(),
        }],
    )
    .await;
    let started = t.elapsed();
    while let Some(e) = eb.recv().await {
        if e == Event::Ready {
            break;
        }
    }
    let ready = t.elapsed();
    let path = membership::find(&home, "m1", "B").unwrap().dir.join(STORE_FILE);
    let store = Store::open_read_only(&path).unwrap();
    let held = store.after(&CHAT_TYPE, 0, usize::MAX).unwrap().len();
    println!(
        "store of {total:>7}, missing {missing:>7}: caught up (ready) in {:>7.1} ms (started in {:>5.1} ms; {summaries} summaries read in {:>5.1} ms), {held} chat records held, {} bytes moved, {} records accepted",
        ready.as_secs_f64() * 1e3,
        started.as_secs_f64() * 1e3,
        scan.as_secs_f64() * 1e3,
        b.stats.total_bytes(),
        b.stats.accepted.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = b.leave().await;
    let _ = a.leave().await;
}

fn main() {
    crypto();
    ed25519_paths();
    storage();
    reconciliation();
    println!("\n## catch-up through two real nodes on loopback (every signature verified)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        catch_up(100_000, 100_000).await;
        catch_up(100_000, 1_000).await;
        catch_up(100_000, 0).await;
    });
}
