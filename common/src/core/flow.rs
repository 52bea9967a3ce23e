//! Flow control per neighbour: never drop a record, never let one slow reader hold
//! the others back, never let one peer make this node queue more than a budget.
//!
//! - A neighbour whose queue passes [`LAGGING_BYTES`] is no longer flooded; once its
//!   queue drains it is caught up by a sync session instead.
//! - What a peer asks for (Want ids, a sync session's records and replies) waits in an
//!   ordered queue of ids and small frames, [`Owed`], and bodies are read from the store
//!   only while less than [`SERVE_BYTES`] is queued to the peer: a peer that asks for
//!   the whole database, or one large record two thousand times, costs 16 bytes an id
//!   until it reads.
//! - A peer that reads nothing for [`WRITE_STALL`] while bytes wait, or whose queue
//!   passes [`STALLED_BYTES`], or that leaves more than [`MAX_OWED_FRAME_BYTES`] of
//!   sync replies unread, is disconnected.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Queued bytes beyond which a neighbour is no longer flooded (it catches up by sync):
/// about a second of a fast link, and eight times the largest frame the node builds.
pub const LAGGING_BYTES: usize = 4 * 1024 * 1024;
/// Queued bytes beyond which a peer is disconnected: floods stop at [`LAGGING_BYTES`]
/// and bodies at [`SERVE_BYTES`], so only a peer that does not read gets here.
pub const STALLED_BYTES: usize = 16 * 1024 * 1024;
/// Bodies a peer asked for are read from the store while less than this is queued to
/// it: enough to keep a fast link busy between two reports of its queue.
pub const SERVE_BYTES: usize = 2 * 1024 * 1024;
/// Most record ids owed to one peer: a catch-up of this many records at once (and
/// 2 MiB of ids at most); ids beyond it are not queued, and the peer's next sync asks
/// for them again.
pub const MAX_OWED_IDS: usize = 131_072;
/// Most bytes of sync frames (wants, replies) owed to one peer: an honest peer has
/// one sync message in flight and reads our replies; one that leaves this much unread
/// is disconnected.
pub const MAX_OWED_FRAME_BYTES: usize = 8 * 1024 * 1024;
/// What each queued frame costs beyond its bytes (its allocations and queue slot):
/// counted with them, so a stream of tiny frames meets the budgets as soon as the
/// memory it takes would.
pub const FRAME_OVERHEAD: usize = 128;
/// How long a peer may read nothing while bytes wait for it before it is disconnected.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// Sync messages a peer may open sessions with, in a burst: a session over 100,000
/// records that differ in 10,000 takes 18 of the initiator's messages.
pub const SYNC_BURST: f64 = 256.0;
/// Sync messages a peer may send a second, on average, as initiator: each one costs a
/// pass over the keyed fingerprints (2.4 ms for 100,000 records), so a peer sending
/// them in a loop costs at most a sixth of a core.
pub const SYNC_PER_SECOND: f64 = 64.0;

/// A token bucket for the sync messages a peer initiates.
#[derive(Debug, Clone, Copy)]
pub struct SyncBudget {
    tokens: f64,
    at: Instant,
}

impl SyncBudget {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> SyncBudget {
        SyncBudget {
            tokens: SYNC_BURST,
            at: now,
        }
    }

    /// Takes one message's token at `now`; false when the peer sends faster than
    /// [`SYNC_PER_SECOND`] beyond a burst of [`SYNC_BURST`].
    pub fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * SYNC_PER_SECOND;
        self.tokens = (self.tokens + refill).min(SYNC_BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// What the periodic check decides for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    /// Nothing.
    None,
    /// It lagged and has drained: start a sync session to catch it up.
    Resync,
    /// It stopped reading: disconnect.
    Close,
}

/// One thing owed to a peer, in the order it is owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwedItem {
    /// A record's body, read from the store when the budget allows.
    Body(Uuid),
    /// An encoded frame (a Want or a sync reply) that must follow the bodies before it.
    Frame(Arc<Vec<u8>>),
}

/// What is owed to one peer, deduplicated and bounded.
#[derive(Debug, Default)]
pub struct Owed {
    queue: VecDeque<OwedItem>,
    ids: HashSet<Uuid>,
    frame_bytes: usize,
}

impl Owed {
    /// Owes the bodies of `ids` (repeats and ids already owed are skipped); returns how
    /// many did not fit under [`MAX_OWED_IDS`].
    pub fn bodies(&mut self, ids: impl IntoIterator<Item = Uuid>) -> usize {
        let mut refused = 0;
        for id in ids {
            if self.ids.contains(&id) {
                continue;
            }
            if self.ids.len() >= MAX_OWED_IDS {
                refused += 1;
                continue;
            }
            self.ids.insert(id);
            self.queue.push_back(OwedItem::Body(id));
        }
        refused
    }

    /// Owes a frame after everything owed so far; false when the peer has left more
    /// than [`MAX_OWED_FRAME_BYTES`] unread (it should be disconnected).
    pub fn frame(&mut self, frame: Arc<Vec<u8>>) -> bool {
        self.frame_bytes += frame.len() + FRAME_OVERHEAD;
        self.queue.push_back(OwedItem::Frame(frame));
        self.frame_bytes <= MAX_OWED_FRAME_BYTES
    }

    /// The next owed item.
    pub fn pop(&mut self) -> Option<OwedItem> {
        let item = self.queue.pop_front()?;
        match &item {
            OwedItem::Body(id) => {
                self.ids.remove(id);
            }
            OwedItem::Frame(f) => self.frame_bytes -= f.len() + FRAME_OVERHEAD,
        }
        Some(item)
    }

    /// Whether the next owed item is a body.
    pub fn next_is_body(&self) -> bool {
        matches!(self.queue.front(), Some(OwedItem::Body(_)))
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Items owed.
    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

/// One connection's send side as the core sees it.
#[derive(Debug)]
pub struct Flow {
    /// Bytes queued and not yet written: the driver's last report plus what the core
    /// queued since.
    pub queued: usize,
    /// Not flooded until it drains and syncs.
    pub lagging: bool,
    /// A sync session this node started with it is under way.
    pub syncing: bool,
    /// What the peer asked for and has not been sent yet.
    pub owed: Owed,
    /// The driver's last count of bytes written to the peer, and when the peer last
    /// read something (or had nothing waiting).
    written: u64,
    progress: Instant,
}

impl Flow {
    /// A connection's flow, up at `now`.
    pub fn new(now: Instant) -> Flow {
        Flow {
            queued: 0,
            lagging: false,
            syncing: false,
            owed: Owed::default(),
            written: 0,
            progress: now,
        }
    }

    /// The driver's counts at `now`: bytes still queued, and bytes written so far. A
    /// peer that took any bytes since the last count is reading, however full its queue
    /// stays (a slow link behind a busy group).
    pub fn report(&mut self, queued: usize, written: u64, now: Instant) {
        if queued == 0 || written > self.written {
            self.progress = now;
        }
        self.written = self.written.max(written);
        self.queued = queued;
    }

    /// The core queued a frame of `bytes` more (counted with [`FRAME_OVERHEAD`], as the
    /// driver counts it).
    pub fn queue(&mut self, bytes: usize) {
        self.queued = self.queued.saturating_add(bytes + FRAME_OVERHEAD);
    }

    /// Whether owed bodies may be read now.
    pub fn may_serve(&self) -> bool {
        self.queued < SERVE_BYTES
    }

    /// Whether a flood goes to this neighbour; marks it lagging when its queue is over
    /// the budget (it will be caught up by sync, so nothing is lost).
    pub fn admits_flood(&mut self) -> bool {
        if self.lagging {
            return false;
        }
        if self.queued > LAGGING_BYTES {
            self.lagging = true;
            return false;
        }
        true
    }

    /// The periodic check at `now`.
    pub fn check(&mut self, now: Instant) -> FlowAction {
        let stalled = self.queued > 0 && now.duration_since(self.progress) > WRITE_STALL;
        if self.queued > STALLED_BYTES || stalled {
            FlowAction::Close
        } else if self.lagging && self.queued < LAGGING_BYTES / 4 && !self.syncing {
            self.lagging = false;
            FlowAction::Resync
        } else {
            FlowAction::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_neighbour_lags_then_resyncs_and_a_stalled_one_is_cut() {
        let t0 = Instant::now();
        let mut f = Flow::new(t0);
        assert!(f.admits_flood());
        f.queue(LAGGING_BYTES + 1);
        assert!(!f.admits_flood(), "over budget: not flooded");
        assert!(f.lagging);
        f.report(LAGGING_BYTES / 2, 0, t0);
        assert!(!f.admits_flood(), "still lagging until it syncs");
        assert_eq!(f.check(t0), FlowAction::None, "not drained enough");
        f.report(0, 0, t0);
        f.syncing = true;
        assert_eq!(f.check(t0), FlowAction::None, "a session is already under way");
        f.syncing = false;
        assert_eq!(f.check(t0), FlowAction::Resync);
        assert!(f.admits_flood());
        f.report(STALLED_BYTES + 1, 0, t0);
        assert_eq!(f.check(t0), FlowAction::Close);
    }

    #[test]
    fn a_peer_that_reads_nothing_for_the_stall_limit_is_cut() {
        let t0 = Instant::now();
        let mut f = Flow::new(t0);
        f.report(1000, 0, t0);
        f.report(1000, 0, t0 + WRITE_STALL / 2);
        assert_eq!(f.check(t0 + WRITE_STALL / 2), FlowAction::None);
        // It read a little: the clock starts again.
        f.report(900, 100, t0 + WRITE_STALL);
        assert_eq!(f.check(t0 + WRITE_STALL * 3 / 2), FlowAction::None);
        f.report(900, 100, t0 + WRITE_STALL * 2);
        assert_eq!(
            f.check(t0 + WRITE_STALL * 2 + Duration::from_secs(1)),
            FlowAction::Close
        );
        // Nothing waiting is never a stall.
        let mut idle = Flow::new(t0);
        idle.report(0, 0, t0);
        assert_eq!(idle.check(t0 + WRITE_STALL * 10), FlowAction::None);
    }

    /// Red-team: a slow reader behind a busy group keeps a full queue (it is refilled
    /// as fast as it drains); it reads, so it is not cut.
    #[test]
    fn a_slow_reader_with_a_full_queue_is_not_cut() {
        let t0 = Instant::now();
        let mut f = Flow::new(t0);
        for s in 0..120u64 {
            let at = t0 + Duration::from_millis(500 * s);
            f.report(SERVE_BYTES, s * 32 * 1024, at);
            assert_eq!(f.check(at), FlowAction::None, "cut after {} s", s / 2);
        }
    }

    /// Red-team: sync messages in a loop cost a pass over every record each.
    #[test]
    fn sync_messages_beyond_the_burst_and_rate_are_refused() {
        let t0 = Instant::now();
        let mut b = SyncBudget::new(t0);
        let taken = (0..1000).filter(|_| b.take(t0)).count();
        assert_eq!(taken, SYNC_BURST as usize);
        assert!(b.take(t0 + Duration::from_millis(20)), "refilled");
        assert!(!b.take(t0 + Duration::from_millis(20)));
        // An honest pace never runs out.
        let mut honest = SyncBudget::new(t0);
        assert!((0..10_000).all(|i| honest.take(t0 + Duration::from_millis(20 * i))));
    }

    #[test]
    fn owed_ids_are_deduplicated_bounded_and_kept_in_order_with_frames() {
        let mut o = Owed::default();
        let a = Uuid::from_u128(1);
        assert_eq!(o.bodies(std::iter::repeat_n(a, 2048)), 0);
        assert_eq!(o.len(), 1, "one id asked 2,048 times is owed once");
        assert!(o.frame(Arc::new(vec![0; 10])));
        assert_eq!(o.bodies([Uuid::from_u128(2), a]), 0);
        assert_eq!(o.pop(), Some(OwedItem::Body(a)));
        assert!(matches!(o.pop(), Some(OwedItem::Frame(_))));
        assert_eq!(o.pop(), Some(OwedItem::Body(Uuid::from_u128(2))));
        assert!(o.is_empty());
        let refused = o.bodies((0..MAX_OWED_IDS as u128 + 5).map(Uuid::from_u128));
        assert_eq!((o.len(), refused), (MAX_OWED_IDS, 5));
        let mut o = Owed::default();
        assert!(o.frame(Arc::new(vec![0; MAX_OWED_FRAME_BYTES - FRAME_OVERHEAD])));
        assert!(!o.frame(Arc::new(vec![0; 1])), "unread sync replies past the cap");
        // Red-team: 5-byte frames cost ~100 bytes of heap each; they count so.
        let mut o = Owed::default();
        assert!(
            !(0..200_000).all(|_| o.frame(Arc::new(vec![0; 5]))),
            "200,000 tiny frames owed"
        );
    }
}
