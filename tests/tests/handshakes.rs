//! Handshake starvation (issue 10, item 6): a stranger holding many idle TCP connections
//! must not keep members out. Guards the per-address limit on pending handshakes (the
//! excess refused at once, so the accept loop never waits behind one host) and the short
//! deadline for a connection's first bytes. Before them, the first 64 idle connections
//! held every handshake slot for 10 s, the accept loop stopped accepting, the next 129
//! filled the kernel's accept queue, and a member's TCP connect went unanswered.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::node::conn::{FIRST_BYTES_TIMEOUT, MAX_PENDING_PER_ADDRESS};
use peergroup_tests::group::*;
use peergroup_tests::skip_or_fail;
use rustix::process::{Pid, Resource, Rlimit, getrlimit, prlimit, setrlimit};
use socket2::{Domain, Socket, Type};

/// Idle connections the stranger holds: far more than the node's 64 handshake slots, and
/// about the whole of the usual open-file limit.
const IDLE: usize = 1000;
/// The stranger's address: another loopback address than the members' 127.0.0.1, as
/// another host would have.
const STRANGER: &str = "127.0.0.2:0";
/// How long a member may take to get in while the stranger holds its connections.
const ADMISSION: Duration = Duration::from_secs(2);
/// The open-file limit most systems give a process (`ulimit -n`): the member under
/// attack runs with it, so one descriptor held per idle connection would exhaust it.
const USUAL_NOFILE: u64 = 1024;

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether the member has closed `s` (end of stream or a reset); `s` is non-blocking.
fn closed_by_peer(s: &Socket) -> bool {
    let mut byte = [0u8; 1];
    let mut reader = s;
    match reader.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn a_thousand_idle_connections_from_one_address_do_not_keep_a_member_out() {
    // The stranger's sockets are ours: lift our soft open-file limit to the hard one.
    let needed = IDLE as u64 + 100;
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|soft| soft < needed) {
        let hard = limit.maximum.unwrap_or(u64::MAX);
        if hard < needed {
            skip_or_fail(&format!(
                "the open-file hard limit is {hard}, and {IDLE} idle connections need {needed}"
            ));
            return;
        }
        let raised = Rlimit {
            current: Some(hard.min(1 << 20)),
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).expect("raise the open-file soft limit");
    }

    let g = group(&["alice", "bob"]);
    let bob = g[1].online();
    let pid = Pid::from_raw(bob.pid() as i32).expect("bob's pid");
    let usual = Rlimit {
        current: Some(USUAL_NOFILE),
        maximum: getrlimit(Resource::Nofile).maximum,
    };
    prlimit(Some(pid), Resource::Nofile, usual).expect("set bob's open-file limit");
    let fds_before = open_fds(bob.pid());

    let target: SocketAddr = g[1].addr.parse().unwrap();
    let from: SocketAddr = STRANGER.parse().unwrap();
    let opening = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
        if let Err(e) = s.bind(&from.into()) {
            assert_eq!(i, 0, "binding idle connection {i} to {STRANGER}: {e}");
            skip_or_fail(&format!("cannot bind {STRANGER} (loopback beyond 127.0.0.1): {e}"));
            return;
        }
        // A full accept queue drops the SYN and the kernel resends it after 1 s, then 3 s:
        // bob is draining it if the second try gets through.
        if let Err(e) = s.connect_timeout(&target.into(), Duration::from_secs(3)) {
            eprintln!("idle connection {i} failed ({e}): bob's accept queue is full");
            break;
        }
        idle.push(s);
    }
    eprintln!(
        "{} idle connections from {STRANGER} open after {:?}",
        idle.len(),
        opening.elapsed()
    );
    let fds_during = open_fds(bob.pid());

    // A member knocks from 127.0.0.1 and must be in (TLS and the Hello exchange) at once.
    let knock = Instant::now();
    let got_in = try_member_connection(&g[0], &g[1].addr, ADMISSION);
    let took = knock.elapsed();
    let open = idle.len();
    let verdict = if got_in.is_ok() { "got in" } else { "was kept out" };
    eprintln!("alice {verdict} after {took:?} while {open} idle connections were open");
    let s = got_in.unwrap_or_else(|e| panic!("alice was kept out by {open} idle connections: {e} (after {took:?})"));
    assert!(took <= ADMISSION, "alice got in only after {took:?}");
    drop(s);
    assert_eq!(idle.len(), IDLE, "bob stopped accepting the stranger's connections");

    // What bob did with the idle connections: closed all but a few at once, held no
    // descriptor for them, and cut the few he kept waiting for their first bytes.
    for s in &idle {
        s.set_nonblocking(true).unwrap();
    }
    let closed_at_once = idle.iter().filter(|s| closed_by_peer(s)).count();
    eprintln!(
        "bob closed {closed_at_once} of {IDLE} at once; {fds_before} descriptors open before, {fds_during} during"
    );
    assert!(
        closed_at_once >= IDLE - MAX_PENDING_PER_ADDRESS,
        "bob closed only {closed_at_once} of {IDLE} idle connections at once"
    );
    assert!(
        fds_during <= fds_before + MAX_PENDING_PER_ADDRESS + 16,
        "bob held {fds_during} descriptors during the attack, {fds_before} before"
    );
    let deadline = Instant::now() + FIRST_BYTES_TIMEOUT + Duration::from_secs(3);
    while idle.iter().any(|s| !closed_by_peer(s)) {
        assert!(
            Instant::now() < deadline,
            "{} idle connections still open {:?} after they connected",
            idle.iter().filter(|s| !closed_by_peer(s)).count(),
            opening.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "every idle connection closed {:?} after the first connected",
        opening.elapsed()
    );
    let stderr = bob.stderr();
    assert!(
        !stderr.contains("accept failed"),
        "bob ran out of something while accepting:\n{stderr}"
    );
}
