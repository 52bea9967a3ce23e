//! Members on separate hosts: each in its own network namespace with its own address
//! (see `peergroup_tests::netns`), invitations carrying those real addresses. Needs root
//! and iproute2; skipped with a message elsewhere, and a failure under `CI=true`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peergroup_tests::group::*;
use peergroup_tests::netns::Net;
use peergroup_tests::{Home, Peer, run_command, skip_or_fail};
use serde_json::Value;

const NAMES: [&str; 6] = ["ann", "ben", "cat", "dan", "eve", "fay"];
/// Within a namespace of our own nothing else can hold a port, so a fixed one is safe.
const PORT: u16 = 7400;

fn unix_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// The six members' `group-chat --json`, each started on its own host.
fn start(net: &Net, g: &[Member]) -> Vec<Peer> {
    g.iter()
        .zip(&net.hosts)
        .map(|(m, h)| {
            let cmd = m
                .home
                .command("group-chat", &["--identity", m.name, "--group", GROUP, "--json"]);
            Peer::spawn(m.name, h.command(&cmd))
        })
        .collect()
}

/// Texts in `peer`'s message events with the time each was stored.
fn received(peer: &Peer) -> HashMap<String, i64> {
    peer.events()
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| {
            (
                e["text"].as_str().unwrap_or("").to_string(),
                e["recv_ns"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn six_hosts_split_in_two_chat_apart_and_have_everything_exactly_once_soon_after_healing() {
    if let Err(why) = Net::available() {
        skip_or_fail(&why);
        return;
    }
    let net = Net::new(NAMES.len());
    // Two sites joined by a slow link.
    net.slow_trunk("1mbit");
    let addrs = net.hosts.iter().map(|h| format!("{}:{PORT}", h.ip)).collect();
    let g = group_at(&NAMES, addrs, &[]);
    let mut peers = start(&net, &g);
    for p in peers.iter_mut() {
        wait_ready(p);
    }
    for (i, p) in peers.iter_mut().enumerate() {
        for (j, m) in g.iter().enumerate() {
            if i != j {
                wait_present(p, m);
            }
        }
    }
    let mut texts: Vec<Vec<String>> = vec![Vec::new(); g.len()];
    for (i, p) in peers.iter_mut().enumerate() {
        let t = format!("before the split, from {}", g[i].name);
        p.send(&t);
        texts[i].push(t);
    }
    for (i, p) in peers.iter_mut().enumerate() {
        let want = sent_by_others(&texts, i);
        wait_texts(p, &want);
    }

    // Apart for longer than the silence limit, so the links across the cut are noticed
    // dead and dropped, as after a real outage.
    net.split();
    for round in 0..7 {
        for (i, p) in peers.iter_mut().enumerate() {
            let t = format!("apart {round}, from {}", g[i].name);
            p.send(&t);
            texts[i].push(t);
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    // Each half has its own half's messages and none of the other's: the cut is real.
    for (half, other) in [(net.half_a(), net.half_b()), (net.half_b(), net.half_a())] {
        for i in half.clone() {
            let want: Vec<&str> = half
                .clone()
                .filter(|j| *j != i)
                .flat_map(|j| texts[j].iter().map(String::as_str))
                .collect();
            wait_texts(&mut peers[i], &want);
            let got = received(&peers[i]);
            let leaked: Vec<&String> = other
                .clone()
                .flat_map(|j| texts[j].iter().filter(|t| t.starts_with("apart")))
                .filter(|t| got.contains_key(*t))
                .collect();
            assert!(leaked.is_empty(), "{} saw {leaked:?} across the cut", g[i].name);
        }
    }

    let healed_ns = unix_ns();
    let healed = Instant::now();
    net.heal();
    let mut slowest = Duration::ZERO;
    for (i, p) in peers.iter_mut().enumerate() {
        let want = sent_by_others(&texts, i);
        p.wait_until(
            "every message after healing",
            Duration::from_secs(20),
            |evs: &[Value]| want.iter().all(|t| count_text(evs, t) > 0),
        );
        let got = received(p);
        let last = want.iter().map(|t| got[*t]).max().unwrap_or(healed_ns);
        slowest = slowest.max(Duration::from_nanos((last - healed_ns).max(0) as u64));
    }
    eprintln!(
        "partition: {} hosts on two sites joined by 1 Mbit/s, 7 s apart, {} messages; every host had every message {:.0} ms after healing (waited {:.1} s)",
        g.len(),
        texts.iter().map(Vec::len).sum::<usize>(),
        slowest.as_secs_f64() * 1000.0,
        healed.elapsed().as_secs_f64()
    );
    // Exactly once, also after the lines have had time to come twice.
    std::thread::sleep(QUIET);
    for p in &peers {
        let events = p.events();
        assert_no_duplicates(p.label(), &messages(&events));
    }
    assert!(
        slowest <= Duration::from_secs(5),
        "convergence took {slowest:?} after healing; the target is 5 s"
    );
}

/// Runs `tool args...` for `home` inside `host`'s namespace, feeding `stdin`.
fn run_on(host: &peergroup_tests::netns::Host, home: &Home, tool: &str, args: &[&str], stdin: &[u8]) -> String {
    let out = run_command(host.command(&home.command(tool, args)), Some(stdin));
    out.ok().stdout
}

/// Regression: two members started with every default (listen on 0.0.0.0, the stored
/// port) on a host with two addresses (loopback and one veth) replaced their neighbour
/// connection about five times a second, forever, when the member with the lower id
/// had dialled both of the other's addresses from its invitation: the rule "keep the
/// connection dialled by the lower id" kept the newer of two it had dialled itself, and
/// the address dialled without a member id was dialled again. Steady now means at most
/// one neighbour connection coming up per member in the minute after ready.
#[test]
fn two_members_with_every_default_on_a_host_with_two_addresses_keep_one_connection() {
    if let Err(why) = Net::available() {
        skip_or_fail(&why);
        return;
    }
    let net = Net::new(1);
    let host = &net.hosts[0];
    let alice = Home::new();
    run_on(host, &alice, "identity-export", &["alice"], b"");
    run_on(host, &alice, "group-create", &["--identity", "alice", GROUP], b"");
    let alice_id = member_id(&alice, "alice");
    // The joiner dials the invitation's addresses; the fault showed when it had the
    // lower id, so make sure it does.
    let (bob, bob_id) = loop {
        let home = Home::new();
        run_on(host, &home, "identity-export", &["bob"], b"");
        let id = member_id(&home, "bob");
        if id < alice_id {
            break (home, id);
        }
    };
    let xml = run_on(host, &bob, "identity-export", &["bob"], b"");
    let invitation = run_on(
        host,
        &alice,
        "invite-create",
        &["--identity", "alice", "--group", GROUP, "-"],
        xml.as_bytes(),
    );
    let inspect = run_on(host, &bob, "group-join", &["--inspect", "-"], invitation.as_bytes());
    assert!(
        inspect.contains("127.0.0.1") && inspect.contains(&host.ip),
        "the invitation should carry both of alice's addresses:\n{inspect}"
    );
    run_on(
        host,
        &bob,
        "group-join",
        &["--identity", "bob", "-"],
        invitation.as_bytes(),
    );
    let chat = |home: &Home, name: &str| {
        let cmd = home.command("group-chat", &["--identity", name, "--group", GROUP, "--json"]);
        Peer::spawn(name, host.command(&cmd))
    };
    let mut a = chat(&alice, "alice");
    let mut b = chat(&bob, "bob");
    wait_ready(&mut a);
    wait_ready(&mut b);
    let ready_at = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    for (peer, other) in [(&a, &bob_id), (&b, &alice_id)] {
        let events = peer.events();
        let after_ready = events
            .iter()
            .skip_while(|e| e["event"] != "ready")
            .filter(|e| {
                e["event"] == "connection"
                    && e["kind"] == "neighbour"
                    && e["change"] == "up"
                    && e["member"] == other.as_str()
            })
            .count();
        let replaced = events
            .iter()
            .filter(|e| e["reason"].as_str().is_some_and(|r| r.contains("replaced")))
            .count();
        eprintln!(
            "{} ups after ready in {:?}, {replaced} replaced in all",
            after_ready,
            ready_at.elapsed()
        );
        if after_ready > 1 || replaced > 2 {
            // What happened, in order, for whoever reads the failure.
            for e in events
                .iter()
                .filter(|e| matches!(e["event"].as_str(), Some("connection" | "ready")))
            {
                eprintln!("  {}: {e}", peer.label());
            }
        }
        assert!(
            after_ready <= 1,
            "{after_ready} neighbour connections came up after ready: not steady"
        );
        assert!(replaced <= 2, "{replaced} connections replaced: the tie is not settled");
    }
}
