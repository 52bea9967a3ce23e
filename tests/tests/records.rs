//! The record database from scripts (issue 13): `group-record` across three members,
//! online and offline, as a CI job and the machines that read its results would use it.

use std::time::{Duration, Instant};

use peergroup_tests::group::*;
use peergroup_tests::{Output, Peer};
use serde_json::Value;

/// `group-record ARGS` as `m`.
fn record(m: &Member, args: &[&str]) -> Output {
    let mut all = vec![args[0], "--identity", m.name, "--group", GROUP];
    all.extend_from_slice(&args[1..]);
    m.home.run("group-record", &all)
}

/// The JSON records `m` lists with `args`.
fn listed(m: &Member, args: &[&str]) -> Vec<Value> {
    let out = record(m, args).ok();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Polls `m`'s `group-record` with `args` until `pred` holds of what it lists.
#[track_caller]
fn until_listed(m: &Member, args: &[&str], what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let found = listed(m, args);
        if pred(&found) {
            return found;
        }
        assert!(
            start.elapsed() < WAIT,
            "{}: no {what} within {WAIT:?}: {found:?}",
            m.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `m`'s `group-chat --json` with record events (of `types`, or all).
fn following(m: &Member, types: &[&str]) -> Peer {
    let mut args = vec!["--events", "record,ready,member,error"];
    for t in types {
        args.extend_from_slice(&["--record-type", t]);
    }
    m.chat(&args)
}

/// Waits for `p`'s record event with `change` (added, updated, deleted, expired) for
/// record `id`.
#[track_caller]
fn record_event(p: &mut Peer, change: &str, id: &str) -> Value {
    p.wait_for(&format!("record {change} {id}"), WAIT, |e| {
        e["event"] == "record" && e["change"] == change && e["record"]["id"] == id
    })
}

#[test]
fn a_ci_job_publishes_updates_and_deletes_records_that_other_members_query() {
    let g = group(&["alice", "bob", "carol"]);
    let (a, b, c) = (&g[0], &g[1], &g[2]);
    // alice follows builds only; carol every record type; bob is the CI machine.
    let mut alice = following(a, &["build"]);
    let mut bob = b.online();
    let mut carol = following(c, &[]);
    for p in [&mut alice, &mut bob, &mut carol] {
        wait_ready(p);
    }
    wait_present(&mut alice, b);
    wait_present(&mut carol, b);

    // bob, the CI job, posts a build result beside its running group-chat.
    let log = b.home.path().join("log.txt");
    std::fs::write(&log, "all 319 tests passed\n").unwrap();
    let log = log.to_string_lossy().into_owned();
    let added = record(
        b,
        &[
            "add",
            "--type",
            "build",
            "--attr",
            "commit=3f2a9c1",
            "--attr",
            "number:int=42",
            "--data",
            &log,
        ],
    )
    .ok();
    let id = added.stdout.trim().to_string();
    assert!(
        added.stderr.contains("handed to the running group-chat"),
        "{}",
        added.stderr
    );
    // A result that matters for 2 s only: it expires, and followers are told.
    let brief = record(
        b,
        &["add", "--type", "build", "--attr", "number:int=41", "--expires", "2s"],
    )
    .ok();
    let brief = brief.stdout.trim().to_string();
    let seen = until_listed(c, &["list", "--type", "build", "--json"], "bob's build", |r| {
        r.len() == 1
    });
    assert_eq!(seen[0]["id"], id.as_str());
    assert_eq!(seen[0]["attributes"]["number"], 42);
    assert_eq!(seen[0]["text"], "all 319 tests passed\n");
    assert_eq!(seen[0]["creator"], b.id.as_str());
    for p in [&mut alice, &mut carol] {
        let e = record_event(p, "added", &id);
        assert_eq!(e["record"]["attributes"]["commit"], "3f2a9c1", "{e}");
        assert_eq!(e["name"], "bob");
    }

    // Updated: the new version reaches the others; searches see the new attribute.
    record(b, &["update", &id, "--attr", "status=passed"]).ok();
    until_listed(
        a,
        &["search", "status=passed number>=40 commit=3f*", "--json"],
        "the update",
        |r| r.len() == 1 && r[0]["version"] == 2,
    );
    assert!(listed(a, &["search", "number>42", "--json"]).is_empty());
    let e = record_event(&mut carol, "updated", &id);
    assert_eq!(e["record"]["version"], 2);
    // A record of another type: carol hears of it, alice (builds only) does not.
    let note = record(b, &["add", "--type", "note", "--attr", "k=v"]).ok();
    record_event(&mut carol, "added", note.stdout.trim());
    // A type filter naming nothing stored is an error; a search matching nothing is not.
    record(a, &["list", "--type", "bulid"]).fails_with("no records of type bulid");

    // carol may not change bob's record; nothing is written.
    record(c, &["delete", &id]).fails_with("is not yours");
    record(c, &["update", &id, "--attr", "status=failed"]).fails_with("is not yours");
    assert_eq!(listed(c, &["get", &id, "--json"])[0]["version"], 2);

    // Offline: carol leaves; bob posts another, alice (an admin) deletes bob's first;
    // carol sees both changes when she is back, and nothing twice.
    carol.send("/quit");
    assert_eq!(carol.exits(WAIT), 0, "carol's /quit");
    let second = record(b, &["add", "--type", "build", "--attr", "number:int=43"]).ok();
    let second = second.stdout.trim().to_string();
    record(a, &["delete", &id]).ok();
    record_event(&mut alice, "added", &second);
    let mut carol = following(c, &[]);
    wait_ready(&mut carol);
    record_event(&mut carol, "added", &second);
    let gone = record_event(&mut carol, "deleted", &id);
    assert_eq!(gone["record"]["modifier"], a.id.as_str(), "{gone}");
    assert_eq!(gone["name"], "alice");
    for m in [b, c] {
        until_listed(m, &["list", "--type", "build", "--json"], "the deletion", |r| {
            r.len() == 1 && r[0]["id"] == second.as_str()
        });
    }
    record(b, &["get", &id]).fails_with("is deleted");
    let expired = record_event(&mut alice, "expired", &brief);
    assert_eq!(expired["record"]["creator"], b.id.as_str(), "{expired}");
    let shown = carol.events_of("record");
    assert!(
        !shown
            .iter()
            .any(|e| e["record"]["id"] == id.as_str() && e["change"] != "deleted"),
        "carol's second session showed earlier changes again: {shown:?}"
    );
    assert!(
        alice
            .events_of("record")
            .iter()
            .all(|e| e["record"]["type"] == seen[0]["type"]),
        "alice asked for builds only"
    );
    drop((alice, bob, carol));
}

#[test]
fn bad_types_attributes_queries_and_data_are_refused_and_nothing_is_written() {
    let g = group(&["alice"]);
    let a = &g[0];
    record(a, &["add", "--type", "5c8f0c57-4a8e-4c3b-9d2a-6e1fc0a70001"]).fails_with("peergroup's own");
    record(a, &["add", "--type", "has space"]).fails_with("bad record type");
    record(a, &["add", "--type", "x", "--expires", "3650d"]).fails_with("lives at most");
    let big = a.home.path().join("big");
    std::fs::write(&big, vec![0u8; 70_000]).unwrap();
    record(a, &["add", "--type", "x", "--data", &big.to_string_lossy()]).fails_with("over the 65536-byte record limit");
    record(a, &["search", "n>abc"]).fails_with("a range needs an integer or an RFC 3339 date");
    record(a, &["get", "01a22ea1-1798-8820-94d0-1147cb85dc27"]).fails_with("no record");
    let usage = record(a, &["add", "--type", "x", "--attr", "novalue"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    assert!(listed(a, &["list", "--json"]).is_empty(), "nothing was written");
}
