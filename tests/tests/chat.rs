//! `group-chat` end to end: real processes on loopback, one home per member, watched
//! through `--json`. Each test sets up its own group with fresh ports and keys.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use peergroup_tests::{Home, Peer, free_addr};
use serde_json::Value;

/// How long any one expected event may take to show up.
const WAIT: Duration = Duration::from_secs(15);
/// How long to keep watching for something that must not happen.
const QUIET: Duration = Duration::from_millis(1500);

/// One member: its own home (its own machine), identity and listen address.
struct Member {
    name: &'static str,
    home: Home,
    addr: String,
    id: String,
}

impl Member {
    /// `group-chat --json` for this member in the test group, plus `extra`.
    fn chat(&self, extra: &[&str]) -> Peer {
        let mut args = vec!["--identity", self.name, "--group", GROUP, "--json"];
        args.extend_from_slice(extra);
        Peer::spawn(self.name, self.home.command("group-chat", &args))
    }

    /// `group-chat --json`, once it is listening.
    fn online(&self) -> Peer {
        let mut peer = self.chat(&[]);
        peer.wait_for("status listening", WAIT, |e| {
            e["event"] == "status" && e["listening"] == true
        });
        peer
    }
}

const GROUP: &str = "Friends";

/// Makes a group of `names`: the first creates it and invites the others, each in its
/// own home, every one listening on its own loopback port.
fn group(names: &[&'static str]) -> Vec<Member> {
    let members: Vec<Member> = names
        .iter()
        .map(|&name| {
            let home = Home::new();
            home.run("identity-export", &[name]).ok();
            let id = member_id(&home, name);
            Member {
                name,
                home,
                addr: free_addr(),
                id,
            }
        })
        .collect();
    let creator = &members[0];
    creator
        .home
        .run(
            "group-create",
            &["--identity", creator.name, "--listen", &creator.addr, GROUP],
        )
        .ok();
    for m in &members[1..] {
        let xml = m.home.run("identity-export", &[m.name]).ok().stdout;
        let invitation = creator
            .home
            .run_with(
                "invite-create",
                &["--identity", creator.name, "--group", GROUP, "-"],
                Some(xml.as_bytes()),
            )
            .ok()
            .stdout;
        m.home
            .run_with(
                "group-join",
                &["--identity", m.name, "--listen", &m.addr, "-"],
                Some(invitation.as_bytes()),
            )
            .ok();
    }
    members
}

fn member_id(home: &Home, name: &str) -> String {
    let list = home.run("identity-export", &["--list"]).ok().stdout;
    list.lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|row| row[0] == name)
        .unwrap_or_else(|| panic!("{name} not in identity-export --list:\n{list}"))[1]
        .to_string()
}

/// The `message` events in `events`.
fn messages(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["event"] == "message").collect()
}

/// How many `message` events carry `text`.
fn count_text(events: &[Value], text: &str) -> usize {
    messages(events).iter().filter(|e| e["text"] == text).count()
}

/// Waits until `peer` has shown a message with each of `texts`.
#[track_caller]
fn wait_texts(peer: &mut Peer, texts: &[&str]) -> Vec<Value> {
    let what = format!("messages {texts:?}");
    peer.wait_until(&what, WAIT, |evs| texts.iter().all(|t| count_text(evs, t) > 0))
}

/// Waits until `peer` reports `member` with `change`.
#[track_caller]
fn wait_member(peer: &mut Peer, change: &str, member: &Member) -> Value {
    let what = format!("member {change} for {}", member.name);
    peer.wait_for(&what, WAIT, |e| {
        e["event"] == "member" && e["change"] == change && e["member"] == member.id.as_str()
    })
}

/// Waits until `peer` knows `member` is present (its presence record arrived).
#[track_caller]
fn wait_present(peer: &mut Peer, member: &Member) {
    let what = format!("{} present", member.name);
    peer.wait_until(&what, WAIT, |evs| {
        let mut present = false;
        for e in evs.iter().filter(|e| e["event"] == "member" && e["member"] == member.id.as_str()) {
            match e["change"].as_str() {
                Some("joined") | Some("updated") => present = true,
                Some("left") => present = false,
                _ => {}
            }
        }
        present
    });
}

#[track_caller]
fn wait_ready(peer: &mut Peer) {
    peer.wait_for("ready", WAIT, |e| e["event"] == "ready");
}

/// Asserts no message id or text was shown twice, and returns the texts shown.
#[track_caller]
fn assert_no_duplicates(label: &str, events: &[&Value]) -> Vec<String> {
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut by_text: HashMap<String, usize> = HashMap::new();
    for e in events {
        *by_id.entry(e["id"].as_str().unwrap_or("").to_string()).or_default() += 1;
        *by_text.entry(e["text"].as_str().unwrap_or("").to_string()).or_default() += 1;
    }
    let twice: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{label} showed message ids more than once: {twice:?}");
    let twice: Vec<_> = by_text.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{label} showed texts more than once: {twice:?}");
    events.iter().map(|e| e["text"].as_str().unwrap_or("").to_string()).collect()
}

/// Sends `text` from `from` and waits until every peer in `to` shows it.
#[track_caller]
fn say_and_see(from: &mut Peer, text: &str, to: &mut [&mut Peer]) {
    from.send(text);
    for p in to.iter_mut() {
        wait_texts(p, &[text]);
    }
}

/// Connects to `addr`, writes `junk`, and returns how long the member took to cut the
/// connection (end of stream or an error on read), or `None` if it was still open after
/// `limit`. Whatever it sent back is returned too.
fn junk_client(addr: &str, junk: &[u8], limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let start = Instant::now();
    // The member may cut us off before everything is written: that is its answer.
    let _ = s.write_all(junk).and_then(|_| s.flush());
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (Some(start.elapsed()), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (Some(start.elapsed()), got),
        }
    }
    (None, got)
}

/// Asserts that nothing in `peer`'s output mentions `text`.
#[track_caller]
fn assert_never_mentions(peer: &Peer, text: &str, why: &str) {
    let hits: Vec<String> = peer.lines().into_iter().filter(|l| l.contains(text)).collect();
    assert!(hits.is_empty(), "{}: {why}, yet printed:\n{}", peer.label(), hits.join("\n"));
}

// ---- tests -------------------------------------------------------------------------

#[test]
fn three_members_see_each_others_messages_exactly_once_and_never_their_own() {
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    let mut carol = g[2].online();
    for p in [&mut alice, &mut bob, &mut carol] {
        wait_ready(p);
    }
    // Everyone knows everyone before the first line, so the lines travel live.
    for (p, others) in [(&mut alice, [&g[1], &g[2]]), (&mut bob, [&g[0], &g[2]]), (&mut carol, [&g[0], &g[1]])] {
        for o in others {
            wait_present(p, o);
        }
    }
    alice.send("hello from alice");
    bob.send("hello from bob");
    carol.send("hello from carol");
    let texts = ["hello from alice", "hello from bob", "hello from carol"];
    let mut peers = [alice, bob, carol];
    for (i, p) in peers.iter_mut().enumerate() {
        let others: Vec<&str> = texts.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, t)| *t).collect();
        wait_texts(p, &others);
    }
    // Give late duplicates (a flood and a sync crossing) time to show up.
    std::thread::sleep(QUIET);
    for (i, p) in peers.iter().enumerate() {
        let events = p.events();
        let shown = assert_no_duplicates(p.label(), &messages(&events));
        assert_eq!(shown.len(), 2, "{} should show exactly the other two messages: {shown:?}", p.label());
        assert_eq!(count_text(&events, texts[i]), 0, "{} was shown its own message", p.label());
        for e in messages(&events) {
            let from = g.iter().find(|m| e["text"] == format!("hello from {}", m.name)).expect("known text");
            assert_eq!(e["from"], from.id.as_str(), "{}: wrong sender id in {e}", p.label());
            assert_eq!(e["name"], from.name, "{}: wrong sender name in {e}", p.label());
            assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()), "no id: {e}");
            assert!(e["created"].as_str().is_some_and(|s| s.ends_with('Z')), "created not RFC 3339 UTC: {e}");
            assert!(e["recv_ns"].as_i64().is_some_and(|n| n > 0), "no recv_ns: {e}");
            assert!(e["history"].is_boolean(), "no history flag: {e}");
        }
    }
    // The same message has the same id everywhere.
    let id_of = |p: &Peer, text: &str| {
        p.events_of("message").into_iter().find(|e| e["text"] == text).map(|e| e["id"].clone())
    };
    assert_eq!(id_of(&peers[1], texts[0]), id_of(&peers[2], texts[0]));
    assert_eq!(id_of(&peers[0], texts[1]), id_of(&peers[2], texts[1]));
    assert_eq!(id_of(&peers[0], texts[2]), id_of(&peers[1], texts[2]));
}

#[test]
fn a_member_who_comes_online_late_gets_the_earlier_messages_as_history() {
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    wait_ready(&mut bob);
    wait_present(&mut alice, &g[1]);
    say_and_see(&mut alice, "before carol 1", &mut [&mut bob]);
    say_and_see(&mut bob, "before carol 2", &mut [&mut alice]);
    let mut carol = g[2].online();
    wait_ready(&mut carol);
    let events = wait_texts(&mut carol, &["before carol 1", "before carol 2"]);
    for e in messages(&events) {
        assert_eq!(e["history"], true, "a message from before carol was online is not history: {e}");
    }
    // And what is said now reaches her live.
    say_and_see(&mut alice, "now with carol", &mut [&mut carol]);
    let live = carol.events_of("message").into_iter().find(|e| e["text"] == "now with carol").unwrap();
    assert_eq!(live["history"], false, "a live message is marked history: {live}");
    std::thread::sleep(QUIET);
    let shown = assert_no_duplicates("carol", &messages(&carol.events()));
    assert_eq!(shown.len(), 3, "{shown:?}");
}

#[test]
fn a_member_killed_and_restarted_gets_what_it_missed_and_nothing_twice() {
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    let mut carol = g[2].online();
    wait_ready(&mut bob);
    wait_ready(&mut carol);
    say_and_see(&mut alice, "first run 1", &mut [&mut bob, &mut carol]);
    say_and_see(&mut bob, "first run 2", &mut [&mut alice, &mut carol]);
    carol.send("carol before the crash");
    wait_texts(&mut alice, &["carol before the crash"]);
    // Let carol's display settle (its cursor is saved after each batch it shows).
    std::thread::sleep(Duration::from_millis(500));
    carol.kill();
    let first_run = carol.events();
    wait_member(&mut alice, "disconnected", &g[2]);
    say_and_see(&mut alice, "missed 1", &mut [&mut bob]);
    say_and_see(&mut bob, "missed 2", &mut [&mut alice]);

    let mut carol2 = g[2].online();
    wait_ready(&mut carol2);
    let events = wait_texts(&mut carol2, &["missed 1", "missed 2"]);
    for e in messages(&events).into_iter().filter(|e| e["text"].as_str().unwrap().starts_with("missed")) {
        assert_eq!(e["history"], true, "a missed message is not history: {e}");
    }
    say_and_see(&mut alice, "after restart", &mut [&mut carol2]);
    std::thread::sleep(QUIET);
    let second_run = carol2.events();
    let mut both: Vec<&Value> = messages(&first_run);
    both.extend(messages(&second_run));
    let shown = assert_no_duplicates("carol across both runs", &both);
    let mut sorted = shown.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["after restart", "first run 1", "first run 2", "missed 1", "missed 2"],
        "carol across both runs"
    );
    assert_eq!(count_text(&second_run, "carol before the crash"), 0, "own message shown after restart");
}

#[test]
fn a_whisper_reaches_only_its_addressee() {
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    let mut carol = g[2].online();
    wait_ready(&mut bob);
    wait_ready(&mut carol);
    wait_present(&mut alice, &g[1]);
    wait_present(&mut alice, &g[2]);
    alice.send("/msg bob secret for bob");
    let w = bob.wait_for("whisper", WAIT, |e| e["event"] == "whisper");
    assert_eq!(w["from"], g[0].id.as_str(), "{w}");
    assert_eq!(w["name"], "alice", "{w}");
    assert_eq!(w["text"], "secret for bob", "{w}");
    assert!(w["recv_ns"].as_i64().is_some_and(|n| n > 0), "{w}");
    // By member-id prefix as well.
    alice.send(&format!("/msg {} second secret", &g[1].id[..10]));
    bob.wait_for("second whisper", WAIT, |e| e["event"] == "whisper" && e["text"] == "second secret");
    // A public line after the whispers: once carol has it, a flooded whisper would have
    // arrived too.
    say_and_see(&mut alice, "public line", &mut [&mut bob, &mut carol]);
    std::thread::sleep(QUIET);
    assert!(carol.events_of("whisper").is_empty(), "carol got a whisper");
    assert_never_mentions(&carol, "secret", "carol must not see a whisper to bob");
    assert_never_mentions(&bob, "\"event\":\"message\",\"id\"", "whispers are not chat messages");
    assert!(alice.events_of("error").is_empty(), "alice reported an error");
    assert_eq!(bob.events_of("whisper").len(), 2, "bob got a whisper twice");
    // Whispers are never stored: not in anyone's history.
    for m in &g {
        let history = m
            .home
            .run("group-chat", &["--identity", m.name, "--group", GROUP, "--history"])
            .ok();
        assert!(!history.stdout.contains("secret"), "{} stored a whisper:\n{}", m.name, history.stdout);
    }
}

#[test]
fn who_lists_present_members_and_drops_one_that_quits() {
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    let mut carol = g[2].online();
    wait_ready(&mut bob);
    wait_ready(&mut carol);
    wait_present(&mut alice, &g[1]);
    wait_present(&mut alice, &g[2]);
    alice.send("/who");
    let who = alice.wait_for("members", WAIT, |e| e["event"] == "members");
    let list = who["members"].as_array().expect("members list");
    let mut names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol"], "{who}");
    let selves: Vec<&Value> = list.iter().filter(|m| m["self"] == true).collect();
    assert_eq!(selves.len(), 1, "{who}");
    assert_eq!(selves[0]["member"], g[0].id.as_str(), "{who}");
    for m in &g {
        assert!(list.iter().any(|e| e["member"] == m.id.as_str() && e["name"] == m.name), "{who}");
    }

    carol.send("/quit");
    assert_eq!(carol.exits(WAIT), 0, "carol's /quit");
    wait_member(&mut alice, "left", &g[2]);
    wait_member(&mut bob, "left", &g[2]);
    alice.send("/who");
    let who = alice.wait_until("second members", WAIT, |evs| evs.iter().filter(|e| e["event"] == "members").count() >= 2);
    let who = who.iter().filter(|e| e["event"] == "members").nth(1).unwrap();
    let mut names: Vec<&str> = who["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["alice", "bob"], "carol still listed after leaving: {who}");
}

#[test]
fn a_member_of_another_group_cannot_connect_and_learns_nothing() {
    let g = group(&["alice", "bob"]);
    // eve: her own machine, her own group (even with the same name).
    let eve_home = Home::new();
    eve_home.run("identity-export", &["eve"]).ok();
    let eve_id = member_id(&eve_home, "eve");
    let eve_addr = free_addr();
    eve_home
        .run("group-create", &["--identity", "eve", "--listen", &eve_addr, GROUP])
        .ok();

    let mut alice = g[0].online();
    let mut bob = g[1].chat(&["--peer", &eve_addr]);
    wait_ready(&mut bob);
    let mut eve = Peer::spawn(
        "eve",
        eve_home.command(
            "group-chat",
            &["--identity", "eve", "--group", GROUP, "--json", "--peer", &g[0].addr],
        ),
    );
    // eve dials alice and is refused; bob dials eve and refuses her.
    eve.wait_for("a failed dial to alice", WAIT, |e| {
        e["event"] == "connection" && e["change"] == "failed" && e["address"] == g[0].addr.as_str()
    });
    bob.wait_for("a failed dial to eve", WAIT, |e| {
        e["event"] == "connection" && e["change"] == "failed" && e["address"] == eve_addr.as_str()
    });
    say_and_see(&mut alice, "members only", &mut [&mut bob]);
    say_and_see(&mut bob, "still members only", &mut [&mut alice]);
    std::thread::sleep(QUIET);

    for (p, why) in [(&alice, "alice must not hear of eve"), (&bob, "bob must not hear of eve")] {
        for e in p.events() {
            let mentions_eve = e["member"] == eve_id.as_str()
                || e["from"] == eve_id.as_str()
                || e["members"].as_array().is_some_and(|l| l.iter().any(|m| m["member"] == eve_id.as_str()));
            let up = e["event"] == "connection" && e["change"] == "up" && e["member"] == eve_id.as_str();
            assert!(!mentions_eve && !up, "{}: {why}: {e}", p.label());
        }
    }
    let eve_events = eve.events();
    for e in &eve_events {
        let kind = e["event"].as_str().unwrap_or("");
        assert!(!["message", "member", "members", "whisper", "ready"].contains(&kind), "eve learned: {e}");
        if kind == "connection" {
            assert_ne!(e["change"], "up", "eve got a connection: {e}");
            assert!(e["member"] != g[0].id.as_str() && e["member"] != g[1].id.as_str(), "eve learned a member id: {e}");
        }
        if kind == "status" {
            assert_eq!(e["connected"], false, "eve connected: {e}");
        }
    }
    for m in &g {
        assert_never_mentions(&eve, &m.id, "eve must not learn member ids");
    }
    assert_never_mentions(&eve, "members only", "eve must not see messages");
}

#[test]
fn a_plain_tcp_client_sending_junk_is_cut_off_and_the_group_keeps_working() {
    let g = group(&["alice", "bob"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    wait_ready(&mut bob);
    let (cut, _) = junk_client(&g[0].addr, b"GET / HTTP/1.1\r\nHost: peergroup\r\n\r\n", WAIT);
    let cut = cut.unwrap_or_else(|| panic!("alice kept a junk (HTTP) connection open for {WAIT:?}"));
    assert!(cut < Duration::from_secs(5), "cut off only after {cut:?}");
    say_and_see(&mut bob, "after the junk", &mut [&mut alice]);
    say_and_see(&mut alice, "still fine", &mut [&mut bob]);
    assert!(alice.events_of("error").is_empty(), "alice reported an error");
}

#[test]
fn garbage_bytes_and_huge_length_prefixes_are_cut_off_and_chat_goes_on() {
    let g = group(&["alice", "bob"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    wait_ready(&mut bob);
    // Several at once, in parallel: a huge length prefix alone, the same with more bytes
    // after it, pseudo-random bytes, and a zero-length prefix.
    let mut random = Vec::with_capacity(4096);
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        random.push(x as u8);
    }
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("FF FF FF FF", vec![0xff; 4]),
        ("FF FF FF FF + 60 bytes", vec![0xff; 64]),
        ("random bytes", random),
        ("zero length prefix", vec![0, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let target = g[1].addr.clone();
    let handles: Vec<_> = attacks
        .into_iter()
        .map(|(what, bytes)| {
            let target = target.clone();
            std::thread::spawn(move || (what, junk_client(&target, &bytes, WAIT)))
        })
        .collect();
    // Chat goes on while the attackers are connected.
    say_and_see(&mut alice, "during the attack", &mut [&mut bob]);
    let mut failures = Vec::new();
    for h in handles {
        let (what, (cut, got)) = h.join().unwrap();
        match cut {
            None => failures.push(format!("{what}: still connected after {WAIT:?}")),
            Some(t) if t > Duration::from_secs(11) => failures.push(format!("{what}: cut off only after {t:?}")),
            Some(t) => eprintln!("{what}: cut off after {t:?} ({} bytes back)", got.len()),
        }
    }
    assert!(failures.is_empty(), "bob did not cut off garbage senders:\n{}", failures.join("\n"));
    say_and_see(&mut alice, "after the attack", &mut [&mut bob]);
    say_and_see(&mut bob, "bob is fine", &mut [&mut alice]);
}

#[test]
fn a_second_group_chat_on_the_same_store_fails_at_once_naming_the_holder() {
    let g = group(&["alice", "bob"]);
    let alice = g[0].online();
    let second = g[0].home.run_bounded(
        "group-chat",
        &["--identity", "alice", "--group", GROUP, "--listen", &free_addr()],
        WAIT,
    );
    let second = second.fails_with("in use by another process");
    assert!(
        second.stderr.contains(&format!("(pid {})", alice.pid())),
        "the error does not name the holder's pid {}:\n{}",
        alice.pid(),
        second.stderr
    );
    assert!(second.elapsed < Duration::from_secs(3), "took {:?}", second.elapsed);
    // The same with the stored listen address (the port is taken too: the lock must win).
    g[0].home
        .run_bounded("group-chat", &["--identity", "alice", "--group", GROUP, "--json"], WAIT)
        .fails_with("in use by another process");
    // --history works beside the online one.
    g[0].home
        .run_bounded("group-chat", &["--identity", "alice", "--group", GROUP, "--history"], WAIT)
        .ok();
    drop(alice);
}

#[test]
fn send_publishes_and_waits_for_a_neighbour_or_fails_after_its_timeout() {
    let g = group(&["alice", "bob"]);
    let mut bob = g[1].online();
    let sent = g[0].home.run_bounded(
        "group-chat",
        &["--identity", "alice", "--group", GROUP, "--peer", &g[1].addr, "--send", "hello bob"],
        WAIT + WAIT,
    );
    let sent = sent.ok();
    eprintln!("--send stderr:\n{}", sent.stderr);
    assert!(sent.stdout.is_empty(), "--send printed on stdout:\n{}", sent.stdout);
    let m = wait_texts(&mut bob, &["hello bob"]);
    let m = messages(&m)[0].clone();
    assert_eq!(m["from"], g[0].id.as_str(), "{m}");
    bob.send("/quit");
    assert_eq!(bob.exits(WAIT), 0);

    // Nobody online: the message stays stored, the command fails after its timeout.
    let alone = g[0].home.run_bounded(
        "group-chat",
        &["--identity", "alice", "--group", GROUP, "--send", "nobody hears", "--timeout", "2s"],
        WAIT,
    );
    assert!(
        alone.elapsed >= Duration::from_secs(2) && alone.elapsed < Duration::from_secs(8),
        "took {:?}",
        alone.elapsed
    );
    // Human mode notes its status on stderr first; the error is the last line, alone.
    assert_eq!(alone.code, 1, "{alone:?}");
    assert!(alone.stdout.is_empty(), "{alone:?}");
    let last = alone.stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("group-chat: no member reached within 2s"),
        "the last stderr line is not the error:\n{}",
        alone.stderr
    );

    let history = g[0]
        .home
        .run("group-chat", &["--identity", "alice", "--group", GROUP, "--history"])
        .ok();
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "--history:\n{}", history.stdout);
    assert!(lines[0].ends_with("] <alice> hello bob"), "--history:\n{}", history.stdout);
    assert!(lines[1].ends_with("] <alice> nobody hears"), "--history:\n{}", history.stdout);
    assert!(lines.iter().all(|l| l.starts_with('[') && l.as_bytes()[9] == b']'), "{}", history.stdout);

    // The stored message spreads when bob comes back.
    let mut bob = g[1].online();
    let alice = Peer::spawn(
        "alice",
        g[0].home.command("group-chat", &["--identity", "alice", "--group", GROUP, "--json", "--peer", &g[1].addr]),
    );
    let events = wait_texts(&mut bob, &["nobody hears"]);
    assert_eq!(count_text(&events, "hello bob"), 0, "bob was shown hello bob again");
    drop(alice);
}

#[test]
fn sigterm_leaves_cleanly_and_the_others_see_it_leave() {
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    let mut carol = g[2].online();
    wait_ready(&mut bob);
    wait_ready(&mut carol);
    wait_present(&mut alice, &g[1]);
    wait_present(&mut carol, &g[1]);
    bob.signal("TERM");
    assert_eq!(bob.exits(WAIT), 0, "exit code after SIGTERM");
    wait_member(&mut alice, "left", &g[1]);
    wait_member(&mut carol, "left", &g[1]);
    say_and_see(&mut alice, "bob is gone", &mut [&mut carol]);
    // SIGINT too.
    carol.signal("INT");
    assert_eq!(carol.exits(WAIT), 0, "exit code after SIGINT");
    wait_member(&mut alice, "left", &g[2]);
}
