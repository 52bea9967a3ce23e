//! Members on different networks (issue 12): a small internet in network namespaces
//! (see `peergroup_tests::natworld`), with home routers doing NAT. Needs root,
//! iproute2 and nftables; skipped with a message elsewhere, and a failure under
//! `CI=true`.

use std::time::{Duration, Instant};

use peergroup_tests::group::*;
use peergroup_tests::natworld::{Nat, World};
use peergroup_tests::netns::{Host, Net};
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
/// names its relays once it met them. Returns how long it took.
fn whisper_until_it_arrives(from: &mut Peer, to: &mut Peer, name: &str, text: &str) -> Duration {
    let started = Instant::now();
    loop {
        from.send(&format!("/msg {name} {text}"));
        let tried = Instant::now();
        while tried.elapsed() < Duration::from_secs(1) {
            if to.events_of("whisper").iter().any(|e| e["text"] == text) {
                for e in from.events_of("error") {
                    eprintln!("reach: a try before the whisper went: {}", e["message"]);
                }
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
    // /who says how ben reaches each: ann directly, cat through the relay.
    ben.send("/who");
    let who = ben.wait_for("the member list", Duration::from_secs(5), |e| e["event"] == "members");
    let via = |name: &str| {
        who["members"]
            .as_array()
            .and_then(|l| l.iter().find(|m| m["name"] == name))
            .map(|m| m["via"].clone())
    };
    assert_eq!(via("ann"), Some("direct".into()), "{who}");
    assert_eq!(via("cat"), Some("relayed".into()), "{who}");
    assert_eq!(via("ben"), Some(serde_json::Value::Null), "{who}");
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

/// Whether a `status` event advertises an address mapped by `how`; the address.
fn mapped_by(e: &serde_json::Value, how: &str) -> Option<String> {
    if e["event"] != "status" {
        return None;
    }
    e["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["how"] == how)
        .and_then(|a| a["address"].as_str().map(str::to_string))
}

/// Scenario 1 of issue 12: every member behind a NAT, no flags. The member behind a
/// router with UPnP (miniupnpd) is mapped and advertises the router's public address
/// first; one behind a NAT-PMP/PCP-only router is mapped through that; the third, behind
/// a plain NAT, reaches both; invitations made while the first is online carry its
/// mapped address; a clean exit removes the mapping from the router.
#[test]
fn members_behind_routers_with_port_mapping_are_mapped_and_the_group_forms_with_no_flags() {
    if let Err(why) = World::available() {
        skip_or_fail(&why);
        return;
    }
    let world = World::new(0, &[Nat::Upnp, Nat::NatPmp, Nat::Masquerade]);
    let hosts: Vec<&Host> = world.routers.iter().map(|r| &r.host).collect();
    let addr = |i: usize| format!("{}:{PORT}", hosts[i].ip);
    let started = Instant::now();
    let ann = group_at(&["ann"], vec![addr(0)], &[]).remove(0);
    let mut ann_p = start_on(&ann, hosts[0]);
    let upnp = ann_p.wait_for("ann's mapping", Duration::from_secs(20), |e| {
        mapped_by(e, "upnp").is_some()
    });
    let mapped_at = started.elapsed();
    assert_eq!(
        mapped_by(&upnp, "upnp").unwrap(),
        format!("{}:{PORT}", world.routers[0].wan_ip),
        "{upnp}"
    );
    assert!(
        world.mappings(0).contains(&hosts[0].ip),
        "no dnat rule:\n{}",
        world.mappings(0)
    );
    // Invited while ann is online: the invitations carry her mapped address.
    let ben = invite(&ann, "ben", addr(1));
    let cat = invite(&ann, "cat", addr(2));
    let mut ben_p = start_on(&ben, hosts[1]);
    let mut cat_p = start_on(&cat, hosts[2]);
    let natpmp = ben_p.wait_for("ben's mapping", Duration::from_secs(20), |e| {
        mapped_by(e, "nat-pmp").is_some()
    });
    assert_eq!(
        mapped_by(&natpmp, "nat-pmp").unwrap(),
        format!("{}:{PORT}", world.routers[1].wan_ip),
        "{natpmp}"
    );
    for p in [&mut ann_p, &mut ben_p, &mut cat_p] {
        wait_ready(p);
    }
    wait_present(&mut cat_p, &ben);
    wait_present(&mut ben_p, &cat);
    say_and_see(&mut cat_p, "from behind a plain NAT", &mut [&mut ann_p, &mut ben_p]);
    say_and_see(&mut ann_p, "from behind UPnP", &mut [&mut ben_p, &mut cat_p]);
    // Nobody could dial cat; ann was dialled at her router's public address.
    cat_p.wait_for(
        "cat's connection to ann's mapped address",
        Duration::from_secs(5),
        |e| {
            e["event"] == "connection"
                && e["change"] == "up"
                && e["address"] == format!("{}:{PORT}", world.routers[0].wan_ip)
        },
    );
    // Cat came in through ann's mapping, and ann says so.
    ann_p.wait_for("a connection through ann's mapping", Duration::from_secs(5), |e| {
        e["event"] == "connection" && e["change"] == "up" && e["via"] == "mapped"
    });
    // Reachable, and her neighbours dialled her back at the mapped address (the
    // reachability check); ben's NAT-PMP mapping is checked the same way.
    let checked = |how: &'static str| {
        move |e: &serde_json::Value| {
            e["event"] == "status"
                && e["reachable"] == true
                && e["addresses"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["how"] == how && a["checked"] == true))
        }
    };
    ann_p.wait_for(
        "ann reachable, her mapping checked",
        Duration::from_secs(10),
        checked("upnp"),
    );
    ben_p.wait_for(
        "ben reachable, his mapping checked",
        Duration::from_secs(10),
        checked("nat-pmp"),
    );
    // A clean exit removes the mapping.
    ann_p.close_stdin();
    assert_eq!(ann_p.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        !world.mappings(0).contains(&hosts[0].ip),
        "still mapped:\n{}",
        world.mappings(0)
    );
    eprintln!(
        "reach: mapped with UPnP {:.0} ms after start; three members behind NAT (UPnP, NAT-PMP, plain) chatting {:.1} s after start",
        mapped_at.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64()
    );
}

/// Scenario 4 of issue 12: every member moved to new addresses while offline, so every
/// address it remembers (invitation, presence, known peers) is stale. Members on one
/// LAN find each other by mDNS (a hash of the group id, never its name) and the group
/// forms again, the connection saying `via: lan`.
#[test]
fn members_that_all_moved_find_each_other_on_the_lan_and_the_group_re_forms() {
    if let Err(why) = Net::available() {
        skip_or_fail(&why);
        return;
    }
    let mut net = Net::new(2);
    let addrs = net.hosts.iter().map(|h| format!("{}:{PORT}", h.ip)).collect();
    let g = group_at(&["ann", "ben"], addrs, &[]);
    {
        let mut peers: Vec<Peer> = g.iter().zip(&net.hosts).map(|(m, h)| start_on(m, h)).collect();
        for p in peers.iter_mut() {
            wait_ready(p);
        }
        let (ann, ben) = peers.split_at_mut(1);
        say_and_see(&mut ann[0], "before the move", &mut [&mut ben[0]]);
        for p in peers.iter_mut() {
            p.close_stdin();
            assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
        }
    }
    net.renumber(0, "10.77.0.101");
    net.renumber(1, "10.77.0.102");
    let started = Instant::now();
    let listen = format!("0.0.0.0:{PORT}");
    let mut peers: Vec<Peer> = g
        .iter()
        .zip(&net.hosts)
        .map(|(m, h)| {
            let args = ["--identity", m.name, "--group", GROUP, "--json", "--listen", &listen];
            Peer::spawn(m.name, h.command(&m.home.command("group-chat", &args)))
        })
        .collect();
    for p in peers.iter_mut() {
        wait_ready(p);
    }
    let ready = started.elapsed();
    let lan = peers.iter().any(|p| {
        p.events_of("connection")
            .iter()
            .any(|e| e["change"] == "up" && e["via"] == "lan")
    });
    assert!(lan, "no connection by way of the LAN");
    let (ann, ben) = peers.split_at_mut(1);
    say_and_see(&mut ben[0], "after the move", &mut [&mut ann[0]]);
    eprintln!(
        "reach: two members that both moved found each other by mDNS and were ready {:.1} s after start",
        ready.as_secs_f64()
    );
}

/// Runs `f` on a thread of its own inside network namespace `ns`, as a program on that
/// host would (setns moves only the calling thread).
fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = rustix::fs::open(
            &path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&fd),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("the thread in the namespace")
}

/// Scenario 5 of issue 12: a member that tries to use a relay beyond its limits. Cat,
/// a member on a public host, asks ann's relay (a real `group-chat`) for circuits to
/// ben (behind NAT) and never uses them: the relay gives four, refuses the fifth
/// naming its limit, refuses a circuit to a member that is not connected to it, and
/// chats on with ben meanwhile.
#[test]
fn a_member_asking_a_relay_beyond_its_limits_is_refused_and_the_relay_chats_on() {
    use common::core::relay::{MAX_CIRCUITS_PER_MEMBER, Refusal};
    use common::node::relay::{self, Request};
    if let Err(why) = World::available() {
        skip_or_fail(&why);
        return;
    }
    let world = World::new(2, &[Nat::Masquerade]);
    let hosts = [&world.public[0], &world.routers[0].host, &world.public[1]];
    let addrs = hosts.iter().map(|h| format!("{}:{PORT}", h.ip)).collect();
    let g = group_at(&["ann", "ben", "cat"], addrs, &[]);
    let mut ann = start_on(&g[0], hosts[0]);
    let mut ben = start_on(&g[1], hosts[1]);
    wait_ready(&mut ben);
    // Cat goes online once, so that ben knows its membership, then leaves.
    let mut cat = start_on(&g[2], hosts[2]);
    wait_present(&mut ben, &g[2]);
    cat.close_stdin();
    assert_eq!(cat.wait_exit(Duration::from_secs(10)), Some(0));
    let home = common::home::Home::resolve(Some(g[2].home.path())).unwrap();
    let identity = common::identity::Identity::load(&home, "cat").unwrap();
    let membership = common::membership::find(&home, "cat", GROUP).unwrap();
    let (ann_id, ben_id) = (g[0].id.parse().unwrap(), g[1].id.parse().unwrap());
    let relay_addr = format!("{}:{PORT}", hosts[0].ip).parse().unwrap();
    let (opened, over, stranger) = in_namespace(&hosts[2].ns, move || {
        common::tls::install_default_provider();
        let configs = common::tls::configs(&identity, &membership).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut held = Vec::new();
            let over = loop {
                match relay::open(&configs, ann_id, relay_addr, Request::Connect(ben_id)).await {
                    Ok(c) => held.push(c),
                    Err(e) => break e,
                }
                if held.len() > MAX_CIRCUITS_PER_MEMBER {
                    break "no refusal".into();
                }
            };
            let opened = held.len();
            drop(held);
            tokio::time::sleep(Duration::from_millis(500)).await;
            let nobody = common::member::MemberId::from_bytes([7; 20]);
            let stranger = relay::open(&configs, ann_id, relay_addr, Request::Connect(nobody))
                .await
                .err()
                .unwrap_or_default();
            (opened, over, stranger)
        })
    });
    assert_eq!(opened, MAX_CIRCUITS_PER_MEMBER, "{over}");
    assert!(
        over.contains(&Refusal::PerMember(MAX_CIRCUITS_PER_MEMBER).to_string()),
        "{over}"
    );
    assert!(stranger.contains(&Refusal::NotConnected.to_string()), "{stranger}");
    say_and_see(&mut ann, "the relay chats on", &mut [&mut ben]);
    say_and_see(&mut ben, "and so does ben", &mut [&mut ann]);
}

/// One public member (ann, the relay) and two members behind routers of kind `nat`
/// (ben and cat), all online and ready, ben and cat present to each other.
fn two_behind(nat: Nat) -> (World, Vec<Member>, Vec<Peer>) {
    let world = World::new(1, &[nat, nat]);
    let hosts = [&world.public[0], &world.routers[0].host, &world.routers[1].host];
    let addrs = hosts.iter().map(|h| format!("{}:{PORT}", h.ip)).collect();
    let g = group_at(&["ann", "ben", "cat"], addrs, &[]);
    let mut peers: Vec<Peer> = g.iter().zip(hosts).map(|(m, h)| start_on(m, h)).collect();
    for p in peers.iter_mut() {
        wait_ready(p);
    }
    wait_present(&mut peers[1], &g[2]);
    wait_present(&mut peers[2], &g[1]);
    (world, g, peers)
}

/// Scenario 3 of issue 12: two members behind port-preserving NATs share a neighbour.
/// A whisper goes through the neighbour's relay first; the two then dial each other at
/// once from their listening ports (the relay told each where it sees the other) and
/// the connection becomes direct (`via: punched`), replacing the relayed one; the next
/// whispers take it.
#[test]
fn members_behind_two_nats_punch_a_direct_connection_through_a_shared_neighbour() {
    if let Err(why) = World::available() {
        skip_or_fail(&why);
        return;
    }
    let (world, _g, mut peers) = two_behind(Nat::Masquerade);
    let (_ann, rest) = peers.split_at_mut(1);
    let (ben, cat) = rest.split_at_mut(1);
    let (ben, cat) = (&mut ben[0], &mut cat[0]);
    whisper_until_it_arrives(ben, cat, "cat", "first through the relay");
    let started = Instant::now();
    let punched = |e: &serde_json::Value| {
        e["event"] == "connection" && e["kind"] == "direct" && e["change"] == "up" && e["via"] == "punched"
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !ben.events_of("connection").iter().any(punched) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let direct = |p: &Peer| {
        p.events_of("connection")
            .into_iter()
            .filter(|e| e["kind"] == "direct")
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let up = ben
        .events_of("connection")
        .into_iter()
        .find(punched)
        .unwrap_or_else(|| panic!("no punched connection:\nben:\n{}\ncat:\n{}", direct(ben), direct(cat)));
    let took = started.elapsed();
    assert_eq!(up["address"], format!("{}:{PORT}", world.routers[1].wan_ip), "{up}");
    cat.wait_for("a punched connection", Duration::from_secs(5), punched);
    ben.wait_for("the relayed connection replaced", Duration::from_secs(5), |e| {
        e["event"] == "connection" && e["change"] == "down" && e["via"] == "relayed"
    });
    ben.send("/msg cat now direct");
    cat.wait_for("the whisper", Duration::from_secs(5), |e| {
        e["event"] == "whisper" && e["text"] == "now direct"
    });
    eprintln!(
        "reach: a hole punched through two port-preserving NATs {:.0} ms after the relayed whisper",
        took.as_secs_f64() * 1000.0
    );
}

/// For `scripts/bench` (ignored in `scripts/test`): how often two members behind NATs
/// of one kind get a punched connection, `PUNCH_TRIES` fresh worlds per kind (default
/// 20). Port-preserving NATs should punch; fully random ones cannot (the relay carries
/// the traffic).
#[test]
#[ignore]
fn punch_success_rate() {
    if let Err(why) = World::available() {
        skip_or_fail(&why);
        return;
    }
    let tries: usize = std::env::var("PUNCH_TRIES")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    for nat in [Nat::Masquerade, Nat::Random] {
        let mut punched = 0;
        let mut took = Vec::new();
        for _ in 0..tries {
            let (_world, _g, mut peers) = two_behind(nat);
            let (_ann, rest) = peers.split_at_mut(1);
            let (ben, cat) = rest.split_at_mut(1);
            let (ben, cat) = (&mut ben[0], &mut cat[0]);
            whisper_until_it_arrives(ben, cat, "cat", "punch?");
            let started = Instant::now();
            let settled = ben.wait_until("the punch to end", Duration::from_secs(15), |evs| {
                evs.iter()
                    .any(|e| e["event"] == "connection" && e["via"] == "punched" && e["change"] != "down")
            });
            let up = settled
                .iter()
                .any(|e| e["event"] == "connection" && e["via"] == "punched" && e["change"] == "up");
            if up {
                punched += 1;
                took.push(started.elapsed().as_millis());
            }
        }
        took.sort_unstable();
        eprintln!(
            "punch rate {nat:?}: {punched} of {tries} tries direct; median {} ms after the relayed whisper arrived",
            took.get(took.len() / 2).copied().unwrap_or(0)
        );
    }
}

/// Whether a `status` event advertises `want` (all of them), each checked by a
/// neighbour dialling back, and no link-local address.
fn advertises_checked(e: &serde_json::Value, want: &[String]) -> bool {
    let Some(list) = e["addresses"].as_array().filter(|_| e["event"] == "status") else {
        return false;
    };
    let shown: Vec<(&str, bool)> = list
        .iter()
        .map(|a| (a["address"].as_str().unwrap_or(""), a["checked"] == true))
        .collect();
    assert!(
        !shown.iter().any(|(a, _)| a.starts_with("[fe80")),
        "a link-local address: {e}"
    );
    want.iter().all(|w| shown.contains(&(w.as_str(), true)))
}

/// IPv6 end to end: ben has IPv6 only, ann listens on every address (`[::]`, both
/// families, as by default), cat has IPv4 only. Ann advertises both her addresses
/// (never the link-local ones) and her neighbours check each by dialling her back, ben
/// over IPv6 and cat over IPv4; the group forms across both families through her, and
/// chat and whispers flow.
#[test]
fn members_on_ipv6_and_ipv4_form_one_group_through_a_dual_stack_member() {
    if let Err(why) = World::available() {
        skip_or_fail(&why);
        return;
    }
    let world = World::new(3, &[]);
    let (ben_h, ann_h, cat_h) = (&world.public[0], &world.public[1], &world.public[2]);
    world.ipv6_only(ben_h);
    world.ipv4_only(cat_h);
    let ben_at = format!("[{}]:{PORT}", World::ipv6_of(ben_h));
    let ben = group_at(&["ben"], vec![ben_at.clone()], &[]).remove(0);
    let ann = invite(&ben, "ann", format!("[::]:{PORT}"));
    let mut ben_p = start_on(&ben, ben_h);
    let mut ann_p = start_on(&ann, ann_h);
    wait_ready(&mut ann_p);
    wait_ready(&mut ben_p);
    // Invited while ann is present: the invitation carries her addresses (IPv4 first)
    // besides ben's, which cat could not dial.
    let cat = invite(&ben, "cat", format!("{}:{PORT}", cat_h.ip));
    let mut cat_p = start_on(&cat, cat_h);
    wait_ready(&mut cat_p);
    wait_present(&mut cat_p, &ben);
    wait_present(&mut ben_p, &cat);
    let ann_both = vec![
        format!("{}:{PORT}", ann_h.ip),
        format!("[{}]:{PORT}", World::ipv6_of(ann_h)),
    ];
    ann_p.wait_for("ann's two addresses checked", Duration::from_secs(15), |e| {
        advertises_checked(e, &ann_both) && e["reachable"] == true
    });
    ben_p.wait_for("ben's IPv6 address checked", Duration::from_secs(15), |e| {
        advertises_checked(e, std::slice::from_ref(&ben_at))
    });
    say_and_see(&mut ben_p, "over IPv6", &mut [&mut ann_p, &mut cat_p]);
    say_and_see(&mut cat_p, "over IPv4", &mut [&mut ann_p, &mut ben_p]);
    // Ann reached ben over IPv6; the whispers go over that connection.
    ann_p.wait_for("ann's connection to ben over IPv6", Duration::from_secs(5), |e| {
        e["event"] == "connection" && e["change"] == "up" && e["address"] == ben_at.as_str()
    });
    whisper_until_it_arrives(&mut ann_p, &mut ben_p, "ben", "psst, IPv6");
    whisper_until_it_arrives(&mut ben_p, &mut ann_p, "ann", "and back");
}
