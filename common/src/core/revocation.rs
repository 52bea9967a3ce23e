//! Revocation: an admin cuts a member off. Times inside a record or certificate are the
//! member's to choose, so "new" cannot mean "created after": a revocation instead names
//! what of its subject's stays valid, the records (and, for an admin, the certificates
//! it issued) that the revoking admin held when it signed, each by an 8-byte key.
//! Everything else from the subject, or issued by it, is refused by every node, in any
//! order of arrival, and what a node already holds of it is deleted.

use std::collections::{HashMap, HashSet};

use crate::member::MemberId;
use crate::pki::{Cert, Claim, Role};
use crate::record::Record;
use crate::sync::Item;

const RECORD_DOMAIN: &[u8] = b"peergroup kept record\0";
const CERT_DOMAIN: &[u8] = b"peergroup kept certification\0";
/// Most keys a revocation holds: its data stays within a record's 64 KiB.
pub const MAX_KEPT: usize = 8_000;
/// The attribute holding a revocation's reason.
pub const REASON_ATTR: &str = "reason";
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 512;

/// What a revocation keeps, by key: 64 bits of SHA-256, so a member would need 2^64
/// tries to make a record of its own pass as one kept.
pub type Key = [u8; 8];

fn key(domain: &[u8], parts: &[&[u8]]) -> Key {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(domain);
    for p in parts {
        ctx.update(p);
    }
    let d = ctx.finish();
    let mut k = [0u8; 8];
    k.copy_from_slice(&d.as_ref()[..8]);
    k
}

/// The key of one copy of a record: its id, version and signature digest.
pub fn item_key(item: &Item) -> Key {
    key(RECORD_DOMAIN, &[&item.id, &item.version.to_be_bytes(), &item.digest])
}

/// [`item_key`] of a record.
pub fn record_key(r: &Record) -> Key {
    item_key(&Item {
        id: *r.id.as_bytes(),
        version: r.version,
        digest: r.digest(),
    })
}

/// The key of a certification: `parent` (an issuing certificate) certified `child`'s
/// member in the role `child` grants (an issuing certificate's is admin). Keyed by
/// member and role rather than by bytes, so an admin's membership and issuing
/// certificates, issued together, are kept together, and a renewal of a kept member
/// in the same role under the same issuer stays valid; a new member or a promotion
/// does not.
pub fn cert_key(child: &Cert, parent: &Cert) -> Key {
    let role: &[u8] = match child.claim {
        Claim::Membership { role: Role::Member, .. } => b"member",
        _ => b"admin",
    };
    key(CERT_DOMAIN, &[child.member_id.as_bytes(), role, &parent.der])
}

/// A revocation's record data: its keys, sorted, without repeats.
pub fn encode_keys(mut keys: Vec<Key>) -> Vec<u8> {
    keys.sort_unstable();
    keys.dedup();
    keys.concat()
}

/// The keys in a revocation's data: `None` unless a whole number of keys in strictly
/// increasing order (one encoding per content).
pub fn decode_keys(data: &[u8]) -> Option<HashSet<Key>> {
    if !data.len().is_multiple_of(8) {
        return None;
    }
    let keys: Vec<Key> = data.chunks_exact(8).map(|c| c.try_into().unwrap_or_default()).collect();
    keys.windows(2).all(|w| w[0] < w[1]).then(|| keys.into_iter().collect())
}

/// One member's revocation, as every node applies it.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// Who is cut off.
    pub subject: MemberId,
    /// The admin who revoked it.
    pub by: MemberId,
    /// When the admin says it signed (unix ms; for display only).
    pub at_ms: i64,
    /// Why, as the admin wrote it.
    pub reason: String,
    keep: HashSet<Key>,
}

impl Revocation {
    /// A revocation keeping `keep`.
    pub fn new(subject: MemberId, by: MemberId, at_ms: i64, reason: String, keep: HashSet<Key>) -> Revocation {
        Revocation {
            subject,
            by,
            at_ms,
            reason,
            keep,
        }
    }

    /// Whether this copy of a record stays valid.
    pub fn keeps(&self, item: &Item) -> bool {
        self.keep.contains(&item_key(item))
    }

    /// Whether a certification by the subject stays valid (see [`cert_key`]).
    pub fn keeps_cert(&self, child: &Cert, parent: &Cert) -> bool {
        self.keep.contains(&cert_key(child, parent))
    }
}

/// The revocations in force, by subject, and the admins made members again (with the
/// certificates they issued that stay valid).
#[derive(Debug, Default)]
pub struct Revocations {
    revoked: HashMap<MemberId, Revocation>,
    demoted: HashMap<MemberId, HashSet<Key>>,
}

impl Revocations {
    /// The revocation of `member`, if any.
    pub fn of(&self, member: &MemberId) -> Option<&Revocation> {
        self.revoked.get(member)
    }

    /// Puts `r` in force (the copy the conflict rule chose replaces another).
    pub fn insert(&mut self, r: Revocation) {
        self.revoked.insert(r.subject, r);
    }

    /// `member` is a member now: of the certificates it issued, only `kept` stay valid.
    pub fn demote(&mut self, member: MemberId, kept: HashSet<Key>) {
        self.demoted.insert(member, kept);
    }

    /// `member` is an admin (again): what it issues counts.
    pub fn promote(&mut self, member: &MemberId) {
        self.demoted.remove(member);
    }

    /// Whether `admin`'s certification `key` stands (it is neither revoked nor made a
    /// member, or its revocation or demotion keeps it).
    pub fn keeps_certification(&self, admin: &MemberId, key: &Key) -> bool {
        self.of(admin).is_none_or(|r| r.keep.contains(key)) && self.demoted.get(admin).is_none_or(|k| k.contains(key))
    }

    /// What a member made member again keeps of what it issued (sorted), if it was.
    pub fn demoted_keeps(&self, member: &MemberId) -> Option<Vec<Key>> {
        let mut keys: Vec<Key> = self.demoted.get(member)?.iter().copied().collect();
        keys.sort_unstable();
        Some(keys)
    }

    /// Whether a record by `creator`, last modified by `modifier`, stays valid: unless
    /// either is revoked and the revocation does not keep this very copy.
    pub fn allows(&self, creator: &MemberId, modifier: &MemberId, item: &Item) -> bool {
        [creator, modifier]
            .into_iter()
            .all(|m| self.of(m).is_none_or(|r| r.keeps(item)))
    }

    /// Whether a certificate with its chain (`issuers`, nearest first) stays valid:
    /// every link a revoked member issued must be one its revocation kept (a member it
    /// made admin before may go on issuing; one it made after, however dated, not).
    pub fn allows_chain(&self, leaf: &Cert, issuers: &[Cert]) -> bool {
        std::iter::once(leaf)
            .chain(issuers)
            .zip(issuers)
            .all(|(child, parent)| {
                let key = cert_key(child, parent);
                self.of(&parent.member_id).is_none_or(|r| r.keep.contains(&key))
                    && self.demoted.get(&parent.member_id).is_none_or(|k| k.contains(&key))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_only_from_their_one_encoding() {
        let keys = vec![[3u8; 8], [1u8; 8], [3u8; 8]];
        let data = encode_keys(keys);
        assert_eq!(data.len(), 16);
        let set = decode_keys(&data).unwrap();
        assert!(set.contains(&[1u8; 8]) && set.contains(&[3u8; 8]));
        assert!(decode_keys(&data[..15]).is_none(), "not a whole number of keys");
        let mut unsorted = data.clone();
        unsorted.rotate_left(8);
        assert!(decode_keys(&unsorted).is_none(), "out of order");
        assert!(decode_keys(&[[1u8; 8], [1u8; 8]].concat()).is_none(), "repeated");
        assert_eq!(decode_keys(&[]).map(|s| s.len()), Some(0));
    }

    #[test]
    fn only_the_copies_kept_of_a_revoked_members_records_stay_valid() {
        let (bob, carol, admin) = (MemberId::repeat('b'), MemberId::repeat('c'), MemberId::repeat('a'));
        let kept = Item {
            id: [1; 16],
            version: 1,
            digest: [9; 16],
        };
        let mut revs = Revocations::default();
        revs.insert(Revocation::new(bob, admin, 0, String::new(), [item_key(&kept)].into()));
        assert!(revs.allows(&bob, &bob, &kept));
        // A later version of a kept record, or another record, is not kept.
        let edited = Item { version: 2, ..kept };
        assert!(!revs.allows(&bob, &bob, &edited));
        let backdated = Item { id: [2; 16], ..kept };
        assert!(!revs.allows(&bob, &bob, &backdated));
        // Another member's records are untouched, unless bob modified them.
        assert!(revs.allows(&carol, &carol, &backdated));
        assert!(!revs.allows(&carol, &bob, &backdated));
    }
}
