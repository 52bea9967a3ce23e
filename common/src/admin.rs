//! Admin actions from the command line (`group-admin`): what an admin signs is a
//! record like any other, checked by every node as if it came from a peer. With no
//! `group-chat` running for the membership it goes into the store and spreads at the
//! next start; with one running it is handed over (see [`crate::node::control`]) and
//! takes effect at once.

use std::collections::HashMap;
use std::time::Duration;

use thiserror::Error;
use time::OffsetDateTime;

use crate::clock;
use crate::core::admission::{Admission, Lifetimes, Verdict, decode_chain_prefix};
use crate::core::properties::Properties;
use crate::core::revocation;
use crate::credential::{self, CredentialError};
use crate::home::{Home, HomeError, Lock};
use crate::identity::Identity;
use crate::identity::IdentityError;
use crate::member::MemberId;
use crate::membership::{self, Membership, MembershipError};
use crate::names::{Directory, ResolveError};
use crate::node::control::{self, ControlError};
use crate::pki::{Cert, Claim, Role};
use crate::record::{
    AttrValue, CREDENTIAL_TYPE, MEMBERSHIP_TYPE, PRESENCE_TYPE, PROPERTIES_TYPE, REVOCATION_TYPE, Record,
};
use crate::store::{Durability, Put, STORE_FILE, STORE_LOCK, Store, StoreError};
use crate::sync::Item;

/// Errors of admin actions.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The member named is not one this membership knows.
    #[error(
        "no member known here matches {0:?}: name one by its certificate name, member id or id prefix (a member who joined since group-chat last ran here is learnt at its next run)"
    )]
    Unknown(String),
    /// The name fits several members.
    #[error("{0:?} matches several members: {1}; name one by its id prefix")]
    Ambiguous(String, String),
    /// The creator renews its own certificates.
    #[error(
        "{0} is the group's creator, who renews its own certificates with the root key whenever it is online: nothing to do"
    )]
    Creator(String),
    /// The creator holds the root key: nobody can cut it off.
    #[error("{0} is the group's creator, who holds the root key: the creator cannot be revoked")]
    CreatorRevoked(String),
    /// An admin changing its own role.
    #[error("{0} is this identity: another admin changes an admin's role")]
    RoleOfItself(String),
    /// The creator is always an admin.
    #[error("{0} is the group's creator, who holds the root key: it is always an admin")]
    CreatorRole(String),
    /// Nothing to change.
    #[error("{0} is already a {1}")]
    AlreadyInRole(String, Role),
    /// An admin revoking itself.
    #[error("{0} is this identity: to leave the group, stop using it (an admin revokes others)")]
    RevokeItself(String),
    /// The reason is too long.
    #[error("the reason is {0} bytes; at most {max} are allowed", max = revocation::MAX_REASON_BYTES)]
    ReasonTooLong(usize),
    /// The admin named itself.
    #[error("{0} is this identity: an admin's own certificates are renewed by another admin or the creator")]
    Itself(String),
    /// Every property given is already in force.
    #[error(
        "the group's properties are already so: give --name, --classifier, --comment, --message-lifetime or --presence-lifetime with a new value"
    )]
    NothingToChange,
    /// Nobody to act on.
    #[error("no other member is known here yet: run group-chat once to learn the group's members")]
    NobodyKnown,
    /// Issuing failed.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The membership could not be read or saved.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The admin's identity could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The store is locked or could not be opened.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The running node could not be reached, or refused.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A record was refused (by the running node, or by the same rules here).
    #[error("refused: {0}")]
    Refused(String),
}

/// Where an admin's records went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// To the `group-chat` running for the membership: in force and spreading now.
    Online,
    /// Into the store: they spread at the next `group-chat`.
    Stored,
}

/// Publishes records signed by this membership's identity: handed to the running node
/// if there is one, else checked by the node's rules and stored. All or nothing: a
/// refused record stops the rest (offline) or is reported (online).
pub fn publish(m: &Membership, records: &[Record], now_ms: i64) -> Result<Delivery, AdminError> {
    let bodies: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
    if let Some(results) = control::hand_over(&m.dir, &bodies)? {
        if let Some(why) = results.into_iter().find_map(Result::err) {
            return Err(AdminError::Refused(why));
        }
        return Ok(Delivery::Online);
    }
    let _lock = Lock::acquire(
        &m.dir.join(STORE_LOCK),
        &format!("the store of {:?} in {:?}", m.identity, m.group.name),
    )?;
    let lifetimes = Lifetimes::from_secs(m.group.message_lifetime_secs, m.group.presence_lifetime_secs);
    let admission = Admission::new(
        m.group.id,
        m.root.clone(),
        lifetimes,
        (m.membership.member_id, m.membership.clone()),
    );
    for r in records {
        if let Verdict::Reject(why) = admission.judge(r, None, now_ms, None) {
            return Err(AdminError::Refused(why.to_string()));
        }
    }
    let mut store = Store::open(&m.dir.join(STORE_FILE), Durability::Normal)?;
    // Under the lock: a scripts' record changed by another run since this one read it
    // would be overwritten by an older version (a lost update).
    for r in records.iter().filter(|r| !crate::records::is_reserved(&r.rtype)) {
        if let Some(stored) = store.get(&r.id)?
            && stored.version >= r.version
        {
            return Err(AdminError::Refused(format!(
                "record {} changed meanwhile (version {} is stored): read it again and retry",
                r.id, stored.version
            )));
        }
    }
    let now_ns = now_ms.saturating_mul(1_000_000);
    let puts: Vec<Put> = records.iter().map(|r| Put::new(r.clone(), false, now_ns)).collect();
    store.put_batch(&puts)?;
    Ok(Delivery::Stored)
}

/// The members a membership knows from its store: each one's newest verified
/// certificate (from membership and credential records), and their names.
#[derive(Debug)]
pub struct Known {
    /// Member -> newest certificate.
    pub certs: HashMap<MemberId, Cert>,
    /// Certificate names.
    pub names: Directory,
    /// Admins made members again, and the certificates they issued that stay valid.
    pub demoted: HashMap<MemberId, Vec<revocation::Key>>,
}

/// Reads the members `m` knows from `store`, checking every record as a node would:
/// a record that does not verify teaches nothing.
pub fn known_members(m: &Membership, store: &Store) -> Result<Known, AdminError> {
    let admission = store_admission(m, store)?;
    let demoted = admission
        .certs()
        .filter_map(|(m, _)| Some((*m, admission.revocations().demoted_keeps(m)?)))
        .collect();
    let certs: HashMap<MemberId, Cert> = admission.certs().map(|(m, c)| (*m, c.clone())).collect();
    Ok(Known {
        certs,
        names: admission.names().clone(),
        demoted,
    })
}

/// What `store` teaches a node of `m`, every record checked as a node would: the
/// members (expired ones too), their roles, the revocations, and the property changes
/// in force.
fn store_admission(m: &Membership, store: &Store) -> Result<Admission, StoreError> {
    let lifetimes = Lifetimes::from_secs(m.group.message_lifetime_secs, m.group.presence_lifetime_secs);
    let me = m.membership.member_id;
    let mut admission = Admission::new(m.group.id, m.root.clone(), lifetimes, (me, m.membership.clone()));
    // Expired certificates count too: an admin may renew a member that was away.
    for r in store.of_type(&MEMBERSHIP_TYPE)? {
        if let Some(cert) = verified_at_start(&admission, &r, |a, r, t| {
            a.verify_membership_record(r, t).ok().map(|p| p.cert)
        }) {
            admission.learn(r.creator, cert);
        }
    }
    for r in store.of_type(&CREDENTIAL_TYPE)? {
        let start_ms = i64::try_from(r.version)
            .unwrap_or(0)
            .saturating_mul(1000)
            .max(r.modified_ms);
        if let Ok(c) = admission.verify_credential_record(&r, start_ms) {
            admission.learn(c.membership.member_id, c.membership.clone());
            admission.apply_role(&c);
        }
    }
    for r in store.of_type(&REVOCATION_TYPE)? {
        admission.revoke(&r);
    }
    for r in store.of_type(&PROPERTIES_TYPE)? {
        if admission.verify_properties_record(&r).is_ok() {
            admission.set_properties(&r);
        }
    }
    admission.prune_properties();
    Ok(admission)
}

/// A record's certificate, checked at the moment its certificate began (so an expired
/// one still shows whose it was; whether it is valid now is the caller's question).
fn verified_at_start(
    admission: &Admission,
    r: &Record,
    verify: impl Fn(&Admission, &Record, i64) -> Option<Cert>,
) -> Option<Cert> {
    let start_ms = i64::try_from(r.version).ok()?.saturating_mul(1000);
    verify(admission, r, start_ms.max(r.modified_ms))
}

/// Refuses unless `m` is an admin's membership with its issuing certificate.
fn require_admin(m: &Membership) -> Result<(), AdminError> {
    if m.role == Role::Admin && m.issuing.is_some() {
        return Ok(());
    }
    Err(CredentialError::NotAdmin {
        identity: m.identity.clone(),
        role: m.role,
        group: m.group.name.clone(),
    }
    .into())
}

/// What every admin action starts from: the admin's identity, its membership (the
/// creator's certificates renewed first when due: they cap everything it signs), the
/// membership's store (read-only) and the members it knows, at one moment.
#[derive(Debug)]
pub struct Session {
    /// The admin's identity.
    pub identity: Identity,
    /// Its membership of the group.
    pub membership: Membership,
    /// The membership's store, read-only.
    pub store: Store,
    /// The members the store knows.
    pub known: Known,
    /// The moment the action is taken.
    pub now: OffsetDateTime,
}

impl Session {
    /// Opens `identity`'s membership of the group `group` names in `home`.
    pub fn open(home: &Home, identity: &str, group: &str) -> Result<Session, AdminError> {
        let now = clock::now();
        let admin = Identity::load(home, identity)?;
        let m = credential::renew_creator_if_due(membership::find(home, identity, group)?, now)?;
        let store = Store::open_read_only(&m.dir.join(STORE_FILE))?;
        let known = known_members(&m, &store)?;
        Ok(Session {
            identity: admin,
            membership: m,
            store,
            known,
            now,
        })
    }

    /// The moment, unix ms.
    pub fn now_ms(&self) -> i64 {
        self.now.unix_timestamp().saturating_mul(1000)
    }

    /// Publishes `records` (see [`publish`]) and says where they went, starting with
    /// `done` ("renewed bob in Friends"), for the admin's terminal.
    pub fn publish(&self, records: &[Record], done: &str) -> Result<String, AdminError> {
        let how = match publish(&self.membership, records, self.now_ms())? {
            Delivery::Online => "handed to the running group-chat, spreading now".to_string(),
            Delivery::Stored => format!(
                "stored, spreading when group-chat next runs for {}",
                self.membership.identity
            ),
        };
        Ok(format!("{done}: {how}"))
    }
}

/// The members to renew: `who` resolved among those known (a name, an id or a unique
/// id prefix), or every one but this admin and the creator (`None`).
pub fn renewal_targets(m: &Membership, known: &Known, who: Option<&str>) -> Result<Vec<Cert>, AdminError> {
    require_admin(m)?;
    let me = m.membership.member_id;
    let is_creator = |c: &Cert| c.is_signed_by(&m.root);
    match who {
        Some(query) => {
            let member = resolve(known, query)?;
            let cert = &known.certs[&member];
            if member == me {
                return Err(AdminError::Itself(known.names.display(&member)));
            }
            if is_creator(cert) {
                return Err(AdminError::Creator(known.names.display(&member)));
            }
            Ok(vec![cert.clone()])
        }
        None => {
            let mut all: Vec<Cert> = known
                .certs
                .iter()
                .filter(|(id, c)| **id != me && !is_creator(c))
                .map(|(_, c)| c.clone())
                .collect();
            if all.is_empty() {
                return Err(AdminError::NobodyKnown);
            }
            all.sort_by_key(|c| c.member_id);
            Ok(all)
        }
    }
}

/// What a renewal made: the signed credential records, and the members left as they
/// were with why.
pub type Renewals = (Vec<Record>, Vec<(Cert, CredentialError)>);

/// Signed credential records renewing `targets` for `lifetime` from `now`, and the
/// targets left as they were, with why (a renewal that would end no later, or an
/// admin too deep to renew here). A single target that cannot be renewed is an error.
pub fn renew(
    identity: &Identity,
    m: &Membership,
    known: &Known,
    targets: &[Cert],
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<Renewals, AdminError> {
    let now_ms = now.unix_timestamp().saturating_mul(1000);
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    for old in targets {
        let kept = known.demoted.get(&old.member_id).cloned().unwrap_or_default();
        match credential::issue(&identity.key, m, old, lifetime, now, kept) {
            Ok(c) => records.push(credential::record(
                &identity.key,
                identity.member_id(),
                &m.group.id,
                &c,
                now_ms,
            )?),
            Err(e @ (CredentialError::WouldNotExtend { .. } | CredentialError::TooDeep { .. }))
                if targets.len() > 1 =>
            {
                skipped.push((old.clone(), e));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((records, skipped))
}

/// The revocation of `who` (a name, member id or id prefix known here) by this admin,
/// signed: it keeps what of the member's this store holds now (its records but its
/// presence, and, for an admin, the certificates it issued), so nothing the member
/// makes from now on, however dated, is accepted anywhere.
pub fn revocation(
    identity: &Identity,
    m: &Membership,
    store: &Store,
    known: &Known,
    who: &str,
    reason: &str,
    now_ms: i64,
) -> Result<(Record, Cert), AdminError> {
    require_admin(m)?;
    if reason.len() > revocation::MAX_REASON_BYTES {
        return Err(AdminError::ReasonTooLong(reason.len()));
    }
    let subject = resolve(known, who)?;
    let cert = known.certs[&subject].clone();
    if subject == m.membership.member_id {
        return Err(AdminError::RevokeItself(known.names.display(&subject)));
    }
    if cert.is_signed_by(&m.root) {
        return Err(AdminError::CreatorRevoked(known.names.display(&subject)));
    }
    // The certifications it made first (others depend on them), then its records,
    // newest first, up to what one record holds: a member cannot make itself
    // impossible to revoke by publishing more than a list can name (its oldest records
    // then go).
    let mut keep: Vec<revocation::Key> = issued_by(store, subject)?;
    let mut records: Vec<_> = store
        .summaries()?
        .into_iter()
        .filter(|s| s.creator == subject && s.rtype != PRESENCE_TYPE)
        .collect();
    // Its membership record first: it proves the certificate the others are checked with.
    records.sort_by_key(|s| (s.rtype != MEMBERSHIP_TYPE, std::cmp::Reverse(s.created_ms)));
    keep.extend(records.iter().map(|s| {
        revocation::item_key(&Item {
            id: *s.id.as_bytes(),
            version: s.version,
            digest: s.digest,
        })
    }));
    keep.truncate(revocation::MAX_KEPT);
    let until_ms = m.root.not_after.unix_timestamp().saturating_mul(1000);
    let mut r = Record::about(
        REVOCATION_TYPE,
        identity.member_id(),
        subject,
        now_ms,
        until_ms.saturating_sub(now_ms),
    );
    r.attributes
        .push((revocation::REASON_ATTR.into(), AttrValue::Str(reason.to_string())));
    r.data = revocation::encode_keys(keep);
    r.sign(&m.group.id, &identity.key).map_err(CredentialError::from)?;
    Ok((r, cert))
}

/// The keys of the certificates `subject` issued (as an admin) that `store` holds.
fn issued_by(store: &Store, subject: MemberId) -> Result<Vec<revocation::Key>, AdminError> {
    let mut keys = Vec::new();
    for r in store
        .of_type(&MEMBERSHIP_TYPE)?
        .into_iter()
        .chain(store.of_type(&CREDENTIAL_TYPE)?)
    {
        let Some((chain, _)) = decode_chain_prefix(&r.data) else {
            continue;
        };
        for (child, parent) in chain.iter().zip(&chain[1..]) {
            if parent.member_id == subject && child.is_signed_by(parent) {
                keys.push(revocation::cert_key(child, parent));
            }
        }
    }
    Ok(keys)
}

/// Gives the member `who` names the role `role`, signed: a credential with fresh
/// certificates (lasting `lifetime`, capped at this admin's own). Made a member, an
/// admin keeps valid the certificates it issued that this store holds, and issues
/// nothing more.
#[allow(clippy::too_many_arguments)]
pub fn role_change(
    identity: &Identity,
    m: &Membership,
    store: &Store,
    known: &Known,
    who: &str,
    role: Role,
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<Record, AdminError> {
    require_admin(m)?;
    let subject = resolve(known, who)?;
    let cert = &known.certs[&subject];
    let name = known.names.display(&subject);
    if subject == m.membership.member_id {
        return Err(AdminError::RoleOfItself(name));
    }
    if cert.is_signed_by(&m.root) {
        return Err(AdminError::CreatorRole(name));
    }
    if matches!(cert.claim, Claim::Membership { role: r, .. } if r == role) {
        return Err(AdminError::AlreadyInRole(name, role));
    }
    let kept = match role {
        // Its property changes too: a demoted admin changes nothing more.
        Role::Member => {
            let mut kept = issued_by(store, subject)?;
            kept.extend(
                store
                    .of_type(&PROPERTIES_TYPE)?
                    .iter()
                    .filter(|r| r.creator == subject)
                    .map(revocation::record_key),
            );
            kept
        }
        Role::Admin => Vec::new(),
    };
    let c = credential::assign_role(&identity.key, m, cert, role, lifetime, now, kept)?;
    let now_ms = now.unix_timestamp().saturating_mul(1000);
    Ok(credential::record(
        &identity.key,
        identity.member_id(),
        &m.group.id,
        &c,
        now_ms,
    )?)
}

/// What `group-admin set` changes: each field given replaces the one in force.
#[derive(Debug, Clone, Default)]
pub struct PropertyChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new classifier.
    pub classifier: Option<String>,
    /// A new comment.
    pub comment: Option<String>,
    /// A new message lifetime.
    pub message_lifetime: Option<Duration>,
    /// A new presence lifetime.
    pub presence_lifetime: Option<Duration>,
}

/// The group's properties in force now, from the property changes in `store` (each
/// checked as a node checks it), else those the group was created with; and the
/// record of the newest change, if any.
pub fn properties_in_force(m: &Membership, store: &Store) -> Result<(Properties, Option<Record>), StoreError> {
    let admission = store_admission(m, store)?;
    let Some((p, by, at)) = admission.properties().newest() else {
        return Ok((Properties::of_group(&m.group), None));
    };
    // The winning copy at that moment, by that admin.
    let record = store
        .of_type(&PROPERTIES_TYPE)?
        .into_iter()
        .filter(|r| r.created_ms == at && r.creator == by)
        .max_by(crate::record::compare);
    Ok((p.clone(), record))
}

/// The group's properties in force now (see [`properties_in_force`]).
pub fn properties_now(m: &Membership, store: &Store) -> Result<Properties, AdminError> {
    Ok(properties_in_force(m, store)?.0)
}

/// The signed property change applying `changes` to the properties in force, by this
/// admin, taking effect at `now_ms`.
pub fn property_change(
    identity: &Identity,
    m: &Membership,
    store: &Store,
    changes: &PropertyChanges,
    now_ms: i64,
) -> Result<(Record, Properties), AdminError> {
    require_admin(m)?;
    let before = properties_now(m, store)?;
    let mut p = before.clone();
    let secs = |d: &Duration| d.as_secs();
    if let Some(v) = &changes.name {
        p.name.clone_from(v);
    }
    if let Some(v) = &changes.classifier {
        p.classifier.clone_from(v);
    }
    if let Some(v) = &changes.comment {
        p.comment.clone_from(v);
    }
    if let Some(d) = &changes.message_lifetime {
        p.message_lifetime_secs = secs(d);
    }
    if let Some(d) = &changes.presence_lifetime {
        p.presence_lifetime_secs = secs(d);
    }
    if p == before {
        return Err(AdminError::NothingToChange);
    }
    let until_ms = m.root.not_after.unix_timestamp().saturating_mul(1000);
    let r = p
        .record(&identity.key, &m.group.id, (&m.membership, &m.chain), now_ms, until_ms)
        .map_err(|e| AdminError::Refused(e.to_string()))?;
    Ok((r, p))
}

/// The member `who` names among those known.
fn resolve(known: &Known, who: &str) -> Result<MemberId, AdminError> {
    known
        .names
        .resolve(who, known.certs.keys().copied())
        .map_err(|e| match e {
            ResolveError::NoMatch(q) => AdminError::Unknown(q),
            ResolveError::Ambiguous(q, names) => AdminError::Ambiguous(q, names),
        })
}

/// One line saying what a credential record renews, for the admin's terminal.
pub fn describe(r: &Record, names: &Directory) -> String {
    let who = r.subject().map(|s| names.display(&s)).unwrap_or_default();
    let until = clock::format_rfc3339(clock::from_unix(r.expires_ms.div_euclid(1000)));
    format!(
        "{who}\t{}\t{until}",
        r.subject().map(|s| s.to_string()).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::tests::{DAY, fixture};
    use crate::record::CHAT_TYPE;

    /// Red-team finding: one key per record of the member, so a member with more
    /// records than a record's data can list (8,192) could not be revoked at all.
    #[test]
    fn a_member_with_more_records_than_a_list_holds_can_still_be_revoked() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store.db"), crate::store::Durability::Normal).unwrap();
        let bob = &f.member;
        let t_ms = f.t0.unix_timestamp() * 1000 + DAY.as_millis() as i64;
        let puts: Vec<Put> = (0..revocation::MAX_KEPT as i64 + 300)
            .map(|i| {
                let mut r = Record::new(CHAT_TYPE, bob.m.membership.member_id, t_ms - 600_000 + i, 3_600_000);
                r.data = format!("flood {i}").into_bytes();
                // Never checked by the store: a signature's bytes suffice here.
                r.signature = vec![0; 64];
                Put::new(r, false, 0)
            })
            .collect();
        store.put_batch(&puts).unwrap();
        let mut names = Directory::new();
        names.learn(bob.m.membership.member_id, "bob");
        let known = Known {
            certs: [(bob.m.membership.member_id, bob.m.membership.clone())].into(),
            names,
            demoted: HashMap::new(),
        };
        let identity = f.creator.identity();
        let (r, _) = revocation(&identity, &f.creator.m, &store, &known, "bob", "", t_ms).unwrap();
        assert_eq!(r.data.len(), revocation::MAX_KEPT * 8);
        // The newest are kept.
        let newest = &puts.last().unwrap().record;
        let keys = revocation::decode_keys(&r.data).unwrap();
        assert!(keys.contains(&revocation::record_key(newest)));
    }
}

#[cfg(test)]
mod refusals {
    use super::*;
    use crate::credential::tests::fixture;

    /// The refusals of `group-admin revoke` and `role` that no process test reaches:
    /// the creator, oneself, a reason too long, a member already in the role.
    #[test]
    fn revoking_or_changing_whom_one_may_not_is_refused_with_the_reason() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.db"), crate::store::Durability::Normal).unwrap();
        let mut names = Directory::new();
        let mut certs = HashMap::new();
        for (h, name) in [(&f.creator, "creator"), (&f.admin, "admin"), (&f.member, "member")] {
            names.learn(h.m.membership.member_id, name);
            certs.insert(h.m.membership.member_id, h.m.membership.clone());
        }
        let known = Known {
            certs,
            names,
            demoted: HashMap::new(),
        };
        let (admin, m) = (f.admin.identity(), &f.admin.m);
        let t = f.t0.unix_timestamp() * 1000 + 60_000;
        let revoke = |who: &str, reason: &str| {
            revocation(&admin, m, &store, &known, who, reason, t)
                .map(|_| ())
                .unwrap_err()
        };
        assert!(matches!(revoke("creator", ""), AdminError::CreatorRevoked(_)));
        assert!(matches!(revoke("admin", ""), AdminError::RevokeItself(_)));
        assert!(matches!(
            revoke("member", &"x".repeat(513)),
            AdminError::ReasonTooLong(513)
        ));
        assert!(matches!(revoke("nobody", ""), AdminError::Unknown(_)));
        let role = |who: &str, r: Role| {
            role_change(
                &admin,
                m,
                &store,
                &known,
                who,
                r,
                std::time::Duration::from_secs(86_400),
                f.t0,
            )
            .unwrap_err()
        };
        assert!(matches!(role("member", Role::Member), AdminError::AlreadyInRole(..)));
        assert!(matches!(role("creator", Role::Member), AdminError::CreatorRole(_)));
        let member = (f.member.identity(), &f.member.m);
        let err = revocation(&member.0, member.1, &store, &known, "admin", "", t).unwrap_err();
        assert!(
            matches!(err, AdminError::Credential(CredentialError::NotAdmin { .. })),
            "{err}"
        );
    }
}
