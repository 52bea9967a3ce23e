//! A bad network between members: every connection to a member passes through a
//! fault-injecting relay of the test's own (delay, jitter, a bandwidth cap, random
//! resets; see `peergroup_tests::relay`). Members listen on one loopback port and
//! advertise their relay's, so every member dials every other through a relay.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use peergroup_tests::group::*;
use peergroup_tests::relay::{Faults, Relay};
use peergroup_tests::{Peer, free_addr};

#[test]
fn a_steady_chat_through_delay_jitter_a_slow_link_and_resets_delivers_everything_exactly_once() {
    let names = ["ann", "ben", "cat", "dan"];
    let listen: Vec<String> = names.iter().map(|_| free_addr()).collect();
    let faults = Faults {
        delay: Duration::from_millis(40),
        jitter: Duration::from_millis(40),
        bytes_per_second: 64 * 1024,
        reset_after: Some((Duration::from_millis(800), Duration::from_millis(3000))),
    };
    let relays: Vec<Relay> = listen.iter().map(|a| Relay::start(a, faults.clone())).collect();
    // The stored (and invited) address is the relay's: that is what the others dial.
    let g = group_at(&names, relays.iter().map(|r| r.addr.clone()).collect(), &[]);
    let mut peers: Vec<Peer> = g
        .iter()
        .zip(&listen)
        .zip(&relays)
        .map(|((m, l), r)| m.chat(&["--listen", l, "--advertise", &r.addr]))
        .collect();
    for p in peers.iter_mut() {
        wait_ready(p);
    }

    // Five messages a second for ten seconds, round robin, while connections keep
    // being reset under the members.
    let start = Instant::now();
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); g.len()];
    for n in 0..50 {
        let i = n % g.len();
        let text = format!("steady {n} from {}", g[i].name);
        peers[i].send(&text);
        sent[i].push(text);
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, p) in peers.iter_mut().enumerate() {
        let want = sent_by_others(&sent, i);
        p.wait_until("every message through the relays", Duration::from_secs(30), |evs| {
            want.iter().all(|t| count_text(evs, t) > 0)
        });
    }
    let took = start.elapsed();
    std::thread::sleep(QUIET);
    for p in &peers {
        let events = p.events();
        assert_no_duplicates(p.label(), &messages(&events));
    }
    let resets: u64 = relays.iter().map(|r| r.stats.resets.load(Ordering::Relaxed)).sum();
    let conns: u64 = relays.iter().map(|r| r.stats.connections.load(Ordering::Relaxed)).sum();
    eprintln!(
        "relay: 50 messages among {} members, all delivered exactly once {:.1} s after the first was sent; \
         {conns} connections relayed, {resets} reset",
        g.len(),
        took.as_secs_f64()
    );
    assert!(
        resets >= 5,
        "the relays reset only {resets} connections: the test did not test resets"
    );
}
