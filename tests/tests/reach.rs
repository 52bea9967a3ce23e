//! Members on different networks (issue 12): a small internet in network namespaces
//! (see `peergroup_tests::natworld`), with home routers doing NAT. Needs root,
//! iproute2 and nftables; skipped with a message elsewhere, and a failure under
//! `CI=true`.

use std::time::{Duration, Instant};

use peergroup_tests::group::*;
use peergroup_tests::natworld::{Nat, World};
use peergroup_tests::netns::Host;
use peergroup_tests::{Peer, skip_or_fail};

/// Within a namespace of our own nothing else can hold a port, so a fixed one is safe.
const PORT: u16 = 7400;

/// `m`'s `group-chat --json`, started on `host`.
fn start_on(m: &Member, host: &Host) -> Peer {
    let cmd = m
        .home
        .command("group-chat", &["--identity", m.name, "--group", GROUP, "--json"]);
    Peer::spawn(m.name, host.command(&cmd))
}

/// `from` whispers `text` to `to` (named `name`) until it arrives: the target's presence
/// names its relays a few seconds after it met them. Returns how long it took.
fn whisper_until_it_arrives(from: &mut Peer, to: &mut Peer, name: &str, text: &str) -> Duration {
    let started = Instant::now();
    loop {
        from.send(&format!("/msg {name} {text}"));
        let tried = Instant::now();
        while tried.elapsed() < Duration::from_secs(3) {
            if to.events_of("whisper").iter().any(|e| e["text"] == text) {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the whisper never arrived: {:?}",
            from.events_of("error")
        );
    }
}

/// Scenario 2 of issue 12: two members behind home routers (one port-preserving, one
/// fully random), neither reachable from outside, find each other through a member
/// with a public address and chat through it; a whisper between the two goes through
/// the public member's relay, TLS end to end inside.
#[test]
fn members_behind_nat_reach_each_other_through_a_public_member() {
    if let Err(why) = World::available() {
        skip_or_fail(&why);
        return;
    }
    let world = World::new(1, &[Nat::Masquerade, Nat::Random]);
    let hosts = [&world.public[0], &world.routers[0].host, &world.routers[1].host];
    let addrs = hosts.iter().map(|h| format!("{}:{PORT}", h.ip)).collect();
    let g = group_at(&["ann", "ben", "cat"], addrs, &[]);
    let started = Instant::now();
    let mut peers: Vec<Peer> = g.iter().zip(hosts).map(|(m, h)| start_on(m, h)).collect();
    for p in peers.iter_mut() {
        wait_ready(p);
    }
    let (ann, rest) = peers.split_at_mut(1);
    let (ben, cat) = rest.split_at_mut(1);
    let (ann, ben, cat) = (&mut ann[0], &mut ben[0], &mut cat[0]);
    wait_present(ben, &g[2]);
    wait_present(cat, &g[1]);
    let ready = started.elapsed();
    say_and_see(ben, "from behind one NAT", &mut [cat, ann]);
    say_and_see(cat, "from behind the other", &mut [ben, ann]);
    // The NAT is real: nothing reached ben or cat from outside.
    for p in [&*ben, &*cat] {
        let inbound = p
            .events_of("connection")
            .into_iter()
            .filter(|e| e["change"] == "up" && !e["address"].as_str().unwrap_or("").starts_with("11.11.0.1:"))
            .count();
        assert_eq!(inbound, 0, "{} had a connection from somewhere but ann", p.label());
    }
    let whispered = whisper_until_it_arrives(ben, cat, "cat", "between two NATs");
    for p in [&mut *ben, &mut *cat] {
        p.wait_for("a relayed direct connection", Duration::from_secs(5), |e| {
            e["event"] == "connection" && e["kind"] == "direct" && e["change"] == "up" && e["via"] == "relayed"
        });
    }
    cat.send("/msg ben and back");
    ben.wait_for("the answer", Duration::from_secs(10), |e| {
        e["event"] == "whisper" && e["text"] == "and back"
    });
    eprintln!(
        "reach: two members behind NAT (masquerade, fully random) and one public: all present to each other {:.0} ms after start; a whisper between the two relayed {:.1} s after they were present",
        ready.as_secs_f64() * 1000.0,
        whispered.as_secs_f64()
    );
}

/// Members all behind NAT, with no port mapping and nobody the others can dial: the one
/// that has tried says so plainly on its own, naming what it tried, instead of waiting
/// silently.
#[test]
fn members_all_behind_nat_with_no_way_in_say_so_plainly() {
    if let Err(why) = World::available() {
        skip_or_fail(&why);
        return;
    }
    let world = World::new(0, &[Nat::Masquerade, Nat::Masquerade]);
    let hosts = [&world.routers[0].host, &world.routers[1].host];
    let addrs = hosts.iter().map(|h| format!("{}:{PORT}", h.ip)).collect();
    let g = group_at(&["ann", "ben"], addrs, &[]);
    let mut peers: Vec<Peer> = g.iter().zip(hosts).map(|(m, h)| start_on(m, h)).collect();
    let said = peers[1].wait_for(
        "ben saying nobody is reachable",
        std::time::Duration::from_secs(30),
        |e| e["event"] == "error" && e["message"].as_str().unwrap_or("").contains("no member reachable"),
    );
    let line = said["message"].as_str().unwrap_or("");
    assert!(line.contains(&format!("{}:{PORT}", hosts[0].ip)), "{line}");
    assert!(peers[1].events_of("member").is_empty(), "ben met nobody");
}
