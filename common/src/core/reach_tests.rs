//! Reachability checks through a core driven by hand: what a member asks its
//! neighbours, whom it dials back and where, and what it believes of the answers. Each
//! hostile case is a red-team finding and failed before its fix.

use super::reach::{DIAL_BACKS_PER_MEMBER, FAILS_TO_DROP};
use super::test_support::*;
use super::*;
use crate::credential::tests::{DAY, Held, fixture};

/// A node of `h` advertising the public `11.0.0.2:7400`.
fn public_core(h: &Held, now: Now) -> Core<MemStore> {
    let mut cfg = config_of(h);
    cfg.advertised = vec!["11.0.0.2:7400".into()];
    Core::new(cfg, MemStore::new(), now).unwrap()
}

/// A neighbour that dialled in from `addr`.
fn from(addr: &str) -> Link {
    Link {
        addr: addr.parse().unwrap(),
        ..Link::default()
    }
}

/// A neighbour this node dialled at `addr` (unlike one that dialled in from the
/// internet, it proves nothing of this node's reach).
fn to(addr: &str) -> Link {
    Link {
        outbound: true,
        ..from(addr)
    }
}

/// The messages sent on `conn`.
fn sent(out: &[Output], conn: ConnId) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit { conn: c, frame } if *c == conn => Message::decode(&frame[4..]).ok(),
            _ => None,
        })
        .collect()
}

/// The checks asked on `conn`: (nonce, port).
fn asked(out: &[Output], conn: ConnId) -> Vec<(u64, u16)> {
    sent(out, conn)
        .into_iter()
        .filter_map(|m| match m {
            Message::DialBack { nonce, port } => Some((nonce, port)),
            _ => None,
        })
        .collect()
}

fn dial_backs(out: &[Output]) -> Vec<SocketAddr> {
    out.iter()
        .filter_map(|o| match o {
            Output::DialBack { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect()
}

fn result(nonce: u64, outcome: DialOutcome, addr: &str) -> Message {
    Message::DialBackResult {
        nonce,
        outcome,
        addr: addr.parse().unwrap(),
    }
}

/// `h`'s dial-back for check `nonce`, arriving from `source`.
fn dialled_in(h: &Held, nonce: u64, source: &str) -> Input {
    Input::DialedIn {
        member: h.m.membership.member_id,
        nonce,
        source: source.parse().unwrap(),
    }
}

/// Neighbours `hs` (connections 1, 2, ...) that this node dialled, each at
/// `11.0.0.1N:7400`; the checks each was asked, by connection.
fn neighbours_asked(core: &mut Core<MemStore>, hs: &[&Held], now: Now) -> Vec<Vec<(u64, u16)>> {
    for (id, h) in (1..).zip(hs) {
        core.handle(now, up_with(id, h, to(&format!("11.0.0.1{id}:7400"))));
    }
    drain(core);
    core.handle_timeout(now);
    let out = drain(core);
    (1..=hs.len() as ConnId).map(|id| asked(&out, id)).collect()
}

#[test]
fn each_neighbour_is_asked_once_for_the_port_and_the_check_settles_only_when_seen() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = public_core(&f.member, now);
    let checks = neighbours_asked(&mut core, &[&f.creator, &f.admin], now);
    let [(nonce, 7400)] = checks[0][..] else {
        panic!("asked {checks:?}")
    };
    core.handle_timeout(now);
    assert!(asked(&drain(&mut core), 1).is_empty(), "asked once");
    // The neighbour says it works, but the dial-back never came: nothing believed.
    core.handle(now, Input::Frame(1, result(nonce, DialOutcome::Works, "11.0.0.2:7400")));
    assert!(!core.status().addresses[0].checked);
    // Another member's dial-back with the nonce proves nothing either.
    core.handle(now, dialled_in(&f.admin, nonce, "11.0.0.12:40000"));
    assert!(!core.status().addresses[0].checked);
    core.handle(now, dialled_in(&f.creator, nonce, "11.0.0.11:40000"));
    let status = core.status();
    assert!(status.addresses[0].checked, "{status:?}");
    assert!(!status.reachable, "one member's proof");
    let [(nonce, _)] = checks[1][..] else { panic!() };
    core.handle(now, dialled_in(&f.admin, nonce, "11.0.0.12:40000"));
    core.handle(now, Input::Frame(2, result(nonce, DialOutcome::Works, "11.0.0.2:7400")));
    assert!(core.status().reachable);
}

/// A member behind NAT names relays until it learns it is reachable; checks that
/// succeeded at its global address end that (whispers then come direct), and a lost
/// mapping brings them back at once.
#[test]
fn a_member_checked_reachable_names_no_relays_until_its_mapping_is_lost() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut cfg = config_of(&f.member);
    cfg.advertised = vec!["192.168.1.5:7400".into()];
    let mut core = Core::new(cfg, MemStore::new(), now).unwrap();
    core.handle(now, Input::Mapped(Some(("11.0.0.2:7400".parse().unwrap(), "upnp"))));
    let checks = neighbours_asked(&mut core, &[&f.creator, &f.admin], now);
    assert!(!core.relay_ids().is_empty(), "names its relays before the checks");
    for (id, (h, checks)) in (1..).zip([&f.creator, &f.admin].into_iter().zip(checks)) {
        let [(nonce, 7400)] = checks[..] else {
            panic!("{checks:?}")
        };
        core.handle(now, dialled_in(h, nonce, &format!("11.0.0.1{id}:40000")));
        core.handle(
            now,
            Input::Frame(id, result(nonce, DialOutcome::Works, "11.0.0.2:7400")),
        );
    }
    assert!(core.status().reachable && core.relay_ids().is_empty());
    core.handle(now, Input::Mapped(None));
    assert!(!core.status().reachable);
    assert!(!core.relay_ids().is_empty());
    assert_eq!(core.advertised(), ["192.168.1.5:7400"]);
}

/// Red-team finding: a member on the same link reached a global IPv6 address past the
/// home router's firewall, and its dial made the node believe the internet could
/// reach it. Reachable over IPv6 only, a member still names relays for IPv4 members.
#[test]
fn a_dial_from_its_own_ipv6_link_does_not_make_a_member_reachable() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let dual_stack = || {
        let mut cfg = config_of(&f.member);
        cfg.advertised = vec!["192.168.1.5:7400".into(), "[2001:470:1::5]:7400".into()];
        Core::new(cfg, MemStore::new(), now).unwrap()
    };
    let mut core = dual_stack();
    core.handle(now, up_with(1, &f.creator, from("[2001:470:1::9]:50000")));
    assert!(!core.status().reachable);
    let mut core = dual_stack();
    core.handle(now, up_with(1, &f.creator, to("11.0.0.9:7400")));
    core.handle(now, up_with(2, &f.admin, from("[2001:470:9::9]:50000")));
    assert!(core.status().reachable, "dialled from another network");
    assert!(!core.relay_ids().is_empty(), "IPv4 members still need a relay");
}

/// Red-team finding: each request over a member's budget cost a reply and a log line.
#[test]
fn a_flood_of_check_requests_costs_a_bounded_number_of_answers() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.member, now);
    core.handle(now, up_with(1, &f.creator, from("11.0.0.9:5555")));
    drain(&mut core);
    for nonce in 0..1000 {
        core.handle(now, Input::Frame(1, Message::DialBack { nonce, port: 9000 }));
    }
    let out = drain(&mut core);
    let budget = DIAL_BACKS_PER_MEMBER as usize;
    assert_eq!(dial_backs(&out).len(), budget);
    assert_eq!(sent(&out, 1).len(), budget, "refusals");
}

/// A hostile neighbour could aim this node's dials at any host by naming an address.
/// It names a port only; the dial goes to the IP its connection came from (in its
/// canonical form), within a budget per member, and never over a whisper connection.
#[test]
fn dial_backs_go_only_to_the_asker_s_own_ip_within_its_budget() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.member, now);
    core.handle(now, up_with(1, &f.creator, from("[::ffff:11.0.0.9]:5555")));
    drain(&mut core);
    for n in 0..u64::from(DIAL_BACKS_PER_MEMBER) {
        core.handle(now, Input::Frame(1, Message::DialBack { nonce: n, port: 9000 }));
        assert_eq!(
            dial_backs(&drain(&mut core)),
            ["11.0.0.9:9000".parse::<SocketAddr>().unwrap()]
        );
        core.handle(
            now,
            Input::DialedBack {
                conn: 1,
                nonce: n,
                addr: "11.0.0.9:9000".parse().unwrap(),
                result: Err("connect: refused".into()),
            },
        );
        let answers = sent(&drain(&mut core), 1);
        assert_eq!(answers, [result(n, DialOutcome::Failed, "11.0.0.9:9000")]);
    }
    core.handle(now, Input::Frame(1, Message::DialBack { nonce: 99, port: 9000 }));
    let out = drain(&mut core);
    assert!(dial_backs(&out).is_empty(), "over the member's budget");
    assert_eq!(sent(&out, 1), [result(99, DialOutcome::Refused, "11.0.0.9:9000")]);
    // Port 0 is nowhere to dial.
    core.handle(now, up_with(2, &f.admin, from("11.0.0.7:5555")));
    drain(&mut core);
    core.handle(now, Input::Frame(2, Message::DialBack { nonce: 1, port: 0 }));
    assert!(dial_backs(&drain(&mut core)).is_empty());
    // A whisper connection carries whispers only.
    let whisper = Link {
        purpose: Purpose::Direct,
        ..from("11.0.0.8:5555")
    };
    core.handle(now, up_with(3, &f.admin, whisper));
    drain(&mut core);
    core.handle(now, Input::Frame(3, Message::DialBack { nonce: 1, port: 9000 }));
    let out = drain(&mut core);
    assert!(dial_backs(&out).is_empty());
    assert!(out.iter().any(|o| matches!(o, Output::Close { conn: 3 })));
}

/// One hostile neighbour saying "it failed" could make a member stop advertising the
/// address everyone else reaches it at. It takes two members, and none succeeding.
#[test]
fn an_address_two_members_cannot_dial_is_no_longer_advertised() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut cfg = config_of(&f.member);
    cfg.advertised = vec!["11.0.0.2:7400".into(), "11.0.0.2:7401".into()];
    cfg.advertise_given = true;
    let mut core = Core::new(cfg, MemStore::new(), now).unwrap();
    let members = [&f.creator, &f.admin];
    for (id, h) in (1..).zip(members) {
        core.handle(now, up_with(id, h, from(&format!("11.0.0.{}:5555", id + 10))));
    }
    core.handle_timeout(now);
    let out = drain(&mut core);
    for id in 1..=FAILS_TO_DROP as ConnId {
        let checks = asked(&out, id);
        assert_eq!(checks.iter().map(|c| c.1).collect::<Vec<_>>(), [7400, 7401]);
        let (nonce, _) = checks[1];
        core.handle(
            now,
            Input::Frame(id, result(nonce, DialOutcome::Failed, "11.0.0.2:7401")),
        );
        if id == 1 {
            assert_eq!(core.advertised().len(), 2, "one member's word");
        }
    }
    assert_eq!(core.advertised(), ["11.0.0.2:7400"]);
    let out = drain(&mut core);
    assert!(
        out.iter().any(|o| matches!(o, Output::Transmit { .. })),
        "the new presence goes out at once"
    );
    assert_eq!(core.status().addresses[0].how, "advertise");
}

/// A relayed or punched connection's Hello is the peer's word: a dial-back claimed
/// there is nothing this node asked for.
#[test]
fn a_dial_back_hello_over_another_path_is_closed() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.member, now);
    let link = Link {
        purpose: Purpose::DialBack,
        via: Via::Relayed,
        ..Link::default()
    };
    core.handle(now, up_with(1, &f.creator, link));
    let out = drain(&mut core);
    assert!(out.iter().any(|o| matches!(o, Output::Close { conn: 1 })));
    assert_eq!(core.neighbour_count(), 0);
}
