//! Relaying through a core driven by hand: which offers a member acts on, what a relay
//! refuses, and what a relayed connection may carry. Each test is a red-team finding
//! and failed before its fix.

use super::relay::{OFFERS_PER_ASKER, Refusal};
use super::test_support::*;
use super::*;
use crate::credential::tests::{DAY, Held, fixture};

const TOKEN: [u8; wire::RELAY_TOKEN_BYTES] = [7; wire::RELAY_TOKEN_BYTES];

fn offer(from: &Held) -> Message {
    Message::RelayOffer {
        token: TOKEN,
        from: from.m.membership.member_id,
    }
}

fn taken(out: &[Output]) -> Vec<SocketAddr> {
    out.iter()
        .filter_map(|o| match o {
            Output::AcceptRelayed { addr, .. } => Some(*addr),
            _ => None,
        })
        .collect()
}

/// The relay this node dialled: `h` at a public address.
fn dialled(addr: &str) -> Link {
    Link {
        addr: addr.parse().unwrap(),
        outbound: true,
        ..Link::default()
    }
}

/// A hostile member that dialled in could make this node dial any address its presence
/// named (and any number of times, by reconnecting). Offers are taken only from a relay
/// this node dialled, dialled back where it was reached, within a budget per asker that
/// survives reconnecting.
#[test]
fn offers_are_taken_only_from_a_relay_this_node_dialled_within_a_lasting_budget() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.member, now);
    core.handle(now, up(1, &f.creator));
    core.handle(now, up(2, &f.admin));
    drain(&mut core);
    core.handle(now, Input::Frame(2, offer(&f.creator)));
    assert!(
        taken(&drain(&mut core)).is_empty(),
        "an offer from a neighbour that dialled in"
    );

    let mut core = core_of(&f.member, now);
    core.handle(now, up(1, &f.creator));
    core.handle(now, up_with(2, &f.admin, dialled("11.11.0.1:7400")));
    drain(&mut core);
    for _ in 0..OFFERS_PER_ASKER {
        core.handle(now, Input::Frame(2, offer(&f.creator)));
        assert_eq!(
            taken(&drain(&mut core)),
            ["11.11.0.1:7400".parse::<SocketAddr>().unwrap()]
        );
    }
    core.handle(now, Input::Frame(2, offer(&f.creator)));
    assert!(taken(&drain(&mut core)).is_empty(), "over the asker's budget");
    // Reconnecting does not buy a new budget.
    core.handle(now, Input::Down(2, ConnReason::Replaced));
    core.handle(now, up_with(3, &f.admin, dialled("11.11.0.1:7400")));
    drain(&mut core);
    core.handle(now, Input::Frame(3, offer(&f.creator)));
    assert!(
        taken(&drain(&mut core)).is_empty(),
        "the budget outlives the connection"
    );
    // An offer for itself or for a member nobody knows is nothing to act on.
    core.handle(now, Input::Frame(3, offer(&f.member)));
    assert!(taken(&drain(&mut core)).is_empty());
}

/// A circuit carried a neighbour connection: it counted against the neighbours the
/// node dials and could replace a direct one. Relayed connections carry whispers only.
#[test]
fn a_relayed_connection_cannot_be_a_neighbour() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.creator, now);
    let relayed = Link {
        via: Via::Relayed,
        ..Link::default()
    };
    core.handle(now, up_with(1, &f.admin, relayed));
    let out = drain(&mut core);
    assert!(out.iter().any(|o| matches!(o, Output::Close { conn: 1 })), "{out:?}");
    assert_eq!(core.status().neighbours, 0);
    // A relayed direct connection stays.
    let direct = Link {
        purpose: Purpose::Direct,
        ..relayed
    };
    core.handle(now, up_with(2, &f.admin, direct));
    assert!(!drain(&mut core).iter().any(|o| matches!(o, Output::Close { conn: 2 })));
}

/// TLS checks chains, not revocations: a revoked member could use every member as a
/// relay. The relay refuses circuits from or to a revoked member.
#[test]
fn a_relay_refuses_circuits_from_or_to_a_revoked_member() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let ms = now.unix_ms();
    let mut core = core_of(&f.creator, now);
    core.handle(now, up(1, &f.admin));
    core.handle(now, up(2, &f.member));
    drain(&mut core);
    let (admin, member) = (f.admin.m.membership.member_id, f.member.m.membership.member_id);
    core.handle(
        now,
        Input::RelayRequest {
            token: TOKEN,
            from: admin,
            target: member,
        },
    );
    let out = drain(&mut core);
    assert!(
        out.iter().any(|o| matches!(o, Output::Transmit { conn: 2, .. })),
        "offered: {out:?}"
    );
    let rev = revocation_of(&f.creator, &f.member, vec![], ms);
    core.handle(now, Input::Command(7, Command::Admit(vec![rev.encode()])));
    drain(&mut core);
    for (from, target) in [(member, admin), (admin, member)] {
        core.handle(
            now,
            Input::RelayRequest {
                token: TOKEN,
                from,
                target,
            },
        );
        let out = drain(&mut core);
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::RelayRefused {
                    refusal: Refusal::Revoked,
                    ..
                }
            )),
            "{out:?}"
        );
    }
}

/// One member dialling in from the LAN made a member behind NAT stop naming relays
/// for good. Only a dial from a global address proves reachability.
#[test]
fn only_a_dial_from_the_internet_makes_a_member_reachable() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.member, now);
    let lan = Link {
        addr: "192.168.1.7:41000".parse().unwrap(),
        ..Link::default()
    };
    core.handle(now, up_with(1, &f.admin, lan));
    assert!(!core.status().reachable);
    let internet = Link {
        addr: "11.11.0.9:41000".parse().unwrap(),
        ..Link::default()
    };
    core.handle(now, up_with(2, &f.creator, internet));
    assert!(core.status().reachable);
}

/// Red-team finding: a member dialled in through a port mapping stayed "reachable"
/// after the mapping was lost, naming neither a working address nor a relay.
#[test]
fn losing_the_mapping_makes_a_member_name_its_relays_again() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.member, now);
    core.handle(now, up_with(1, &f.admin, dialled("11.11.0.1:7400")));
    core.handle(now, Input::Mapped(Some(("11.11.0.2:7400".parse().unwrap(), "upnp"))));
    let internet = Link {
        addr: "11.11.0.9:41000".parse().unwrap(),
        ..Link::default()
    };
    core.handle(now, up_with(2, &f.creator, internet));
    assert!(core.status().reachable);
    assert_eq!(core.status().addresses[0].how, "upnp");
    core.handle(now, Input::Mapped(None));
    assert!(!core.status().reachable, "reachable without the mapping");
    assert_eq!(core.relay_ids(), [f.admin.m.membership.member_id]);
}

/// A relayed connection's address is the relay's: it kept the mesh from dialling the
/// relay as a neighbour.
#[test]
fn a_relayed_connection_does_not_keep_the_relay_from_being_dialled() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let relay: SocketAddr = "11.11.0.1:7400".parse().unwrap();
    let mut cfg = config_of(&f.member);
    cfg.peers = vec![PeerSpec {
        member: None,
        addr: relay,
    }];
    let mut core = Core::new(cfg, MemStore::new(), now).unwrap();
    let whisper_through_it = Link {
        addr: relay,
        outbound: true,
        purpose: Purpose::Direct,
        via: Via::Relayed,
        observed: None,
    };
    core.handle(now, up_with(1, &f.admin, whisper_through_it));
    drain(&mut core);
    core.handle_timeout(now);
    let out = drain(&mut core);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Dial { addr, purpose: Purpose::Neighbour, .. } if *addr == relay)),
        "{out:?}"
    );
}

/// Red-team finding: four answers from anyone on the link pushed every real member's
/// address out of the addresses mDNS found. An address where a member answered stays.
#[test]
fn addresses_where_a_member_answered_are_not_pushed_out_by_new_answers() {
    let real: SocketAddr = "10.77.0.2:7400".parse().unwrap();
    let mut kept = VecDeque::new();
    lan_found(&mut kept, vec![real]);
    kept[0].1 = true;
    for i in 0..40u8 {
        lan_found(
            &mut kept,
            vec![SocketAddr::from(([10, 77, 0, 100], 1000 + u16::from(i)))],
        );
    }
    assert_eq!(kept.len(), LAN_FOUND);
    assert!(kept.contains(&(real, true)));
}

/// `h` reached directly for whispers, as `via` says.
fn whisper_link(via: Via, outbound: bool) -> Link {
    Link {
        addr: "11.11.0.7:7400".parse().unwrap(),
        outbound,
        purpose: Purpose::Direct,
        via,
        observed: None,
    }
}

/// Red-team finding (hole punching): the relayed connection closed the moment the
/// punched one came up at this end, dropping whispers the other end had just sent on
/// it. It now stays for a grace period, then closes.
#[test]
fn a_relayed_connection_replaced_by_a_punched_one_drains_before_it_closes() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.member, now);
    core.handle(now, up_with(1, &f.admin, whisper_link(Via::Relayed, true)));
    core.handle(now, up_with(2, &f.admin, whisper_link(Via::Punched, true)));
    drain(&mut core);
    core.handle(
        now,
        Input::Frame(
            1,
            Message::Whisper {
                text: "in flight".into(),
            },
        ),
    );
    let out = drain(&mut core);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Event(Event::Whisper { text, .. }) if text == "in flight")),
        "{out:?}"
    );
    let later = Now {
        instant: now.instant + RELAYED_GRACE + Duration::from_millis(1),
        ..now
    };
    core.handle_timeout(later);
    let out = drain(&mut core);
    assert!(out.iter().any(|o| matches!(o, Output::Close { conn: 1 })), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::Close { conn: 2 })));
}

/// Red-team finding (hole punching): the peer's punch SYN can reach the listener
/// instead of the punching socket; that connection from a global address made a member
/// behind NAT believe it was reachable and stop naming relays. Only a neighbour dial
/// counts; the direct connection still replaces the relayed one.
#[test]
fn a_punch_that_reached_the_listener_does_not_make_a_member_reachable() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.member, now);
    core.handle(now, up_with(1, &f.admin, whisper_link(Via::Relayed, false)));
    core.handle(now, up_with(2, &f.admin, whisper_link(Via::Direct, false)));
    assert!(!core.status().reachable);
    assert!(core.conns[&1].retire_at.is_some(), "the relayed one is replaced");
}

/// Red-team finding (hole punching): the caps on incoming direct connections counted
/// the relayed connection being replaced, so the punched one was refused at one end
/// while the other end moved to it.
#[test]
fn a_punched_connection_is_not_refused_by_the_direct_caps() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let now = at(clock::add(f.t0, DAY));
    let mut core = core_of(&f.member, now);
    for id in 1..=MAX_DIRECT_PER_MEMBER as ConnId {
        core.handle(now, up_with(id, &f.admin, whisper_link(Via::Relayed, false)));
    }
    drain(&mut core);
    core.handle(now, up_with(9, &f.admin, whisper_link(Via::Punched, false)));
    let out = drain(&mut core);
    assert!(!out.iter().any(|o| matches!(o, Output::Close { conn: 9 })), "{out:?}");
}
