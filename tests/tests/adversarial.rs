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
//! one more try: see `Honest::attack`). Alice is always the member attacked.
//!
//! The tests take turns (one lock): each compares latencies of its own calm and attack
//! phases, which another test's load on the same two cores would blur.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::record::{self, CHAT_TYPE, MEMBERSHIP_TYPE, PRESENCE_TYPE, Record};
use common::wire::{Message, PROTOCOL_VERSION, Purpose};
use peergroup_tests::group::*;
use peergroup_tests::{Home, Peer, free_addr, run_command};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

/// Steady chat: one line every this long, alternately from alice and bob (20 a second).
const INTERVAL: Duration = Duration::from_millis(50);
/// Shortest phase of steady chat; an attack that lasts longer stretches its phase.
const MIN_PHASE: Duration = Duration::from_millis(2500);
/// Absolute slack on the latency bound `attack p99 <= 2 x calm p99 + SLACK_MS`. On
/// loopback a calm p99 is 2 to 15 ms (p50 about 1 ms), and with about 100 deliveries a
/// phase the p99 is the second slowest: one scheduling hiccup of a debug build on two
/// cores shared with the attacker (up to 45 ms seen with a fuzzer busy on one) moves
/// it. 2x alone would fail on that noise rather than on harm done by the attack.
const SLACK_MS: f64 = 25.0;
/// Marks every text an attacker tries to get shown: no honest output may contain it.
const EVIL: &str = "EVIL";
/// A group's default message lifetime (7 days), in ms.
const MESSAGE_LIFETIME_MS: i64 = 7 * 86_400 * 1000;

static TURN: Mutex<()> = Mutex::new(());

/// Runs one test at a time in this file (see the module comment).
fn take_turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

fn unix_ms() -> i64 {
    unix_ns() / 1_000_000
}

// ---- the group -----------------------------------------------------------------------

/// How long a member's membership lasts, as `invite-create` is asked for it.
#[derive(Debug, Clone, Copy)]
enum Term {
    /// Invited now for the group's member lifetime.
    Normal,
    /// Invited two days ago for one day: expired a day ago.
    Expired,
    /// Invited (as if) two days from now: not valid yet.
    NotYetValid,
    /// Invited now for this many seconds.
    Seconds(u64),
}

/// An RFC 3339 time `days` from now (negative: in the past).
fn days_from_now(days: i64) -> String {
    let secs = unix_ms() / 1000 + days * 86_400;
    common::clock::format_rfc3339(common::clock::from_unix(secs))
}

/// Runs `tool` in `home` with stdin `input`, as if the clock said `fake_now`.
fn run_at(home: &Home, tool: &str, args: &[&str], input: &str, fake_now: Option<&str>) -> String {
    let mut cmd = home.command(tool, args);
    if let Some(t) = fake_now {
        cmd.env("PEERGROUP_FAKE_NOW", t);
    }
    run_command(cmd, Some(input.as_bytes())).ok().stdout
}

/// A group of `specs` in homes of their own: the first creates it two days in the past
/// (so that back-dated and future memberships fit in the root's validity) and invites
/// the others with their terms. Everyone listens on a loopback port of its own.
fn make_group(specs: &[(&'static str, Term)]) -> Vec<Member> {
    let past = days_from_now(-2);
    let future = days_from_now(2);
    let members: Vec<Member> = specs
        .iter()
        .map(|&(name, _)| {
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
    run_at(
        &creator.home,
        "group-create",
        &["--identity", creator.name, "--listen", &creator.addr, GROUP],
        "",
        Some(&past),
    );
    for (m, &(_, term)) in members.iter().zip(specs).skip(1) {
        let xml = m.home.run("identity-export", &[m.name]).ok().stdout;
        let seconds;
        let (at, extra): (Option<&str>, Vec<&str>) = match term {
            Term::Normal => (None, vec![]),
            Term::Expired => (Some(&past), vec!["--valid-for", "1d"]),
            Term::NotYetValid => (Some(&future), vec![]),
            Term::Seconds(s) => {
                seconds = format!("{s}s");
                (None, vec!["--valid-for", &seconds])
            }
        };
        let mut args = vec!["--identity", creator.name, "--group", GROUP];
        args.extend(extra);
        args.push("-");
        let invitation = run_at(&creator.home, "invite-create", &args, &xml, at);
        run_at(
            &m.home,
            "group-join",
            &["--identity", m.name, "--listen", &m.addr, "-"],
            &invitation,
            at,
        );
    }
    members
}

/// A member's credentials, loaded from its home, to sign records and speak TLS with.
struct Creds {
    id: [u8; 20],
    identity: common::identity::Identity,
    membership: common::membership::Membership,
}

impl Creds {
    fn of(m: &Member) -> Creds {
        let home = common::home::Home::resolve(Some(m.home.path())).unwrap();
        let identity = common::identity::Identity::load(&home, m.name).unwrap();
        let membership = common::membership::find(&home, m.name, GROUP).unwrap();
        Creds {
            id: record::member_bytes(&m.id).unwrap(),
            identity,
            membership,
        }
    }

    /// The membership certificate then its chain, DER.
    fn chain(&self) -> Vec<Vec<u8>> {
        let m = &self.membership;
        std::iter::once(&m.membership)
            .chain(&m.chain)
            .map(|c| c.der.clone())
            .collect()
    }

    /// Signs `r` with this member's identity key, for the group.
    fn sign(&self, mut r: Record) -> Record {
        r.sign(&self.membership.group.id, &self.identity.key).unwrap();
        r
    }

    /// The membership record the member's own node publishes.
    fn membership_record(&self) -> Record {
        let m = &self.membership;
        let mut r = Record::new(MEMBERSHIP_TYPE, self.id, unix_ms(), 0);
        r.id = record::per_member_id(&MEMBERSHIP_TYPE, &self.id);
        r.version = m.membership.not_before.unix_timestamp() as u64;
        r.expires_ms = m.membership.not_after.unix_timestamp() * 1000;
        r.data = common::node::encode_chain(&m.membership, &m.chain);
        self.sign(r)
    }

    /// The store of this member's node, read beside it.
    fn store(&self) -> common::store::Store {
        common::store::Store::open_read_only(&self.membership.dir.join(common::store::STORE_FILE)).unwrap()
    }
}

/// A chat record by `creator` (also its modifier) with the group's lifetime, unsigned.
fn chat(creator: [u8; 20], text: &str, created_ms: i64) -> Record {
    let mut r = Record::new(CHAT_TYPE, creator, created_ms, MESSAGE_LIFETIME_MS);
    r.data = text.as_bytes().to_vec();
    r
}

// ---- the honest members and their steady chat ------------------------------------------

/// Delivery latencies of one phase, in ms.
#[derive(Debug, Clone, Copy)]
struct Latency {
    samples: usize,
    p50: f64,
    p99: f64,
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
struct Sent {
    text: String,
    /// Index of the sender in [`Honest::peers`].
    from: usize,
    /// Unix ns just before the line was written to the sender's stdin.
    at_ns: i64,
}

/// alice, bob and carol online in a full mesh. Peers sit behind locks so that an attack
/// can watch their output while the steady chat writes to their stdin.
struct Honest<'g> {
    members: &'g [Member],
    peers: Vec<Mutex<Peer>>,
    /// Texts besides the steady chat that each peer must show (control records).
    extra: Mutex<Vec<(usize, String)>>,
    sent: Mutex<Vec<Sent>>,
}

impl<'g> Honest<'g> {
    /// `g[0..3]` online, each a neighbour of the other two.
    fn start(g: &'g [Member]) -> Honest<'g> {
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

    fn peer(&self, i: usize) -> MutexGuard<'_, Peer> {
        self.peers[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn events(&self, i: usize) -> Vec<Value> {
        self.peer(i).events()
    }

    /// Waits until `cond` holds over peer `i`'s events; panics after [`WAIT`].
    #[track_caller]
    fn wait(&self, i: usize, what: &str, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
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
    fn wait_everywhere(&self, text: &str) {
        for i in 0..3 {
            self.wait(i, &format!("message {text:?}"), |evs| count_text(evs, text) > 0);
            self.extra.lock().unwrap().push((i, text.to_string()));
        }
    }

    /// Runs `attack` while alice and bob chat steadily (at least [`MIN_PHASE`], longer
    /// if the attack lasts longer), waits until every line reached the two other honest
    /// members, and returns the delivery latencies with what the attack returned.
    fn phase<R>(&self, label: &str, attack: impl FnOnce() -> R) -> (Latency, R) {
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
    /// output, `--history` or store of an honest member holds an attacker's text.
    fn finish(self) {
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
}

impl Honest<'_> {
    /// Runs `attack` (given the phase's label) as a phase of steady chat and checks the
    /// latency bound `p99 <= 2 x calm p99 + SLACK_MS`. A phase that misses it runs once
    /// more with a fresh attack, which must meet it: with about 100 deliveries a phase,
    /// one message the sender's node picked up late (both receivers see it late) sets
    /// the p99, and a core taken by something else does that now and then; harm done by
    /// the attack shows again.
    #[track_caller]
    fn attack<R>(&self, label: &str, what: &str, calm: Latency, mut attack: impl FnMut(&str) -> R) -> R {
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
fn conns(events: &[Value], change: &str, member: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == "connection" && e["change"] == change && e["member"] == member)
        .count()
}

/// Asserts that no event of `h`'s peers names `member` (no connection, no presence).
#[track_caller]
fn assert_unheard_of(h: &Honest, member: &str, who: &str) {
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

// ---- TLS as an attacker ----------------------------------------------------------------

/// Accepts any server certificate: the attacker wants to reach alice's verifier, not to
/// be stopped by its own.
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A TLS 1.3 client config presenting `chain` (leaf first) with `key`.
fn client_config(chain: Vec<Vec<u8>>, key: &rcgen::KeyPair) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let certs = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(algorithms)))
        .with_client_auth_cert(certs, key)
        .unwrap();
    config.enable_sni = false;
    Arc::new(config)
}

/// Dials `addr` with `config`, sends a Hello and waits for the member's answer. A
/// member that accepted would send its Hello; `Ok` is how long it took to refuse (an
/// alert, a reset or end of stream), `Err` says what happened instead.
fn tls_attempt(config: &Arc<ClientConfig>, addr: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), common::tls::server_name(None).unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        purpose: Purpose::Neighbour,
        addresses: Vec::new(),
    };
    // The member may refuse before this is written: that is its answer.
    let _ = s.write_all(&hello.encode()).and_then(|_| s.flush());
    let mut got = 0;
    let mut buf = [0u8; 4096];
    while start.elapsed() < WAIT {
        match s.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(n) => {
                got += n;
                return Err(format!("accepted: the member sent {got} bytes of frames"));
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Ok(start.elapsed()),
        }
    }
    Err(format!("still open after {WAIT:?}"))
}

/// Tries `config` against alice again and again for the phase; each try must be refused
/// within 5 s. Returns how many were made.
fn keep_knocking(addr: &str, config: &Arc<ClientConfig>, who: &str) -> usize {
    let start = Instant::now();
    let mut tries = 0;
    while start.elapsed() < MIN_PHASE {
        match tls_attempt(config, addr) {
            Ok(t) => assert!(t < Duration::from_secs(5), "{who}: refused only after {t:?}"),
            Err(e) => panic!("{who}: {e}"),
        }
        tries += 1;
        // A persistent attacker, not a handshake flood: 10 tries a second.
        std::thread::sleep(Duration::from_millis(100));
    }
    tries
}

/// Alice's failed-handshake reports whose reason contains `needle`.
fn refusals(h: &Honest, needle: &str) -> usize {
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

/// Credentials no member holds, each a description, a chain (DER, leaf first) and its
/// key: self-signed certificates of several kinds, and a membership of this group issued
/// by a look-alike root with the group's id.
fn forged_credentials(group: common::membership::GroupInfo) -> Vec<(&'static str, Vec<Vec<u8>>, rcgen::KeyPair)> {
    use common::pki::{self, CertSpec, Claim, KeyType, Role};
    let now = common::clock::now();
    let from = common::clock::from_unix(now.unix_timestamp() - 60);
    let until = common::clock::add(now, Duration::from_secs(3600));
    let spec = |claim: Claim| CertSpec {
        common_name: "mallory".into(),
        claim,
        not_before: from,
        not_after: until,
    };
    let mut out = Vec::new();
    // A stranger's identity certificate (what identity-export makes), self-signed.
    let key = KeyType::Ed25519.generate().unwrap();
    out.push((
        "a self-signed identity certificate",
        vec![pki::self_signed(&spec(Claim::Identity), &key).unwrap()],
        key,
    ));
    // A self-signed certificate claiming admin membership of this very group.
    let key = KeyType::Ed25519.generate().unwrap();
    let claim = Claim::Membership {
        group: group.id,
        member: pki::member_id(&pki::spki_of(&key)),
        role: Role::Admin,
    };
    out.push((
        "a self-signed admin membership of this group",
        vec![pki::self_signed(&spec(claim), &key).unwrap()],
        key,
    ));
    // A membership issued by a look-alike root of the same group id.
    let key = KeyType::Ed25519.generate().unwrap();
    let root_key = KeyType::Ed25519.generate().unwrap();
    let root = pki::self_signed(&spec(Claim::Root { group: group.id }), &root_key).unwrap();
    let claim = Claim::Membership {
        group: group.id,
        member: pki::member_id(&pki::spki_of(&key)),
        role: Role::Admin,
    };
    let leaf = pki::issue(&spec(claim), &pki::spki_of(&key), &root, &root_key).unwrap();
    out.push(("a membership from a look-alike root", vec![leaf, root], key));
    // An ordinary self-signed TLS certificate (P-256), nothing peergroup about it.
    let generic = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    out.push((
        "a generic self-signed certificate",
        vec![generic.cert.der().to_vec()],
        generic.signing_key,
    ));
    out
}

// ---- records as an attacker ------------------------------------------------------------

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// `attacker`'s own connection to alice, once alice has taken it up (frames sent before
/// alice knows the connection would not be looked at, and the test would prove nothing).
fn connect_to_alice(h: &Honest, attacker: &Member) -> Stream {
    let before = conns(&h.events(0), "up", &attacker.id);
    let s = member_connection(attacker, &h.members[0].addr);
    h.wait(0, &format!("{} connected", attacker.name), |evs| {
        conns(evs, "up", &attacker.id) > before
    });
    s
}

/// Sends each of `records` to alice in a Records frame of its own (flooded and sync
/// frames alternately), then a control record: a chat line `"{label}: control"` by
/// `attacker` (whose credentials are `c`), which alice must admit and forward. Once bob
/// and carol show it, alice has judged everything sent before it.
fn relay(h: &Honest, attacker: &Member, c: &Creds, records: &[Record], label: &str) {
    let control_text = format!("{label}: control");
    let control = c.sign(chat(c.id, &control_text, unix_ms()));
    let mut s = connect_to_alice(h, attacker);
    for (i, r) in records.iter().enumerate() {
        let frame = Message::Records {
            sync: i % 2 == 1,
            bodies: vec![r.encode()],
        };
        s.write_all(&frame.encode()).expect("send records");
    }
    let frame = Message::Records {
        sync: false,
        bodies: vec![control.encode()],
    };
    s.write_all(&frame.encode())
        .and_then(|_| s.flush())
        .expect("send records");
    h.wait_everywhere(&control_text);
    // A record alice admitted was flooded to bob and carol before the control record;
    // give a crossing sync a moment all the same.
    std::thread::sleep(Duration::from_millis(300));
}

/// Asserts that none of alice, bob and carol stored a record with `r`'s id, version and
/// signature.
#[track_caller]
fn assert_not_stored(stores: &[common::store::Store], r: &Record, what: &str) {
    for (i, store) in stores.iter().enumerate() {
        let held = store.get(&r.id).unwrap();
        assert!(
            held.as_ref().is_none_or(|held| held.signature != r.signature),
            "{what}: admitted by {}",
            ["alice", "bob", "carol"][i]
        );
    }
}

/// Whether `member` is present after `events` (its last presence change).
fn present(events: &[Value], member: &str) -> bool {
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

/// An attack phase in which `attacker` opens connection after connection, each sending
/// `bytes(n)` for the n-th, and each must be cut (see [`cut_off`]).
fn cut_phase(h: &Honest, attacker: &Member, what: &str, calm: Latency, bytes: impl Fn(u32) -> (&'static str, Vec<u8>)) {
    let cuts = h.attack(what, what, calm, |_| {
        let start = Instant::now();
        let mut cuts = Vec::new();
        for n in 0u32.. {
            if start.elapsed() >= MIN_PHASE {
                break;
            }
            let (label, b) = bytes(n);
            cuts.push(cut_off(h, attacker, label, &b));
        }
        cuts
    });
    eprintln!(
        "{what}: {} connections cut, the slowest after {:?}",
        cuts.len(),
        cuts.iter().max().unwrap()
    );
}

/// A connection of `attacker`'s to alice sends `bytes`: alice must cut it within 2 s
/// and report it down, saying why; returns how long the cut took.
fn cut_off(h: &Honest, attacker: &Member, what: &str, bytes: &[u8]) -> Duration {
    let mut s = connect_to_alice(h, attacker);
    let before = conns(&h.events(0), "down", &attacker.id);
    let cut = send_inside_tls(&mut s, bytes, Duration::from_secs(5));
    let cut = cut.unwrap_or_else(|| panic!("{what}: still connected after 5 s"));
    assert!(cut < Duration::from_secs(2), "{what}: cut off only after {cut:?}");
    let events = h.wait(0, &format!("{} down ({what})", attacker.name), |evs| {
        conns(evs, "down", &attacker.id) > before
    });
    let down = events
        .iter()
        .rfind(|e| e["event"] == "connection" && e["change"] == "down" && e["member"] == attacker.id.as_str())
        .unwrap();
    let reason = down["reason"].as_str().unwrap_or_default();
    assert!(
        ["frame", "record", "sync", "hello"].iter().any(|w| reason.contains(w)),
        "{what}: unclear reason: {down}"
    );
    cut
}

/// Pseudo-random bytes (xorshift), the same for the same seed.
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// One frame: length prefix, then `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Asserts that no honest peer reported losing a connection to another honest one.
#[track_caller]
fn assert_honest_links_held(h: &Honest) {
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

// ---- tests -----------------------------------------------------------------------------

#[test]
fn outsiders_without_a_valid_membership_are_refused_at_the_handshake() {
    let _turn = take_turn();
    let g = make_group(&[
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
    let g = make_group(&[
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
    relay(
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
    let dave_bytes = record::member_bytes(&dave.id).unwrap();
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
        relay(&h, mallory, &m, &[old_presence.clone(), old_presence.clone()], label);
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
    let stranger = record::member_bytes(&common::pki::member_id(&common::pki::spki_of(&stranger_key))).unwrap();
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
        relay(&h, mallory, &m, &records, label)
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
        relay(&h, mallory, &m, &records, label)
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
        |label| relay(&h, mallory, &m, &[late.clone(), backdated.clone()], label),
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
    let g = make_group(&[
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
    let g = make_group(&[
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
