//! Range-based set reconciliation (RBSR, as in negentropy and Aljoscha Meyer's work)
//! over record summaries.
//!
//! Two members each hold a set of records and want the union. Sending every record id
//! costs O(n) per session even when the sets already agree, which is the common case
//! for peers that sync often. RBSR costs O(d · log n) for d differences instead: the
//! peers compare fingerprints of id ranges and only descend into the ranges that differ.
//!
//! # Protocol
//! A message is a list of [`Range`]s that covers the whole id space: each range is
//! given by its exclusive upper bound, the first starts at the smallest id and the
//! last ends at [`Bound::End`]. Each range carries a [`Mode`]:
//! - `Skip`: nothing to say about this range (already settled, or known equal).
//! - `Fingerprint`: the sender's item count and hash sum over the range. If the
//!   receiver's fingerprint matches, the range is equal and it answers `Skip`. If not,
//!   it answers with its own items when it has at most [`ID_LIST_THRESHOLD`] of them,
//!   otherwise it splits the range into [`BRANCHES`] sub-ranges of about equal count
//!   and answers one fingerprint per sub-range.
//! - `IdList`: all the sender's items in the range. The receiver now knows both sides
//!   of that range: it decides what to push (`send`) and what to pull (`want`) and
//!   answers `Skip`, so the range is settled in one step.
//!
//! [`initiate`] opens a session, then the peers alternate [`reconcile`] calls until one
//! returns an empty reply: everything is settled from its side. No state is kept
//! between messages, so a session survives either peer restarting, and the functions
//! here are pure: the caller moves the records for `send` and `want`.
//!
//! # Termination
//! Call L the lower bound of the leftmost range that is not `Skip`. Whoever receives it
//! either settles it (L moves right) or splits it by its own items, so that the first
//! sub-range holds strictly fewer of the splitter's items and no more of the other's.
//! A message never exceeds [`MAX_RANGES`]: when a reply runs out of room it folds the
//! rest of the id space into one fingerprint range, which always lies right of the
//! ranges it did process, so it never undoes progress at L. L takes finitely many
//! values and shrinks finitely often at each, so every session ends.
//!
//! # Fingerprints
//! An item's hash is SHA-256 over its id, version and digest, cut to 16 bytes and
//! cached at insert. A range's fingerprint is its item count and the wrapping sum, mod
//! 2^128, of a keyed function of its item hashes: SipHash-1-3 with 128-bit output under
//! a [`SyncKey`] that only the two ends of one connection know (derived from their TLS
//! session). A sum needs no tree to rebuild on insert.
//!
//! The key is what makes the sum safe. Unkeyed, a sum (or XOR) of item hashes, at any
//! width, falls to a generalised-birthday (k-sum) search: a member who picks the ids
//! of its own records builds two different sets with one count and one sum in about a
//! minute of CPU (`scripts/ksum-collide.py`), shows one to each half of a partition,
//! and after healing both halves call the range equal and never exchange them. Under
//! an unknown key, the member cannot evaluate the function it would have to collide.

use std::collections::BTreeMap;
use std::ops::Bound as StdBound;

use aws_lc_rs::digest::{SHA256, digest};
use siphasher::sip128::{Hasher128, SipHasher13};
use thiserror::Error;

/// How many sub-ranges a differing range with many items is split into.
pub const BRANCHES: usize = 16;

/// Largest item count for which a differing range is answered with its item list.
pub const ID_LIST_THRESHOLD: usize = 16;

/// Most ranges in one message.
pub const MAX_RANGES: usize = 4096;

/// Most items in one range's item list.
pub const MAX_ID_LIST: usize = 4096;

/// Encoded size of an item: id, version, digest.
const ITEM_BYTES: usize = 16 + 8 + 16;

/// Errors from decoding or reconciling a peer's message.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SyncError {
    /// The message stops in the middle of a field.
    #[error("sync message ends early")]
    Truncated,
    /// Bytes follow the last range.
    #[error("sync message has {0} trailing bytes")]
    TrailingBytes(usize),
    /// More ranges than [`MAX_RANGES`].
    #[error("sync message has {0} ranges, the limit is {MAX_RANGES}")]
    TooManyRanges(usize),
    /// An item list longer than [`MAX_ID_LIST`].
    #[error("sync item list has {0} items, the limit is {MAX_ID_LIST}")]
    IdListTooLong(usize),
    /// A bound tag other than 0 (id) or 1 (end).
    #[error("unknown range bound tag {0}")]
    BadBoundTag(u8),
    /// A mode tag other than 0 (skip), 1 (fingerprint) or 2 (item list).
    #[error("unknown range mode tag {0}")]
    BadModeTag(u8),
    /// A range's upper bound is not above the previous one.
    #[error("range bounds are not strictly increasing")]
    BoundsNotIncreasing,
    /// The last range stops before the end of the id space.
    #[error("the last range does not reach the end of the id space")]
    MissingEnd,
    /// An item list is not sorted by id, or repeats an id.
    #[error("item list is not strictly increasing by id")]
    IdListUnordered,
    /// An item list holds an id outside its range.
    #[error("item list holds an id outside its range")]
    IdListOutOfRange,
}

/// A record's summary: what sync compares. Ordered by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Item {
    /// The record id.
    pub id: [u8; 16],
    /// The record version; the higher one is newer.
    pub version: u64,
    /// Digest of the record's signature: tells two copies of one (id, version) apart.
    pub digest: [u8; 16],
}

impl Item {
    /// The item's hash: SHA-256 over `id || version (big-endian) || digest`, cut to 16 bytes.
    pub fn hash(&self) -> [u8; 16] {
        let mut input = [0u8; ITEM_BYTES];
        input[..16].copy_from_slice(&self.id);
        input[16..24].copy_from_slice(&self.version.to_be_bytes());
        input[24..].copy_from_slice(&self.digest);
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest(&SHA256, &input).as_ref()[..16]);
        out
    }
}

/// The secret that keys one session's fingerprints: both ends of a connection derive
/// it from their TLS session, so no third member can aim a collision at it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SyncKey([u8; 16]);

impl std::fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncKey(..)")
    }
}

impl SyncKey {
    /// A key from 16 secret bytes.
    pub const fn new(bytes: [u8; 16]) -> SyncKey {
        SyncKey(bytes)
    }

    /// The keyed function of one item hash that fingerprints add up.
    fn mix(&self, hash: &[u8; 16]) -> u128 {
        let mut h = SipHasher13::new_with_key(&self.0);
        std::hash::Hasher::write(&mut h, hash);
        h.finish128().as_u128()
    }
}

/// A point in the id space: an id, or past every id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bound {
    /// The given id (ordered bytewise).
    Id([u8; 16]),
    /// Past every id; the declaration order makes every `Id` sort before it.
    End,
}

impl Bound {
    /// The smallest bound: where the first range starts.
    pub const MIN: Bound = Bound::Id([0; 16]);
}

/// A summary of the items in a range: their count and the wrapping sum of the keyed
/// function of their hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// How many items the range holds.
    pub count: u64,
    /// Sum of the keyed item functions as u128s, wrapping, as 16 little-endian bytes.
    pub hash: [u8; 16],
}

/// One range of a message: from the previous range's upper bound up to `upper`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Exclusive upper bound.
    pub upper: Bound,
    /// What the sender says about the range.
    pub mode: Mode,
}

/// What a range says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Nothing to say: settled or equal.
    Skip,
    /// The sender's fingerprint over the range.
    Fingerprint(Fingerprint),
    /// All the sender's items in the range, by increasing id.
    IdList(Vec<Item>),
}

/// What [`reconcile`] decided: the reply to send, and the records to move.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Ranges to send back; empty once this side has nothing more to say.
    pub reply: Vec<Range>,
    /// Ids of records to send to the peer, in increasing order.
    pub send: Vec<[u8; 16]>,
    /// Ids of records to request from the peer, in increasing order.
    pub want: Vec<[u8; 16]>,
}

/// What the set keeps per id; the hash is cached because every fingerprint needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    version: u64,
    digest: [u8; 16],
    hash: [u8; 16],
}

/// The items one side holds, keyed by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemSet {
    items: BTreeMap<[u8; 16], Entry>,
}

impl ItemSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an item, replacing (and returning) any item with the same id.
    pub fn insert(&mut self, item: Item) -> Option<Item> {
        let entry = Entry {
            version: item.version,
            digest: item.digest,
            hash: item.hash(),
        };
        self.items.insert(item.id, entry).map(|old| to_item(&item.id, &old))
    }

    /// Removes and returns the item with this id.
    pub fn remove(&mut self, id: &[u8; 16]) -> Option<Item> {
        self.items.remove(id).map(|old| to_item(id, &old))
    }

    /// The item with this id.
    pub fn get(&self, id: &[u8; 16]) -> Option<Item> {
        self.items.get(id).map(|entry| to_item(id, entry))
    }

    /// How many items the set holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the set holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items in increasing id order.
    pub fn iter(&self) -> impl Iterator<Item = Item> + '_ {
        self.items.iter().map(|(id, entry)| to_item(id, entry))
    }

    /// The fingerprint of the items with `lower <= id < upper` under `key`.
    pub fn fingerprint(&self, lower: &Bound, upper: &Bound, key: &SyncKey) -> Fingerprint {
        self.sum(lower, upper, key).fingerprint()
    }

    /// The running sum over `lower <= id < upper`, whose count stays a usize.
    fn sum(&self, lower: &Bound, upper: &Bound, key: &SyncKey) -> Sum {
        let mut sum = Sum::default();
        for (_, entry) in self.entries(lower, upper) {
            sum.add(entry, key);
        }
        sum
    }

    /// The entries with `lower <= id < upper`; empty (not a panic) when `lower >= upper`.
    fn entries<'a>(
        &'a self,
        lower: &Bound,
        upper: &Bound,
    ) -> impl Iterator<Item = (&'a [u8; 16], &'a Entry)> + use<'a> {
        // BTreeMap::range panics on an inverted range, so only build a valid one.
        let range = match (*lower, *upper) {
            (Bound::Id(lo), Bound::Id(hi)) if lo < hi => Some((StdBound::Included(lo), StdBound::Excluded(hi))),
            (Bound::Id(lo), Bound::End) => Some((StdBound::Included(lo), StdBound::Unbounded)),
            _ => None,
        };
        range.into_iter().flat_map(|r| self.items.range(r))
    }
}

fn to_item(id: &[u8; 16], entry: &Entry) -> Item {
    Item {
        id: *id,
        version: entry.version,
        digest: entry.digest,
    }
}

/// A fingerprint being accumulated.
#[derive(Default)]
struct Sum {
    count: usize,
    hash: u128,
}

impl Sum {
    fn add(&mut self, entry: &Entry, key: &SyncKey) {
        self.count += 1;
        self.hash = self.hash.wrapping_add(key.mix(&entry.hash));
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            count: self.count as u64,
            hash: self.hash.to_le_bytes(),
        }
    }
}

/// The first message of a session keyed by `key`: the whole set's fingerprint, or its
/// items if few.
pub fn initiate(set: &ItemSet, key: &SyncKey) -> Vec<Range> {
    let mode = if set.len() <= ID_LIST_THRESHOLD {
        Mode::IdList(set.iter().collect())
    } else {
        Mode::Fingerprint(set.fingerprint(&Bound::MIN, &Bound::End, key))
    };
    vec![Range {
        upper: Bound::End,
        mode,
    }]
}

/// Answers the peer's ranges: the reply, and which records to send and to request.
///
/// An empty `incoming` means the peer has finished; the outcome is then empty too.
/// Fingerprints are compared under `key`, the session's.
pub fn reconcile(set: &ItemSet, incoming: &[Range], key: &SyncKey) -> Result<Outcome, SyncError> {
    reconcile_within(set, incoming, key, MAX_RANGES)
}

/// [`reconcile`] with a smaller message cap, so tests can exercise running out of room.
fn reconcile_within(set: &ItemSet, incoming: &[Range], key: &SyncKey, max_ranges: usize) -> Result<Outcome, SyncError> {
    validate(incoming)?;
    let mut outcome = Outcome::default();
    let mut reply = Vec::new();
    let mut lower = Bound::MIN;
    for range in incoming {
        // A range adds at most BRANCHES ranges to the reply; keep one more free for the
        // remainder. The first range that is not Skip always fits (the Skips before it
        // merge into one), which is what guarantees progress.
        if reply.len() + BRANCHES + 1 > max_ranges {
            let rest = set.fingerprint(&lower, &Bound::End, key);
            reply.push(Range {
                upper: Bound::End,
                mode: Mode::Fingerprint(rest),
            });
            break;
        }
        let upper = range.upper;
        match &range.mode {
            Mode::Skip => push_skip(&mut reply, upper),
            Mode::Fingerprint(theirs) => answer_fingerprint(set, &lower, &upper, theirs, key, &mut reply),
            Mode::IdList(theirs) => {
                compare_items(set, &lower, &upper, theirs, &mut outcome);
                push_skip(&mut reply, upper);
            }
        }
        lower = upper;
    }
    // Skips merge, so an all-Skip reply is one range: say nothing instead.
    if reply.iter().all(|r| r.mode == Mode::Skip) {
        reply.clear();
    }
    outcome.reply = reply;
    Ok(outcome)
}

/// Appends a Skip, merging it into a Skip just before: adjacent Skips say nothing more.
fn push_skip(reply: &mut Vec<Range>, upper: Bound) {
    if let Some(last) = reply.last_mut()
        && last.mode == Mode::Skip
    {
        last.upper = upper;
        return;
    }
    reply.push(Range {
        upper,
        mode: Mode::Skip,
    });
}

/// Answers a fingerprint: Skip if equal, our items if few, else BRANCHES fingerprints.
fn answer_fingerprint(
    set: &ItemSet,
    lower: &Bound,
    upper: &Bound,
    theirs: &Fingerprint,
    key: &SyncKey,
    reply: &mut Vec<Range>,
) {
    let ours = set.sum(lower, upper, key);
    if ours.fingerprint() == *theirs {
        push_skip(reply, *upper);
        return;
    }
    let count = ours.count;
    if count <= ID_LIST_THRESHOLD {
        let items = set.entries(lower, upper).map(|(id, e)| to_item(id, e)).collect();
        reply.push(Range {
            upper: *upper,
            mode: Mode::IdList(items),
        });
        return;
    }
    // Split at our own items so each sub-range holds about count / parts of them: that
    // strictly shrinks what we hold per range, whatever the peer holds.
    let parts = BRANCHES.min(count);
    let mut part = 0;
    let mut sum = Sum::default();
    for (i, (id, entry)) in set.entries(lower, upper).enumerate() {
        // Sub-range `part` ends just before item (part + 1) * count / parts; these
        // indices strictly increase because count >= parts, so no sub-range is empty.
        if part + 1 < parts && i == (part + 1) * count / parts {
            reply.push(Range {
                upper: Bound::Id(*id),
                mode: Mode::Fingerprint(sum.fingerprint()),
            });
            sum = Sum::default();
            part += 1;
        }
        sum.add(entry, key);
    }
    reply.push(Range {
        upper: *upper,
        mode: Mode::Fingerprint(sum.fingerprint()),
    });
}

/// Compares the peer's full item list for a range with ours, by a merge of two sorted
/// lists (validation guarantees theirs is sorted and inside the range).
fn compare_items(set: &ItemSet, lower: &Bound, upper: &Bound, theirs: &[Item], outcome: &mut Outcome) {
    let mut ours = set.entries(lower, upper).peekable();
    let mut theirs = theirs.iter().peekable();
    loop {
        match (ours.peek(), theirs.peek()) {
            (None, None) => break,
            (Some((id, _)), None) => {
                outcome.send.push(**id);
                ours.next();
            }
            (None, Some(t)) => {
                outcome.want.push(t.id);
                theirs.next();
            }
            (Some((id, entry)), Some(t)) => match (**id).cmp(&t.id) {
                std::cmp::Ordering::Less => {
                    outcome.send.push(**id);
                    ours.next();
                }
                std::cmp::Ordering::Greater => {
                    outcome.want.push(t.id);
                    theirs.next();
                }
                std::cmp::Ordering::Equal => {
                    match entry.version.cmp(&t.version) {
                        std::cmp::Ordering::Greater => outcome.send.push(t.id),
                        std::cmp::Ordering::Less => outcome.want.push(t.id),
                        // Two copies of one version: swap both ways and let each side's
                        // conflict rule pick the same winner.
                        std::cmp::Ordering::Equal if entry.digest != t.digest => {
                            outcome.send.push(t.id);
                            outcome.want.push(t.id);
                        }
                        std::cmp::Ordering::Equal => {}
                    }
                    ours.next();
                    theirs.next();
                }
            },
        }
    }
}

/// Checks a message's shape: caps, increasing bounds ending at End, sorted item lists
/// inside their ranges. Both decoding and reconciling rely on it.
fn validate(ranges: &[Range]) -> Result<(), SyncError> {
    if ranges.len() > MAX_RANGES {
        return Err(SyncError::TooManyRanges(ranges.len()));
    }
    let mut lower = Bound::MIN;
    for (i, range) in ranges.iter().enumerate() {
        if i > 0 && range.upper <= lower {
            return Err(SyncError::BoundsNotIncreasing);
        }
        if let Mode::IdList(items) = &range.mode {
            if items.len() > MAX_ID_LIST {
                return Err(SyncError::IdListTooLong(items.len()));
            }
            if items.windows(2).any(|w| w[0].id >= w[1].id) {
                return Err(SyncError::IdListUnordered);
            }
            // Sorted, so the first and last items bound the rest.
            if let (Some(first), Some(last)) = (items.first(), items.last())
                && (Bound::Id(first.id) < lower || Bound::Id(last.id) >= range.upper)
            {
                return Err(SyncError::IdListOutOfRange);
            }
        }
        lower = range.upper;
    }
    if ranges.last().is_some_and(|r| r.upper != Bound::End) {
        return Err(SyncError::MissingEnd);
    }
    Ok(())
}

/// Encodes ranges for the wire.
///
/// Counts past the caps are written saturated, so such a message fails
/// [`decode_ranges`]; [`initiate`] and [`reconcile`] never produce one.
pub fn encode_ranges(ranges: &[Range]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + ranges.len() * (2 + 16 + 24));
    out.extend_from_slice(&saturating_u16(ranges.len()).to_be_bytes());
    for range in ranges {
        match range.upper {
            Bound::Id(id) => {
                out.push(0);
                out.extend_from_slice(&id);
            }
            Bound::End => out.push(1),
        }
        match &range.mode {
            Mode::Skip => out.push(0),
            Mode::Fingerprint(fp) => {
                out.push(1);
                out.extend_from_slice(&fp.count.to_be_bytes());
                out.extend_from_slice(&fp.hash);
            }
            Mode::IdList(items) => {
                out.push(2);
                out.extend_from_slice(&saturating_u16(items.len()).to_be_bytes());
                for item in items {
                    out.extend_from_slice(&item.id);
                    out.extend_from_slice(&item.version.to_be_bytes());
                    out.extend_from_slice(&item.digest);
                }
            }
        }
    }
    out
}

fn saturating_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Decodes and validates a message; any malformed input is an error, never a panic.
pub fn decode_ranges(bytes: &[u8]) -> Result<Vec<Range>, SyncError> {
    let mut r = Reader { rest: bytes };
    let count = usize::from(r.u16()?);
    if count > MAX_RANGES {
        return Err(SyncError::TooManyRanges(count));
    }
    let mut ranges = Vec::with_capacity(count);
    for _ in 0..count {
        let upper = match r.u8()? {
            0 => Bound::Id(r.array()?),
            1 => Bound::End,
            tag => return Err(SyncError::BadBoundTag(tag)),
        };
        let mode = match r.u8()? {
            0 => Mode::Skip,
            1 => Mode::Fingerprint(Fingerprint {
                count: r.u64()?,
                hash: r.array()?,
            }),
            2 => {
                let n = usize::from(r.u16()?);
                if n > MAX_ID_LIST {
                    return Err(SyncError::IdListTooLong(n));
                }
                // Check the length before allocating, so a lying count costs nothing.
                if r.rest.len() < n * ITEM_BYTES {
                    return Err(SyncError::Truncated);
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(Item {
                        id: r.array()?,
                        version: r.u64()?,
                        digest: r.array()?,
                    });
                }
                Mode::IdList(items)
            }
            tag => return Err(SyncError::BadModeTag(tag)),
        };
        ranges.push(Range { upper, mode });
    }
    if !r.rest.is_empty() {
        return Err(SyncError::TrailingBytes(r.rest.len()));
    }
    validate(&ranges)?;
    Ok(ranges)
}

/// A cursor over a message that fails, rather than panics, at the end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SyncError> {
        let (head, tail) = self.rest.split_first_chunk::<N>().ok_or(SyncError::Truncated)?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, SyncError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, SyncError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SyncError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the sessions these tests run.
    const KEY: SyncKey = SyncKey::new([7; 16]);

    /// splitmix64: deterministic test data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn bytes16(&mut self) -> [u8; 16] {
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&self.next().to_le_bytes());
            out[8..].copy_from_slice(&self.next().to_le_bytes());
            out
        }

        fn item(&mut self) -> Item {
            Item {
                id: self.bytes16(),
                version: 1 + self.next() % 5,
                digest: self.bytes16(),
            }
        }

        fn items(&mut self, n: usize) -> Vec<Item> {
            (0..n).map(|_| self.item()).collect()
        }
    }

    fn set_of(items: &[Item]) -> ItemSet {
        let mut set = ItemSet::new();
        for item in items {
            set.insert(*item);
        }
        set
    }

    /// What a session did: bytes on the wire, messages, and each side's transfers.
    #[derive(Debug, Default)]
    struct Session {
        bytes: usize,
        rounds: usize,
        a_send: Vec<[u8; 16]>,
        a_want: Vec<[u8; 16]>,
        b_send: Vec<[u8; 16]>,
        b_want: Vec<[u8; 16]>,
    }

    fn run_session(a: &ItemSet, b: &ItemSet) -> Session {
        run_session_within(a, b, MAX_RANGES)
    }

    /// A opens, then the sides alternate until a reply is empty; every message goes
    /// through the wire encoding. `rounds` counts messages, the last (empty) one too.
    fn run_session_within(a: &ItemSet, b: &ItemSet, max_ranges: usize) -> Session {
        let mut s = Session::default();
        let mut message = initiate(a, &KEY);
        let mut a_turn = false;
        loop {
            assert!(message.len() <= max_ranges, "a message of {} ranges", message.len());
            let bytes = encode_ranges(&message);
            s.bytes += bytes.len();
            s.rounds += 1;
            let received = decode_ranges(&bytes).expect("our own message decodes");
            assert_eq!(received, message);
            if received.is_empty() {
                return s;
            }
            assert!(s.rounds < 10_000, "the session does not end");
            let (set, send, want) = if a_turn {
                (a, &mut s.a_send, &mut s.a_want)
            } else {
                (b, &mut s.b_send, &mut s.b_want)
            };
            let out = reconcile_within(set, &received, &KEY, max_ranges).expect("our own message reconciles");
            send.extend(out.send);
            want.extend(out.want);
            message = out.reply;
            a_turn = !a_turn;
        }
    }

    /// The conflict rule the tests use: higher version, then larger digest.
    fn deliver(set: &mut ItemSet, item: Item) {
        match set.get(&item.id) {
            Some(have) if (have.version, have.digest) >= (item.version, item.digest) => {}
            _ => {
                set.insert(item);
            }
        }
    }

    /// How many transfers a perfect session makes: one per differing id, two per
    /// same-version conflict.
    fn needed_transfers(a: &ItemSet, b: &ItemSet) -> usize {
        let mut n = b.iter().filter(|x| a.get(&x.id).is_none()).count();
        for x in a.iter() {
            n += match b.get(&x.id) {
                None => 1,
                Some(y) if y.version != x.version => 1,
                Some(y) if y.digest != x.digest => 2,
                Some(_) => 0,
            };
        }
        n
    }

    /// Applies the session's transfers and checks both sides end with the merged union.
    /// `exact`: also check nothing moved twice (true unless a reply ran out of room).
    fn check_session(a: &ItemSet, b: &ItemSet, s: &Session, exact: bool) -> (ItemSet, ItemSet) {
        let (mut a2, mut b2) = (a.clone(), b.clone());
        for id in &s.a_send {
            deliver(&mut b2, a.get(id).expect("A sends what it has"));
        }
        for id in &s.a_want {
            deliver(&mut a2, b.get(id).expect("A wants what B has"));
        }
        for id in &s.b_send {
            deliver(&mut a2, b.get(id).expect("B sends what it has"));
        }
        for id in &s.b_want {
            deliver(&mut b2, a.get(id).expect("B wants what A has"));
        }
        let mut union = a.clone();
        for item in b.iter() {
            deliver(&mut union, item);
        }
        assert_eq!(a2, union, "A did not converge");
        assert_eq!(b2, union, "B did not converge");
        let moved = s.a_send.len() + s.a_want.len() + s.b_send.len() + s.b_want.len();
        if exact {
            assert_eq!(moved, needed_transfers(a, b));
        }
        (a2, b2)
    }

    fn session(a: &ItemSet, b: &ItemSet) -> Session {
        let s = run_session(a, b);
        check_session(a, b, &s, true);
        s
    }

    /// Two sets built to collide under the unkeyed sum of item hashes (by
    /// `scripts/ksum-collide.py --seed 1`, a k-sum search) reconcile under a key.
    #[test]
    fn sets_built_to_collide_under_a_plain_sum_still_reconcile() {
        let fixture = include_str!("../tests/data/ksum-collision.txt");
        let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
        for line in fixture.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split(' ').collect();
            let hex16 = |h: &str| -> [u8; 16] {
                let mut b = [0u8; 16];
                for (i, byte) in b.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
                }
                b
            };
            let item = Item {
                id: hex16(f[1]),
                version: f[2].parse().unwrap(),
                digest: hex16(f[3]),
            };
            if f[0] == "A" {
                only_a.push(item)
            } else {
                only_b.push(item)
            }
        }
        let plain = |items: &[Item]| {
            let sum = items
                .iter()
                .fold(0u128, |s, i| s.wrapping_add(u128::from_le_bytes(i.hash())));
            (items.len(), sum)
        };
        assert_eq!(only_a.len(), 64);
        assert_eq!(
            plain(&only_a),
            plain(&only_b),
            "the fixture does not collide under a plain sum"
        );
        let base = Rng(21).items(500);
        let a = set_of(&[base.clone(), only_a].concat());
        let b = set_of(&[base, only_b].concat());
        let s = session(&a, &b);
        assert_eq!(s.a_send.len() + s.b_want.len() + s.a_want.len() + s.b_send.len(), 128);
    }

    #[test]
    fn both_empty() {
        let s = session(&ItemSet::new(), &ItemSet::new());
        assert_eq!(s.rounds, 2);
        assert_eq!(s.bytes, 2 + 1 + 1 + 2 + 2);
    }

    #[test]
    fn one_side_empty() {
        let full = set_of(&Rng(1).items(1000));
        let empty = ItemSet::new();
        let s = session(&full, &empty);
        assert_eq!(s.a_send.len(), 1000);
        eprintln!("1000 vs empty: {} bytes, {} rounds", s.bytes, s.rounds);
        let s = session(&empty, &full);
        assert_eq!(s.b_send.len(), 1000);
        eprintln!("empty vs 1000: {} bytes, {} rounds", s.bytes, s.rounds);
    }

    #[test]
    fn disjoint_sets() {
        let mut rng = Rng(2);
        let (a, b) = (set_of(&rng.items(500)), set_of(&rng.items(700)));
        let s = session(&a, &b);
        let (a2, _) = check_session(&a, &b, &s, true);
        assert_eq!(a2.len(), 1200);
        session(&b, &a);
    }

    #[test]
    fn overlapping_sets() {
        let mut rng = Rng(3);
        let common = rng.items(2000);
        let mut a = set_of(&common);
        let mut b = set_of(&common);
        for item in rng.items(300) {
            a.insert(item);
        }
        for item in rng.items(400) {
            b.insert(item);
        }
        let s = session(&a, &b);
        eprintln!("2000 common, 300 + 400 apart: {} bytes, {} rounds", s.bytes, s.rounds);
        session(&b, &a);
    }

    #[test]
    fn higher_version_wins_both_ways() {
        let items = Rng(4).items(500);
        let mut a = set_of(&items);
        let mut b = set_of(&items);
        let mut a_newer = Vec::new();
        let mut b_newer = Vec::new();
        for (i, item) in items.iter().enumerate().filter(|(i, _)| i % 7 == 0) {
            let newer = Item {
                version: item.version + 1,
                ..*item
            };
            if i % 2 == 0 {
                a.insert(newer);
                a_newer.push(item.id);
            } else {
                b.insert(newer);
                b_newer.push(item.id);
            }
        }
        let s = session(&a, &b);
        let mut a_pushes: Vec<_> = s.a_send.iter().chain(&s.b_want).copied().collect();
        let mut b_pushes: Vec<_> = s.b_send.iter().chain(&s.a_want).copied().collect();
        a_pushes.sort();
        b_pushes.sort();
        a_newer.sort();
        b_newer.sort();
        assert_eq!(a_pushes, a_newer);
        assert_eq!(b_pushes, b_newer);
    }

    #[test]
    fn same_version_other_digest_goes_both_ways() {
        let item = Rng(5).item();
        let other = Item {
            digest: [0xff; 16],
            ..item
        };
        let (a, b) = (set_of(&[item]), set_of(&[other]));
        let s = session(&a, &b);
        // B receives A's list, so B both pushes its copy and pulls A's.
        assert_eq!(s.b_send, vec![item.id]);
        assert_eq!(s.b_want, vec![item.id]);

        // The same inside a large set, where the difference is found by fingerprints.
        let mut rng = Rng(6);
        let items = rng.items(3000);
        let (mut a, mut b) = (set_of(&items), set_of(&items));
        let conflict = Item {
            digest: rng.bytes16(),
            ..items[1234]
        };
        b.insert(conflict);
        a.insert(Item {
            id: rng.bytes16(),
            ..conflict
        });
        let s = session(&a, &b);
        let (a2, _) = check_session(&a, &b, &s, true);
        assert_eq!(
            a2.get(&conflict.id).map(|x| x.digest),
            Some(conflict.digest.max(items[1234].digest))
        );
    }

    #[test]
    fn identical_sets_take_one_round_trip() {
        let set = set_of(&Rng(7).items(10_000));
        let s = session(&set, &set.clone());
        eprintln!("identical 10,000: {} bytes, {} rounds", s.bytes, s.rounds);
        assert_eq!(s.rounds, 2);
        assert!(s.bytes < 64, "{} bytes", s.bytes);
    }

    /// Two sets of 10,000 that differ by `d`, in one of three ways.
    fn pair(d: usize, how: usize, seed: u64) -> (ItemSet, ItemSet) {
        let mut rng = Rng(seed);
        let items = rng.items(10_000);
        let (mut a, mut b) = (set_of(&items), set_of(&items));
        match how {
            // d items only on B.
            0 => {
                for i in 0..d {
                    a.remove(&items[i * 10_000 / d].id);
                }
            }
            // d / 2 only on each side.
            1 => {
                for i in 0..d {
                    let target = if i % 2 == 0 { &mut a } else { &mut b };
                    target.remove(&items[i * 10_000 / d].id);
                }
            }
            // d newer versions, on either side.
            _ => {
                for i in 0..d {
                    let item = items[i * 10_000 / d];
                    let target = if i % 2 == 0 { &mut a } else { &mut b };
                    target.insert(Item {
                        version: item.version + 1,
                        ..item
                    });
                }
            }
        }
        (a, b)
    }

    #[test]
    fn cost_grows_with_the_difference_not_the_set() {
        let all_ids = 10_000 * ITEM_BYTES;
        for (how, name) in [(0, "10 on one side"), (1, "5 on each side"), (2, "10 newer versions")] {
            let (a, b) = pair(10, how, 8);
            let small = session(&a, &b);
            let (a, b) = pair(1000, how, 8);
            let large = run_session(&a, &b);
            // d = 1000 fills whole messages, so a range can be revisited: no exact count.
            check_session(&a, &b, &large, false);
            eprintln!(
                "10,000 items, {name}: d=10 {} bytes in {} rounds; d=1000 {} bytes in {} rounds",
                small.bytes, small.rounds, large.bytes, large.rounds
            );
            assert!(small.bytes < 40 * 1024, "{} bytes", small.bytes);
            assert!(
                small.bytes * 10 <= large.bytes,
                "{} vs {} bytes",
                small.bytes,
                large.bytes
            );
            assert!(small.bytes * 10 < all_ids, "{} bytes", small.bytes);
        }
    }

    #[test]
    fn full_messages_still_converge() {
        // A tiny cap makes almost every reply run out of room.
        let mut rng = Rng(9);
        let common = rng.items(3000);
        let (mut a, mut b) = (set_of(&common), set_of(&common));
        for item in rng.items(400) {
            a.insert(item);
        }
        for item in rng.items(400) {
            b.insert(item);
        }
        for item in common.iter().step_by(11) {
            b.insert(Item {
                version: item.version + 1,
                ..*item
            });
        }
        for cap in [BRANCHES + 2, 40, 200] {
            let s = run_session_within(&a, &b, cap);
            check_session(&a, &b, &s, false);
            eprintln!("cap {cap} ranges: {} bytes, {} rounds", s.bytes, s.rounds);
        }
        let disjoint = set_of(&rng.items(5000));
        let s = run_session_within(&a, &disjoint, BRANCHES + 2);
        check_session(&a, &disjoint, &s, false);
    }

    #[test]
    fn hundred_thousand_items() {
        let mut rng = Rng(10);
        let items = rng.items(100_000);
        let (mut a, mut b) = (set_of(&items), set_of(&items));
        for item in items.iter().step_by(1000) {
            a.insert(Item {
                version: item.version + 1,
                ..*item
            });
            b.insert(rng.item());
        }
        let start = std::time::Instant::now();
        let s = run_session(&a, &b);
        let elapsed = start.elapsed();
        check_session(&a, &b, &s, true);
        eprintln!(
            "100,000 items, 200 differences: {} bytes, {} rounds, {elapsed:?}",
            s.bytes, s.rounds
        );
    }

    #[test]
    fn splits_into_branches_and_lists_small_ranges() {
        let set = set_of(&Rng(11).items(1000));
        let probe = [Range {
            upper: Bound::End,
            mode: Mode::Fingerprint(Fingerprint::default()),
        }];
        let out = reconcile(&set, &probe, &KEY).unwrap();
        assert_eq!(out.reply.len(), BRANCHES);
        let total: u64 = out
            .reply
            .iter()
            .map(|r| match &r.mode {
                Mode::Fingerprint(fp) => fp.count,
                other => panic!("{other:?}"),
            })
            .sum();
        assert_eq!(total, 1000);
        assert!(out.send.is_empty() && out.want.is_empty());

        let small = set_of(&Rng(12).items(ID_LIST_THRESHOLD));
        let out = reconcile(&small, &probe, &KEY).unwrap();
        assert!(matches!(&out.reply[..], [Range { upper: Bound::End, mode: Mode::IdList(l) }] if l.len() == 16));
    }

    #[test]
    fn fingerprints_add_up_and_insert_replaces() {
        let items = Rng(13).items(300);
        let mut set = set_of(&items);
        let whole = set.fingerprint(&Bound::MIN, &Bound::End, &KEY);
        assert_eq!(whole.count, 300);
        let mid = Bound::Id(set.iter().nth(150).unwrap().id);
        let (lo, hi) = (
            set.fingerprint(&Bound::MIN, &mid, &KEY),
            set.fingerprint(&mid, &Bound::End, &KEY),
        );
        assert_eq!(lo.count + hi.count, 300);
        let sum = u128::from_le_bytes(lo.hash).wrapping_add(u128::from_le_bytes(hi.hash));
        // A fingerprint under one key says nothing of another's.
        assert_ne!(set.fingerprint(&Bound::MIN, &Bound::End, &SyncKey::new([8; 16])), whole);
        assert_eq!(sum.to_le_bytes(), whole.hash);
        // Inverted and empty ranges are empty, not a panic.
        assert_eq!(set.fingerprint(&Bound::End, &Bound::MIN, &KEY), Fingerprint::default());
        assert_eq!(set.fingerprint(&mid, &mid, &KEY), Fingerprint::default());

        let newer = Item {
            version: items[0].version + 1,
            ..items[0]
        };
        assert_eq!(set.insert(newer), Some(items[0]));
        assert_eq!(set.get(&items[0].id), Some(newer));
        assert_eq!(set.len(), 300);
        assert_ne!(set.fingerprint(&Bound::MIN, &Bound::End, &KEY), whole);
        assert_eq!(set.remove(&items[0].id), Some(newer));
        assert_eq!(set.len(), 299);
        assert!(set.iter().zip(set.iter().skip(1)).all(|(x, y)| x.id < y.id));
    }

    #[test]
    fn decode_never_panics() {
        let mut rng = Rng(14);
        for len in 0..300 {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let _ = decode_ranges(&bytes);
            }
        }
        // Plausible-looking messages: valid tags, random content.
        for _ in 0..5000 {
            let mut bytes = vec![0, (rng.next() % 4) as u8];
            for _ in 0..rng.next() % 5 {
                bytes.push((rng.next() % 3) as u8);
                bytes.extend(rng.bytes16());
                bytes.push((rng.next() % 4) as u8);
                bytes.extend((0..rng.next() % 90).map(|_| rng.next() as u8));
            }
            let _ = decode_ranges(&bytes);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut rng = Rng(15);
        let items = rng.items(40);
        let set = set_of(&items);
        let mut sorted: Vec<Item> = set.iter().collect();
        let mid = sorted[20].id;
        let message = vec![
            Range {
                upper: Bound::Id(sorted[5].id),
                mode: Mode::Skip,
            },
            Range {
                upper: Bound::Id(mid),
                mode: Mode::Fingerprint(set.fingerprint(&Bound::MIN, &Bound::End, &KEY)),
            },
            Range {
                upper: Bound::End,
                mode: Mode::IdList(sorted.split_off(20)),
            },
        ];
        let bytes = encode_ranges(&message);
        assert_eq!(decode_ranges(&bytes), Ok(message));
        for cut in 0..bytes.len() {
            assert!(decode_ranges(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_ranges(&longer), Err(SyncError::TrailingBytes(1)));
        assert_eq!(decode_ranges(&[]), Err(SyncError::Truncated));
        assert_eq!(decode_ranges(&[0, 0]), Ok(vec![]));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let id = |b: u8| [b; 16];
        let item = |b: u8| Item {
            id: id(b),
            version: 1,
            digest: [0; 16],
        };
        let skip = |upper| Range {
            upper,
            mode: Mode::Skip,
        };
        let list = |upper, items: Vec<Item>| Range {
            upper,
            mode: Mode::IdList(items),
        };
        let cases = [
            (
                vec![skip(Bound::Id(id(5))), skip(Bound::Id(id(5))), skip(Bound::End)],
                SyncError::BoundsNotIncreasing,
            ),
            (
                vec![skip(Bound::Id(id(5))), skip(Bound::Id(id(4))), skip(Bound::End)],
                SyncError::BoundsNotIncreasing,
            ),
            (vec![skip(Bound::End), skip(Bound::End)], SyncError::BoundsNotIncreasing),
            (vec![skip(Bound::Id(id(5)))], SyncError::MissingEnd),
            (
                vec![list(Bound::End, vec![item(2), item(1)])],
                SyncError::IdListUnordered,
            ),
            (
                vec![list(Bound::End, vec![item(2), item(2)])],
                SyncError::IdListUnordered,
            ),
            (
                vec![list(Bound::Id(id(5)), vec![item(5)]), skip(Bound::End)],
                SyncError::IdListOutOfRange,
            ),
            (
                vec![skip(Bound::Id(id(5))), list(Bound::End, vec![item(4)])],
                SyncError::IdListOutOfRange,
            ),
            (
                vec![list(Bound::End, vec![item(1); MAX_ID_LIST + 1])],
                SyncError::IdListTooLong(MAX_ID_LIST + 1),
            ),
        ];
        for (ranges, error) in cases {
            assert_eq!(decode_ranges(&encode_ranges(&ranges)), Err(error.clone()), "{ranges:?}");
            assert_eq!(reconcile(&ItemSet::new(), &ranges, &KEY), Err(error));
        }
        let too_many: Vec<Range> = (0..=MAX_RANGES as u16)
            .map(|i| {
                skip(if i as usize == MAX_RANGES {
                    Bound::End
                } else {
                    Bound::Id(u128::from(i).to_be_bytes())
                })
            })
            .collect();
        assert_eq!(
            decode_ranges(&encode_ranges(&too_many)),
            Err(SyncError::TooManyRanges(MAX_RANGES + 1))
        );
        assert_eq!(
            reconcile(&ItemSet::new(), &too_many, &KEY),
            Err(SyncError::TooManyRanges(MAX_RANGES + 1))
        );
        assert_eq!(decode_ranges(&[0, 1, 2, 0]), Err(SyncError::BadBoundTag(2)));
        assert_eq!(decode_ranges(&[0, 1, 1, 3]), Err(SyncError::BadModeTag(3)));
        // An item count that promises more than the message holds is refused up front.
        assert_eq!(decode_ranges(&[0, 1, 1, 2, 0x10, 0]), Err(SyncError::Truncated));
        // The peer having finished is not an error.
        assert_eq!(reconcile(&ItemSet::new(), &[], &KEY), Ok(Outcome::default()));
    }
}
