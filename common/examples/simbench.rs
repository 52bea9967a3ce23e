//! The scale benchmark: the core's simulation (`common::sim`: the nodes' real cores,
//! real certificates and Ed25519 signatures, the real encodings, over simulated links
//! and time) with 100, 300 and 1,000 members in a sparse mesh. For each size: how long
//! the group takes to settle (every member holding every membership and presence),
//! what presence and membership cost a member per second when nobody writes, and then
//! messages one at a time from members drawn at random, each followed to every member:
//! hops, time to reach all, copies received, bytes and CPU per member per message.
//!
//! Run: `cargo run --release -p peergroup-common --example simbench [SIZES...]`
//! (default `100 300 1000`; `SIM_MESSAGES`, default 10, messages per size; `SIM_SEED`).
//! CPU is this process's time in each node's core (one thread: the cores take turns),
//! so it is per member and per message as the node itself would spend it, without
//! TLS, SQLite or the kernel. The simulation commits after every frame, so records
//! that arrive together are not batched as the tokio driver batches them: each
//! signature here is checked alone (the per-message figures are the light-load case).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::record::CHAT_TYPE;
use common::sim::{LinkParams, Sim};
use uuid::Uuid;

/// Each member dials this many others chosen at random (a ring underneath).
const DEGREE: usize = 3;
/// Nobody writes for this long to measure the background: the simulated group's
/// presence lifetime, so every member refreshes its presence within it.
const QUIET: Duration = Duration::from_secs(300);
/// Longest a message may take to reach everyone before it counts as lost.
const SPREAD_LIMIT: Duration = Duration::from_secs(30);

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![100, 300, 1000] } else { sizes };
    let messages: usize = std::env::var("SIM_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    println!("## scale: the core's simulation, sparse mesh (each dials {DEGREE}), links 5 ms + 0-20 ms jitter");
    println!(
        "{:>6} {:>9} {:>10} {:>12} {:>8} {:>8} {:>9} {:>9} {:>11} {:>12} {:>13}",
        "members",
        "settle s",
        "settle cpu",
        "bg B/mbr/s",
        "bg µs/s",
        "hops max",
        "hops mean",
        "reach ms",
        "copies/mbr",
        "B/mbr/msg",
        "cpu µs/mbr/msg"
    );
    for n in sizes {
        run(n, messages, seed);
    }
}

fn run(n: usize, messages: usize, seed: u64) {
    let started = Instant::now();
    let mut sim = match Sim::new(seed, n, DEGREE, LinkParams::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("simbench: cannot make {n} members' credentials: {e}");
            std::process::exit(1);
        }
    };
    // Settled when every member holds the same records (every membership and presence).
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(600) {
        t += Duration::from_secs(1);
        sim.run_until(t);
        if t >= Duration::from_secs(5) && sim.converged() {
            break;
        }
    }
    if !sim.converged() {
        eprintln!(
            "simbench: {n} members did not converge within {} s of simulated time",
            t.as_secs()
        );
        std::process::exit(1);
    }
    let settle_wall = started.elapsed();
    let settle_cpu: Duration = sim.load.busy.iter().sum();

    // The background: presence refreshes, keepalives, sync, with nobody writing.
    let (bytes0, busy0) = totals(&sim);
    let quiet_from = sim.elapsed();
    sim.run_until(quiet_from + QUIET);
    let (bytes1, busy1) = totals(&sim);
    let per_member_s = |v: f64| v / n as f64 / QUIET.as_secs_f64();
    let bg_bytes = per_member_s((bytes1 - bytes0) as f64);
    let bg_cpu_us = per_member_s((busy1 - busy0).as_secs_f64() * 1e6);

    let mut hops_max = 0u32;
    let mut hops_sum = 0u64;
    let mut hops_count = 0u64;
    let mut reach_ms = Vec::new();
    let mut copies = 0u64;
    let mut bytes = 0u64;
    let mut cpu = Duration::ZERO;
    let mut lost = 0;
    for k in 0..messages {
        let origin = (seed as usize).wrapping_mul(7919).wrapping_add(k * 104_729) % n;
        let before = chat_ids(&sim, origin);
        sim.publish(origin, Duration::ZERO, format!("message {k} from m{origin}"));
        let at = sim.elapsed();
        sim.run_until(at);
        let Some(id) = chat_ids(&sim, origin).difference(&before).next().copied() else {
            eprintln!("simbench: m{origin} did not publish message {k}");
            std::process::exit(1);
        };
        sim.watch(id, origin);
        let mut waited = Duration::ZERO;
        while waited < SPREAD_LIMIT && !sim.spread.as_ref().is_some_and(|s| s.complete()) {
            waited += Duration::from_millis(100);
            sim.run_until(at + waited);
        }
        // Late duplicates still cost: let them arrive before the next message.
        sim.run_until(at + waited + Duration::from_secs(1));
        let Some(s) = sim.spread.take() else { continue };
        if !s.complete() {
            lost += 1;
            continue;
        }
        for h in s.hops.iter().flatten() {
            hops_max = hops_max.max(*h);
            hops_sum += u64::from(*h);
            hops_count += 1;
        }
        let last = s.reached.iter().flatten().max().copied().unwrap_or(at);
        reach_ms.push((last - at).as_secs_f64() * 1e3);
        copies += s.copies.iter().map(|&c| u64::from(c)).sum::<u64>();
        bytes += s.bytes;
        cpu += s.busy;
    }
    let done = (messages - lost).max(1) as f64;
    reach_ms.sort_by(f64::total_cmp);
    let median = reach_ms.get(reach_ms.len() / 2).copied().unwrap_or(f64::NAN);
    let per_member_msg = |v: f64| v / done / n as f64;
    println!(
        "{:>6} {:>9.1} {:>9.1}s {:>12.0} {:>8.0} {:>8} {:>9.2} {:>9.0} {:>11.2} {:>12.0} {:>13.1}",
        n,
        settle_wall.as_secs_f64(),
        settle_cpu.as_secs_f64(),
        bg_bytes,
        bg_cpu_us,
        hops_max,
        hops_sum as f64 / hops_count.max(1) as f64,
        median,
        per_member_msg(copies as f64),
        per_member_msg(bytes as f64),
        per_member_msg(cpu.as_secs_f64() * 1e6),
    );
    if lost > 0 {
        println!(
            "       {lost} of {messages} messages did not reach every member within {} s",
            SPREAD_LIMIT.as_secs()
        );
    }
}

/// Bytes delivered to and time spent by all nodes so far.
fn totals(sim: &Sim) -> (u64, Duration) {
    (sim.load.bytes_in.iter().sum(), sim.load.busy.iter().sum())
}

/// The ids of the chat records `node` created and holds.
fn chat_ids(sim: &Sim, node: usize) -> HashSet<Uuid> {
    let me = sim.nodes[node].id;
    sim.nodes[node]
        .core
        .as_ref()
        .map(|c| {
            c.store()
                .records()
                .filter(|r| r.rtype == CHAT_TYPE && r.creator == me)
                .map(|r| r.id)
                .collect()
        })
        .unwrap_or_default()
}
