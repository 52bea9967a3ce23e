//! Per-member quotas: how much one member can make every node store. Records of
//! ordinary types (anything but the one-per-member presence and membership records,
//! unknown types included) are counted per creator and per window of their creation
//! time. Within one window the records kept are the longest prefix, in a fixed order
//! (creation time, then id), that fits both [`QUOTA_BYTES`] and [`QUOTA_RECORDS`].
//!
//! That is a function of the records alone, so every node keeps the same ones whatever
//! the order they arrive in: a record that would take the bucket over its quota either
//! comes after everything kept (refused) or before some of it (kept, and the last ones
//! evicted until the bucket fits again). The first record that did not fit is the
//! bucket's cutoff: everything after it is refused too, or a small record arriving after
//! a large refused one would be kept on one node and not on another. A record that
//! moved a cutoff is forwarded even when it is not kept (once per move, so no more than
//! the records received), since the nodes that never saw it would otherwise keep what
//! lies after it. A refused record is remembered, so sync does not fetch it again from
//! the member who keeps offering it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use uuid::Uuid;

use crate::member::MemberId;

/// Most cutoff records a node keeps to hand on (one per bucket with a cutoff; the
/// oldest window forgotten first).
pub const MAX_CUTOFF_RECORDS: usize = 1024;

/// The quota window over creation times: an hour.
pub const QUOTA_WINDOW_MS: i64 = 3_600_000;
/// Bytes of encoded records one member may have stored per window: room for a
/// 100,000-record catch-up of chat messages (37 MB) three times over, and for a member
/// publishing flat out (chatbench workload c: 5,000 records of 200 bytes).
pub const QUOTA_BYTES: u64 = 128 * 1024 * 1024;
/// Records one member may have stored per window: two and a half times the largest
/// catch-up measured (100,000 records from one member).
pub const QUOTA_RECORDS: usize = 250_000;
/// Refused record ids remembered, oldest forgotten first (one forgotten is fetched and
/// refused again by the next sync that meets it: a cost, not a hole).
pub const MAX_REFUSED_REMEMBERED: usize = 65_536;

/// The figures a group's quotas use: [`QUOTA_BYTES`] and [`QUOTA_RECORDS`] per
/// [`QUOTA_WINDOW_MS`] in every real group (every node must use the same); smaller in
/// simulations, so an attack reaches them in a few records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Bytes per creator per window.
    pub bytes: u64,
    /// Records per creator per window.
    pub records: usize,
    /// The window over creation times, ms: at least the group's message lifetime (the
    /// core sees to it), so the records alive at once lie in two windows at most and a
    /// member can have at most twice the quota stored.
    pub window_ms: i64,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        QuotaLimits {
            bytes: QUOTA_BYTES,
            records: QUOTA_RECORDS,
            window_ms: QUOTA_WINDOW_MS,
        }
    }
}

/// Where a record falls: its creator and the window of its creation time.
pub type BucketKey = (MemberId, i64);
/// The fixed order within a bucket: creation time, then id.
type OrderKey = (i64, Uuid);

/// The records of one creator in one window, in order, with their sizes, and the
/// first record that did not fit: everything after it is beyond the quota too (else a
/// small record that arrived after a large one was refused would be kept here and not
/// where it arrived first).
#[derive(Debug, Default)]
struct Bucket {
    bytes: u64,
    records: BTreeMap<OrderKey, u32>,
    cutoff: Option<OrderKey>,
}

impl Bucket {
    fn fits(&self, limits: &QuotaLimits) -> bool {
        self.bytes <= limits.bytes && self.records.len() <= limits.records
    }
}

/// What counting a record decided: whether it is kept, and the records it pushed out
/// (beyond the quota now, to delete) either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The record fits (false: it is beyond the quota, and remembered as refused).
    pub kept: bool,
    /// Records pushed out of the quota.
    pub evicted: Vec<Uuid>,
    /// The bucket's cutoff moved down: other nodes must hear of this record even when
    /// it is not kept (see [`Quotas`]).
    pub lowered: bool,
}

/// The quota state of the records stored, and the ids refused.
#[derive(Debug, Default)]
pub struct Quotas {
    limits: QuotaLimits,
    buckets: HashMap<BucketKey, Bucket>,
    refused: HashSet<Uuid>,
    refused_order: VecDeque<Uuid>,
}

impl Quotas {
    /// No records counted, under the real figures.
    pub fn new() -> Quotas {
        Quotas::default()
    }

    /// The bucket a record of `creator` created at `created_ms` counts in.
    pub fn bucket_key(&self, creator: MemberId, created_ms: i64) -> BucketKey {
        (creator, created_ms.div_euclid(self.limits.window_ms.max(1)))
    }

    /// No records counted, under `limits`.
    pub fn with_limits(limits: QuotaLimits) -> Quotas {
        Quotas {
            limits,
            ..Quotas::default()
        }
    }

    /// Counts a record of `bytes` by `creator` created at `created_ms`: whether it fits,
    /// and the records after it in the bucket's order that no longer do (all refused
    /// from now on).
    pub fn admit(&mut self, creator: MemberId, created_ms: i64, id: Uuid, bytes: usize) -> Counted {
        let bk = self.bucket_key(creator, created_ms);
        let bucket = self.buckets.entry(bk).or_default();
        let key = (created_ms, id);
        if bucket.cutoff.is_some_and(|c| key >= c) {
            self.refuse(id);
            return Counted {
                kept: false,
                evicted: Vec::new(),
                lowered: false,
            };
        }
        let size = u32::try_from(bytes).unwrap_or(u32::MAX);
        if let Some(&old) = bucket.records.get(&key) {
            // A new version of a record counted here fits only if pushing out what
            // comes after it makes room; else nothing changes, and the kept version
            // stays counted (it stays stored).
            let limits = self.limits;
            let fits = |b: u64, c: usize| b <= limits.bytes && c <= limits.records;
            let (mut b, mut c) = (bucket.bytes - u64::from(old) + u64::from(size), bucket.records.len());
            let mut after = bucket
                .records
                .range((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
                .rev();
            while !fits(b, c) {
                let Some((_, s)) = after.next() else {
                    return Counted {
                        kept: false,
                        evicted: Vec::new(),
                        lowered: false,
                    };
                };
                b -= u64::from(*s);
                c -= 1;
            }
        }
        if let Some(old) = bucket.records.insert(key, size) {
            bucket.bytes -= u64::from(old);
        }
        bucket.bytes += u64::from(size);
        let mut evicted = Vec::new();
        let mut kept = true;
        let lowered = !bucket.fits(&self.limits);
        while !bucket.fits(&self.limits) {
            let Some((last, b)) = bucket.records.pop_last() else {
                break;
            };
            bucket.bytes -= u64::from(b);
            bucket.cutoff = Some(last);
            if last == key {
                kept = false;
            } else {
                evicted.push(last.1);
            }
        }
        if !kept {
            self.refuse(id);
        }
        for e in &evicted {
            self.refuse(*e);
        }
        Counted { kept, evicted, lowered }
    }

    /// Stops counting a record (replaced by a version created at another time, expired
    /// or deleted).
    pub fn remove(&mut self, creator: MemberId, created_ms: i64, id: Uuid) {
        let k = self.bucket_key(creator, created_ms);
        if let Some(bucket) = self.buckets.get_mut(&k) {
            if let Some(b) = bucket.records.remove(&(created_ms, id)) {
                bucket.bytes -= u64::from(b);
            }
            if bucket.records.is_empty() && bucket.cutoff.is_none() {
                self.buckets.remove(&k);
            }
        }
    }

    /// Whether `id` was refused (or evicted) by the quota: sync does not fetch it.
    pub fn is_refused(&self, id: &Uuid) -> bool {
        self.refused.contains(id)
    }

    fn refuse(&mut self, id: Uuid) {
        if self.refused.insert(id) {
            self.refused_order.push_back(id);
            if self.refused_order.len() > MAX_REFUSED_REMEMBERED
                && let Some(old) = self.refused_order.pop_front()
            {
                self.refused.remove(&old);
            }
        }
    }

    /// The first record (creation time, id) beyond the quota of `creator` in the window
    /// of `created_ms`, if one was seen.
    pub fn cutoff(&self, creator: MemberId, created_ms: i64) -> Option<(i64, Uuid)> {
        self.buckets
            .get(&self.bucket_key(creator, created_ms))
            .and_then(|b| b.cutoff)
    }

    /// Records counted for `creator` in the window of `created_ms`: (count, bytes).
    pub fn usage(&self, creator: MemberId, created_ms: i64) -> (usize, u64) {
        self.buckets
            .get(&self.bucket_key(creator, created_ms))
            .map_or((0, 0), |b| (b.records.len(), b.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MemberId = MemberId::from_bytes([5; 20]);

    /// Records of one bucket, each (created offset, id, bytes).
    fn run(order: &[usize], records: &[(i64, u128, usize)]) -> (Vec<Uuid>, Vec<Uuid>) {
        let mut q = Quotas::new();
        let mut kept: Vec<Uuid> = Vec::new();
        for &i in order {
            let (t, id, bytes) = records[i];
            let id = Uuid::from_u128(id);
            let c = q.admit(M, t, id, bytes);
            kept.retain(|k| !c.evicted.contains(k));
            if c.kept {
                kept.push(id);
            }
        }
        kept.sort();
        let mut refused: Vec<Uuid> = records
            .iter()
            .map(|r| Uuid::from_u128(r.1))
            .filter(|id| q.is_refused(id))
            .collect();
        refused.sort();
        (kept, refused)
    }

    /// Attack 9: a member floods large records. What every node keeps is the longest
    /// prefix in (created, id) order that fits, whatever the order of arrival.
    #[test]
    fn the_records_kept_are_the_same_prefix_in_any_order_of_arrival() {
        let big = (QUOTA_BYTES / 4) as usize;
        let records = [
            (30, 1, big),
            (10, 2, big),
            (20, 3, big),
            (40, 4, big),
            (5, 5, big),
            (25, 6, 10),
            (50, 7, 10),
        ];
        // Order (created): 5, 10, 20, 25 (small), 30, 40, 50 (small). The quota holds
        // four big ones exactly; 25's ten bytes push 30 out, and with it everything
        // after, 50 too although it would fit in the room left.
        let expected: Vec<Uuid> = [2u128, 3, 5, 6].map(Uuid::from_u128).to_vec();
        let mut orders = vec![
            vec![0, 1, 2, 3, 4, 5, 6],
            vec![6, 5, 4, 3, 2, 1, 0],
            vec![3, 0, 5, 1, 4, 2, 6],
            vec![6, 0, 1, 2, 3, 4, 5],
        ];
        orders.push(vec![4, 1, 2, 5, 0, 6, 3]);
        for order in orders {
            let (kept, refused) = run(&order, &records);
            let mut expected = expected.clone();
            expected.sort();
            assert_eq!(kept, expected, "arrival order {order:?}");
            assert_eq!(
                refused,
                [1u128, 4, 7].map(Uuid::from_u128).to_vec(),
                "arrival order {order:?}"
            );
        }
    }

    /// Red-team: a bigger version of a kept record that does not fit must leave the
    /// kept version counted (it stays stored) and evict nothing.
    #[test]
    fn a_replacement_that_does_not_fit_changes_nothing() {
        let limits = QuotaLimits {
            bytes: 100,
            records: 10,
            window_ms: QUOTA_WINDOW_MS,
        };
        let mut q = Quotas::with_limits(limits);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert!(q.admit(M, 10, a, 40).kept);
        assert!(q.admit(M, 20, b, 40).kept);
        let bigger = q.admit(M, 20, b, 200);
        assert!(!bigger.kept && bigger.evicted.is_empty(), "{bigger:?}");
        assert_eq!(q.usage(M, 10), (2, 80), "the kept version is still counted");
        assert!(!q.is_refused(&b), "the stored version of b is not refused");
        // One that fits by pushing out later records does so.
        let c = Uuid::from_u128(3);
        assert!(q.admit(M, 30, c, 10).kept);
        let grown = q.admit(M, 10, a, 55);
        assert!(grown.kept);
        assert_eq!(grown.evicted, vec![c]);
    }

    #[test]
    fn records_count_per_window_and_removal_makes_room() {
        let mut q = Quotas::new();
        for i in 0..QUOTA_RECORDS as u128 {
            assert!(q.admit(M, 1000, Uuid::from_u128(i + 1), 1).kept);
        }
        let late = Uuid::from_u128(u128::MAX);
        assert!(!q.admit(M, 2000, late, 1).kept);
        assert!(q.is_refused(&late));
        // The next window, and another member, are counted apart.
        assert!(q.admit(M, 1000 + QUOTA_WINDOW_MS, late, 1).kept);
        assert!(q.admit(MemberId::from_bytes([6; 20]), 1000, late, 1).kept);
        q.remove(M, 1000, Uuid::from_u128(1));
        assert_eq!(q.usage(M, 1000), (QUOTA_RECORDS - 1, QUOTA_RECORDS as u64 - 1));
        assert!(q.admit(M, 2000, Uuid::from_u128(u128::MAX - 1), 1).kept);
        // A record counted again (a new version) is counted once, at its new size.
        assert!(q.admit(M, 2000, Uuid::from_u128(u128::MAX - 1), 5).kept);
        assert_eq!(q.usage(M, 1000).1, QUOTA_RECORDS as u64 + 4);
    }
}
