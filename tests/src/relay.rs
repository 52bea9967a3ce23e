//! A fault-injecting TCP relay, standing between members where a real network would:
//! it adds delay and jitter, caps bandwidth, and resets connections at random. This
//! kernel has no `netem`, so the faults are made here, in user space.
//!
//! Bytes keep their order (a later chunk is never delivered before an earlier one, as
//! TCP guarantees), so what the relay injects is what a slow, jittery, flaky path does.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// What the relay does to traffic.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Added to every chunk's delivery.
    pub delay: Duration,
    /// A random extra delay, 0 to this, per chunk.
    pub jitter: Duration,
    /// Bandwidth cap per direction of each connection, bytes per second.
    pub bytes_per_second: u64,
    /// Each connection is reset (RST) after a random lifetime in this range; `None`
    /// keeps connections up.
    pub reset_after: Option<(Duration, Duration)>,
}

/// What the relay did.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Connections relayed.
    pub connections: AtomicU64,
    /// Connections it reset.
    pub resets: AtomicU64,
    /// Bytes it carried (both directions).
    pub bytes: AtomicU64,
}

/// A running relay; stops accepting when dropped (relayed connections end with it).
#[derive(Debug)]
pub struct Relay {
    /// Where it listens (`127.0.0.1:PORT`).
    pub addr: String,
    /// Its counters.
    pub stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
}

/// A small xorshift generator: the faults need spread, not quality.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 { 0 } else { self.0 % n }
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(self.below(span + 1))
    }
}

impl Relay {
    /// Starts relaying connections made to a fresh loopback port to `target`.
    pub fn start(target: &str, faults: Faults) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("relay address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RelayStats::default());
        let (target, stop2, stats2) = (target.to_string(), stop.clone(), stats.clone());
        thread::spawn(move || {
            let mut rng = Rng::new();
            for client in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                stats2.connections.fetch_add(1, Ordering::Relaxed);
                let lifetime = faults.reset_after.map(|(lo, hi)| rng.between(lo, hi));
                relay_pair(client, upstream, &faults, lifetime, rng.below(u64::MAX), &stats2);
            }
        });
        Relay { addr, stats, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Relays both directions between `a` and `b`, resetting both after `lifetime`.
fn relay_pair(
    a: TcpStream,
    b: TcpStream,
    faults: &Faults,
    lifetime: Option<Duration>,
    seed: u64,
    stats: &Arc<RelayStats>,
) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let clones = || (a.try_clone(), b.try_clone());
    let (Ok(a2), Ok(b2)) = clones() else { return };
    let (Ok(a3), Ok(b3)) = clones() else { return };
    let cut = Arc::new(AtomicBool::new(false));
    pump(a, b, faults.clone(), seed, stats.clone(), cut.clone());
    pump(b2, a2, faults.clone(), seed.rotate_left(17), stats.clone(), cut.clone());
    if let Some(lifetime) = lifetime {
        let stats = stats.clone();
        thread::spawn(move || {
            thread::sleep(lifetime);
            cut.store(true, Ordering::Relaxed);
            // Linger 0 makes the close an RST; shutting reads down wakes the pumps,
            // which then drop their handles and the sockets close.
            for s in [&a3, &b3] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                let _ = s.shutdown(Shutdown::Read);
            }
            stats.resets.fetch_add(1, Ordering::Relaxed);
        });
    }
}

/// One direction: a reader stamps each chunk with its delivery time; a writer delivers
/// it then, no faster than the bandwidth cap.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    faults: Faults,
    seed: u64,
    stats: Arc<RelayStats>,
    cut: Arc<AtomicBool>,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut rng = Rng(seed | 1);
        let mut last = Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let at = (Instant::now() + faults.delay + rng.between(Duration::ZERO, faults.jitter)).max(last);
                    last = at;
                    if tx.send((at, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Read);
    });
    thread::spawn(move || {
        let mut budget_from = Instant::now();
        while let Ok((at, chunk)) = rx.recv() {
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
            // The cap: this chunk may leave only once the link has carried the last.
            let cost = Duration::from_secs_f64(chunk.len() as f64 / faults.bytes_per_second.max(1) as f64);
            budget_from = budget_from.max(Instant::now()) + cost;
            let wait = budget_from.saturating_duration_since(Instant::now());
            thread::sleep(wait);
            if cut.load(Ordering::Relaxed) || to.write_all(&chunk).is_err() {
                break;
            }
            stats.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // After a reset the handles just close (an RST); otherwise pass the FIN on.
        if !cut.load(Ordering::Relaxed) {
            let _ = to.shutdown(Shutdown::Write);
        }
    });
}
