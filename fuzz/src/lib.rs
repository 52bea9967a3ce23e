//! What the fuzz targets share: fixtures taken from `tests/testdata` and a fixed clock,
//! so that a run (and a crash's replay) never depends on the day it happens.
//!
//! The targets live in `fuzz_targets/`; `src/bin/seeds.rs` writes their seed corpora.
//! `scripts/fuzz` builds and runs them on stable Rust (see docs/RELIABILITY.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::Write;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use common::clock;
use common::identity::{Identity, PublicIdentity};
use common::invitation::Invitation;
use common::pki::{Cert, KeyType};
use common::sync::{Item, ItemSet};
use time::OffsetDateTime;
use uuid::Uuid;

/// Largest single allocation the code under test may make. libFuzzer's own cap
/// (`-malloc_limit_mb`) needs a sanitizer's malloc hooks, which stable Rust lacks, and
/// `-rss_limit_mb` misses a huge buffer that is allocated but never touched: this
/// allocator catches both, for every Rust allocation.
pub const MAX_ALLOCATION_BYTES: usize = 64 << 20;

/// The system allocator, aborting (a crash libFuzzer records) on any allocation over
/// [`MAX_ALLOCATION_BYTES`]: a length taken from the input and trusted would show here.
#[derive(Debug)]
pub struct CappedAllocator;

impl CappedAllocator {
    fn check(size: usize) {
        if size > MAX_ALLOCATION_BYTES {
            // No formatting: it could allocate, and an allocator must not unwind either.
            let _ = std::io::stderr().write_all(b"\n==fuzz: single allocation over MAX_ALLOCATION_BYTES (64 MiB)\n");
            std::process::abort();
        }
    }
}

// SAFETY: forwards every call to the system allocator unchanged, after a size check.
unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: as for `alloc`; `ptr` and `layout` came from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

/// The good invitation every bad test case is derived from (bob joins Friends).
pub const VALID_INVITATION: &[u8] = include_bytes!("../../tests/testdata/invitation/valid-bob.invite");
/// Bob's identity XML, the one that invitation is for.
pub const VALID_IDENTITY: &[u8] = include_bytes!("../../tests/testdata/identity/valid-bob.xml");

/// How long after the fixture invitation was issued the targets' clock stands: inside
/// the validity of every fixture certificate, whenever the testdata was made.
pub const CLOCK_AFTER_ISSUE_SECS: i64 = 3600;

/// Items on "our" side of a sync: more than one item list (16) so ranges get split.
pub const FIXTURE_ITEMS: usize = 48;

/// Everything a target checks against, built once per process.
#[derive(Debug)]
pub struct Fixture {
    /// `valid-bob.invite`, parsed: the group root, the inviter's chain, the group.
    pub invitation: Invitation,
    /// Bob as `group-join` loads him. Only his certificate is real: `check_for` compares
    /// keys by certificate, so the secret key is a throwaway one.
    pub bob: Identity,
    /// The targets' "now", unix seconds.
    pub now_unix: i64,
    /// Member id bytes -> the certificate whose key signs that member's records: bob's
    /// membership certificate, and alice's issuing certificate (her identity key).
    pub signers: Vec<(common::member::MemberId, Cert)>,
    /// The local side of a sync session.
    pub items: ItemSet,
}

impl Fixture {
    /// The fixed clock as a time.
    pub fn now(&self) -> OffsetDateTime {
        clock::from_unix(self.now_unix)
    }

    /// The fixture group's id.
    pub fn group(&self) -> Uuid {
        self.invitation.body.group.id
    }
}

/// The fixture; panics (at start, not while fuzzing) if tests/testdata is unusable.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
        let invitation = Invitation::parse("valid-bob.invite", VALID_INVITATION).expect("fixture invitation");
        let issued = clock::parse_rfc3339(&invitation.body.issued).expect("fixture issue time");
        let now_unix = issued.unix_timestamp() + CLOCK_AFTER_ISSUE_SECS;
        invitation
            .verify(clock::from_unix(now_unix))
            .expect("fixture invitation valid at the fixed clock");
        let bob_public = PublicIdentity::from_xml("valid-bob.xml", VALID_IDENTITY).expect("fixture identity");
        let bob = Identity {
            name: "bob".into(),
            key: KeyType::Ed25519.generate().expect("a throwaway key"),
            cert: bob_public.cert,
        };
        invitation.check_for(&bob).expect("fixture invitation is for bob");
        let mut signers = vec![signer(&invitation.membership)];
        signers.extend(invitation.chain.first().map(signer));
        Fixture {
            invitation,
            bob,
            now_unix,
            signers,
            items: item_set(1, FIXTURE_ITEMS),
        }
    });
    &FIXTURE
}

fn signer(cert: &Cert) -> (common::member::MemberId, Cert) {
    let member = cert.member_id;
    (member, cert.clone())
}

/// `n` deterministic sync items from `seed` (splitmix64: no dependency needed).
pub fn item_set(seed: u64, n: usize) -> ItemSet {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut bytes16 = || {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&next().to_le_bytes());
        out[8..].copy_from_slice(&next().to_le_bytes());
        out
    };
    let mut set = ItemSet::new();
    for i in 0..n {
        set.insert(Item {
            id: bytes16(),
            version: 1 + (i as u64 % 3),
            digest: bytes16(),
        });
    }
    set
}

/// Runs a future that never waits, such as a read from a byte slice, to completion.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a read from memory waited"),
    }
}
