//! Attacks on running `group-chat --json` processes, end to end: outsiders at the TLS
//! handshake (a self-signed certificate, another group's member, an expired and a
//! not-yet-valid member), a member sending records no honest peer would (replayed,
//! forged, from the future, living too long, from a member whose membership has
//! expired), junk and oversized frames, and slowloris handshakes.
//!
//! Each attack runs while the honest members (alice, bob, carol) keep up a steady chat,
//! and must be refused (connection refused or cut, or record not admitted), must not
//! reach a third honest member (JSON output, `--history`, the stores), must cost the
//! steady chat no message, and must keep its p99 delivery latency within twice that of
//! a calm phase of the same test, plus [`SLACK_MS`] (a phase that misses the bound gets
//! one more try: see [`Honest::attack`]). Alice is always the member attacked.
//!
//! The tests take turns (one lock): each compares latencies of its own calm and attack
//! phases, which another test's load on the same two cores would blur.
//!
//! The honest side (steady chat, latency phases, final tally) is in
//! `peergroup_tests::honest`, the attacker's (credentials, TLS client, records and
//! frames sent to alice) in `peergroup_tests::adversary`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::member::MemberId;
use common::record::{self, CHAT_TYPE, MEMBERSHIP_TYPE, PRESENCE_TYPE, Record};
use common::wire::{Message, PROTOCOL_VERSION, Purpose};
use peergroup_tests::adversary::*;
use peergroup_tests::group::*;
use peergroup_tests::honest::*;
use peergroup_tests::{Home, free_addr, unix_ms};
use rustls::ClientConfig;
use serde_json::Value;

static TURN: Mutex<()> = Mutex::new(());

/// Runs one test at a time in this file (see the module comment).
fn take_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn outsiders_without_a_valid_membership_are_refused_at_the_handshake() {
    let _turn = take_turn();
    let g = group_with_terms(&[
        ("alice", Term::Normal),
        ("bob", Term::Normal),
        ("carol", Term::Normal),
        ("eve", Term::Expired),
        ("frank", Term::NotYetValid),
    ]);
    // trent: a member of another group (of the same name), on a machine of his own.
    let trent_home = Home::new();
    trent_home.run("identity-export", &["trent"]).ok();
    trent_home
        .run(
            "group-create",
            &["--identity", "trent", "--listen", &free_addr(), GROUP],
        )
        .ok();
    let trent = Member {
        name: "trent",
        id: member_id(&trent_home, "trent"),
        addr: String::new(),
        home: trent_home,
    };
    let h = Honest::start(&g);
    let alice = g[0].addr.as_str();
    let (calm, ()) = h.phase("calm", || ());

    // 1. Self-signed certificates of every flavour, in turn.
    let forged = forged_credentials(Creds::of(&g[0]).membership.group);
    let configs: Vec<(&str, Arc<ClientConfig>)> = forged
        .iter()
        .map(|(what, chain, key)| (*what, client_config(chain.clone(), key)))
        .collect();
    let before = refusals(&h, "not a member of this group");
    let tries = h.attack("self-signed", "self-signed certificates", calm, |_| {
        let start = Instant::now();
        let mut tries = 0;
        while start.elapsed() < MIN_PHASE {
            for (what, config) in &configs {
                match tls_attempt(config, alice) {
                    Ok(t) => assert!(t < Duration::from_secs(5), "{what}: refused only after {t:?}"),
                    Err(e) => panic!("{what}: {e}"),
                }
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        tries
    });
    eprintln!("self-signed: {tries} handshakes refused");
    assert!(
        refusals(&h, "not a member of this group") > before,
        "alice reported no refused handshake"
    );

    // 2-3. Real members' credentials that are not good here and now.
    for (label, who, member, needle) in [
        (
            "another group",
            "trent, a member of another group",
            &trent,
            "belongs to group",
        ),
        (
            "expired",
            "eve, whose membership expired a day ago",
            &g[3],
            "expired on",
        ),
        (
            "not yet valid",
            "frank, whose membership starts in two days",
            &g[4],
            "is not valid until",
        ),
    ] {
        let c = Creds::of(member);
        let config = client_config(c.chain(), &c.identity.key);
        let before = refusals(&h, needle);
        let tries = h.attack(label, who, calm, |_| keep_knocking(alice, &config, who));
        eprintln!("{label}: {tries} handshakes refused");
        assert!(
            refusals(&h, needle) > before,
            "alice reported no refusal of {who} mentioning {needle:?}"
        );
        assert_unheard_of(&h, &member.id, who);
    }
    assert_honest_links_held(&h);
    h.finish();
}

/// How long eve's membership lasts in the records test: long enough for the setup to
/// hear from her while she is a member, short enough to end before its last phase.
const EVE_SECONDS: u64 = 10;

#[test]
fn replayed_forged_and_out_of_bounds_records_are_not_admitted_or_forwarded() {
    let _turn = take_turn();
    let g = group_with_terms(&[
        ("alice", Term::Normal),
        ("bob", Term::Normal),
        ("carol", Term::Normal),
        ("mallory", Term::Normal),
        ("dave", Term::Normal),
        ("eve", Term::Seconds(EVE_SECONDS)),
    ]);
    let mallory = &g[3];
    let (a, m, eve) = (Creds::of(&g[0]), Creds::of(mallory), Creds::of(&g[5]));
    let group = a.membership.group.id;
    let stores = || [a.store(), Creds::of(&g[1]).store(), Creds::of(&g[2]).store()];
    let eve_until_ms = eve.membership.membership.not_after.unix_timestamp() * 1000;
    let h = Honest::start(&g);
    eprintln!(
        "setup done {} ms into eve's {EVE_SECONDS} s membership",
        unix_ms() + EVE_SECONDS as i64 * 1000 - eve_until_ms
    );

    // mallory and eve publish their memberships (as their own nodes would at start), so
    // bob and carol know them too, and eve says something while she is a member.
    assert!(
        unix_ms() + 3000 < eve_until_ms,
        "eve's {EVE_SECONDS} s membership ran out during the setup: too slow a machine"
    );
    let eve_said = eve.sign(chat(eve.id, "eve while a member", unix_ms()));
    send_records(
        &h,
        mallory,
        &m,
        &[m.membership_record(), eve.membership_record(), eve_said],
        "setup",
    );
    h.wait_everywhere("eve while a member");

    // dave comes and goes: his presence, then its tombstone (a newer version).
    let dave = &g[4];
    let mut dave_peer = dave.online();
    for i in 0..3 {
        h.wait(i, "dave present", |evs| present(evs, &dave.id));
    }
    let dave_bytes = dave.id.parse::<MemberId>().unwrap();
    let old_presence = a
        .store()
        .of_type(&PRESENCE_TYPE)
        .unwrap()
        .into_iter()
        .find(|r| r.creator == dave_bytes && !r.deleted)
        .expect("dave's presence at alice");
    dave_peer.send("/quit");
    assert_eq!(dave_peer.exits(WAIT), 0, "dave's /quit");
    for i in 0..3 {
        h.wait(i, "dave gone", |evs| !present(evs, &dave.id));
    }
    let tombstone = a.store().get(&old_presence.id).unwrap().expect("dave's tombstone");
    assert!(tombstone.deleted && tombstone.version > old_presence.version);

    let (calm, ()) = h.phase("calm", || ());

    // 4. A replay of dave's old (live) presence, over his tombstone.
    let joins = |i: usize| {
        h.events(i)
            .iter()
            .filter(|e| e["event"] == "member" && e["member"] == dave.id.as_str() && e["change"] != "left")
            .count()
    };
    let joins_before: Vec<usize> = (0..3).map(joins).collect();
    h.attack("replay", "a replayed old presence", calm, |label| {
        send_records(&h, mallory, &m, &[old_presence.clone(), old_presence.clone()], label);
    });
    for (i, before) in joins_before.into_iter().enumerate() {
        assert_eq!(
            joins(i),
            before,
            "{}: dave came back through a replay",
            h.members[i].name
        );
    }
    for (i, store) in stores().iter().enumerate() {
        let held = store.get(&old_presence.id).unwrap().expect("dave's presence");
        assert_eq!(
            (held.version, held.deleted),
            (tombstone.version, true),
            "{} took the replayed old version",
            h.members[i].name
        );
    }
    let whos = |evs: &[Value]| evs.iter().filter(|e| e["event"] == "members").count();
    let n = whos(&h.events(0));
    h.peer(0).send("/who");
    let events = h.wait(0, "an answer to /who", |evs| whos(evs) > n);
    let who = events.iter().rfind(|e| e["event"] == "members").unwrap();
    assert!(
        !who["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["member"] == dave.id.as_str()),
        "alice lists dave after the replay: {who}"
    );

    // 5. Records signed by someone else's key, or naming another member as creator.
    let now = unix_ms();
    let original = a
        .store()
        .of_type(&CHAT_TYPE)
        .unwrap()
        .into_iter()
        .find(|r| r.data == b"calm 0")
        .expect("alice's first line in alice's store");
    let stranger_key = common::pki::KeyType::Ed25519.generate().unwrap();
    let stranger = common::pki::member_id(&common::pki::spki_of(&stranger_key));
    let signed_by_stranger = |mut r: Record| {
        r.sign(&group, &stranger_key).unwrap();
        r
    };
    let mut edit = original.clone();
    edit.version += 1;
    edit.modifier = m.id;
    edit.modified_ms = now;
    edit.data = format!("{EVIL}: alice's line edited by mallory").into_bytes();
    let mut alice_presence = Record::new(PRESENCE_TYPE, a.id, now, 60_000);
    alice_presence.id = record::per_member_id(&PRESENCE_TYPE, &a.id);
    alice_presence.version = u64::MAX / 2;
    alice_presence.attributes = vec![
        ("name".into(), record::AttrValue::Str(format!("{EVIL} alice"))),
        ("addresses".into(), record::AttrValue::Str("127.0.0.1:9".into())),
    ];
    let mut alice_membership = Record::new(MEMBERSHIP_TYPE, a.id, now, 0);
    alice_membership.id = record::per_member_id(&MEMBERSHIP_TYPE, &a.id);
    alice_membership.version = u64::MAX / 2;
    alice_membership.expires_ms = m.membership.membership.not_after.unix_timestamp() * 1000;
    alice_membership.data = common::node::encode_chain(&m.membership.membership, &m.membership.chain);
    let forged: Vec<(&str, Record)> = vec![
        (
            "alice as creator, mallory's signature",
            m.sign(chat(a.id, &format!("{EVIL}: alice's words, mallory's key"), now)),
        ),
        ("alice's line edited by mallory (not an admin)", m.sign(edit)),
        ("alice's presence signed by mallory", m.sign(alice_presence)),
        ("alice's membership with mallory's chain", m.sign(alice_membership)),
        (
            "mallory as creator, a stranger's signature",
            signed_by_stranger(chat(m.id, &format!("{EVIL}: mallory's name, a stranger's key"), now)),
        ),
        (
            "a stranger as creator",
            signed_by_stranger(chat(stranger, &format!("{EVIL}: from a stranger"), now)),
        ),
    ];
    let records: Vec<Record> = forged.iter().map(|(_, r)| r.clone()).collect();
    h.attack("forged", "forged records", calm, |label| {
        send_records(&h, mallory, &m, &records, label)
    });
    let held = stores();
    for (what, r) in &forged {
        assert_not_stored(&held, r, what);
    }
    for (i, store) in held.iter().enumerate() {
        let now_held = store.get(&original.id).unwrap().expect("alice's first line");
        assert_eq!(now_held, original, "{}: alice's line changed", h.members[i].name);
    }

    // 8. Records from the future, and records that would outlive the group's lifetimes.
    let now = unix_ms();
    const YEAR_MS: i64 = 365 * 86_400 * 1000;
    let mut century = chat(m.id, &format!("{EVIL}: for a century"), now);
    century.expires_ms = now + 100 * YEAR_MS;
    let mut forever = chat(m.id, &format!("{EVIL}: forever"), now);
    forever.expires_ms = i64::MAX;
    let mut backwards = chat(m.id, &format!("{EVIL}: modified before created"), now);
    backwards.modified_ms = now - 3_600_000;
    let mut lingering = Record::new(PRESENCE_TYPE, m.id, now, 10 * YEAR_MS);
    lingering.id = record::per_member_id(&PRESENCE_TYPE, &m.id);
    lingering.version = now as u64;
    lingering.attributes = vec![
        ("name".into(), record::AttrValue::Str(format!("{EVIL} mallory forever"))),
        ("addresses".into(), record::AttrValue::Str("127.0.0.1:9".into())),
    ];
    let mut outliving = m.membership_record();
    outliving.version += 1;
    outliving.expires_ms += 10 * YEAR_MS;
    let timed: Vec<(&str, Record)> = vec![
        (
            "a line from an hour ahead",
            m.sign(chat(m.id, &format!("{EVIL}: from an hour ahead"), now + 3_600_000)),
        ),
        (
            "a line from a year ahead",
            m.sign(chat(m.id, &format!("{EVIL}: from a year ahead"), now + YEAR_MS)),
        ),
        ("a line living a century", m.sign(century)),
        ("a line living forever", m.sign(forever)),
        ("a line modified before it was created", m.sign(backwards)),
        ("a presence living ten years", m.sign(lingering)),
        ("a membership record outliving the membership", m.sign(outliving)),
    ];
    let records: Vec<Record> = timed.iter().map(|(_, r)| r.clone()).collect();
    h.attack("times", "records from the future or living too long", calm, |label| {
        send_records(&h, mallory, &m, &records, label)
    });
    let held = stores();
    for (what, r) in &timed {
        assert_not_stored(&held, r, what);
    }
    for i in 0..3 {
        assert!(
            !present(&h.events(i), &mallory.id),
            "{}: mallory became present",
            h.members[i].name
        );
    }

    // 3'. eve's membership has ended: what she signs now is not admitted, even through
    // a member who relays it, even backdated into her membership.
    let left = eve_until_ms + 1500 - unix_ms();
    if left > 0 {
        eprintln!("waiting {left} ms for eve's membership to end");
        std::thread::sleep(Duration::from_millis(left as u64));
    }
    let late = eve.sign(chat(
        eve.id,
        &format!("{EVIL}: eve after her membership ended"),
        unix_ms(),
    ));
    let backdated = eve.sign(chat(
        eve.id,
        &format!("{EVIL}: eve after her membership ended, backdated"),
        eve_until_ms - 60_000,
    ));
    h.attack(
        "expired member",
        "records of a member whose membership ended",
        calm,
        |label| send_records(&h, mallory, &m, &[late.clone(), backdated.clone()], label),
    );
    let held = stores();
    assert_not_stored(&held, &late, "eve's line after her membership ended");
    assert_not_stored(&held, &backdated, "eve's backdated line after her membership ended");

    assert_honest_links_held(&h);
    h.finish();
}

#[test]
fn junk_and_oversized_frames_from_a_member_cut_only_that_connection() {
    let _turn = take_turn();
    let g = group_with_terms(&[
        ("alice", Term::Normal),
        ("bob", Term::Normal),
        ("carol", Term::Normal),
        ("mallory", Term::Normal),
    ]);
    let mallory = &g[3];
    let h = Honest::start(&g);
    let (calm, ()) = h.phase("calm", || ());

    // 6a. Bursts of junk frames, connection after connection.
    let junk = |n: u32| -> (&'static str, Vec<u8>) {
        let tail = noise(n, 64);
        match n % 6 {
            0 => ("200 frames of an unknown type", {
                (0..200)
                    .flat_map(|i| {
                        let mut p = noise(n * 1000 + i, 1 + (i as usize * 37) % 2000);
                        p[0] |= 0x80;
                        frame(&p)
                    })
                    .collect()
            }),
            1 => ("a records frame holding garbage", {
                let mut p = vec![2, 0, 0, 0, 0, 1, 0, 0, 0, 64];
                p.extend_from_slice(&tail);
                frame(&p)
            }),
            2 => ("a sync frame holding garbage", {
                let mut p = vec![4, 1];
                p.extend_from_slice(&tail);
                frame(&p)
            }),
            3 => (
                "a second hello",
                Message::Hello {
                    version: PROTOCOL_VERSION,
                    purpose: Purpose::Neighbour,
                    addresses: Vec::new(),
                    nonce: 2,
                }
                .encode(),
            ),
            4 => ("a want frame cut short", frame(&[3, 0, 0, 0, 5, 1, 2, 3])),
            _ => ("a records frame announcing 4097 records", {
                let mut p = vec![2, 0];
                p.extend_from_slice(&4097u32.to_be_bytes());
                p.extend_from_slice(&tail);
                frame(&p)
            }),
        }
    };
    cut_phase(&h, mallory, "junk frames", calm, junk);

    // 6b. Frames announced over the 1 MiB limit, with or without bytes behind them.
    let max = common::wire::MAX_FRAME_BYTES as u32;
    let oversized = |n: u32| -> (&'static str, Vec<u8>) {
        match n % 4 {
            0 => ("1 MiB + 1 announced, 1.5 MiB sent", {
                let mut b = (max + 1).to_be_bytes().to_vec();
                b.push(2);
                b.extend(noise(n, 3 * 512 * 1024));
                b
            }),
            1 => ("FF FF FF FF announced", vec![0xff; 4]),
            2 => ("2 GiB announced, 64 KiB sent", {
                let mut b = (1u32 << 31).to_be_bytes().to_vec();
                b.extend(noise(n, 64 * 1024));
                b
            }),
            _ => ("a records frame of 1 MiB + 1", {
                let mut p = vec![2, 0, 0, 0, 0, 1];
                p.extend_from_slice(&(max - 9).to_be_bytes());
                p.resize(max as usize + 1, 0);
                frame(&p)
            }),
        }
    };
    cut_phase(&h, mallory, "oversized frames", calm, oversized);
    assert_honest_links_held(&h);
    h.finish();
}

#[test]
fn slowloris_handshakes_are_closed_within_30_s_and_chat_goes_on() {
    let _turn = take_turn();
    let g = group_with_terms(&[
        ("alice", Term::Normal),
        ("bob", Term::Normal),
        ("carol", Term::Normal),
        ("dave", Term::Normal),
    ]);
    let h = Honest::start(&g);
    let (calm, ()) = h.phase("calm", || ());

    // 7. 100 connections that never finish a handshake: half say nothing, half dribble
    // the start of a ClientHello, a byte every half second.
    const CONNECTIONS: usize = 100;
    let addr = g[0].addr.as_str();
    let closed = h.attack("slowloris", "slowloris handshakes", calm, |_| {
        let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        hello.extend(noise(7, 32));
        let mut socks: Vec<(TcpStream, Instant, Option<Duration>)> = (0..CONNECTIONS)
            .map(|_| {
                let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
                s.set_nonblocking(true).unwrap();
                (s, Instant::now(), None)
            })
            .collect();
        let start = Instant::now();
        let mut sent = 0;
        let mut buf = [0u8; 1024];
        while socks.iter().any(|(_, _, c)| c.is_none()) && start.elapsed() < Duration::from_secs(35) {
            let dribble = (start.elapsed().as_millis() / 500) as usize;
            for (k, (s, opened, closed)) in socks.iter_mut().enumerate() {
                if closed.is_some() {
                    continue;
                }
                if k % 2 == 1 && sent < dribble && sent < hello.len() {
                    // Once alice has cut it, a write fails: the read below notices.
                    let _ = s.write(&hello[sent..sent + 1]);
                }
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => *closed = Some(opened.elapsed()),
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => *closed = Some(opened.elapsed()),
                    }
                    break;
                }
            }
            if sent < dribble {
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        socks.into_iter().map(|(_, _, c)| c).collect::<Vec<_>>()
    });
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of {CONNECTIONS} slow handshakes still open after 35 s");
    let mut times: Vec<Duration> = closed.into_iter().flatten().collect();
    times.sort();
    eprintln!(
        "slowloris: {CONNECTIONS} connections closed after {:?} (first) to {:?} (last)",
        times[0],
        times[CONNECTIONS - 1]
    );
    assert!(
        times[CONNECTIONS - 1] <= Duration::from_secs(30),
        "a slow handshake was closed only after {:?}",
        times[CONNECTIONS - 1]
    );
    // And the door is open again: a member gets in at once.
    let start = Instant::now();
    let s = member_connection(&g[3], addr);
    let took = start.elapsed();
    drop(s);
    assert!(took < Duration::from_secs(2), "dave got in only after {took:?}");
    assert_honest_links_held(&h);
    h.finish();
}
