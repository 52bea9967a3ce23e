//! `group-chat` end to end: real processes on loopback, one home per member, watched
//! through `--json`. Each test sets up its own group with fresh ports and keys.

use std::io::Read;
use std::time::{Duration, Instant};

use peergroup_tests::group::*;
use peergroup_tests::{Home, Peer, free_addr, unix_ms};
use serde_json::Value;

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
    // Everyone knows everyone before the first line.
    for (p, others) in [
        (&mut alice, [&g[1], &g[2]]),
        (&mut bob, [&g[0], &g[2]]),
        (&mut carol, [&g[0], &g[1]]),
    ] {
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
        let others: Vec<&str> = texts
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, t)| *t)
            .collect();
        wait_texts(p, &others);
    }
    // Give late duplicates (a flood and a sync crossing) time to show up.
    std::thread::sleep(QUIET);
    for (i, p) in peers.iter().enumerate() {
        let events = p.events();
        let shown = assert_no_duplicates(p.label(), &messages(&events));
        assert_eq!(
            shown.len(),
            2,
            "{} should show exactly the other two messages: {shown:?}",
            p.label()
        );
        assert_eq!(
            count_text(&events, texts[i]),
            0,
            "{} was shown its own message",
            p.label()
        );
        for e in messages(&events) {
            let from = g
                .iter()
                .find(|m| e["text"] == format!("hello from {}", m.name))
                .expect("known text");
            assert_eq!(e["from"], from.id.as_str(), "{}: wrong sender id in {e}", p.label());
            assert_eq!(e["name"], from.name, "{}: wrong sender name in {e}", p.label());
            assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()), "no id: {e}");
            assert!(
                e["created"].as_str().is_some_and(|s| s.ends_with('Z')),
                "created not RFC 3339 UTC: {e}"
            );
            assert!(e["recv_ns"].as_i64().is_some_and(|n| n > 0), "no recv_ns: {e}");
            assert!(e["history"].is_boolean(), "no history flag: {e}");
        }
    }
    // The same message has the same id everywhere.
    let id_of = |p: &Peer, text: &str| {
        p.events_of("message")
            .into_iter()
            .find(|e| e["text"] == text)
            .map(|e| e["id"].clone())
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
        assert_eq!(
            e["history"], true,
            "a message from before carol was online is not history: {e}"
        );
    }
    // And what is said now reaches her live.
    say_and_see(&mut alice, "now with carol", &mut [&mut carol]);
    let live = carol
        .events_of("message")
        .into_iter()
        .find(|e| e["text"] == "now with carol")
        .unwrap();
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
    for e in messages(&events)
        .into_iter()
        .filter(|e| e["text"].as_str().unwrap().starts_with("missed"))
    {
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
    assert_eq!(
        count_text(&second_run, "carol before the crash"),
        0,
        "own message shown after restart"
    );
}

#[test]
fn a_whisper_reaches_only_its_addressee() {
    let g = group(&["alice", "bob", "carol"]);
    let (mut alice, mut bob, mut carol) = three_online(&g);
    alice.send("/msg bob secret for bob");
    let w = bob.wait_for("whisper", WAIT, |e| e["event"] == "whisper");
    assert_eq!(w["from"], g[0].id.as_str(), "{w}");
    assert_eq!(w["name"], "alice", "{w}");
    assert_eq!(w["text"], "secret for bob", "{w}");
    assert!(w["recv_ns"].as_i64().is_some_and(|n| n > 0), "{w}");
    // By member-id prefix as well.
    alice.send(&format!("/msg {} second secret", &g[1].id[..10]));
    bob.wait_for("second whisper", WAIT, |e| {
        e["event"] == "whisper" && e["text"] == "second secret"
    });
    // And by name in any case.
    alice.send("/msg BOB third secret");
    bob.wait_for("third whisper", WAIT, |e| {
        e["event"] == "whisper" && e["text"] == "third secret"
    });
    // A public line after the whispers: once carol has it, a flooded whisper would have
    // arrived too.
    say_and_see(&mut alice, "public line", &mut [&mut bob, &mut carol]);
    std::thread::sleep(QUIET);
    assert!(carol.events_of("whisper").is_empty(), "carol got a whisper");
    assert_never_mentions(&carol, "secret", "carol must not see a whisper to bob");
    let leaked: Vec<Value> = bob
        .events_of("message")
        .into_iter()
        .filter(|e| e["text"].as_str().is_some_and(|t| t.contains("secret")))
        .collect();
    assert!(leaked.is_empty(), "a whisper became a chat message: {leaked:?}");
    assert!(alice.events_of("error").is_empty(), "alice reported an error");
    assert_eq!(bob.events_of("whisper").len(), 3, "bob got a whisper twice");
    // Whispers are never stored: not in anyone's history.
    for m in &g {
        let history = m
            .home
            .run("group-chat", &["--identity", m.name, "--group", GROUP, "--history"])
            .ok();
        assert!(
            !history.stdout.contains("secret"),
            "{} stored a whisper:\n{}",
            m.name,
            history.stdout
        );
    }
}

#[test]
fn who_lists_present_members_and_drops_one_that_quits() {
    let g = group(&["alice", "bob", "carol"]);
    let (mut alice, mut bob, mut carol) = three_online(&g);
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
        assert!(
            list.iter().any(|e| e["member"] == m.id.as_str() && e["name"] == m.name),
            "{who}"
        );
    }

    carol.send("/quit");
    assert_eq!(carol.exits(WAIT), 0, "carol's /quit");
    wait_member(&mut alice, "left", &g[2]);
    wait_member(&mut bob, "left", &g[2]);
    alice.send("/who");
    let who = alice.wait_until("second members", WAIT, |evs| {
        evs.iter().filter(|e| e["event"] == "members").count() >= 2
    });
    let who = who.iter().filter(|e| e["event"] == "members").nth(1).unwrap();
    let mut names: Vec<&str> = who["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
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

    for (p, why) in [
        (&alice, "alice must not hear of eve"),
        (&bob, "bob must not hear of eve"),
    ] {
        for e in p.events() {
            let mentions_eve = e["member"] == eve_id.as_str()
                || e["from"] == eve_id.as_str()
                || e["members"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|m| m["member"] == eve_id.as_str()));
            let up = e["event"] == "connection" && e["change"] == "up" && e["member"] == eve_id.as_str();
            assert!(!mentions_eve && !up, "{}: {why}: {e}", p.label());
        }
    }
    let eve_events = eve.events();
    for e in &eve_events {
        let kind = e["event"].as_str().unwrap_or("");
        assert!(
            !["message", "member", "members", "whisper", "ready"].contains(&kind),
            "eve learned: {e}"
        );
        if kind == "connection" {
            assert_ne!(e["change"], "up", "eve got a connection: {e}");
            assert!(
                e["member"] != g[0].id.as_str() && e["member"] != g[1].id.as_str(),
                "eve learned a member id: {e}"
            );
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
    assert!(
        failures.is_empty(),
        "bob did not cut off garbage senders:\n{}",
        failures.join("\n")
    );
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
        .run_bounded(
            "group-chat",
            &["--identity", "alice", "--group", GROUP, "--history"],
            WAIT,
        )
        .ok();
    drop(alice);
}

#[test]
fn send_publishes_and_waits_for_a_neighbour_or_fails_after_its_timeout() {
    let g = group(&["alice", "bob"]);
    let mut bob = g[1].online();
    let sent = g[0].home.run_bounded(
        "group-chat",
        &[
            "--identity",
            "alice",
            "--group",
            GROUP,
            "--peer",
            &g[1].addr,
            "--send",
            "hello bob",
        ],
        WAIT + WAIT,
    );
    let sent = sent.ok();
    assert!(sent.stdout.is_empty(), "--send printed on stdout:\n{}", sent.stdout);
    let m = wait_texts(&mut bob, &["hello bob"]);
    let m = messages(&m)[0].clone();
    assert_eq!(m["from"], g[0].id.as_str(), "{m}");
    bob.send("/quit");
    assert_eq!(bob.exits(WAIT), 0);

    // Nobody online: the message stays stored, the command fails after its timeout.
    let alone = g[0].home.run_bounded(
        "group-chat",
        &[
            "--identity",
            "alice",
            "--group",
            GROUP,
            "--send",
            "nobody hears",
            "--timeout",
            "2s",
        ],
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
    assert!(
        lines[0].ends_with("] <alice> hello bob"),
        "--history:\n{}",
        history.stdout
    );
    assert!(
        lines[1].ends_with("] <alice> nobody hears"),
        "--history:\n{}",
        history.stdout
    );
    assert!(
        lines.iter().all(|l| l.starts_with('[') && l.as_bytes()[9] == b']'),
        "{}",
        history.stdout
    );
    // Eight days on, past the 7-day message lifetime, nothing has purged the offline
    // store yet, and --history shows nothing expired.
    let later = common::clock::format_rfc3339(common::clock::from_unix(unix_ms() / 1000 + 8 * 86_400));
    let mut cmd = g[0]
        .home
        .command("group-chat", &["--identity", "alice", "--group", GROUP, "--history"]);
    cmd.env("PEERGROUP_FAKE_NOW", &later);
    let expired = peergroup_tests::run_command(cmd, None).ok();
    assert_eq!(expired.stdout, "", "--history shows expired messages");

    // The stored message spreads when bob comes back.
    let mut bob = g[1].online();
    let alice = Peer::spawn(
        "alice",
        g[0].home.command(
            "group-chat",
            &["--identity", "alice", "--group", GROUP, "--json", "--peer", &g[1].addr],
        ),
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

#[test]
fn a_member_sending_malformed_frames_is_cut_off_and_nothing_else_is_affected() {
    let g = group(&["alice", "bob", "mallory"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    wait_ready(&mut bob);
    let mallory = &g[2];
    let mut unknown_type = 3u32.to_be_bytes().to_vec();
    unknown_type.extend_from_slice(&[0xee, 1, 2]);
    let mut truncated_records = 6u32.to_be_bytes().to_vec();
    truncated_records.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("a huge length prefix (FF FF FF FF)", vec![0xff; 4]),
        (
            "a frame just over 1 MiB announced",
            (1024 * 1024 + 1u32).to_be_bytes().to_vec(),
        ),
        ("an empty frame", vec![0, 0, 0, 0]),
        ("an unknown message type", unknown_type),
        ("a records message cut short", truncated_records),
    ];
    // mallory's connections as alice reports them, going `change`.
    let mallory_conns = |evs: &[Value], change: &str| {
        evs.iter()
            .filter(|e| e["event"] == "connection" && e["change"] == change && e["member"] == mallory.id.as_str())
            .count()
    };
    let mut failures = Vec::new();
    for (n, (what, bytes)) in attacks.iter().enumerate().map(|(i, a)| (i + 1, a)) {
        let mut s = member_connection(mallory, &g[0].addr);
        alice.wait_until(&format!("mallory connected ({what})"), WAIT, |evs| {
            mallory_conns(evs, "up") >= n
        });
        match send_inside_tls(&mut s, bytes, WAIT) {
            None => failures.push(format!("{what}: still connected after {WAIT:?}")),
            Some(t) if t > Duration::from_secs(5) => failures.push(format!("{what}: cut off only after {t:?}")),
            Some(_) => {}
        }
        // alice reports it, with a reason.
        alice.wait_until(&format!("mallory down ({what})"), WAIT, |evs| {
            mallory_conns(evs, "down") >= n
        });
    }
    assert!(
        failures.is_empty(),
        "alice did not cut off malformed frames:\n{}",
        failures.join("\n")
    );
    let events = alice.events();
    assert_eq!(
        mallory_conns(&events, "up"),
        attacks.len(),
        "mallory never dials back by herself"
    );
    for e in events
        .iter()
        .filter(|e| e["event"] == "connection" && e["change"] == "down")
    {
        assert_eq!(e["member"], mallory.id.as_str(), "alice lost someone else: {e}");
        assert!(
            e["reason"].as_str().is_some_and(|r| r.contains("frame")),
            "unclear reason: {e}"
        );
    }
    say_and_see(&mut alice, "after mallory", &mut [&mut bob]);
    say_and_see(&mut bob, "bob is fine", &mut [&mut alice]);
    assert!(
        !bob.events_of("connection")
            .iter()
            .any(|e| e["change"] == "down" && e["member"] == g[0].id.as_str()),
        "bob lost alice"
    );
}

#[test]
fn sigterm_ends_the_process_even_when_nobody_reads_its_stdout() {
    // A stalled consumer (`group-chat --json | consumer`, consumer stopped) must not keep
    // group-chat from leaving: SIGTERM means leave and exit 0. What it could not show is
    // not lost: the store's cursor shows it at the next start.
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    let mut carol = g[2].online();
    wait_ready(&mut carol);
    let mut bob = Peer::spawn_unread(
        "bob",
        g[1].home
            .command("group-chat", &["--identity", "bob", "--group", GROUP, "--json"]),
    );
    wait_present(&mut alice, &g[1]);
    // About 180 KB of JSON lines for bob: far more than a pipe holds.
    let texts: Vec<String> = (0..12).map(|i| format!("{i:02} {}", "y".repeat(15_000))).collect();
    for t in &texts {
        alice.send(t);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    wait_texts(&mut carol, &refs);
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    bob.signal("TERM");
    wait_member(&mut alice, "left", &g[1]);
    let code = bob.wait_exit(Duration::from_secs(10));
    let waited = start.elapsed();
    if code.is_none() {
        bob.resume_stdout();
        let after = bob.wait_exit(WAIT);
        panic!(
            "bob left the group but was still running {waited:?} after SIGTERM, while its stdout was not \
             read; once read, it exited with {after:?}"
        );
    }
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    let first_run = bob.events();
    let mut bob2 = g[1].online();
    wait_ready(&mut bob2);
    std::thread::sleep(QUIET);
    let second_run = bob2.events();
    let mut both = messages(&first_run);
    both.extend(messages(&second_run));
    let mut shown = assert_no_duplicates("bob across both runs", &both);
    shown.sort();
    assert_eq!(shown, texts, "bob across both runs");
}

#[test]
fn the_creator_killed_the_others_chat_on_and_it_catches_up_after_a_restart() {
    // alice's address is everyone's bootstrap; without her, bob and carol must keep the
    // mesh through the addresses in each other's presence.
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    let mut carol = g[2].online();
    wait_ready(&mut bob);
    wait_ready(&mut carol);
    wait_present(&mut bob, &g[2]);
    wait_present(&mut carol, &g[1]);
    say_and_see(&mut alice, "before", &mut [&mut bob, &mut carol]);
    std::thread::sleep(Duration::from_millis(500));
    alice.kill();
    say_and_see(&mut bob, "while alice is down", &mut [&mut carol]);
    say_and_see(&mut carol, "carol too", &mut [&mut bob]);
    let mut alice2 = g[0].online();
    wait_texts(&mut alice2, &["while alice is down", "carol too"]);
    say_and_see(&mut alice2, "alice is back", &mut [&mut bob, &mut carol]);
    say_and_see(&mut bob, "welcome back", &mut [&mut alice2, &mut carol]);
    std::thread::sleep(QUIET);
    let first = alice.events();
    let second = alice2.events();
    let mut both = messages(&first);
    both.extend(messages(&second));
    let mut shown = assert_no_duplicates("alice across both runs", &both);
    shown.sort();
    assert_eq!(shown, ["carol too", "welcome back", "while alice is down"]);
    for p in [&bob, &carol] {
        assert_no_duplicates(p.label(), &messages(&p.events()));
    }
}

#[test]
fn two_members_killed_and_restarted_together_settle_on_one_connection() {
    // Both know the other's address from presence, so both dial at once: one of the two
    // connections must win on both sides, and nothing is shown twice.
    let g = group(&["alice", "bob"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    wait_ready(&mut bob);
    wait_present(&mut alice, &g[1]);
    wait_present(&mut bob, &g[0]);
    std::thread::sleep(Duration::from_millis(300));
    alice.kill();
    bob.kill();
    let mut alice = g[0].chat(&[]);
    let mut bob = g[1].chat(&[]);
    wait_ready(&mut alice);
    wait_ready(&mut bob);
    say_and_see(&mut alice, "a", &mut [&mut bob]);
    say_and_see(&mut bob, "b", &mut [&mut alice]);
    std::thread::sleep(QUIET);
    say_and_see(&mut alice, "c", &mut [&mut bob]);
    for p in [&alice, &bob] {
        let events = p.events();
        assert_no_duplicates(p.label(), &messages(&events));
        let last = events.iter().rev().find(|e| e["event"] == "status").expect("a status");
        assert_eq!(last["neighbours"], 1, "{}: {last}", p.label());
    }
}

#[test]
fn a_whisper_to_a_member_that_is_not_a_neighbour_opens_a_direct_connection() {
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    // One neighbour each: bob and carol both hang off alice and are not neighbours.
    let mut bob = g[1].chat(&["--max-neighbours", "1"]);
    wait_ready(&mut bob);
    let mut carol = g[2].chat(&["--max-neighbours", "1"]);
    wait_ready(&mut carol);
    wait_present(&mut bob, &g[2]);
    wait_present(&mut carol, &g[1]);
    bob.send("/msg carol psst");
    let w = carol.wait_for("whisper", WAIT, |e| e["event"] == "whisper");
    assert_eq!(
        (w["from"].as_str(), w["text"].as_str()),
        (Some(g[1].id.as_str()), Some("psst")),
        "{w}"
    );
    carol.wait_for("a direct connection", WAIT, |e| {
        e["event"] == "connection" && e["kind"] == "direct" && e["change"] == "up" && e["member"] == g[1].id.as_str()
    });
    carol.send("/msg bob back");
    bob.wait_for("whisper back", WAIT, |e| e["event"] == "whisper" && e["text"] == "back");
    // Bad input is an error event, and the peer carries on.
    bob.send("/msg nobody hi");
    bob.send("/bogus");
    bob.wait_until("two errors", WAIT, |evs| {
        evs.iter().filter(|e| e["event"] == "error").count() >= 2
    });
    say_and_see(&mut bob, "still here", &mut [&mut alice, &mut carol]);
    std::thread::sleep(QUIET);
    assert_never_mentions(&alice, "psst", "alice relays no whisper");
    assert_never_mentions(&alice, "back", "alice relays no whisper");
    assert_eq!(carol.events_of("whisper").len(), 1);
    assert_eq!(bob.events_of("whisper").len(), 1);
}

#[test]
fn input_lines_travel_as_typed_and_bad_ones_are_refused() {
    let g = group(&["alice", "bob"]);
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    wait_ready(&mut bob);
    let fancy = "héllo 👋 \"quoted\" <b> \\ back\tslash";
    alice.send(fancy);
    alice.send("//starts with a slash");
    alice.send("");
    alice.send(&"x".repeat(70_000));
    alice.send("last");
    wait_texts(&mut bob, &[fancy, "/starts with a slash", "last"]);
    let error = alice.wait_for("an error", WAIT, |e| e["event"] == "error");
    assert!(error["message"].as_str().unwrap().contains("70000 bytes"), "{error}");
    std::thread::sleep(QUIET);
    let events = bob.events();
    let shown = assert_no_duplicates("bob", &messages(&events));
    assert_eq!(shown, [fancy, "/starts with a slash", "last"], "in order, nothing else");
}

#[test]
fn human_mode_prints_chat_lines_and_end_of_input_leaves_cleanly() {
    let g = group(&["alice", "bob"]);
    let mut alice = g[0].online();
    let mut bob = Peer::spawn(
        "bob (human)",
        g[1].home
            .command("group-chat", &["--identity", "bob", "--group", GROUP]),
    );
    wait_present(&mut alice, &g[1]);
    alice.send("hi human");
    bob.wait_until("the chat line", WAIT, |evs| {
        evs.iter()
            .any(|e| e.as_str().is_some_and(|l| l.ends_with("] <alice> hi human")))
    });
    bob.send("hi json");
    wait_texts(&mut alice, &["hi json"]);
    bob.close_stdin();
    assert_eq!(bob.exits(WAIT), 0, "exit code at end of input");
    wait_member(&mut alice, "left", &g[1]);
    let lines = bob.lines();
    assert_eq!(lines.len(), 1, "stdout has chat lines only: {lines:?}");
    let l = &lines[0];
    assert!(
        l.len() > 11 && l.as_bytes()[0] == b'[' && l.as_bytes()[9] == b']',
        "{l}"
    );
    assert!(bob.stderr().contains("online in Friends as bob"), "{}", bob.stderr());
}

#[test]
fn bad_options_and_an_unusable_listen_address_are_refused_before_going_online() {
    let g = group(&["alice", "bob"]);
    let run = |args: &[&str]| {
        let mut all = vec!["--identity", "alice", "--group", GROUP];
        all.extend_from_slice(args);
        g[0].home.run("group-chat", &all)
    };
    // Usage errors: clap refuses them with exit 2.
    for bad in [
        &["--max-neighbours", "0"][..],
        &["--durability", "sometimes"],
        &["--peer", "not-an-address"],
        &["--timeout", "soon", "--send", "x"],
    ] {
        let out = run(bad);
        assert_eq!(out.code, 2, "{bad:?} is a usage error: {out:?}");
    }
    run(&["--advertise", "example.org:1"]).fails_with("invalid address \"example.org:1\"");
    // A port someone else holds: one line saying so, nothing half-started.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    run(&["--listen", &taken]).fails_with(&format!("unable to listen on {taken}"));
    // The failed starts left the store usable and unlocked.
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    wait_ready(&mut bob);
    say_and_see(&mut alice, "still fine", &mut [&mut bob]);
}

#[test]
fn a_peer_named_with_the_wrong_member_id_is_reported_and_does_not_block_its_address() {
    // Regression: `--peer BOB_ID@ALICE_ADDR` once held alice's address in backoff for
    // good, so carol never reached alice through her invitation's bootstrap address.
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].online();
    let wrong = format!("{}@{}", g[1].id, g[0].addr);
    let mut carol = g[2].chat(&["--peer", &wrong]);
    let err = carol.wait_for("an error about the --peer", WAIT, |e| e["event"] == "error");
    let text = err["message"].as_str().unwrap_or_default();
    assert!(text.contains("--peer") && text.contains(&g[0].id), "{err}");
    wait_ready(&mut carol);
    say_and_see(&mut alice, "reached through the bootstrap address", &mut [&mut carol]);
}

#[test]
fn a_member_connection_that_falls_silent_is_closed_and_a_quiet_one_is_kept_alive_by_pings() {
    let g = group(&["alice", "mallory"]);
    let mut alice = g[0].online();
    // Mallory's own connection: it reads, but never sends a byte after its Hello.
    let mut s = member_connection(&g[1], &g[0].addr);
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        assert!(
            start.elapsed() < WAIT,
            "alice kept a silent connection open for {WAIT:?}"
        );
        match s.read(&mut buf) {
            Ok(0) => break start.elapsed(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break start.elapsed(),
        }
    };
    // What alice sent meanwhile, frame by frame: pings, since she had nothing else.
    let mut pings = 0;
    let mut rest = &got[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let Some(payload) = rest.get(4..4 + len) else { break };
        if common::wire::Message::decode(payload).is_ok_and(|m| m == common::wire::Message::Ping) {
            pings += 1;
        }
        rest = &rest[4 + len..];
    }
    eprintln!("silent connection closed after {closed:?}; {pings} pings received before");
    assert!(
        closed >= Duration::from_secs(4) && closed <= Duration::from_secs(8),
        "a silent connection should close after the 5 s silence limit, closed after {closed:?}"
    );
    assert!(
        pings >= 3,
        "expected a ping a second while idle, got {pings} in {closed:?}"
    );
    alice.wait_for("connection down", WAIT, |e| {
        e["event"] == "connection" && e["change"] == "down" && e["reason"].as_str().is_some_and(|r| r.contains("heard"))
    });
}

/// Waits until one of `peer`'s stdout lines contains `needle`, and returns it.
fn wait_line(peer: &Peer, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(l) = peer.lines().into_iter().find(|l| l.contains(needle)) {
            return l;
        }
        assert!(Instant::now() < deadline, "no line with {needle:?}\n{}", peer.report());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Attack 8: a member invited under a name already taken, and text full of terminal
/// controls. Names come from certificates, a shared name shows with id prefixes,
/// `/msg` asks which one, invite-create warns, and no control reaches the screen.
#[test]
fn names_come_from_certificates_and_terminal_controls_never_reach_the_screen() {
    let g = group(&["alice", "bob"]);
    let twin_home = Home::new();
    let xml = twin_home.run("identity-export", &["alice"]).ok().stdout;
    let invited = g[0]
        .home
        .run_with(
            "invite-create",
            &["--identity", "alice", "--group", GROUP, "-"],
            Some(xml.as_bytes()),
        )
        .ok();
    assert!(
        invited.stderr.contains("already has a member named \"alice\""),
        "no warning:\n{}",
        invited.stderr
    );
    let twin_addr = free_addr();
    twin_home
        .run_with(
            "group-join",
            &["--identity", "alice", "--listen", &twin_addr, "-"],
            Some(invited.stdout.as_bytes()),
        )
        .ok();
    let short = |id: &str| id.parse::<common::member::MemberId>().unwrap().short();
    let (alice_short, twin_short) = (short(&g[0].id), short(&member_id(&twin_home, "alice")));

    // Bob reads as a person does: human lines on a terminal.
    let mut bob = Peer::spawn(
        "bob",
        g[1].home
            .command("group-chat", &["--identity", "bob", "--group", GROUP]),
    );
    let mut alice = g[0].online();
    let mut twin = Peer::spawn(
        "twin",
        twin_home.command(
            "group-chat",
            &["--identity", "alice", "--group", GROUP, "--json", "--peer", &g[1].addr],
        ),
    );
    wait_ready(&mut twin);
    wait_ready(&mut alice);
    twin.send("\u{1b}]0;pwned\u{7}\u{1b}[2Jforged\r[00:00:00] <bob> hi\u{202e}gnp.exe");
    alice.send("genuine");
    let genuine = wait_line(&bob, "genuine");
    assert!(
        genuine.ends_with(&format!("<alice ({alice_short})> genuine")),
        "{genuine}"
    );
    let forged = wait_line(&bob, "forged");
    assert!(forged.contains(&format!("<alice ({twin_short})>")), "{forged}");
    let all = bob.lines().join("\n") + &bob.stderr();
    assert!(
        !all.chars().any(|c| c != '\n' && common::names::is_unsafe_char(c)),
        "a control character reached the screen:\n{all:?}"
    );
    bob.send("/msg alice are you the real one?");
    let deadline = Instant::now() + WAIT;
    while !bob.stderr().contains("matches several present members") {
        assert!(
            Instant::now() < deadline,
            "/msg alice did not ask which:\n{}",
            bob.report()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(bob.stderr().contains(&alice_short) && bob.stderr().contains(&twin_short));
}

/// Attack 7: one member opens many direct connections and whispers a megabyte. The
/// node keeps a few direct connections per member, refuses the rest at once, and cuts
/// an oversized whisper without showing it; a whisper within the limit still arrives.
#[test]
fn direct_connections_are_capped_per_member_and_whispers_in_size() {
    use common::wire::{Message, Purpose};
    let g = group(&["alice", "bob"]);
    let mut alice = g[0].online();
    let mut conns: Vec<_> = (0..12)
        .map(|_| member_connection_for(&g[1], &g[0].addr, Purpose::Direct))
        .collect();
    // A connection the node closed reads as ended; one it kept stays open.
    let open: Vec<bool> = conns
        .iter_mut()
        .map(|c| send_inside_tls(c, &[], Duration::from_millis(300)).is_none())
        .collect();
    let kept = open.iter().filter(|o| **o).count();
    assert!(
        (1..12).contains(&kept) && kept <= common::core::MAX_DIRECT_PER_MEMBER,
        "{kept} of 12 direct connections kept"
    );
    let i = open.iter().position(|o| *o).unwrap();
    let small = Message::Whisper { text: "psst".into() }.encode();
    assert_eq!(send_inside_tls(&mut conns[i], &small, Duration::from_millis(300)), None);
    alice.wait_for("the small whisper", WAIT, |e| {
        e["event"] == "whisper" && e["text"] == "psst"
    });
    let big = Message::Whisper {
        text: "x".repeat(common::wire::MAX_WHISPER_BYTES + 1),
    }
    .encode();
    assert!(
        send_inside_tls(&mut conns[i], &big, WAIT).is_some(),
        "an oversized whisper did not cut the connection"
    );
    std::thread::sleep(QUIET);
    assert!(
        !alice
            .events_of("whisper")
            .iter()
            .any(|e| e["text"].as_str().is_some_and(|t| t.len() > 4)),
        "the oversized whisper was shown"
    );
}

/// Issue 13: a member acts (`/me`), edits and deletes its own messages (the last, or
/// one counted back), sends one that lives less than the group's lifetime; the others
/// see each change once; `--history --json --since` gives what is left as message
/// events, without the deleted or expired ones; a lifetime over the group's is refused.
#[test]
fn members_act_edit_delete_and_send_messages_that_expire_sooner() {
    let g = group(&["alice", "bob", "carol"]);
    let mut alice = g[0].chat(&["--message-lifetime", "1h"]);
    let mut bob = g[1].online();
    wait_ready(&mut alice);
    wait_ready(&mut bob);
    wait_present(&mut bob, &g[0]);
    let message = |p: &mut Peer, what: &str, pred: &dyn Fn(&Value) -> bool| {
        p.wait_for(what, WAIT, |e| e["event"] == "message" && pred(e))
    };
    alice.send("/me waves");
    let waved = message(&mut bob, "the action", &|e| e["text"] == "waves");
    assert_eq!(waved["action"], true, "{waved}");
    alice.send("first try");
    alice.send("second try");
    let first = message(&mut bob, "first", &|e| e["text"] == "first try");
    let second = message(&mut bob, "second", &|e| e["text"] == "second try");
    // A message of the session lives the hour asked, not the group's 7 days.
    let lives = |e: &Value| {
        let at = |k: &str| common::clock::parse_rfc3339(e[k].as_str().unwrap()).unwrap();
        (at("expires") - at("created")).whole_seconds()
    };
    assert_eq!(lives(&second), 3600, "{second}");
    alice.send("/edit second try, fixed");
    let edited = message(&mut bob, "the edit", &|e| e["edited"] == true);
    assert_eq!(
        (&edited["id"], &edited["text"]),
        (&second["id"], &json_str("second try, fixed"))
    );
    alice.send("/delete ^2");
    let deleted = message(&mut bob, "the deletion", &|e| e["deleted"] == true);
    assert_eq!(deleted["id"], first["id"]);
    // Not bob's to change: nothing happens but an error at bob's end.
    bob.send(&format!("/delete {}", second["id"].as_str().unwrap()));
    bob.wait_for("bob's refusal", WAIT, |e| {
        e["event"] == "error" && e["message"].as_str().is_some_and(|m| m.contains("cannot delete"))
    });
    alice.send("/edit ^9 nothing there");
    alice.wait_for("no ninth message", WAIT, |e| {
        e["event"] == "error" && e["message"].as_str().is_some_and(|m| m.contains("no live message"))
    });

    // --send --expires: carol's message lives 2 s.
    let send = |text: &str, expires: &str| {
        let args = [
            "--identity",
            "carol",
            "--group",
            GROUP,
            "--send",
            text,
            "--expires",
            expires,
        ];
        g[2].home.run("group-chat", &args)
    };
    send("brief", "2s").ok();
    let heard = message(&mut alice, "the brief one", &|e| e["text"] == "brief");
    assert_eq!(lives(&heard), 2, "{heard}");
    message(&mut bob, "the brief one", &|e| e["text"] == "brief");
    let over = send("x", "30d");
    assert_eq!(over.code, 1, "{}", over.stderr);
    assert!(
        over.stderr.contains("lives at most 7d (the group's message lifetime)"),
        "{}",
        over.stderr
    );
    std::thread::sleep(Duration::from_millis(2_100));
    // Two seconds after the others (times in events are whole seconds).
    alice.send("late");
    let late = message(&mut bob, "the late one", &|e| e["text"] == "late");

    // The history as message events: the action and the edited message; neither the
    // deleted one nor the expired one; --since leaves out what came before.
    let history = |since: &str| -> Vec<Value> {
        let mut args = vec!["--identity", "bob", "--group", GROUP, "--history", "--json"];
        if !since.is_empty() {
            args.extend(["--since", since]);
        }
        let out = g[1].home.run("group-chat", &args).ok();
        out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    drop(bob);
    let all = history("");
    let texts: Vec<&str> = all.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["waves", "second try, fixed", "late"], "{all:?}");
    assert!(all.iter().all(|e| e["event"] == "message" && e["history"] == true));
    assert_eq!(all[1]["edited"], true);
    let later = history(late["created"].as_str().unwrap());
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(history("1h").len(), 3, "a duration means that long ago");
    let usage = g[1]
        .home
        .run("group-chat", &["--identity", "bob", "--group", GROUP, "--since", "1h"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    drop(alice);
}

fn json_str(s: &str) -> Value {
    Value::String(s.to_string())
}
