//! Records: the unit of replication. Chat messages, presence and membership are all
//! records. This module knows their encoding, their signature and the conflict rule;
//! it does no I/O.
//!
//! Encoding (big-endian, every length bounded, no trailing bytes):
//! ```text
//! "PGR2" id(16) nonce(16) type(16) version(u64) creator(20) modifier(20)
//! created_ms(i64) modified_ms(i64) expires_ms(i64) deleted(u8)
//! attr_count(u8) { name_len(u8) name kind(u8: 0 str, 1 int, 2 date) value }*
//! data_len(u32) data  sig_len(u16) signature
//! ```
//! The signature covers `"peergroup record v2\0" || group id || encoding without the
//! signature`, so a record cannot be replayed into another group.
//!
//! A record's id is bound to who made it (format 2): a per-member type's id is
//! [`per_member_id`]`(type, creator)` with a zero nonce, any other type's is
//! [`ordinary_id`]`(type, creator, created, nonce)`. So nobody can write under another member's
//! id, and no ordinary record can take a per-member id (the two hashes differ in
//! domain). Format 1 carried free ids, so any member could rewrite any record.

use std::cmp::Ordering;

use thiserror::Error;
use uuid::Uuid;

use crate::member::MemberId;
use crate::pki::{self, Cert, PkiError};

/// Record type of chat messages (data: UTF-8 text).
pub const CHAT_TYPE: Uuid = Uuid::from_u128(0x5c8f_0c57_4a8e_4c3b_9d2a_6e1f_c0a7_0001);
/// Record type of presence records (attributes: name, addresses).
pub const PRESENCE_TYPE: Uuid = Uuid::from_u128(0x5c8f_0c57_4a8e_4c3b_9d2a_6e1f_c0a7_0002);
/// Record type of membership publications (data: the member's certificate chain).
pub const MEMBERSHIP_TYPE: Uuid = Uuid::from_u128(0x5c8f_0c57_4a8e_4c3b_9d2a_6e1f_c0a7_0003);
/// Record type of credentials: a membership certificate an admin issued for a member
/// (renewed, or with another role), published by that admin (data: the chain, leaf
/// first; attribute `subject`: the member's id).
pub const CREDENTIAL_TYPE: Uuid = Uuid::from_u128(0x5c8f_0c57_4a8e_4c3b_9d2a_6e1f_c0a7_0004);
/// Record type of revocations: an admin cuts a member off (attributes `subject` and
/// `reason`; data: the keys of what of the member's stays valid, see
/// [`crate::core::revocation`]).
pub const REVOCATION_TYPE: Uuid = Uuid::from_u128(0x5c8f_0c57_4a8e_4c3b_9d2a_6e1f_c0a7_0005);
/// Record type of property changes: an admin sets the group's properties from its
/// creation time on (attributes name, classifier, comment, message_lifetime,
/// presence_lifetime; data: the admin's chain, see [`crate::core::properties`]).
pub const PROPERTIES_TYPE: Uuid = Uuid::from_u128(0x5c8f_0c57_4a8e_4c3b_9d2a_6e1f_c0a7_0006);

/// The attribute naming the member an admin record is about.
pub const SUBJECT_ATTR: &str = "subject";
/// The attribute marking a chat message as an action (`/me waves`; integer 1).
pub const ACTION_ATTR: &str = "action";

/// Largest record data, in bytes.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Largest chat message text, in bytes.
pub const MAX_CHAT_BYTES: usize = 16 * 1024;
/// Most attributes on one record.
pub const MAX_ATTRIBUTES: usize = 32;
/// Largest attribute string value, in bytes.
pub const MAX_ATTRIBUTE_BYTES: usize = 4096;
/// Largest encoded record.
pub const MAX_RECORD_BYTES: usize =
    4 + 16 + 16 + 16 + 8 + 40 + 25 + 1 + MAX_DATA_BYTES + 2 + 1024 + MAX_ATTRIBUTES * (256 + 5 + MAX_ATTRIBUTE_BYTES);

const MAGIC: &[u8; 4] = b"PGR2";
const DOMAIN: &[u8] = b"peergroup record v2\0";
const ID_DOMAIN: &[u8] = b"peergroup record id v2\0";

/// The highest version a record whose versions are not clock times may carry: ample
/// for edits, and far from `u64::MAX`, which would end every later edit.
pub const MAX_PLAIN_VERSION: u64 = 1 << 32;

/// Whether records of this type are one per member, under [`per_member_id`] of their
/// creator.
pub fn is_per_member_type(rtype: &Uuid) -> bool {
    *rtype == PRESENCE_TYPE || *rtype == MEMBERSHIP_TYPE
}

/// Whether records of this type are an admin's about one member, under
/// [`per_member_id`] of their signed subject: the records of two admins about one
/// member share an id, and the conflict rule settles them.
pub fn is_admin_type(rtype: &Uuid) -> bool {
    *rtype == CREDENTIAL_TYPE || *rtype == REVOCATION_TYPE
}

/// Whether a record's id comes from a member (its creator or its subject) rather than
/// from a nonce: one record per member and type, its nonce zero.
pub fn is_keyed_type(rtype: &Uuid) -> bool {
    is_per_member_type(rtype) || is_admin_type(rtype) || *rtype == PROPERTIES_TYPE
}

/// The id of the property change that takes effect at `created_ms`: one per moment, so
/// two admins' changes at the same millisecond settle by the conflict rule.
pub fn properties_id(created_ms: i64) -> Uuid {
    let mut input = Vec::with_capacity(24);
    input.extend_from_slice(PROPERTIES_TYPE.as_bytes());
    input.extend_from_slice(&created_ms.to_be_bytes());
    uuid_v8_of(&input)
}

/// Errors about records.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes are not a record.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// A limit was exceeded.
    #[error("record too large: {0}")]
    TooLarge(&'static str),
    /// Signing failed.
    #[error("cannot sign a record: {0}")]
    Sign(String),
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// Text.
    Str(String),
    /// A signed integer.
    Int(i64),
    /// A time, unix milliseconds.
    Date(i64),
}

/// A record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Record id: [`Record::expected_id`] for a valid record.
    pub id: Uuid,
    /// Random bytes chosen by the creator, from which an ordinary record's id derives
    /// (zero for per-member types).
    pub nonce: [u8; 16],
    /// Record type.
    pub rtype: Uuid,
    /// Version, from 1, raised by each update.
    pub version: u64,
    /// Member id of the creator.
    pub creator: MemberId,
    /// Member id of the last modifier, who signed this copy.
    pub modifier: MemberId,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last modification time, unix ms.
    pub modified_ms: i64,
    /// Expiry, unix ms: after it the record is purged.
    pub expires_ms: i64,
    /// A deletion marker (tombstone) rather than live content.
    pub deleted: bool,
    /// Named attributes, in order.
    pub attributes: Vec<(String, AttrValue)>,
    /// Payload.
    pub data: Vec<u8>,
    /// Signature by the modifier.
    pub signature: Vec<u8>,
}

/// A deterministic record id for a per-member record (presence, membership), so every
/// publication by one member replaces the previous one.
pub fn per_member_id(rtype: &Uuid, member: &MemberId) -> Uuid {
    let mut input = Vec::with_capacity(36);
    input.extend_from_slice(rtype.as_bytes());
    input.extend_from_slice(member.as_bytes());
    uuid_v8_of(&input)
}

/// The id of an ordinary record of `rtype` by `creator` created at `created_ms` with
/// `nonce`: its creation time in ms (48 bits, as a UUIDv7 has it), then SHA-256 over a
/// domain, the type, the creator, the creation time and the nonce, as a version 8
/// UUID. Ids in time order keep the store's inserts at the end of its index (random
/// ids cost a page split and its write-ahead log pages all over the B-tree); the 74
/// bits of hash leave a member 2^74 hashes from another's id.
pub fn ordinary_id(rtype: &Uuid, creator: &MemberId, created_ms: i64, nonce: &[u8; 16]) -> Uuid {
    let mut input = Vec::with_capacity(ID_DOMAIN.len() + 60);
    input.extend_from_slice(ID_DOMAIN);
    input.extend_from_slice(rtype.as_bytes());
    input.extend_from_slice(creator.as_bytes());
    input.extend_from_slice(&created_ms.to_be_bytes());
    input.extend_from_slice(nonce);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    let ms = created_ms.clamp(0, (1 << 48) - 1) as u64;
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

fn uuid_v8_of(input: &[u8]) -> Uuid {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    // Mark it as a version 8 (custom) UUID.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

impl Record {
    /// A new unsigned record created by `creator` now, with a random nonce (and the id
    /// that follows from it).
    pub fn new(rtype: Uuid, creator: MemberId, now_ms: i64, lifetime_ms: i64) -> Record {
        let mut r = Record {
            id: Uuid::nil(),
            nonce: *Uuid::new_v4().as_bytes(),
            rtype,
            version: 1,
            creator,
            modifier: creator,
            created_ms: now_ms,
            modified_ms: now_ms,
            expires_ms: now_ms.saturating_add(lifetime_ms),
            deleted: false,
            attributes: Vec::new(),
            data: Vec::new(),
            signature: Vec::new(),
        };
        if is_keyed_type(&rtype) {
            r.nonce = [0; 16];
        }
        r.id = r.expected_id();
        r
    }

    /// A new unsigned admin record of `rtype` by `admin` about `subject`, under the id
    /// that follows from its subject.
    pub fn about(rtype: Uuid, admin: MemberId, subject: MemberId, now_ms: i64, lifetime_ms: i64) -> Record {
        let mut r = Record::new(rtype, admin, now_ms, lifetime_ms);
        r.attributes
            .push((SUBJECT_ATTR.into(), AttrValue::Str(subject.to_string())));
        r.id = r.expected_id();
        r
    }

    /// The member an admin record is about (its `subject` attribute), if it names one.
    pub fn subject(&self) -> Option<MemberId> {
        self.attr_str(SUBJECT_ATTR)?.parse().ok()
    }

    /// Sets an ordinary record's nonce and the id that follows from it.
    pub fn set_nonce(&mut self, nonce: [u8; 16]) {
        self.nonce = nonce;
        self.id = self.expected_id();
    }

    /// The id the record's type, creator and nonce call for.
    pub fn expected_id(&self) -> Uuid {
        if is_per_member_type(&self.rtype) {
            per_member_id(&self.rtype, &self.creator)
        } else if self.rtype == PROPERTIES_TYPE {
            properties_id(self.created_ms)
        } else if is_admin_type(&self.rtype) {
            // No subject, no id: the nil id binds nothing.
            self.subject().map_or(Uuid::nil(), |s| per_member_id(&self.rtype, &s))
        } else {
            ordinary_id(&self.rtype, &self.creator, self.created_ms, &self.nonce)
        }
    }

    /// Whether the id is the one its type, creator and nonce call for (a per-member
    /// record's nonce is zero: one encoding per content).
    pub fn id_is_bound(&self) -> bool {
        !self.id.is_nil() && self.id == self.expected_id() && (!is_keyed_type(&self.rtype) || self.nonce == [0; 16])
    }

    /// First attribute named `name` that is a string.
    pub fn attr_str(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find_map(|(n, v)| match v {
            AttrValue::Str(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// The `IP:PORT` addresses a presence record names (its `addresses` attribute,
    /// comma-separated), as published by `node`; unchecked text from its signer.
    pub fn presence_addresses(&self) -> Vec<String> {
        self.attr_str("addresses")
            .unwrap_or("")
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn encode_unsigned(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(self.rtype.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(self.creator.as_bytes());
        out.extend_from_slice(self.modifier.as_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.modified_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.push(u8::from(self.deleted));
        out.push(self.attributes.len().min(255) as u8);
        for (name, value) in self.attributes.iter().take(255) {
            let name = &name.as_bytes()[..name.len().min(255)];
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            match value {
                AttrValue::Str(s) => {
                    out.push(0);
                    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                AttrValue::Int(i) => {
                    out.push(1);
                    out.extend_from_slice(&i.to_be_bytes());
                }
                AttrValue::Date(d) => {
                    out.push(2);
                    out.extend_from_slice(&d.to_be_bytes());
                }
            }
        }
        out.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.data);
    }

    /// The bytes the signature covers, for the group `group`.
    pub fn signed_bytes(&self, group: &Uuid) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + 16 + 128 + self.data.len());
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(group.as_bytes());
        self.encode_unsigned(&mut out);
        out
    }

    /// Checks the limits a peer's record must respect (also applied before signing).
    pub fn check_limits(&self) -> Result<(), RecordError> {
        if self.data.len() > MAX_DATA_BYTES {
            return Err(RecordError::TooLarge("data"));
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(RecordError::TooLarge("attributes"));
        }
        for (name, value) in &self.attributes {
            if name.is_empty() || name.len() > 255 {
                return Err(RecordError::TooLarge("attribute name"));
            }
            if let AttrValue::Str(s) = value
                && s.len() > MAX_ATTRIBUTE_BYTES
            {
                return Err(RecordError::TooLarge("attribute value"));
            }
        }
        if self.version == 0 {
            return Err(RecordError::Malformed("version 0"));
        }
        Ok(())
    }

    /// Signs the record as `modifier` (whose key is `key`) for `group`.
    pub fn sign(&mut self, group: &Uuid, key: &rcgen::KeyPair) -> Result<(), RecordError> {
        self.check_limits()?;
        self.signature =
            pki::sign(key, &self.signed_bytes(group)).map_err(|e: PkiError| RecordError::Sign(e.to_string()))?;
        Ok(())
    }

    /// Whether `cert` (the modifier's membership certificate) verifies the signature.
    pub fn verify_signature(&self, group: &Uuid, cert: &Cert) -> bool {
        crate::verify::verify(cert, &self.signed_bytes(group), &self.signature)
    }

    /// The wire and storage encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.data.len() + self.signature.len());
        self.encode_unsigned(&mut out);
        out.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes a record, refusing anything malformed, oversized or with trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge("encoding"));
        }
        let mut r = Reader { b: bytes };
        if r.take(4)? != MAGIC {
            return Err(RecordError::Malformed("bad magic"));
        }
        let id = Uuid::from_bytes(r.array()?);
        let nonce = r.array()?;
        let rtype = Uuid::from_bytes(r.array()?);
        let version = r.u64()?;
        let creator = MemberId::from_bytes(r.array()?);
        let modifier = MemberId::from_bytes(r.array()?);
        let created_ms = r.i64()?;
        let modified_ms = r.i64()?;
        let expires_ms = r.i64()?;
        let deleted = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(RecordError::Malformed("bad deleted flag")),
        };
        let count = r.u8()? as usize;
        if count > MAX_ATTRIBUTES {
            return Err(RecordError::TooLarge("attributes"));
        }
        let mut attributes = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.u8()? as usize;
            let name =
                std::str::from_utf8(r.take(len)?).map_err(|_| RecordError::Malformed("attribute name not UTF-8"))?;
            let value = match r.u8()? {
                0 => {
                    let len = r.u32()? as usize;
                    if len > MAX_ATTRIBUTE_BYTES {
                        return Err(RecordError::TooLarge("attribute value"));
                    }
                    let s =
                        std::str::from_utf8(r.take(len)?).map_err(|_| RecordError::Malformed("attribute not UTF-8"))?;
                    AttrValue::Str(s.to_string())
                }
                1 => AttrValue::Int(r.i64()?),
                2 => AttrValue::Date(r.i64()?),
                _ => return Err(RecordError::Malformed("unknown attribute kind")),
            };
            attributes.push((name.to_string(), value));
        }
        let len = r.u32()? as usize;
        if len > MAX_DATA_BYTES {
            return Err(RecordError::TooLarge("data"));
        }
        let data = r.take(len)?.to_vec();
        let sig_len = r.u16()? as usize;
        if sig_len > 1024 {
            return Err(RecordError::TooLarge("signature"));
        }
        let signature = r.take(sig_len)?.to_vec();
        if !r.b.is_empty() {
            return Err(RecordError::Malformed("trailing bytes"));
        }
        let record = Record {
            id,
            nonce,
            rtype,
            version,
            creator,
            modifier,
            created_ms,
            modified_ms,
            expires_ms,
            deleted,
            attributes,
            data,
            signature,
        };
        record.check_limits()?;
        Ok(record)
    }

    /// 16-byte digest of the signature: tells two copies of one (id, version) apart.
    pub fn digest(&self) -> [u8; 16] {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.signature);
        let mut out = [0u8; 16];
        out.copy_from_slice(&d.as_ref()[..16]);
        out
    }
}

/// The conflict rule: which of two copies of one record id wins. Higher version; then
/// a deletion marker (an admin's deletion takes the highest version a record may
/// carry, so nothing its creator signs later undoes it); then higher last-modifier id;
/// then later modification time; then larger signature bytes. Deterministic, so every
/// peer keeps the same copy.
pub fn compare(a: &Record, b: &Record) -> Ordering {
    a.version
        .cmp(&b.version)
        .then_with(|| a.deleted.cmp(&b.deleted))
        .then_with(|| a.modifier.cmp(&b.modifier))
        .then_with(|| a.modified_ms.cmp(&b.modified_ms))
        .then_with(|| a.signature.cmp(&b.signature))
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.b.len() < n {
            return Err(RecordError::Malformed("truncated"));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::KeyType;

    fn sample() -> Record {
        let mut r = Record::new(CHAT_TYPE, MemberId::from_bytes([7; 20]), 1_000, 60_000);
        r.attributes.push(("name".into(), AttrValue::Str("alice".into())));
        r.attributes.push(("n".into(), AttrValue::Int(-3)));
        r.attributes.push(("at".into(), AttrValue::Date(99)));
        r.data = b"hello".to_vec();
        r.signature = vec![1, 2, 3];
        r
    }

    #[test]
    fn encoding_round_trips() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(Record::decode(&bytes[..n]).is_err(), "accepted a {n}-byte prefix");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Record::decode(&longer), Err(RecordError::Malformed("trailing bytes")));
    }

    #[test]
    fn signatures_bind_the_content_and_the_group() {
        let key = KeyType::Ed25519.generate().unwrap();
        let group = Uuid::new_v4();
        let spec = pki::CertSpec {
            common_name: "a".into(),
            claim: pki::Claim::Identity,
            not_before: crate::clock::now(),
            not_after: crate::clock::add(crate::clock::now(), std::time::Duration::from_secs(60)),
        };
        let cert = Cert::parse(&pki::self_signed(&spec, &key).unwrap(), "c").unwrap();
        let mut r = sample();
        r.sign(&group, &key).unwrap();
        assert!(r.verify_signature(&group, &cert));
        assert!(
            !r.verify_signature(&Uuid::new_v4(), &cert),
            "replayable into another group"
        );
        let mut changed = r.clone();
        changed.data = b"hellO".to_vec();
        assert!(!changed.verify_signature(&group, &cert));
    }

    #[test]
    fn the_conflict_rule_orders_version_then_modifier_then_time_then_signature() {
        let a = sample();
        let mut b = a.clone();
        b.version = 2;
        assert_eq!(compare(&a, &b), Ordering::Less);
        let mut c = a.clone();
        c.modifier = MemberId::from_bytes([9; 20]);
        assert_eq!(compare(&c, &a), Ordering::Greater);
        let mut d = a.clone();
        d.modified_ms += 1;
        assert_eq!(compare(&d, &a), Ordering::Greater);
        let mut e = a.clone();
        e.signature = vec![1, 2, 4];
        assert_eq!(compare(&e, &a), Ordering::Greater);
        assert_eq!(compare(&a, &a.clone()), Ordering::Equal);
    }

    #[test]
    fn ids_are_bound_to_type_creator_and_nonce() {
        let r = sample();
        assert!(r.id_is_bound());
        let mut squat = r.clone();
        squat.creator = MemberId::from_bytes([8; 20]);
        assert!(!squat.id_is_bound(), "another creator under the same id");
        let mut retyped = r.clone();
        retyped.rtype = Uuid::from_u128(42);
        assert!(!retyped.id_is_bound(), "another type under the same id");
        let mut redated = r.clone();
        redated.created_ms += 1;
        assert!(!redated.id_is_bound(), "another creation time under the same id");
        // Ids follow creation time, so the store's inserts stay in order.
        let later = Record::new(CHAT_TYPE, r.creator, r.created_ms + 1, 1);
        assert!(later.id > r.id);
        let p = Record::new(PRESENCE_TYPE, MemberId::from_bytes([7; 20]), 0, 1);
        assert!(p.id_is_bound());
        assert_eq!(p.id, per_member_id(&PRESENCE_TYPE, &p.creator));
        let mut noisy = p.clone();
        noisy.nonce = [1; 16];
        assert!(!noisy.id_is_bound(), "a per-member record with a nonce");
        // An ordinary record cannot take a per-member id: its id is its own hash.
        let mut chat_as_presence = r.clone();
        chat_as_presence.id = per_member_id(&PRESENCE_TYPE, &r.creator);
        assert!(!chat_as_presence.id_is_bound());
    }

    #[test]
    fn per_member_ids_are_stable_and_distinct() {
        let m = MemberId::from_bytes([3; 20]);
        assert_eq!(per_member_id(&PRESENCE_TYPE, &m), per_member_id(&PRESENCE_TYPE, &m));
        assert_ne!(per_member_id(&PRESENCE_TYPE, &m), per_member_id(&MEMBERSHIP_TYPE, &m));
        let other = MemberId::from_bytes([4; 20]);
        assert_ne!(per_member_id(&PRESENCE_TYPE, &m), per_member_id(&PRESENCE_TYPE, &other));
    }

    /// An admin record's id comes from its signed subject, not its creator: two admins'
    /// records about one member share an id (the conflict rule settles them), and a
    /// record whose subject is changed, missing or unreadable binds nothing.
    #[test]
    fn admin_record_ids_are_bound_to_their_subject() {
        let (admin, other_admin, subject) = (
            MemberId::from_bytes([1; 20]),
            MemberId::from_bytes([2; 20]),
            MemberId::from_bytes([3; 20]),
        );
        let r = Record::about(CREDENTIAL_TYPE, admin, subject, 1_000, 0);
        assert_eq!(r.id, per_member_id(&CREDENTIAL_TYPE, &subject));
        assert_eq!(r.subject(), Some(subject));
        assert!(r.id_is_bound());
        assert_eq!(Record::about(CREDENTIAL_TYPE, other_admin, subject, 5, 0).id, r.id);
        let mut moved = r.clone();
        moved.attributes[0].1 = AttrValue::Str(admin.to_string());
        assert!(!moved.id_is_bound(), "subject changed");
        let mut none = r.clone();
        none.attributes.clear();
        assert!(!none.id_is_bound(), "no subject");
        none.id = Uuid::nil();
        assert!(!none.id_is_bound(), "the nil id binds nothing");
        let mut garbled = r.clone();
        garbled.attributes[0].1 = AttrValue::Str("not a member id".into());
        assert!(!garbled.id_is_bound());
        let mut nonce = r.clone();
        nonce.nonce = [1; 16];
        assert!(!nonce.id_is_bound(), "one encoding per content");
        assert!(
            !Record::new(CREDENTIAL_TYPE, admin, 1, 0).id_is_bound(),
            "made without a subject"
        );
    }
}
