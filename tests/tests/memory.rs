//! A member who sends the frames that cost its victim the most memory, and never reads
//! the answers, cannot make the victim's resident set grow by more than 64 MiB.
//! `MEMORY_ATTACK_SECS` sets how long (5 s here; `scripts/bench` runs 30 s).

use std::time::Duration;

use peergroup_tests::group::group;
use peergroup_tests::memory::memory_attack;

/// The bound the issue sets on a victim's growth.
const MAX_GROWTH_MIB: f64 = 64.0;

#[test]
fn a_member_sending_the_worst_frames_cannot_blow_up_its_victims_memory() {
    let secs: u64 = std::env::var("MEMORY_ATTACK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let g = group(&["alice", "mallory"]);
    let mut alice = g[0].online();
    let r = memory_attack(&g[0], &mut alice, &g[1], Duration::from_secs(secs), false);
    eprintln!(
        "memory attack for {secs} s: victim RSS idle {} KiB, peak {} KiB, growth {:.1} MiB ({} connections, {} frames)",
        r.idle_kib,
        r.peak_kib,
        r.growth_mib(),
        r.connections,
        r.frames
    );
    assert!(r.frames > 0 && r.idle_kib > 0, "{r:?}");
    assert!(
        r.growth_mib() < MAX_GROWTH_MIB,
        "the victim grew by {:.1} MiB: {r:?}",
        r.growth_mib()
    );
}

/// Red-team: when the attacker's side ended first (a half-close, a bad frame), the
/// victim dropped the connection without stopping its writer, which could then wait on
/// an unread socket forever with its queue and descriptor; writers now stop 2 s after
/// either end closes. On loopback this test did not reproduce the leak before the fix
/// (the writers finished into the kernel's buffers); it guards the descriptors and the
/// memory of a victim under half-closed, unread connections.
#[test]
fn half_closed_unread_connections_do_not_pile_up_writers() {
    let g = group(&["alice", "mallory"]);
    let mut alice = g[0].online();
    let r = memory_attack(&g[0], &mut alice, &g[1], Duration::from_secs(8), true);
    eprintln!(
        "half-close attack: {} connections, descriptors {} -> peak {}, RSS growth {:.1} MiB",
        r.connections,
        r.idle_fds,
        r.peak_fds,
        r.growth_mib()
    );
    assert!(r.connections >= 15, "{r:?}");
    assert!(
        r.peak_fds < r.idle_fds + r.connections / 2,
        "the victim held a descriptor per half-closed connection: {r:?}"
    );
    assert!(r.growth_mib() < MAX_GROWTH_MIB, "{r:?}");
}
