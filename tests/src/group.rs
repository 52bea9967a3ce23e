//! A test group of members, each in its own home as on its own machine, and ways to
//! watch what they show: shared by the end-to-end tests of `group-chat`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Home, Peer, free_addr, run_command, unix_ms};

/// How long any one expected event may take to show up.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long to keep watching for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(1500);

/// One member: its own home (its own machine), identity and listen address.
#[derive(Debug)]
pub struct Member {
    pub name: &'static str,
    pub home: Home,
    pub addr: String,
    pub id: String,
}

impl Member {
    /// `group-chat --json` for this member in the test group, plus `extra`.
    pub fn chat(&self, extra: &[&str]) -> Peer {
        let mut args = vec!["--identity", self.name, "--group", GROUP, "--json"];
        args.extend_from_slice(extra);
        Peer::spawn(self.name, self.home.command("group-chat", &args))
    }

    /// `group-chat --json`, once it is listening.
    pub fn online(&self) -> Peer {
        let mut peer = self.chat(&[]);
        peer.wait_for("status listening", WAIT, |e| {
            e["event"] == "status" && e["listening"] == true
        });
        peer
    }
}

pub const GROUP: &str = "Friends";

/// Makes a group of `names`: the first creates it and invites the others, each in its
/// own home, every one listening on its own loopback port.
pub fn group(names: &[&'static str]) -> Vec<Member> {
    let addrs = names.iter().map(|_| free_addr()).collect();
    group_at(names, addrs, &[])
}

/// Makes a group of `names` listening on `addrs` (one each; these go into the
/// invitations), passing `create_args` to `group-create`.
pub fn group_at(names: &[&'static str], addrs: Vec<String>, create_args: &[&str]) -> Vec<Member> {
    assert_eq!(names.len(), addrs.len(), "one address per member");
    let mut addrs = addrs.into_iter();
    let creator = new_identity(names[0], addrs.next().expect("an address"));
    let mut args = vec!["--identity", creator.name, "--listen", &creator.addr];
    args.extend_from_slice(create_args);
    args.push(GROUP);
    creator.home.run("group-create", &args).ok();
    let mut members = vec![creator];
    for (&name, addr) in names[1..].iter().zip(addrs) {
        let m = invite(&members[0], name, addr);
        members.push(m);
    }
    members
}

/// A new identity `name` in a home of its own, to listen on `addr`.
fn new_identity(name: &'static str, addr: String) -> Member {
    let home = Home::new();
    home.run("identity-export", &[name]).ok();
    let id = member_id(&home, name);
    Member { name, home, addr, id }
}

/// `inviter` invites a new identity `name`, which joins to listen on `addr`. The
/// invitation carries the addresses of the inviter and of the members its store
/// knows are present, as when mailed at that moment.
pub fn invite(inviter: &Member, name: &'static str, addr: String) -> Member {
    let m = new_identity(name, addr);
    let xml = m.home.run("identity-export", &[m.name]).ok().stdout;
    let invitation = inviter
        .home
        .run_with(
            "invite-create",
            &["--identity", inviter.name, "--group", GROUP, "-"],
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
    m
}

pub fn member_id(home: &Home, name: &str) -> String {
    let list = home.run("identity-export", &["--list"]).ok().stdout;
    list.lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|row| row[0] == name)
        .unwrap_or_else(|| panic!("{name} not in identity-export --list:\n{list}"))[1]
        .to_string()
}

/// The `message` events in `events`.
pub fn messages(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["event"] == "message").collect()
}

/// How many `message` events carry `text`.
pub fn count_text(events: &[Value], text: &str) -> usize {
    messages(events).iter().filter(|e| e["text"] == text).count()
}

/// Waits until `peer` has shown a message with each of `texts`.
#[track_caller]
pub fn wait_texts(peer: &mut Peer, texts: &[&str]) -> Vec<Value> {
    let what = format!("messages {texts:?}");
    peer.wait_until(&what, WAIT, |evs| texts.iter().all(|t| count_text(evs, t) > 0))
}

/// Every text in `sent` (one list per member) but member `i`'s own: what `i` should see.
pub fn sent_by_others(sent: &[Vec<String>], i: usize) -> Vec<&str> {
    sent.iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .flat_map(|(_, t)| t.iter().map(String::as_str))
        .collect()
}

/// Waits until `peer` reports `member` with `change`.
#[track_caller]
pub fn wait_member(peer: &mut Peer, change: &str, member: &Member) -> Value {
    let what = format!("member {change} for {}", member.name);
    peer.wait_for(&what, WAIT, |e| {
        e["event"] == "member" && e["change"] == change && e["member"] == member.id.as_str()
    })
}

/// Waits until `peer` knows `member` is present (its presence record arrived).
#[track_caller]
pub fn wait_present(peer: &mut Peer, member: &Member) {
    let what = format!("{} present", member.name);
    peer.wait_until(&what, WAIT, |evs| {
        let mut present = false;
        for e in evs
            .iter()
            .filter(|e| e["event"] == "member" && e["member"] == member.id.as_str())
        {
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
/// alice, bob and carol online, bob and carol synchronized, and alice seeing both.
pub fn three_online(g: &[Member]) -> (Peer, Peer, Peer) {
    let mut alice = g[0].online();
    let mut bob = g[1].online();
    let mut carol = g[2].online();
    wait_ready(&mut bob);
    wait_ready(&mut carol);
    wait_present(&mut alice, &g[1]);
    wait_present(&mut alice, &g[2]);
    (alice, bob, carol)
}

pub fn wait_ready(peer: &mut Peer) {
    peer.wait_for("ready", WAIT, |e| e["event"] == "ready");
}

/// Asserts no message id or text was shown twice, and returns the texts shown.
#[track_caller]
pub fn assert_no_duplicates(label: &str, events: &[&Value]) -> Vec<String> {
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
    events
        .iter()
        .map(|e| e["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Sends `text` from `from` and waits until every peer in `to` shows it.
#[track_caller]
pub fn say_and_see(from: &mut Peer, text: &str, to: &mut [&mut Peer]) {
    from.send(text);
    for p in to.iter_mut() {
        wait_texts(p, &[text]);
    }
}

/// Connects to `addr`, writes `junk`, and returns how long the member took to cut the
/// connection (end of stream or an error on read), or `None` if it was still open after
/// `limit`. Whatever it sent back is returned too.
pub fn junk_client(addr: &str, junk: &[u8], limit: Duration) -> (Option<Duration>, Vec<u8>) {
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
pub fn assert_never_mentions(peer: &Peer, text: &str, why: &str) {
    let hits: Vec<String> = peer.lines().into_iter().filter(|l| l.contains(text)).collect();
    assert!(
        hits.is_empty(),
        "{}: {why}, yet printed:\n{}",
        peer.label(),
        hits.join("\n")
    );
}

/// A member's own TLS connection to `addr`, made from the test with the member's
/// credentials, past the handshake and the Hello exchange: from here on it can send
/// frames no honest peer would.
pub fn member_connection(member: &Member, addr: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    try_member_connection(member, addr, WAIT).unwrap_or_else(|e| panic!("{} to {addr}: {e}", member.name))
}

/// [`member_connection`] for `purpose` (a neighbour, or a direct whisper connection).
pub fn member_connection_for(
    member: &Member,
    addr: &str,
    purpose: common::wire::Purpose,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    try_member_connection_for(member, addr, WAIT, purpose).unwrap_or_else(|e| panic!("{} to {addr}: {e}", member.name))
}

/// Like [`member_connection`], but the TCP connect, the TLS handshake and the member's
/// Hello must all be done within `limit`; says why not instead of panicking.
pub fn try_member_connection(
    member: &Member,
    addr: &str,
    limit: Duration,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    try_member_connection_for(member, addr, limit, common::wire::Purpose::Neighbour)
}

/// [`try_member_connection`] for `purpose`.
pub fn try_member_connection_for(
    member: &Member,
    addr: &str,
    limit: Duration,
    purpose: common::wire::Purpose,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    member_connection_with(member, addr, limit, purpose, None)
}

/// A member connection whose TCP receive buffer is `rcvbuf` bytes (set before
/// connecting, so the window the peer sees stays small): a reader that reads nothing
/// then backs up the peer's writer at once, as over a slow link, not after megabytes of
/// loopback buffers.
pub fn member_connection_with(
    member: &Member,
    addr: &str,
    limit: Duration,
    purpose: common::wire::Purpose,
    rcvbuf: Option<usize>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let home = common::home::Home::resolve(Some(member.home.path())).unwrap();
    let identity = common::identity::Identity::load(&home, member.name).unwrap();
    let membership = common::membership::find(&home, member.name, GROUP).unwrap();
    let tls = common::tls::configs(&identity, &membership).unwrap();
    let conn = rustls::ClientConnection::new(tls.client.clone(), common::tls::server_name(None).unwrap()).unwrap();
    let start = Instant::now();
    let left = || limit.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
    let to = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("not an address: {addr}"));
    let tcp = match rcvbuf {
        None => TcpStream::connect_timeout(&to, left()).map_err(|e| format!("connect: {e}"))?,
        Some(size) => {
            let sock = socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None)
                .map_err(|e| format!("socket: {e}"))?;
            sock.set_recv_buffer_size(size).map_err(|e| format!("SO_RCVBUF: {e}"))?;
            sock.connect_timeout(&to.into(), left())
                .map_err(|e| format!("connect: {e}"))?;
            sock.into()
        }
    };
    // The handshake runs inside the first write; its reads wait at most what is left.
    tcp.set_read_timeout(Some(left())).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let hello = common::wire::Message::Hello {
        version: common::wire::PROTOCOL_VERSION,
        purpose,
        addresses: Vec::new(),
        nonce: 1,
    };
    s.write_all(&hello.encode())
        .and_then(|_| s.flush())
        .map_err(|e| format!("TLS handshake and hello after {:?}: {e}", start.elapsed()))?;
    // The member's Hello back: the first frame, a Hello.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 5 || got.len() < 4 + u32::from_be_bytes(got[..4].try_into().unwrap()) as usize {
        if start.elapsed() >= limit {
            return Err(format!("no hello within {limit:?}"));
        }
        s.sock.set_read_timeout(Some(left())).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Err("closed during the hello".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("hello: {e}")),
        }
    }
    let len = u32::from_be_bytes(got[..4].try_into().unwrap()) as usize;
    let hello = common::wire::Message::decode(&got[4..4 + len]).map_err(|e| format!("first frame: {e}"))?;
    if !matches!(hello, common::wire::Message::Hello { .. }) {
        return Err(format!("first frame: {hello:?}"));
    }
    // Callers poll with short reads from here on.
    s.sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    Ok(s)
}

/// Sends `bytes` inside the TLS session and returns how long the member took to cut it
/// (end of stream or an error on read), or `None` if it was still open after `limit`.
pub fn send_inside_tls(
    s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    bytes: &[u8],
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let _ = s.write_all(bytes).and_then(|_| s.flush());
    let mut buf = [0u8; 16384];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// What `member`'s store holds: each chat text with the number of records carrying it,
/// and SQLite's `PRAGMA integrity_check` verdict ("ok"). Opened read-only, so it may
/// run beside a `group-chat` of that member.
pub fn stored_chat(member: &Member) -> (HashMap<String, usize>, String) {
    use common::record::CHAT_TYPE;
    use common::store::{STORE_FILE, Store};
    let home = common::home::Home::resolve(Some(member.home.path())).expect("home");
    let m = common::membership::find(&home, member.name, GROUP).expect("membership");
    let store = Store::open_read_only(&m.dir.join(STORE_FILE)).expect("open store");
    let mut texts: HashMap<String, usize> = HashMap::new();
    for r in store.of_type(&CHAT_TYPE).expect("read chat records") {
        *texts.entry(String::from_utf8_lossy(&r.data).into_owned()).or_default() += 1;
    }
    (texts, store.integrity_check().expect("integrity check"))
}

/// How long a member's membership lasts, as `invite-create` is asked for it.
#[derive(Debug, Clone, Copy)]
pub enum Term {
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
pub fn group_with_terms(specs: &[(&'static str, Term)]) -> Vec<Member> {
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
