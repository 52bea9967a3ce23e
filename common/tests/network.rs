//! In-process tests of several nodes on 127.0.0.1: sync (disjoint, overlapping,
//! conflicting, expired), flooding over a chain and a ring of six, the conflict rule,
//! records waiting for a membership, and sync cost following the difference.

use std::time::Duration;

use common::membership;
use common::record::{self, Record};

mod support;
use support::*;

fn texts(records: &[Record]) -> Vec<String> {
    let mut t: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    t.sort();
    t
}

async fn start_topology(fx: &Fixture, ring: bool) -> Vec<Running> {
    let mut nodes: Vec<Running> = Vec::new();
    for i in 0..fx.n {
        let mut peers = Vec::new();
        if i > 0 {
            peers.push(nodes[i - 1].addr);
        }
        if ring && i == fx.n - 1 {
            peers.push(nodes[0].addr);
        }
        let mut node = fx.start(i, &peers).await;
        if i > 0 {
            node.ready().await;
        }
        nodes.push(node);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_crosses_a_chain_of_six_and_the_chain_stays_sparse() {
    let fx = fixture(6);
    let nodes = start_topology(&fx, false).await;
    let a = nodes[0].handle.publish("from the head").await.unwrap();
    let b = nodes[5].handle.publish("from the tail").await.unwrap();
    until("both messages everywhere", || (0..6).all(|i| fx.chats(i).len() == 2)).await;
    for i in 0..6 {
        let ids: Vec<_> = fx.chats(i).iter().map(|r| r.id).collect();
        assert!(ids.contains(&a) && ids.contains(&b), "node {i}: {ids:?}");
    }
    // No discovery in this test: each node keeps exactly its chain links.
    assert_eq!(nodes[0].handle.status().await.unwrap().neighbours, 1);
    assert_eq!(nodes[3].handle.status().await.unwrap().neighbours, 2);
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_around_a_ring_of_six_delivers_everything_once_and_stops_at_duplicates() {
    let fx = fixture(6);
    let nodes = start_topology(&fx, true).await;
    for k in 0..30 {
        nodes[k % 6].handle.publish(&format!("msg {k}")).await.unwrap();
    }
    until("30 messages on every node", || (0..6).all(|i| fx.chats(i).len() == 30)).await;
    for i in 0..6 {
        let t = texts(&fx.chats(i));
        let mut unique = t.clone();
        unique.dedup();
        assert_eq!(t, unique, "node {i} stored a duplicate");
    }
    // In a ring every record reaches some node twice; those copies are dropped unverified.
    let dups: u64 = nodes
        .iter()
        .map(|n| n.handle.stats.duplicates.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert!(dups > 0, "a ring must produce duplicate deliveries that stop the flood");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_merges_disjoint_and_overlapping_sets() {
    let fx = fixture(3);
    let shared = fx.make_chats(0, 30, 3_600_000);
    let only_a = fx.make_chats(0, 20, 3_600_000);
    let only_b = fx.make_chats(1, 25, 3_600_000);
    let disjoint_c = fx.make_chats(2, 15, 3_600_000);
    fx.seed(0, &[shared.clone(), only_a.clone()].concat());
    fx.seed(1, &[shared.clone(), only_b.clone()].concat());
    fx.seed(2, &disjoint_c);
    let a = fx.start(0, &[]).await;
    let mut b = fx.start(1, &[a.addr]).await;
    b.ready().await;
    until("union of overlapping sets", || {
        fx.chats(0).len() == 75 && fx.chats(1).len() == 75
    })
    .await;
    // A third store with nothing in common joins through b.
    let mut c = fx.start(2, &[b.addr]).await;
    c.ready().await;
    until("union of disjoint sets", || (0..3).all(|i| fx.chats(i).len() == 90)).await;
    assert_eq!(texts(&fx.chats(0)), texts(&fx.chats(2)));
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_versions_converge_on_the_conflict_rule() {
    let fx = fixture(2);
    let base = fx.make_chats(0, 2, 3_600_000);
    let id0 = fx.identity(0);
    let group = membership::find(&fx.home, "m0", GROUP).unwrap().group.id;
    let variant = |r: &Record, version: u64, text: &str, bump_ms: i64| {
        let mut v = r.clone();
        v.version = version;
        v.data = text.as_bytes().to_vec();
        v.modified_ms += bump_ms;
        v.sign(&group, &id0.key).unwrap();
        v
    };
    // x: a has version 1, b has version 3: the higher version wins on both.
    let x1 = variant(&base[0], 1, "x old", 0);
    let x3 = variant(&base[0], 3, "x newest", 2);
    // y: both hold version 2 with different content: the conflict rule decides.
    let y_a = variant(&base[1], 2, "y from a", 1);
    let y_b = variant(&base[1], 2, "y from b", 5);
    let y_winner = if record::compare(&y_a, &y_b).is_gt() {
        y_a.clone()
    } else {
        y_b.clone()
    };
    fx.seed(0, &[x1, y_a]);
    fx.seed(1, &[x3.clone(), y_b]);
    let a = fx.start(0, &[]).await;
    let mut b = fx.start(1, &[a.addr]).await;
    b.ready().await;
    let body_of = |i: usize, id| fx.chats(i).into_iter().find(|r| r.id == id).map(|r| r.encode());
    until("both stores agree", || {
        body_of(0, x3.id) == Some(x3.encode())
            && body_of(1, x3.id) == Some(x3.encode())
            && body_of(0, y_winner.id) == body_of(1, y_winner.id)
    })
    .await;
    assert_eq!(
        body_of(0, y_winner.id),
        Some(y_winner.encode()),
        "the conflict rule's winner is kept"
    );
    for n in [a, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_records_are_neither_synced_nor_kept() {
    let fx = fixture(2);
    let mut expired = fx.make_chats(0, 1, 3_600_000);
    let group = membership::find(&fx.home, "m0", GROUP).unwrap().group.id;
    let id0 = fx.identity(0);
    for r in &mut expired {
        r.created_ms -= 7_200_000;
        r.modified_ms = r.created_ms;
        r.expires_ms = r.created_ms + 3_600_000;
        r.sign(&group, &id0.key).unwrap();
    }
    let live = fx.make_chats(0, 3, 3_600_000);
    fx.seed(0, &[expired.clone(), live].concat());
    let a = fx.start(0, &[]).await;
    let mut b = fx.start(1, &[a.addr]).await;
    b.ready().await;
    until("live records synced", || fx.chats(1).len() == 3).await;
    assert!(
        fx.chats(1).iter().all(|r| r.id != expired[0].id),
        "an expired record was synced"
    );
    assert_eq!(fx.chats(0).len(), 3, "the expired record was not purged at start");
    for n in [a, b] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_an_unknown_member_waits_for_its_membership() {
    let fx = fixture(3);
    // a holds a message by m2 (seeded), but not m2's membership record.
    let by_m2 = fx.make_chats(2, 1, 3_600_000);
    fx.seed(0, &by_m2);
    let a = fx.start(0, &[]).await;
    let mut b = fx.start(1, &[a.addr]).await;
    b.ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fx.chats(1).is_empty(), "b stored a record it could not verify");
    // m2 comes online next to b: its membership arrives and the held record is admitted.
    let mut c = fx.start(2, &[b.addr]).await;
    c.ready().await;
    until("the held record is admitted", || fx.chats(1).len() == 1).await;
    for n in [a, b, c] {
        n.stop().await;
    }
}

/// Bytes two nodes exchange to reconcile 10,000 shared records plus `diff` on one side.
async fn sync_bytes(diff: usize) -> u64 {
    let fx = fixture(2);
    let all = fx.make_chats(0, 10_000 + diff, 3_600_000);
    fx.seed(0, &all);
    fx.seed(1, &all[..10_000]);
    let a = fx.start(0, &[]).await;
    let mut b = fx.start(1, &[a.addr]).await;
    b.ready().await;
    until("b caught up", || fx.chats(1).len() == 10_000 + diff).await;
    let bytes = b.handle.stats.total_bytes();
    for n in [a, b] {
        n.stop().await;
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_cost_follows_the_difference_not_the_store_size() {
    let d10 = sync_bytes(10).await;
    let d1000 = sync_bytes(1000).await;
    eprintln!("10,000 records: differing by 10 -> {d10} bytes; by 1,000 -> {d1000} bytes");
    // Sending every id of 10,000 records alone would take 400 KB, their bodies ~2.5 MB.
    assert!(d10 < 64 * 1024, "differing by 10 cost {d10} bytes");
    assert!(
        d1000 > 20 * d10,
        "cost does not grow with the difference: {d10} vs {d1000}"
    );
}
