//! The honest side of an attack test: alice, bob and carol online in a full mesh,
//! chatting steadily (alice and bob take turns, 20 lines a second) in phases, each
//! phase measuring delivery latency; an attack runs as a phase, and its p99 must stay
//! within twice a calm phase's plus [`SLACK_MS`]. At the end, [`Honest::finish`] checks
//! that every line arrived exactly once and that no output or `--history` of an honest
//! member holds an attacker's text (marked [`EVIL`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Peer;
use crate::group::{
    GROUP, Member, QUIET, WAIT, assert_never_mentions, assert_no_duplicates, count_text, messages, three_online,
    wait_present,
};
use crate::unix_ns;

/// Steady chat: one line every this long, alternately from alice and bob (20 a second).
const INTERVAL: Duration = Duration::from_millis(50);
/// Shortest phase of steady chat; an attack that lasts longer stretches its phase.
pub const MIN_PHASE: Duration = Duration::from_millis(2500);
/// Absolute slack on the latency bound `attack p99 <= 2 x calm p99 + SLACK_MS`. On
/// loopback a calm p99 is 2 to 15 ms (p50 about 1 ms), and with about 100 deliveries a
/// phase the p99 is the second slowest: one scheduling hiccup of a debug build on two
/// cores shared with the attacker (up to 45 ms seen with a fuzzer busy on one) moves
/// it. 2x alone would fail on that noise rather than on harm done by the attack.
pub const SLACK_MS: f64 = 25.0;
/// Marks every text an attacker tries to get shown: no honest output may contain it.
pub const EVIL: &str = "EVIL";

/// Delivery latencies of one phase, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Deliveries measured (each line, at each of its two receivers).
    pub samples: usize,
    /// Median, in ms.
    pub p50: f64,
    /// 99th percentile, in ms.
    pub p99: f64,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms ({} deliveries)",
            self.p50, self.p99, self.samples
        )
    }
}

/// Latencies of `ns` (delivery times in ns).
fn latency(mut ns: Vec<i64>) -> Latency {
    assert!(!ns.is_empty(), "no latency samples");
    ns.sort_unstable();
    let at = |p: f64| {
        let i = ((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1;
        ns[i] as f64 / 1e6
    };
    Latency {
        samples: ns.len(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// One line of the steady chat.
#[derive(Debug)]
struct Sent {
    text: String,
    /// Index of the sender in [`Honest::peers`].
    from: usize,
    /// Unix ns just before the line was written to the sender's stdin.
    at_ns: i64,
}

/// alice, bob and carol online in a full mesh. Peers sit behind locks so that an attack
/// can watch their output while the steady chat writes to their stdin.
#[derive(Debug)]
pub struct Honest<'g> {
    /// alice, bob and carol, in that order (the order of every peer index).
    pub members: &'g [Member],
    peers: Vec<Mutex<Peer>>,
    /// Texts besides the steady chat that each peer must show (control records).
    extra: Mutex<Vec<(usize, String)>>,
    sent: Mutex<Vec<Sent>>,
}

impl<'g> Honest<'g> {
    /// `g[0..3]` online, each a neighbour of the other two.
    pub fn start(g: &'g [Member]) -> Honest<'g> {
        let (alice, mut bob, mut carol) = three_online(g);
        wait_present(&mut bob, &g[2]);
        wait_present(&mut carol, &g[1]);
        let h = Honest {
            members: &g[..3],
            peers: vec![Mutex::new(alice), Mutex::new(bob), Mutex::new(carol)],
            extra: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
        };
        for i in 0..3 {
            h.wait(i, "two neighbours", |evs| {
                evs.iter()
                    .rev()
                    .find(|e| e["event"] == "status")
                    .is_some_and(|e| e["neighbours"].as_u64() >= Some(2))
            });
        }
        h
    }

    /// Peer `i`, locked (the steady chat waits meanwhile).
    pub fn peer(&self, i: usize) -> MutexGuard<'_, Peer> {
        self.peers[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Peer `i`'s events so far.
    pub fn events(&self, i: usize) -> Vec<Value> {
        self.peer(i).events()
    }

    /// Waits until `cond` holds over peer `i`'s events; panics after [`WAIT`].
    #[track_caller]
    pub fn wait(&self, i: usize, what: &str, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let events = self.events(i);
            if cond(&events) {
                return events;
            }
            assert!(
                start.elapsed() < WAIT,
                "{}: no {what} within {WAIT:?}",
                self.members[i].name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until alice, bob and carol each show a message with `text` (a control
    /// record an attacker sent along: once the others have it, whatever alice would have
    /// forwarded before it has arrived too), and expects it in the final tally.
    pub fn wait_everywhere(&self, text: &str) {
        for i in 0..3 {
            self.wait(i, &format!("message {text:?}"), |evs| count_text(evs, text) > 0);
            self.extra.lock().unwrap().push((i, text.to_string()));
        }
    }

    /// Runs `attack` while alice and bob chat steadily (at least [`MIN_PHASE`], longer
    /// if the attack lasts longer), waits until every line reached the two other honest
    /// members, and returns the delivery latencies with what the attack returned.
    pub fn phase<R>(&self, label: &str, attack: impl FnOnce() -> R) -> (Latency, R) {
        let done = AtomicBool::new(false);
        let (sent, result) = std::thread::scope(|scope| {
            let pump = scope.spawn(|| {
                let start = Instant::now();
                let mut sent = Vec::new();
                for n in 0u32.. {
                    if done.load(Ordering::Relaxed) && start.elapsed() >= MIN_PHASE {
                        break;
                    }
                    let due = start + INTERVAL * n;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let from = n as usize % 2;
                    let text = format!("{label} {n}");
                    let mut peer = self.peer(from);
                    let at_ns = unix_ns();
                    peer.send(&text);
                    drop(peer);
                    sent.push(Sent { text, from, at_ns });
                }
                sent
            });
            let result = attack();
            done.store(true, Ordering::Relaxed);
            (pump.join().expect("steady chat"), result)
        });
        // Every line reaches both other members.
        let start = Instant::now();
        let mut samples = Vec::new();
        for i in 0..3 {
            loop {
                let shown: HashMap<String, i64> = self
                    .events(i)
                    .iter()
                    .filter(|e| e["event"] == "message")
                    .filter_map(|e| Some((e["text"].as_str()?.to_string(), e["recv_ns"].as_i64()?)))
                    .collect();
                let missing: Vec<&str> = sent
                    .iter()
                    .filter(|s| s.from != i && !shown.contains_key(&s.text))
                    .map(|s| s.text.as_str())
                    .collect();
                if missing.is_empty() {
                    samples.extend(
                        sent.iter()
                            .filter(|s| s.from != i)
                            .map(|s| (shown[&s.text] - s.at_ns, i, s.text.clone())),
                    );
                    break;
                }
                assert!(
                    start.elapsed() < WAIT,
                    "{label}: {} never showed {} of the steady chat's lines, e.g. {:?}",
                    self.members[i].name,
                    missing.len(),
                    &missing[..missing.len().min(5)]
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.sent.lock().unwrap().extend(sent);
        let (_, worst_at, worst_text) = samples.iter().max().cloned().expect("samples");
        let l = latency(samples.into_iter().map(|(ns, _, _)| ns).collect());
        eprintln!(
            "{label}: {l}; slowest to {} ({worst_text:?})",
            self.members[worst_at].name
        );
        (l, result)
    }

    /// The final tally: after a quiet moment, each peer showed every line of the steady
    /// chat from the others and every control text exactly once, and nothing else; no
    /// output or `--history` of an honest member holds an attacker's text (the stores
    /// are checked after each attack: see [`crate::adversary::assert_not_stored`]).
    pub fn finish(self) {
        std::thread::sleep(QUIET);
        let sent = self.sent.into_inner().unwrap();
        let extra = self.extra.into_inner().unwrap();
        for (i, m) in self.members.iter().enumerate() {
            let peer = self.peers[i].lock().unwrap_or_else(|e| e.into_inner());
            let events = peer.events();
            let mut shown = assert_no_duplicates(m.name, &messages(&events));
            shown.sort();
            let mut expected: Vec<String> = sent
                .iter()
                .filter(|s| s.from != i)
                .map(|s| s.text.clone())
                .chain(extra.iter().filter(|(j, _)| *j == i).map(|(_, t)| t.clone()))
                .collect();
            expected.sort();
            assert_eq!(shown, expected, "{}: messages shown", m.name);
            assert_never_mentions(&peer, EVIL, "no attacker's record may be shown");
            assert!(
                peer.events_of("error").is_empty(),
                "{} reported errors: {:?}",
                m.name,
                peer.events_of("error")
            );
            let history = m
                .home
                .run("group-chat", &["--identity", m.name, "--group", GROUP, "--history"])
                .ok();
            assert!(
                !history.stdout.contains(EVIL),
                "{}'s history holds an attacker's text:\n{}",
                m.name,
                history.stdout
            );
        }
    }

    /// Runs `attack` (given the phase's label) as a phase of steady chat and checks the
    /// latency bound `p99 <= 2 x calm p99 + SLACK_MS`. A phase that misses it runs once
    /// more with a fresh attack, which must meet it: with about 100 deliveries a phase,
    /// one message the sender's node picked up late (both receivers see it late) sets
    /// the p99, and a core taken by something else does that now and then; harm done by
    /// the attack shows again.
    #[track_caller]
    pub fn attack<R>(&self, label: &str, what: &str, calm: Latency, mut attack: impl FnMut(&str) -> R) -> R {
        let bound = 2.0 * calm.p99 + SLACK_MS;
        let mut label = label.to_string();
        for round in 1..=2 {
            let (l, result) = self.phase(&label, || attack(&label));
            eprintln!(
                "LATENCY {what}: calm p50 {:.1} / p99 {:.1} ms, attack p50 {:.1} / p99 {:.1} ms (bound {bound:.1} ms)",
                calm.p50, calm.p99, l.p50, l.p99
            );
            if l.p99 <= bound {
                return result;
            }
            assert!(
                round == 1,
                "{what}: p99 delivery latency {:.1} ms under attack (twice), over 2 x {:.1} ms calm + {SLACK_MS} ms",
                l.p99,
                calm.p99
            );
            eprintln!("{what}: over the bound; once more, in case that was a hiccup");
            label = format!("{label} again");
        }
        unreachable!()
    }
}

/// How many `connection` events with `change` for `member` are in `events`.
pub fn conns(events: &[Value], change: &str, member: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == "connection" && e["change"] == change && e["member"] == member)
        .count()
}

/// Asserts that no event of `h`'s peers names `member` (no connection, no presence).
#[track_caller]
pub fn assert_unheard_of(h: &Honest, member: &str, who: &str) {
    for i in 0..3 {
        for e in h.events(i) {
            let names_it = e["member"] == member
                || e["from"] == member
                || e["members"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|m| m["member"] == member));
            assert!(!names_it, "{}: heard of {who}: {e}", h.members[i].name);
        }
    }
}

/// Alice's failed-handshake reports whose reason contains `needle`.
pub fn refusals(h: &Honest, needle: &str) -> usize {
    h.events(0)
        .iter()
        .filter(|e| {
            e["event"] == "connection"
                && e["change"] == "failed"
                && e["member"].is_null()
                && e["reason"].as_str().is_some_and(|r| r.contains(needle))
        })
        .count()
}

/// Whether `member` is present after `events` (its last presence change).
pub fn present(events: &[Value], member: &str) -> bool {
    let mut present = false;
    for e in events
        .iter()
        .filter(|e| e["event"] == "member" && e["member"] == member)
    {
        match e["change"].as_str() {
            Some("joined") | Some("updated") => present = true,
            Some("left") => present = false,
            _ => {}
        }
    }
    present
}

/// Asserts that no honest peer reported losing a connection to another honest one.
#[track_caller]
pub fn assert_honest_links_held(h: &Honest) {
    for i in 0..3 {
        for (j, other) in h.members.iter().enumerate() {
            if i != j {
                assert_eq!(
                    conns(&h.events(i), "down", &other.id),
                    0,
                    "{} lost its connection to {}",
                    h.members[i].name,
                    other.name
                );
            }
        }
    }
}
