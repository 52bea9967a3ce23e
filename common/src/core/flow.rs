//! Flow control per neighbour: never drop a record, never let one slow reader hold
//! the others back. A neighbour whose queue passes [`LAGGING_BYTES`] is no longer
//! flooded; once its queue drains it is caught up by a sync session instead. One that
//! reads nothing while its queue passes [`STALLED_BYTES`] is disconnected.

/// Queued bytes beyond which a neighbour is no longer flooded (it catches up by sync).
pub const LAGGING_BYTES: usize = 4 * 1024 * 1024;
/// Queued bytes beyond which a peer that does not read is disconnected.
pub const STALLED_BYTES: usize = 64 * 1024 * 1024;

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

/// One connection's send side as the core sees it.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    /// Bytes queued and not yet written: the driver's last report plus what the core
    /// queued since.
    pub queued: usize,
    /// Not flooded until it drains and syncs.
    pub lagging: bool,
    /// A sync session this node started with it is under way.
    pub syncing: bool,
}

impl Flow {
    /// The driver's count of bytes still queued.
    pub fn report(&mut self, queued: usize) {
        self.queued = queued;
    }

    /// The core queued `bytes` more.
    pub fn queue(&mut self, bytes: usize) {
        self.queued = self.queued.saturating_add(bytes);
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

    /// The periodic check.
    pub fn check(&mut self) -> FlowAction {
        if self.queued > STALLED_BYTES {
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
        let mut f = Flow::default();
        assert!(f.admits_flood());
        f.queue(LAGGING_BYTES + 1);
        assert!(!f.admits_flood(), "over budget: not flooded");
        assert!(f.lagging);
        f.report(LAGGING_BYTES / 2);
        assert!(!f.admits_flood(), "still lagging until it syncs");
        assert_eq!(f.check(), FlowAction::None, "not drained enough");
        f.report(0);
        f.syncing = true;
        assert_eq!(f.check(), FlowAction::None, "a session is already under way");
        f.syncing = false;
        assert_eq!(f.check(), FlowAction::Resync);
        assert!(f.admits_flood());
        f.report(STALLED_BYTES + 1);
        assert_eq!(f.check(), FlowAction::Close);
    }
}
