//! Attack 3 of issue 10 as a process sees it: a member sends the frames that cost its
//! victim the most memory (a Want naming one large record 2,048 times, a Want for
//! everything it holds, a sync message asking for the whole database) and never reads
//! a byte of the answers, reconnecting whenever the victim cuts it. The victim's
//! resident memory is sampled throughout.

use std::io::Write;
use std::time::{Duration, Instant};

use common::record::Record;
use common::sync::{Bound, Mode, Range};
use common::wire::{Message, Purpose};
use uuid::Uuid;

use crate::adversary::Creds;
use crate::group::{Member, WAIT, member_connection};
use crate::{Peer, unix_ms};

/// Records the attacker stores on the victim first, and their size: what the victim
/// has to send back.
pub const SEEDED_RECORDS: usize = 300;
/// Data bytes of each seeded record.
pub const SEEDED_BYTES: usize = 60_000;

/// What the victim's memory did.
#[derive(Debug, Clone, Copy)]
pub struct MemoryReport {
    /// Resident set before the attack (after the seeding), KiB.
    pub idle_kib: u64,
    /// The largest resident set seen during the attack, KiB.
    pub peak_kib: u64,
    /// Connections the attacker opened.
    pub connections: usize,
    /// Attack frames sent.
    pub frames: usize,
    /// Open file descriptors before the attack, and the most seen during it.
    pub idle_fds: usize,
    /// The most open file descriptors seen during the attack.
    pub peak_fds: usize,
}

impl MemoryReport {
    /// Growth over idle, MiB.
    pub fn growth_mib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.idle_kib) as f64 / 1024.0
    }
}

/// A process's resident set, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A process's open file descriptors.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `attacker` (a member) attacks `victim` (online as `peer`) for `duration`. With
/// `half_close`, after each round of frames the attacker ends its sending side (the
/// victim's reader sees the end) and connects again, still reading nothing.
pub fn memory_attack(
    victim: &Member,
    peer: &mut Peer,
    attacker: &Member,
    duration: Duration,
    half_close: bool,
) -> MemoryReport {
    wait_ready_or_listening(peer);
    let creds = Creds::of(attacker);
    let now = unix_ms();
    let seeded: Vec<Record> = (0..SEEDED_RECORDS)
        .map(|k| {
            let mut r = Record::new(Uuid::from_u128(0x5eed), creds.id, now - k as i64, 3_600_000);
            r.data = vec![k as u8; SEEDED_BYTES];
            creds.sign(r)
        })
        .collect();
    let mut s = member_connection(attacker, &victim.addr);
    for part in seeded.chunks(8) {
        let msg = Message::Records {
            sync: false,
            bodies: part.iter().map(|r| r.encode()).collect(),
        };
        s.write_all(&msg.encode()).expect("seed records");
    }
    s.flush().expect("seed records");
    // Stored once its store holds them all (read beside it).
    let store = creds_store_of(victim);
    let deadline = Instant::now() + WAIT;
    while store.record_count().unwrap_or(0) < SEEDED_RECORDS as i64 {
        assert!(Instant::now() < deadline, "the victim did not store the seeded records");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
    std::thread::sleep(Duration::from_secs(1));
    let pid = peer.pid();
    let idle_kib = rss_kib(pid);
    let ids: Vec<Uuid> = seeded.iter().map(|r| r.id).collect();
    let worst: Vec<Vec<u8>> = vec![
        Message::Want {
            ids: vec![ids[0]; 2048],
        }
        .encode(),
        Message::Want { ids: ids.clone() }.encode(),
        Message::SyncRanges {
            from_initiator: true,
            ranges: common::sync::encode_ranges(&[Range {
                upper: Bound::End,
                mode: Mode::IdList(Vec::new()),
            }]),
        }
        .encode(),
    ];
    let start = Instant::now();
    let idle_fds = open_fds(pid);
    let mut report = MemoryReport {
        idle_kib,
        peak_kib: idle_kib,
        connections: 0,
        frames: 0,
        idle_fds,
        peak_fds: idle_fds,
    };
    // Half-closed connections stay open on our side, unread, as an attacker keeps them.
    let mut kept = Vec::new();
    let mut conn = None;
    while start.elapsed() < duration {
        let s = conn.get_or_insert_with(|| {
            report.connections += 1;
            // A small window: the victim's writer backs up at once.
            crate::group::member_connection_with(attacker, &victim.addr, WAIT, Purpose::Neighbour, Some(4096))
                .expect("the attacker connects")
        });
        let mut cut = false;
        for f in &worst {
            // Never read: the answers pile up on the victim's side of the socket.
            if s.write_all(f).and_then(|_| s.flush()).is_err() {
                cut = true;
                break;
            }
            report.frames += 1;
        }
        if cut {
            conn = None;
        } else if half_close && let Some(s) = conn.take() {
            let _ = s.sock.shutdown(std::net::Shutdown::Write);
            kept.push(s);
            // Let the victim see the end before the next connection replaces this one.
            std::thread::sleep(Duration::from_millis(300));
        }
        report.peak_fds = report.peak_fds.max(open_fds(pid));
        for _ in 0..5 {
            report.peak_kib = report.peak_kib.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    report
}

fn creds_store_of(m: &Member) -> common::store::Store {
    Creds::of(m).store()
}

fn wait_ready_or_listening(peer: &mut Peer) {
    peer.wait_for("listening", WAIT, |e| e["event"] == "status" && e["listening"] == true);
}
