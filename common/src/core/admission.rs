//! Admission: whether a record received from a peer is stored. Every check is a pure
//! function of the record, what the node knows of the group (root, lifetimes, the
//! memberships it has verified) and the time; the verdict carries a typed reason.
//!
//! A record whose creator's or modifier's membership is not known yet is held (not
//! stored, not forwarded) until that membership arrives.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use thiserror::Error;
use uuid::Uuid;

use super::revocation::{self, Revocation, Revocations};
use crate::member::MemberId;
use crate::names::Directory;
use crate::pki::{self, Cert, Claim, Role};
use crate::record::{
    self, CHAT_TYPE, CREDENTIAL_TYPE, MEMBERSHIP_TYPE, PRESENCE_TYPE, PROPERTIES_TYPE, REVOCATION_TYPE, Record,
};

use super::properties::{Properties, Timeline};
use crate::sync::Item;

/// Clock skew tolerated in record times.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Records held back waiting for a membership, at most.
pub const MAX_HELD_RECORDS: usize = 10_000;
/// Batches at least this large have their signatures verified on every core. Each
/// such batch starts threads: worth it for a sync's thousands of records, not for the
/// tens to hundreds one connection sends between two commits under load (at 64,
/// workload c of `scripts/bench` ran at 0.84-0.93x the deliveries/s of the build
/// before cross-frame batching; at 1,024, 1.01x, with catch-up unchanged).
pub const PARALLEL_VERIFY_MIN: usize = 1024;

/// Why a record is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    /// It has expired.
    #[error("expired")]
    Expired,
    /// Created or modified beyond the tolerated clock skew.
    #[error("created or modified in the future")]
    InTheFuture,
    /// Modified before it was created.
    #[error("modified before created")]
    ModifiedBeforeCreated,
    /// Lives longer than the group allows for its type.
    #[error("lives longer than the group allows")]
    OutlivesGroupLimit,
    /// Modified by a member who is neither its creator nor (where allowed) an admin.
    #[error("modified by someone other than its creator")]
    ForeignModifier,
    /// An id other than the one its type, creator and nonce call for (someone else's
    /// record id, or a per-member id on another type).
    #[error("its id is not bound to its creator")]
    UnboundId,
    /// A membership record whose version is not its certificate's start.
    #[error("version {0} is not its certificate's start")]
    MembershipVersion(u64),
    /// A version above the ceiling its type allows.
    #[error("version {0} is above its ceiling")]
    VersionTooHigh(u64),
    /// Chat text that is not UTF-8 or over the size limit.
    #[error("chat text is not UTF-8 within the size limit")]
    BadChatText,
    /// The signature does not verify with the modifier's certificate.
    #[error("bad signature")]
    BadSignature,
    /// A membership record published by someone other than the member, or under
    /// another id.
    #[error("not published by the member itself")]
    NotSelfPublished,
    /// A membership record whose chain does not decode.
    #[error("its chain does not decode")]
    ChainDoesNotDecode,
    /// A membership record whose chain does not verify.
    #[error("its chain does not verify: {0}")]
    ChainInvalid(String),
    /// A membership record whose chain certifies another member.
    #[error("the chain is for another member")]
    ChainForAnotherMember,
    /// A membership record that outlives its certificate.
    #[error("outlives the membership")]
    OutlivesMembership,
    /// Another copy of the same version wins the conflict rule.
    #[error("another copy of this version wins")]
    LosesConflict,
    /// A credential for the creator or for an admin in the issuer's own chain.
    #[error("issued for the creator or an admin above its issuer")]
    ForAnAncestor,
    /// A credential whose certificate was not issued by the admin who publishes it.
    #[error("its certificate was not issued by its creator")]
    NotIssuedByCreator,
    /// From (or about, or issued by) a revoked member, and not among what its
    /// revocation kept.
    #[error("its member was revoked and it is not among what the revocation kept")]
    Revoked,
    /// Signed when its signer's membership was not valid.
    #[error("signed when its signer's membership was not valid")]
    SignedOutsideMembership,
    /// A revocation of the group's creator.
    #[error("the group's creator cannot be revoked")]
    CreatorRevoked,
    /// An admin record by a member who is not an admin.
    #[error("signed by a member who is not an admin")]
    NotAnAdmin,
    /// A revocation whose kept list or reason is malformed.
    #[error("a malformed revocation: {0}")]
    BadRevocation(&'static str),
    /// A property change that is malformed or out of range.
    #[error("a malformed property change: {0}")]
    BadProperties(String),
}

/// A credential's certificates: what an admin issued for a member.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The member's new membership certificate.
    pub membership: Cert,
    /// The member's new issuing certificate, when it is an admin.
    pub issuing: Option<Cert>,
    /// The issuers of both, nearest first, root excluded (the admin's issuing
    /// certificate first).
    pub chain: Vec<Cert>,
    /// For a member who was an admin: the keys ([`revocation::cert_key`]) of the
    /// certificates it issued that stay valid; any other it issued is void.
    pub kept: Vec<revocation::Key>,
}

impl Credential {
    /// The record data: the membership certificate, the issuing one if any, then the
    /// chain.
    pub fn encode(&self) -> Vec<u8> {
        let mut certs: Vec<Cert> = vec![self.membership.clone()];
        certs.extend(self.issuing.clone());
        let mut out = encode_chain(&certs[0], &[&certs[1..], &self.chain[..]].concat());
        out.extend(revocation::encode_keys(self.kept.clone()));
        out
    }

    /// The role its membership certificate grants.
    pub fn role(&self) -> Role {
        match self.membership.claim {
            Claim::Membership { role, .. } => role,
            _ => Role::Member,
        }
    }
}

/// What an accepted membership or credential record proves: a member's certificate,
/// the issuers it came with (nearest first), and for a credential the whole of it.
#[derive(Debug, Clone)]
pub struct Proof {
    /// The member's membership certificate.
    pub cert: Cert,
    /// Its issuers, nearest first, root excluded (never the member's own issuing one).
    pub issuers: Vec<Cert>,
    /// The credential, when the record was one.
    pub credential: Option<Credential>,
}

/// What admission decides about one record.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The same or a newer copy is held: nothing to do, nothing verified.
    Duplicate,
    /// Store it (a membership or credential record brings what it proves).
    Accept(Option<Box<Proof>>),
    /// The membership of this member is not known (or has ended): hold the record.
    Hold(MemberId),
    /// Refuse it.
    Reject(Rejection),
}

/// Lifetimes the group allows, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Chat messages and other records.
    pub message_ms: i64,
    /// Presence records.
    pub presence_ms: i64,
}

impl Lifetimes {
    /// From the group's settings in seconds.
    pub fn from_secs(message_secs: u64, presence_secs: u64) -> Lifetimes {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        Lifetimes {
            message_ms: ms(message_secs),
            presence_ms: ms(presence_secs),
        }
    }
}

/// What the node knows to judge records: the group, its root, its lifetimes, and the
/// memberships verified so far.
#[derive(Debug)]
pub struct Admission {
    group: Uuid,
    root: Cert,
    /// The lifetimes the group was created with, in force before any property change.
    base: Lifetimes,
    properties: Timeline,
    certs: HashMap<MemberId, Cert>,
    membership_ids: HashSet<Uuid>,
    names: Directory,
    revocations: Revocations,
    /// Who certified each member's known certificate (the issuing certificate's member)
    /// and that certification's key, when its chain was seen: a revocation or demotion
    /// of that admin voids it unless kept.
    certified: HashMap<MemberId, (MemberId, revocation::Key)>,
}

/// Whether certificate `a` replaces `b` for the same member: the one issued later
/// (its start), then the one that ends later, then the larger DER bytes. A total order,
/// so every node settles on the same certificate in any order of arrival. Issued later
/// first, so an admin's role change takes effect even when it ends sooner; no admin can
/// issue for the creator or an admin above it, and one that shortens a member below it
/// could as well revoke it. Renewals never shorten ([`crate::credential::issue`]).
pub fn outranks(a: &Cert, b: &Cert) -> bool {
    (a.not_before, a.not_after, &a.der) > (b.not_before, b.not_after, &b.der)
}

/// Whether a copy with `digest` at `version` adds nothing to what is held.
pub fn is_duplicate(held: Option<Item>, version: u64, digest: &[u8; 16]) -> bool {
    held.is_some_and(|e| e.version > version || (e.version == version && e.digest == *digest))
}

/// Whether `t_ms` (unix ms) lies in `cert`'s validity, to the second, as the TLS
/// verifier checks it at the handshake.
pub fn valid_at(cert: &Cert, t_ms: i64) -> bool {
    let t = t_ms.div_euclid(1000);
    cert.not_before.unix_timestamp() <= t && t <= cert.not_after.unix_timestamp()
}

/// Checks a record's times against the clock and the group's lifetimes.
pub fn check_times(r: &Record, now_ms: i64, lifetimes: &Lifetimes) -> Result<(), Rejection> {
    if r.expires_ms <= now_ms {
        return Err(Rejection::Expired);
    }
    if r.created_ms > now_ms + MAX_CLOCK_SKEW_MS || r.modified_ms > now_ms + MAX_CLOCK_SKEW_MS {
        return Err(Rejection::InTheFuture);
    }
    if r.modified_ms < r.created_ms {
        return Err(Rejection::ModifiedBeforeCreated);
    }
    if outlives(&r.rtype, r.created_ms, r.expires_ms, lifetimes) {
        return Err(Rejection::OutlivesGroupLimit);
    }
    Ok(())
}

/// Whether a record of `rtype` created at `created_ms` and expiring at `expires_ms`
/// lives longer than `lifetimes` allow. From its creation, not its last change: else a
/// record back-dated by a year (in a quota window of its own, or beyond any calendar a
/// display can show) lives on.
pub fn outlives(rtype: &Uuid, created_ms: i64, expires_ms: i64, lifetimes: &Lifetimes) -> bool {
    let max_life = match *rtype {
        t if t == PRESENCE_TYPE => lifetimes.presence_ms,
        // Bounded by their certificate's end (a revocation's and a property change's:
        // the root's) instead.
        t if t == MEMBERSHIP_TYPE || t == CREDENTIAL_TYPE || t == REVOCATION_TYPE || t == PROPERTIES_TYPE => i64::MAX,
        _ => lifetimes.message_ms,
    };
    expires_ms.saturating_sub(created_ms) > max_life.saturating_add(MAX_CLOCK_SKEW_MS)
}

/// The version of the membership record that publishes `cert`: its start, in unix
/// seconds, so a newer certificate replaces an older one everywhere.
pub fn membership_version(cert: &Cert) -> u64 {
    u64::try_from(cert.not_before.unix_timestamp()).unwrap_or(1).max(1)
}

/// The highest version `r` may carry: a presence record's versions follow the clock
/// (at most its modification time in ms); a membership record's is its certificate's
/// start, checked with the chain; anything else counts edits, at most
/// [`record::MAX_PLAIN_VERSION`].
pub fn version_ceiling(r: &Record) -> u64 {
    match r.rtype {
        t if t == PRESENCE_TYPE => u64::try_from(r.modified_ms).unwrap_or(0).max(1),
        t if t == MEMBERSHIP_TYPE || t == CREDENTIAL_TYPE => u64::try_from(r.modified_ms / 1000).unwrap_or(0).max(1),
        // One revocation per member, never edited: two admins' settle by the conflict
        // rule.
        t if t == REVOCATION_TYPE || t == PROPERTIES_TYPE => 1,
        _ => record::MAX_PLAIN_VERSION,
    }
}

/// Checks what the record alone says of its place: an id bound to its creator, a
/// version within its ceiling. Decided before anything else, so a record under another
/// member's id is refused even while that member is unknown.
pub fn check_form(r: &Record) -> Result<(), Rejection> {
    if !r.id_is_bound() {
        return Err(Rejection::UnboundId);
    }
    if r.version > version_ceiling(r) {
        return Err(Rejection::VersionTooHigh(r.version));
    }
    Ok(())
}

/// Checks a non-membership record's content rules and signature, given the
/// modifier's certificate. `signature_ok` is a result computed ahead (in a parallel
/// batch) for this very record, if any.
pub fn check_content(r: &Record, group: &Uuid, modifier: &Cert, signature_ok: Option<bool>) -> Result<(), Rejection> {
    if r.modifier != r.creator {
        let admin = matches!(modifier.claim, Claim::Membership { role: Role::Admin, .. });
        if !admin || r.rtype == PRESENCE_TYPE {
            return Err(Rejection::ForeignModifier);
        }
    }
    if r.rtype == CHAT_TYPE && (r.data.len() > record::MAX_CHAT_BYTES || std::str::from_utf8(&r.data).is_err()) {
        return Err(Rejection::BadChatText);
    }
    if !signature_ok.unwrap_or_else(|| r.verify_signature(group, modifier)) {
        return Err(Rejection::BadSignature);
    }
    Ok(())
}

impl Admission {
    /// Admission for `group` under `root`, knowing only `own` (this node's membership).
    pub fn new(group: Uuid, root: Cert, lifetimes: Lifetimes, own: (MemberId, Cert)) -> Admission {
        let mut certs = HashMap::new();
        let membership_ids = HashSet::from([record::per_member_id(&MEMBERSHIP_TYPE, &own.0)]);
        let mut names = Directory::new();
        names.learn(own.0, &own.1.common_name);
        certs.insert(own.0, own.1);
        Admission {
            group,
            root,
            base: lifetimes,
            properties: Timeline::default(),
            certs,
            membership_ids,
            names,
            revocations: Revocations::default(),
            certified: HashMap::new(),
        }
    }

    /// The lifetimes in force at `t_ms` (a record is judged by those at its creation).
    pub fn lifetimes_at(&self, t_ms: i64) -> Lifetimes {
        self.properties.at(t_ms).map_or(self.base, Properties::lifetimes)
    }

    /// The property changes known.
    pub fn properties(&self) -> &Timeline {
        &self.properties
    }

    /// Puts an accepted property record's change in force; true if it is the newest
    /// now. False for a record that is not a property change.
    pub fn set_properties(&mut self, r: &Record) -> bool {
        match Properties::of_record(r) {
            Ok(p) if r.rtype == PROPERTIES_TYPE => self.properties.insert(r, p),
            _ => false,
        }
    }

    /// Takes out of force the changes of admins revoked or made member since, but those
    /// their revocation or demotion kept; true if the newest change is another now.
    pub fn prune_properties(&mut self) -> bool {
        let before = self.properties.newest().map(|(_, by, at)| (by, at));
        let revocations = &self.revocations;
        self.properties
            .retain(|r| revocations.keeps_certification(&r.creator, &revocation::record_key(r)));
        self.properties.newest().map(|(_, by, at)| (by, at)) != before
    }

    /// The verified membership certificate of `member`, if known.
    pub fn cert(&self, member: &MemberId) -> Option<&Cert> {
        self.certs.get(member)
    }

    /// Learns a membership (verified by the caller: a handshake or a record).
    /// Returns true if it was not known before. Of two certificates for one member the
    /// one [`outranks`] keeps, whatever the order they came in.
    pub fn learn(&mut self, member: MemberId, cert: Cert) -> bool {
        self.membership_ids
            .insert(record::per_member_id(&MEMBERSHIP_TYPE, &member));
        if let Some(known) = self.certs.get(&member)
            && !outranks(&cert, known)
        {
            return false;
        }
        self.names.learn(member, &cert.common_name);
        self.certs.insert(member, cert).is_none()
    }

    /// Notes who certified `leaf` (the first of `issuers`), if `leaf` is the
    /// certificate known for its member.
    pub fn note_issuer(&mut self, leaf: &Cert, issuers: &[Cert]) {
        let member = leaf.member_id;
        if let Some(parent) = issuers.first()
            && self.certs.get(&member).is_some_and(|c| c.der == leaf.der)
        {
            self.certified
                .insert(member, (parent.member_id, revocation::cert_key(leaf, parent)));
        }
    }

    /// Forgets the members whose known certificate `admin` certified, if its revocation
    /// or demotion does not keep that certification; returns them. They count as
    /// unknown from now on, as anything they present is refused.
    pub fn void_certified_by(&mut self, admin: &MemberId) -> Vec<MemberId> {
        let void: Vec<MemberId> = self
            .certified
            .iter()
            .filter(|(_, (issuer, key))| issuer == admin && !self.revocations.keeps_certification(admin, key))
            .map(|(m, _)| *m)
            .collect();
        for m in &void {
            self.certified.remove(m);
            self.certs.remove(m);
        }
        void
    }

    /// Every member known and its newest certificate.
    pub fn certs(&self) -> impl Iterator<Item = (&MemberId, &Cert)> {
        self.certs.iter()
    }

    /// The certificate names of the members known.
    pub fn names(&self) -> &Directory {
        &self.names
    }

    /// Whether `id` is the membership record id of a member known here.
    pub fn is_membership_id(&self, id: &Uuid) -> bool {
        self.membership_ids.contains(id)
    }

    /// Judges one record: `held` is what the node holds of its id, `now_ms` the time,
    /// `signature_ok` a signature result computed ahead for this record.
    pub fn judge(&self, r: &Record, held: Option<Item>, now_ms: i64, signature_ok: Option<bool>) -> Verdict {
        // One hash of the signature per record, for both uses below.
        let item = Item {
            id: *r.id.as_bytes(),
            version: r.version,
            digest: r.digest(),
        };
        if is_duplicate(held, r.version, &item.digest) {
            return Verdict::Duplicate;
        }
        if let Err(why) = check_form(r).and_then(|()| check_times(r, now_ms, &self.lifetimes_at(r.created_ms))) {
            return Verdict::Reject(why);
        }
        // Decided before anything else: nothing from a revoked member passes unless its
        // revocation kept this very copy, and it is listed no more.
        let revoked_presence = r.rtype == PRESENCE_TYPE && self.revocations.of(&r.creator).is_some();
        // Revocations are judged on their own, never by each other: two admins who
        // revoke each other are both revoked, on every node, in any order.
        let judged_alone = r.rtype == REVOCATION_TYPE;
        if revoked_presence || (!judged_alone && !self.revocations.allows(&r.creator, &r.modifier, &item)) {
            return Verdict::Reject(Rejection::Revoked);
        }
        if r.rtype == MEMBERSHIP_TYPE {
            return match self.verify_membership_record(r, now_ms) {
                Ok(proof) => Verdict::Accept(Some(Box::new(proof))),
                Err(why) => Verdict::Reject(why),
            };
        }
        if r.rtype == CREDENTIAL_TYPE {
            return match self.verify_credential_record(r, now_ms) {
                Ok(c) => Verdict::Accept(Some(Box::new(Proof {
                    cert: c.membership.clone(),
                    issuers: c.chain.clone(),
                    credential: Some(c),
                }))),
                Err(why) => Verdict::Reject(why),
            };
        }
        if r.rtype == REVOCATION_TYPE {
            return self.judge_revocation(r, signature_ok);
        }
        if r.rtype == PROPERTIES_TYPE {
            // Its admin must be one now, as any record's creator must be a member now:
            // else one whose membership ended could date a change inside it, or one
            // invited again as a member could date one before that.
            match self.certs.get(&r.creator) {
                Some(c) if valid_at(c, now_ms) => {
                    if !matches!(c.claim, Claim::Membership { role: Role::Admin, .. }) {
                        return Verdict::Reject(Rejection::NotAnAdmin);
                    }
                }
                _ => return Verdict::Hold(r.creator),
            }
            return match self.verify_properties_record(r) {
                Ok(_) => Verdict::Accept(None),
                Err(why) => Verdict::Reject(why),
            };
        }
        for m in [r.creator, r.modifier] {
            // A membership that has ended since we learnt it counts as unknown, as on a
            // node started now: else an expired member, refused at the handshake, could
            // go on publishing through any member who relays for it.
            if !self.certs.get(&m).is_some_and(|c| valid_at(c, now_ms)) {
                return Verdict::Hold(m);
            }
        }
        match check_content(r, &self.group, &self.certs[&r.modifier], signature_ok) {
            Ok(()) => Verdict::Accept(None),
            Err(why) => Verdict::Reject(why),
        }
    }

    /// A membership record carries its chain: check it against the root, and its
    /// signature by the member itself.
    pub fn verify_membership_record(&self, r: &Record, now_ms: i64) -> Result<Proof, Rejection> {
        if r.creator != r.modifier || !r.id_is_bound() {
            return Err(Rejection::NotSelfPublished);
        }
        let certs = decode_chain(&r.data).ok_or(Rejection::ChainDoesNotDecode)?;
        let (leaf, chain) = certs.split_first().ok_or(Rejection::ChainDoesNotDecode)?;
        // The record's signature first: one check, before the chain's several.
        if !r.verify_signature(&self.group, leaf) {
            return Err(Rejection::BadSignature);
        }
        let at = crate::clock::from_unix(now_ms.div_euclid(1000));
        let claim = pki::verify_chain_links(&self.root, chain, leaf, self.group, at)
            .map_err(|e| Rejection::ChainInvalid(e.to_string()))?;
        match claim {
            Claim::Membership { member, .. } if member == r.creator => {}
            _ => return Err(Rejection::ChainForAnotherMember),
        }
        if !self.revocations.allows_chain(leaf, chain) {
            return Err(Rejection::Revoked);
        }
        // One version per certificate: its start. A member cannot pin an old
        // certificate above a newer one with a made-up version.
        if r.version != membership_version(leaf) {
            return Err(Rejection::MembershipVersion(r.version));
        }
        if r.expires_ms > leaf.not_after.unix_timestamp().saturating_mul(1000) + MAX_CLOCK_SKEW_MS {
            return Err(Rejection::OutlivesMembership);
        }
        Ok(Proof {
            cert: leaf.clone(),
            issuers: chain.to_vec(),
            credential: None,
        })
    }

    /// A credential carries what an admin issued for its subject: checked against the
    /// root, issued under the issuing certificate of the admin who publishes it, and
    /// signed with that certificate's key. Self-contained, like a membership record: no
    /// node needs to know the admin first.
    pub fn verify_credential_record(&self, r: &Record, now_ms: i64) -> Result<Credential, Rejection> {
        if r.creator != r.modifier {
            return Err(Rejection::ForeignModifier);
        }
        let subject = r.subject().ok_or(Rejection::UnboundId)?;
        let (certs, keys) = decode_chain_prefix(&r.data).ok_or(Rejection::ChainDoesNotDecode)?;
        let kept =
            revocation::decode_keys(keys).ok_or(Rejection::BadRevocation("its kept list is not sorted 8-byte keys"))?;
        let (leaf, rest) = certs.split_first().ok_or(Rejection::ChainDoesNotDecode)?;
        // The subject's own issuing certificate, when it is an admin, comes next: a
        // sibling of the leaf under the same issuer.
        let (issuing, chain) = match rest.split_first() {
            Some((c, more)) if matches!(c.claim, Claim::Issuing { member, .. } if member == subject) => (Some(c), more),
            _ => (None, rest),
        };
        match chain.first().map(|c| &c.claim) {
            Some(Claim::Issuing { member, .. }) if *member == r.creator => {}
            _ => return Err(Rejection::NotIssuedByCreator),
        }
        // The record's signature first: one check, before the chain's several.
        if !r.verify_signature(&self.group, &chain[0]) {
            return Err(Rejection::BadSignature);
        }
        // Nobody issues for those above it: the creator (whose membership the root
        // issued) and the admins in its own chain.
        let above = self.certs.get(&subject).is_some_and(|c| c.is_signed_by(&self.root))
            || chain.iter().any(|c| c.member_id == subject);
        if above {
            return Err(Rejection::ForAnAncestor);
        }
        let at = crate::clock::from_unix(now_ms.div_euclid(1000));
        let verify = |leaf: &Cert| {
            pki::verify_chain_links(&self.root, chain, leaf, self.group, at)
                .map_err(|e| Rejection::ChainInvalid(e.to_string()))
        };
        match verify(leaf)? {
            Claim::Membership { member, .. } if member == subject => {}
            _ => return Err(Rejection::ChainForAnotherMember),
        }
        if let Some(c) = issuing {
            verify(c)?;
        }
        // A revoked member is not renewed, and what a revoked admin issues is void.
        let void = |leaf: &Cert| !self.revocations.allows_chain(leaf, chain);
        if self.revocations.of(&subject).is_some() || void(leaf) || issuing.is_some_and(void) {
            return Err(Rejection::Revoked);
        }
        if r.version != membership_version(leaf) {
            return Err(Rejection::MembershipVersion(r.version));
        }
        if r.expires_ms > leaf.not_after.unix_timestamp().saturating_mul(1000) + MAX_CLOCK_SKEW_MS {
            return Err(Rejection::OutlivesMembership);
        }
        let mut kept: Vec<revocation::Key> = kept.into_iter().collect();
        kept.sort_unstable();
        Ok(Credential {
            membership: leaf.clone(),
            issuing: issuing.cloned(),
            chain: chain.to_vec(),
            kept,
        })
    }

    /// A revocation by an admin known and valid now, about a member known (so the
    /// creator, whose membership the root itself issued, can be told and refused),
    /// with a well-formed kept list and the admin's signature.
    fn judge_revocation(&self, r: &Record, signature_ok: Option<bool>) -> Verdict {
        if r.creator != r.modifier {
            return Verdict::Reject(Rejection::ForeignModifier);
        }
        let Some(subject) = r.subject() else {
            return Verdict::Reject(Rejection::UnboundId);
        };
        if revocation::decode_keys(&r.data).is_none() {
            return Verdict::Reject(Rejection::BadRevocation("its kept list is not sorted 8-byte keys"));
        }
        if r.attr_str(revocation::REASON_ATTR).unwrap_or("").len() > revocation::MAX_REASON_BYTES {
            return Verdict::Reject(Rejection::BadRevocation("its reason is too long"));
        }
        // It lasts as long as the root, no shorter: a revocation that expired would let
        // its member back in.
        let root_end = self.root.not_after.unix_timestamp().saturating_mul(1000);
        if r.expires_ms > root_end + MAX_CLOCK_SKEW_MS || r.expires_ms < root_end - MAX_CLOCK_SKEW_MS {
            return Verdict::Reject(Rejection::BadRevocation("it must last as long as the group root"));
        }
        for m in [r.creator, subject] {
            if !self.certs.contains_key(&m) {
                return Verdict::Hold(m);
            }
        }
        // Signed while its admin's membership was valid: it stays in force after that
        // membership ends (a node that joins later must still refuse the member).
        let admin = &self.certs[&r.creator];
        if !valid_at(admin, r.created_ms) {
            return Verdict::Reject(Rejection::SignedOutsideMembership);
        }
        if !matches!(admin.claim, Claim::Membership { role: Role::Admin, .. }) {
            return Verdict::Reject(Rejection::NotAnAdmin);
        }
        if self.certs[&subject].is_signed_by(&self.root) {
            return Verdict::Reject(Rejection::CreatorRevoked);
        }
        if !signature_ok.unwrap_or_else(|| r.verify_signature(&self.group, admin)) {
            return Verdict::Reject(Rejection::BadSignature);
        }
        Verdict::Accept(None)
    }

    /// A property change carries its admin's chain, checked as of the change's creation
    /// (an admin may have been renewed or have left since: its change stays in force),
    /// and lasts as long as the root. Self-contained, like a credential.
    pub fn verify_properties_record(&self, r: &Record) -> Result<Properties, Rejection> {
        if r.creator != r.modifier {
            return Err(Rejection::ForeignModifier);
        }
        let properties = Properties::of_record(r).map_err(|e| Rejection::BadProperties(e.to_string()))?;
        properties
            .check()
            .map_err(|e| Rejection::BadProperties(e.to_string()))?;
        let root_end = self.root.not_after.unix_timestamp().saturating_mul(1000);
        if r.expires_ms > root_end + MAX_CLOCK_SKEW_MS || r.expires_ms < root_end - MAX_CLOCK_SKEW_MS {
            return Err(Rejection::BadProperties(
                "it must last as long as the group root".into(),
            ));
        }
        let certs = decode_chain(&r.data).ok_or(Rejection::ChainDoesNotDecode)?;
        let (leaf, chain) = certs.split_first().ok_or(Rejection::ChainDoesNotDecode)?;
        if !r.verify_signature(&self.group, leaf) {
            return Err(Rejection::BadSignature);
        }
        let at = crate::clock::from_unix(r.created_ms.div_euclid(1000));
        match pki::verify_chain_links(&self.root, chain, leaf, self.group, at) {
            Ok(Claim::Membership {
                member,
                role: Role::Admin,
                ..
            }) if member == r.creator => {}
            Ok(Claim::Membership { member, .. }) if member == r.creator => return Err(Rejection::NotAnAdmin),
            Ok(_) => return Err(Rejection::ChainForAnotherMember),
            Err(e) => return Err(Rejection::ChainInvalid(e.to_string())),
        }
        // An admin revoked or made member since changes nothing more, however its
        // change is dated, but what its revocation or demotion kept.
        let kept = self
            .revocations
            .keeps_certification(&r.creator, &revocation::record_key(r));
        if !kept || !self.revocations.allows_chain(leaf, chain) {
            return Err(Rejection::Revoked);
        }
        Ok(properties)
    }

    /// Puts an accepted credential's role in force: a member who was an admin issues
    /// nothing more (but what its credential keeps); one made admin again may.
    pub fn apply_role(&mut self, c: &Credential) {
        let subject = c.membership.member_id;
        match c.role() {
            Role::Admin => self.revocations.promote(&subject),
            Role::Member => self.revocations.demote(subject, c.kept.iter().copied().collect()),
        }
    }

    /// Puts an accepted revocation in force; `None` if `r` is not one.
    pub fn revoke(&mut self, r: &Record) -> Option<Revocation> {
        let subject = r.subject()?;
        let keep = revocation::decode_keys(&r.data)?;
        let reason = r.attr_str(revocation::REASON_ATTR).unwrap_or("").to_string();
        let rev = Revocation::new(subject, r.creator, r.created_ms, reason, keep);
        self.revocations.insert(rev.clone());
        Some(rev)
    }

    /// The revocations in force.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Verifies the signatures of records received together (every frame one connection
    /// sent since the last commit) before the sequential checks, Ed25519 ones in
    /// batches (ZIP-215: a batch accepts exactly what single checks accept, see
    /// [`crate::verify`]), and a large batch on every core: signature checks are most
    /// of the work. The result has one entry per record, by position: `None` where the
    /// sequential path decides (a single record, records held already, membership,
    /// credential and property records, records refused on their form alone, unknown
    /// signers). A result stays valid while the record waits: a member id is the hash
    /// of its key, so the signer's key cannot change meanwhile.
    pub fn verify_batch(
        &self,
        records: &[&Record],
        held: impl Fn(&Uuid) -> Option<Item>,
        threads: usize,
    ) -> Vec<Option<bool>> {
        let mut out = vec![None; records.len()];
        if records.len() < 2 {
            return out;
        }
        let work: Vec<(usize, &Record, &Cert)> = records
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, r)| {
                r.rtype != MEMBERSHIP_TYPE
                    && r.rtype != CREDENTIAL_TYPE
                    && r.rtype != PROPERTIES_TYPE
                    && !is_duplicate(held(&r.id), r.version, &r.digest())
                    // Refused on sight anyway: no signature check spent on them.
                    && check_form(r).is_ok()
            })
            .filter_map(|(i, r)| self.certs.get(&r.modifier).map(|c| (i, r, c)))
            .collect();
        let group = self.group;
        // What each signed: computed once, outside the checks.
        let signed: Vec<Vec<u8>> = work.iter().map(|(_, r, _)| r.signed_bytes(&group)).collect();
        let checks: Vec<(usize, crate::verify::Check<'_>)> = work
            .iter()
            .zip(&signed)
            .map(|((i, r, c), bytes)| (*i, crate::verify::Check::by(c, bytes, &r.signature)))
            .collect();
        let check_part = |part: &[(usize, crate::verify::Check<'_>)]| -> Vec<(usize, bool)> {
            let only: Vec<crate::verify::Check<'_>> = part.iter().map(|(_, c)| *c).collect();
            part.iter()
                .map(|(i, _)| *i)
                .zip(crate::verify::verify_all(&only))
                .collect()
        };
        let results: Vec<(usize, bool)> = if checks.len() < PARALLEL_VERIFY_MIN || threads < 2 {
            check_part(&checks)
        } else {
            let chunk = checks.len().div_ceil(threads).max(1);
            std::thread::scope(|scope| {
                let handles: Vec<_> = checks
                    .chunks(chunk)
                    .map(|part| scope.spawn(move || check_part(part)))
                    .collect();
                handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
            })
        };
        for (i, ok) in results {
            out[i] = Some(ok);
        }
        out
    }
}

/// A record held back until its signer's membership is known.
#[derive(Debug, Clone)]
pub struct HeldRecord<F> {
    /// Its encoding, as received.
    pub body: Vec<u8>,
    /// Whether it came by sync.
    pub via_sync: bool,
    /// Where it came from (not flooded back there).
    pub from: Option<F>,
}

/// Most bytes held for one claimed member: a membership normally follows its records
/// within one sync, and sync sends memberships first, so an honest member's records
/// are seldom held at all.
pub const MAX_HELD_BYTES_PER_MEMBER: usize = 4 * 1024 * 1024;
/// Most bytes held in all. Held records are kept before any signature check (their
/// signer is unknown), so this is what anyone who can send records can make a node
/// hold, however many members they claim.
pub const MAX_HELD_BYTES: usize = 32 * 1024 * 1024;
/// How long a record is held: a membership that has not come by then is not coming
/// soon, and the next sync session fetches the record again.
pub const HELD_FOR: Duration = Duration::from_secs(60);

/// Records waiting for memberships, bounded by count and bytes, in total and per
/// claimed member, each for at most [`HELD_FOR`].
#[derive(Debug)]
pub struct Held<F> {
    by_member: HashMap<MemberId, HeldList<F>>,
    order: VecDeque<(Instant, MemberId)>,
    count: usize,
    bytes: usize,
}

/// The records held for one member, their bytes, and when the first came.
#[derive(Debug)]
struct HeldList<F> {
    records: Vec<HeldRecord<F>>,
    bytes: usize,
    since: Instant,
}

impl<F> Default for Held<F> {
    fn default() -> Self {
        Held {
            by_member: HashMap::new(),
            order: VecDeque::new(),
            count: 0,
            bytes: 0,
        }
    }
}

impl<F> Held<F> {
    /// Holds a record for `member` at `now`; false when a budget is spent (it comes
    /// back with the next sync) or the same bytes are held already.
    pub fn hold(&mut self, member: MemberId, record: HeldRecord<F>, now: Instant) -> bool {
        let len = record.body.len();
        if self.count >= MAX_HELD_RECORDS || self.bytes + len > MAX_HELD_BYTES {
            return false;
        }
        let list = self.by_member.entry(member).or_insert_with(|| {
            self.order.push_back((now, member));
            HeldList {
                records: Vec::new(),
                bytes: 0,
                since: now,
            }
        });
        if list.bytes + len > MAX_HELD_BYTES_PER_MEMBER || list.records.iter().any(|p| p.body == record.body) {
            return false;
        }
        list.records.push(record);
        list.bytes += len;
        self.count += 1;
        self.bytes += len;
        true
    }

    /// Takes the records that waited for `member`.
    pub fn release(&mut self, member: &MemberId) -> Vec<HeldRecord<F>> {
        let Some(list) = self.by_member.remove(member) else {
            return Vec::new();
        };
        self.count -= list.records.len();
        self.bytes -= list.bytes;
        list.records
    }

    /// Drops what was held longer than [`HELD_FOR`] at `now`: every record of a member
    /// whose first held record is that old (the list goes as one). Returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(&(since, member)) = self.order.front() {
            if now.duration_since(since) < HELD_FOR {
                break;
            }
            self.order.pop_front();
            // A list released and started again since has an entry of its own.
            if self.by_member.get(&member).is_some_and(|l| l.since == since) {
                dropped += self.release(&member).len();
            }
        }
        dropped
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Encodes a membership chain for a membership record: count, then length-prefixed DER.
pub fn encode_chain(leaf: &Cert, chain: &[Cert]) -> Vec<u8> {
    let mut out = vec![(chain.len() + 1) as u8];
    for c in std::iter::once(leaf).chain(chain) {
        out.extend_from_slice(&(c.der.len() as u32).to_be_bytes());
        out.extend_from_slice(&c.der);
    }
    out
}

/// Decodes [`encode_chain`]'s output.
pub fn decode_chain(b: &[u8]) -> Option<Vec<Cert>> {
    let (certs, rest) = decode_chain_prefix(b)?;
    rest.is_empty().then_some(certs)
}

/// Decodes an [`encode_chain`] at the start of `b`; returns the rest too.
pub fn decode_chain_prefix(mut b: &[u8]) -> Option<(Vec<Cert>, &[u8])> {
    let (&n, rest) = b.split_first()?;
    b = rest;
    if n == 0 || n as usize > pki::MAX_ISSUING_LINKS + 1 {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..n {
        if b.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        b = &b[4..];
        if b.len() < len {
            return None;
        }
        out.push(Cert::parse(&b[..len], "a chain certificate").ok()?);
        b = &b[len..];
    }
    Some((out, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{LinkParams, SIM_EPOCH_SECS, Sim, SimNode};

    const NOW_MS: i64 = SIM_EPOCH_SECS * 1000;

    /// A group of three (m0 admin, m1 and m2 members) and admission as m0 sees it,
    /// knowing m1's membership but not m2's.
    fn setup() -> (Sim, Admission) {
        let sim = Sim::new(11, 3, 1, LinkParams::default()).unwrap();
        let n0 = &sim.nodes[0];
        let lifetimes = Lifetimes::from_secs(7 * 86_400, 300);
        let mut a = Admission::new(
            n0.group_id(),
            sim_root(n0),
            lifetimes,
            (n0.id, n0.membership_cert().clone()),
        );
        a.learn(sim.nodes[1].id, sim.nodes[1].membership_cert().clone());
        (sim, a)
    }

    fn sim_root(n: &SimNode) -> Cert {
        n.root().clone()
    }

    fn chat(by: &SimNode, text: &str) -> Record {
        let mut r = Record::new(CHAT_TYPE, by.id, NOW_MS, 60_000);
        r.data = text.as_bytes().to_vec();
        r.sign(&by.group_id(), &by.key()).unwrap();
        r
    }

    fn item(r: &Record) -> Item {
        Item {
            id: *r.id.as_bytes(),
            version: r.version,
            digest: r.digest(),
        }
    }

    #[test]
    fn a_valid_record_of_a_known_member_is_accepted_and_a_copy_held_is_a_duplicate() {
        let (sim, a) = setup();
        let r = chat(&sim.nodes[1], "hi");
        assert!(matches!(a.judge(&r, None, NOW_MS, None), Verdict::Accept(None)));
        assert!(matches!(a.judge(&r, Some(item(&r)), NOW_MS, None), Verdict::Duplicate));
        let mut older = item(&r);
        older.version = 2;
        assert!(
            matches!(a.judge(&r, Some(older), NOW_MS, None), Verdict::Duplicate),
            "a newer copy is held"
        );
    }

    #[test]
    fn records_of_an_unknown_member_are_held_not_judged() {
        let (sim, a) = setup();
        let r = chat(&sim.nodes[2], "who am I");
        assert!(matches!(a.judge(&r, None, NOW_MS, None), Verdict::Hold(m) if m == sim.nodes[2].id));
    }

    /// Why `a` refuses `r` at `NOW_MS`, failing the test if it does not.
    fn rejection(a: &Admission, r: &Record) -> Rejection {
        match a.judge(r, None, NOW_MS, None) {
            Verdict::Reject(why) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forged_and_malformed_records_are_rejected_with_their_reason() {
        let (sim, a) = setup();
        let (m0, m1) = (&sim.nodes[0], &sim.nodes[1]);
        let reject = |r: &Record| rejection(&a, r);
        let mut tampered = chat(m1, "hi");
        tampered.data = b"ho".to_vec();
        assert_eq!(reject(&tampered), Rejection::BadSignature);
        // m1's text under m0's name, signed with m1's key: under the id it had, then
        // under the id m0's name calls for.
        let mut posing = chat(m1, "I am m0");
        posing.creator = m0.id;
        posing.modifier = m0.id;
        assert_eq!(reject(&posing), Rejection::UnboundId);
        posing.set_nonce(posing.nonce);
        assert_eq!(reject(&posing), Rejection::BadSignature);
        // A member edits someone else's record.
        let mut edit = chat(m0, "original");
        edit.modifier = m1.id;
        edit.version = 2;
        edit.sign(&m1.group_id(), &m1.key()).unwrap();
        assert_eq!(reject(&edit), Rejection::ForeignModifier);
        let mut future = chat(m1, "later");
        future.created_ms = NOW_MS + MAX_CLOCK_SKEW_MS + 1;
        future.modified_ms = future.created_ms;
        future.set_nonce(future.nonce);
        assert_eq!(reject(&future), Rejection::InTheFuture);
        let mut forever = chat(m1, "forever");
        forever.expires_ms = i64::MAX;
        forever.sign(&m1.group_id(), &m1.key()).unwrap();
        assert_eq!(reject(&forever), Rejection::OutlivesGroupLimit);
        let mut gone = chat(m1, "gone");
        gone.expires_ms = NOW_MS;
        assert_eq!(reject(&gone), Rejection::Expired);
        let mut bad_text = chat(m1, "");
        bad_text.data = vec![0xff, 0xfe];
        bad_text.sign(&m1.group_id(), &m1.key()).unwrap();
        assert_eq!(reject(&bad_text), Rejection::BadChatText);
    }

    /// Red-team: records back-dated by hours each landed in a quota bucket of their own
    /// (and a date before year -9999 crashed displays): a record lives at most the
    /// group's lifetime from its creation.
    #[test]
    fn a_record_cannot_be_created_longer_ago_than_its_lifetime() {
        let lifetimes = Lifetimes::from_secs(7 * 86_400, 300);
        let (sim, _) = setup();
        let mut r = chat(&sim.nodes[1], "old");
        r.created_ms = NOW_MS - 365 * 86_400_000;
        r.modified_ms = NOW_MS;
        r.expires_ms = NOW_MS + 60_000;
        assert_eq!(check_times(&r, NOW_MS, &lifetimes), Err(Rejection::OutlivesGroupLimit));
        r.created_ms = -377_705_116_800_000;
        assert_eq!(check_times(&r, NOW_MS, &lifetimes), Err(Rejection::OutlivesGroupLimit));
        r.created_ms = NOW_MS - 86_400_000;
        assert_eq!(check_times(&r, NOW_MS, &lifetimes), Ok(()));
    }

    /// Attack 2: a member writes under another member's record id (a chat message, a
    /// presence or membership id) with a higher version, signed with its own key.
    #[test]
    fn nobody_writes_under_another_members_id_or_above_the_version_ceiling() {
        let (sim, a) = setup();
        let (m0, m1) = (&sim.nodes[0], &sim.nodes[1]);
        let reject = |r: &Record| rejection(&a, r);
        let victim = chat(m0, "original");
        for target in [
            victim.id,
            record::per_member_id(&PRESENCE_TYPE, &m0.id),
            record::per_member_id(&MEMBERSHIP_TYPE, &m0.id),
        ] {
            let mut squat = chat(m1, "rewritten");
            squat.id = target;
            squat.version = u64::MAX;
            squat.sign(&m1.group_id(), &m1.key()).unwrap();
            assert_eq!(reject(&squat), Rejection::UnboundId, "{target}");
        }
        let mut presence_as_other = Record::new(PRESENCE_TYPE, m1.id, NOW_MS, 60_000);
        presence_as_other.id = record::per_member_id(&PRESENCE_TYPE, &m0.id);
        presence_as_other.sign(&m1.group_id(), &m1.key()).unwrap();
        assert_eq!(reject(&presence_as_other), Rejection::UnboundId);
        // Its own record, but a version nothing could ever follow.
        let mut pinned = chat(m1, "final");
        pinned.version = record::MAX_PLAIN_VERSION + 1;
        pinned.sign(&m1.group_id(), &m1.key()).unwrap();
        assert_eq!(
            reject(&pinned),
            Rejection::VersionTooHigh(record::MAX_PLAIN_VERSION + 1)
        );
        let mut presence = Record::new(PRESENCE_TYPE, m1.id, NOW_MS, 60_000);
        presence.version = NOW_MS as u64 + 1;
        presence.sign(&m1.group_id(), &m1.key()).unwrap();
        assert_eq!(reject(&presence), Rejection::VersionTooHigh(NOW_MS as u64 + 1));
        presence.version = NOW_MS as u64;
        presence.sign(&m1.group_id(), &m1.key()).unwrap();
        assert!(matches!(a.judge(&presence, None, NOW_MS, None), Verdict::Accept(None)));
    }

    #[test]
    fn a_precomputed_signature_result_is_used_for_its_record() {
        let (sim, a) = setup();
        let r = chat(&sim.nodes[1], "hi");
        assert!(matches!(
            a.judge(&r, None, NOW_MS, Some(false)),
            Verdict::Reject(Rejection::BadSignature)
        ));
        // A batch result belongs to its position: two copies of one id with one
        // signature, one of them altered, get different results.
        let mut forged = r.clone();
        forged.data = b"not what was signed".to_vec();
        let batch: Vec<&Record> = std::iter::repeat_n(&r, PARALLEL_VERIFY_MIN).chain([&forged]).collect();
        let results = a.verify_batch(&batch, |_| None, 2);
        assert_eq!(results.len(), batch.len());
        assert_eq!(results[0], Some(true));
        assert_eq!(
            results[PARALLEL_VERIFY_MIN],
            Some(false),
            "the forged copy is not covered by the good one"
        );
        // One core: the same answers (ZIP-215 batches, no threads).
        assert_eq!(a.verify_batch(&batch, |_| None, 1), results);
        // A frame of a few records is one batch; a single record goes the single way.
        assert_eq!(a.verify_batch(&batch[..3], |_| None, 2), vec![Some(true); 3]);
        assert_eq!(a.verify_batch(&batch[..1], |_| None, 2), vec![None]);
    }

    #[test]
    fn a_membership_record_brings_its_certificate_only_when_self_published() {
        let (sim, a) = setup();
        let n2 = &sim.nodes[2];
        let m = n2
            .core
            .as_ref()
            .unwrap()
            .store()
            .records()
            .find(|r| r.rtype == MEMBERSHIP_TYPE && r.creator == n2.id)
            .unwrap()
            .clone();
        match a.judge(&m, None, NOW_MS, None) {
            Verdict::Accept(Some(proof)) => assert_eq!(proof.cert.member_id, n2.id),
            other => panic!("{other:?}"),
        }
        let mut foreign = m.clone();
        foreign.creator = sim.nodes[1].id;
        foreign.modifier = sim.nodes[1].id;
        assert!(matches!(
            a.judge(&foreign, None, NOW_MS, None),
            Verdict::Reject(Rejection::UnboundId)
        ));
        let mut by_other = m.clone();
        by_other.modifier = sim.nodes[1].id;
        assert!(matches!(
            a.judge(&by_other, None, NOW_MS, None),
            Verdict::Reject(Rejection::NotSelfPublished)
        ));
        let mut pinned = m.clone();
        pinned.version += 1;
        pinned.sign(&n2.group_id(), &n2.key()).unwrap();
        assert!(matches!(
            a.judge(&pinned, None, NOW_MS, None),
            Verdict::Reject(Rejection::MembershipVersion(_))
        ));
        let mut junk = m.clone();
        junk.data = vec![1, 0, 0, 0, 9, 1];
        assert!(matches!(a.judge(&junk, None, NOW_MS, None), Verdict::Reject(_)));
    }

    #[test]
    fn a_membership_that_has_ended_counts_as_unknown() {
        let (sim, a) = setup();
        let r = chat(&sim.nodes[1], "late");
        let after_end = sim.nodes[1].membership_cert().not_after.unix_timestamp() * 1000 + 1000;
        let mut late = r.clone();
        late.created_ms = after_end;
        late.modified_ms = after_end;
        late.set_nonce(late.nonce);
        late.expires_ms = after_end + 1000;
        assert!(matches!(a.judge(&late, None, after_end, None), Verdict::Hold(_)));
    }

    #[test]
    fn held_records_are_bounded_deduplicated_and_released_once() {
        let t0 = Instant::now();
        let mut held: Held<u8> = Held::default();
        let m = MemberId::from_bytes([1; 20]);
        let rec = |b: u8| HeldRecord {
            body: vec![b],
            via_sync: false,
            from: Some(1),
        };
        assert!(held.hold(m, rec(1), t0));
        assert!(!held.hold(m, rec(1), t0), "the same bytes once");
        assert!(held.hold(m, rec(2), t0));
        assert_eq!(held.len(), 2);
        assert_eq!(held.release(&m).len(), 2);
        assert!(held.release(&m).is_empty());
        assert!(held.is_empty());
        for i in 0..MAX_HELD_RECORDS {
            held.hold(
                MemberId::from_bytes([2; 20]),
                HeldRecord {
                    body: i.to_be_bytes().to_vec(),
                    via_sync: true,
                    from: None,
                },
                t0,
            );
        }
        assert!(!held.hold(m, rec(3), t0), "over the budget");
    }

    /// Attack 4: records of 200 KB claiming unknown creators, before any signature
    /// check: bounded in bytes per claimed member and in all, and dropped in time.
    #[test]
    fn held_bytes_are_capped_per_member_and_in_total_and_expire() {
        let t0 = Instant::now();
        let mut held: Held<u8> = Held::default();
        let big = |i: u32| HeldRecord {
            body: [i.to_be_bytes().to_vec(), vec![0; 200_000]].concat(),
            via_sync: false,
            from: None,
        };
        let one = MemberId::from_bytes([1; 20]);
        let taken = (0..100).filter(|&i| held.hold(one, big(i), t0)).count();
        assert_eq!(taken, MAX_HELD_BYTES_PER_MEMBER / 200_004);
        for k in 0..=255u8 {
            for i in 0..100 {
                held.hold(MemberId::from_bytes([k; 20]), big(i), t0);
            }
        }
        assert!(held.bytes() <= MAX_HELD_BYTES, "{} bytes held", held.bytes());
        assert!(held.bytes() > MAX_HELD_BYTES - 400_000);
        assert_eq!(held.expire(t0 + HELD_FOR / 2), 0);
        let later = t0 + Duration::from_secs(1);
        let fresh = MemberId::from_bytes([1; 20]);
        assert!(!held.release(&fresh).is_empty(), "its membership came: room again");
        assert!(held.hold(fresh, big(1), later));
        let dropped = held.expire(t0 + HELD_FOR);
        assert_eq!(held.len(), 1, "only what came later is left ({dropped} dropped)");
        assert_eq!(held.expire(later + HELD_FOR), 1);
        assert!(held.is_empty() && held.bytes() == 0);
    }
}
