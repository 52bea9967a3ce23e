//! Credentials (Peer Grouping's PeerGroupIssueCredentials): a membership certificate
//! an admin issues again for a member, published as a credential record every node
//! checks on its own (see [`crate::core::admission::Admission::verify_credential_record`]),
//! and the creator's renewal of its own certificates with the root key.
//!
//! Every certificate ends no later than its issuer's, so a group lives on only while
//! the creator or an admin comes online within each member lifetime: each renews what
//! is due, the creator first (its issuing certificate caps everyone's).

use std::time::Duration;

use rcgen::KeyPair;
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::clock;
use crate::core::admission::{self, Credential};
use crate::core::revocation::Key;
use crate::member::MemberId;
use crate::membership::{Membership, MembershipError};
use crate::pki::{self, Cert, CertSpec, Claim, PkiError, Role};
use crate::record::{CREDENTIAL_TYPE, Record, RecordError};

/// Errors issuing credentials.
#[derive(Debug, Error)]
pub enum CredentialError {
    /// The issuer is not an admin.
    #[error("identity {identity:?} is a {role} of group {group:?}, not an admin: only admins can renew credentials")]
    NotAdmin {
        /// Local identity name.
        identity: String,
        /// Its role.
        role: Role,
        /// The group's name.
        group: String,
    },
    /// The issuer's own issuing certificate has ended.
    #[error(
        "the issuing certificate of {identity:?} ended at {until}: the creator must come online to renew it (or an admin nearer the creator renew this admin)"
    )]
    IssuerExpired {
        /// Local identity name.
        identity: String,
        /// When it ended.
        until: String,
    },
    /// An admin renewed here would be too deep a link of the chain.
    #[error(
        "an admin renewed by {identity:?} would be issuing link {depth} of the chain (at most {max} are allowed): ask an admin nearer the creator",
        max = pki::MAX_ISSUING_LINKS
    )]
    TooDeep {
        /// Local identity name.
        identity: String,
        /// The depth it would have.
        depth: usize,
    },
    /// The renewal would end no later than the certificate it replaces.
    #[error(
        "a renewal by {identity:?} would end at {until}, no later than the current certificate: the issuer's own certificate ends first (the creator renews it when online)"
    )]
    WouldNotExtend {
        /// Local identity name.
        identity: String,
        /// When the renewal would end.
        until: String,
    },
    /// A certificate could not be made or checked.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The record could not be signed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The membership or the root key could not be read or saved.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// Whether `cert` ends within a tenth of `lifetime` after `now` (or has ended): time to
/// renew it.
pub fn due(cert: &Cert, lifetime: Duration, now: OffsetDateTime) -> bool {
    cert.not_after <= clock::add(now, lifetime / 10)
}

/// Whether an admin renews `leaf` on its own when it is due: a membership granted for
/// the group's member lifetime (at least nine tenths of it), or one cut short only
/// because its issuer's certificate ended then (`issuer`, when known). One granted
/// for a shorter term on purpose (`invite-create --valid-for`) is left to end; an
/// admin can still renew it with `group-admin renew`.
pub fn renews_on_its_own(leaf: &Cert, issuer: Option<&Cert>, lifetime: Duration) -> bool {
    let term = (leaf.not_after - leaf.not_before).whole_seconds();
    let full = i64::try_from((lifetime * 9 / 10).as_secs()).unwrap_or(i64::MAX);
    term >= full || issuer.is_some_and(|i| i.not_after == leaf.not_after)
}

/// Whether the creator's own certificates are due (see [`due`]).
pub fn creator_due(m: &Membership, now: OffsetDateTime) -> bool {
    let lifetime = Duration::from_secs(m.group.member_lifetime_secs);
    m.creator && (due(&m.membership, lifetime, now) || m.issuing.as_ref().is_none_or(|c| due(c, lifetime, now)))
}

/// The start of a certificate issued now under `issuer`: a minute back for clocks
/// that run a little behind, but not before the issuer's own start.
fn start(now: OffsetDateTime, issuer: &Cert) -> OffsetDateTime {
    clock::from_unix(now.unix_timestamp() - pki::BACKDATE.as_secs() as i64).max(issuer.not_before)
}

/// Issues `subject`'s certificates again under `admin`'s membership: the same key,
/// name and role (an admin also gets a new issuing certificate), valid for `lifetime`
/// from now but no longer than the admin's own issuing certificate. A renewal that
/// would end no later than `subject` is refused. `kept` carries a member's list of the
/// certificates it issued while an admin (see [`assign_role`]).
pub fn issue(
    admin_key: &KeyPair,
    admin: &Membership,
    subject: &Cert,
    lifetime: Duration,
    now: OffsetDateTime,
    kept: Vec<Key>,
) -> Result<Credential, CredentialError> {
    let role = match subject.claim {
        Claim::Membership { role, .. } => role,
        _ => {
            return Err(PkiError::NotOurs {
                what: "the member's certificate".into(),
                reason: "not a membership certificate".into(),
            }
            .into());
        }
    };
    let c = make(admin_key, admin, subject, role, lifetime, now, kept)?;
    if c.membership.not_after <= subject.not_after {
        return Err(CredentialError::WouldNotExtend {
            identity: admin.identity.clone(),
            until: clock::format_rfc3339(c.membership.not_after),
        });
    }
    Ok(c)
}

/// Gives `subject` the role `role` (Peer Grouping's role change): fresh certificates
/// like a renewal's with that role, an admin's with an issuing certificate. Made a
/// member, it issues nothing more: of the certificates it issued, only `kept` (those
/// the admin holds now) stay valid, in every node's judgement.
pub fn assign_role(
    admin_key: &KeyPair,
    admin: &Membership,
    subject: &Cert,
    role: Role,
    lifetime: Duration,
    now: OffsetDateTime,
    kept: Vec<Key>,
) -> Result<Credential, CredentialError> {
    let kept = if role == Role::Member { kept } else { Vec::new() };
    make(admin_key, admin, subject, role, lifetime, now, kept)
}

fn make(
    admin_key: &KeyPair,
    admin: &Membership,
    subject: &Cert,
    role: Role,
    lifetime: Duration,
    now: OffsetDateTime,
    kept: Vec<Key>,
) -> Result<Credential, CredentialError> {
    let Some(own) = admin.issuing.as_ref().filter(|_| admin.role == Role::Admin) else {
        return Err(CredentialError::NotAdmin {
            identity: admin.identity.clone(),
            role: admin.role,
            group: admin.group.name.clone(),
        });
    };
    if own.not_after <= now {
        return Err(CredentialError::IssuerExpired {
            identity: admin.identity.clone(),
            until: clock::format_rfc3339(own.not_after),
        });
    }
    // An admin that would sit deeper than chains may go is left to one nearer the
    // creator.
    if role == Role::Admin && admin.issuing_depth() >= pki::MAX_ISSUING_LINKS {
        return Err(CredentialError::TooDeep {
            identity: admin.identity.clone(),
            depth: admin.issuing_depth() + 1,
        });
    }
    let (group, member) = (admin.group.id, subject.member_id);
    // Later than the certificate it replaces, so it outranks it (and its record's
    // version is higher) even within the issuer's first minute.
    let not_before = start(now, own)
        .max(clock::add(subject.not_before, Duration::from_secs(1)))
        .min(now);
    let spec = |claim| CertSpec {
        common_name: subject.common_name.clone(),
        claim,
        not_before,
        not_after: clock::add(now, lifetime).min(own.not_after),
    };
    let cert = |claim, what| -> Result<Cert, PkiError> {
        let der = pki::issue(&spec(claim), &subject.spki, &own.der, admin_key)?;
        Cert::parse(&der, what)
    };
    let membership = cert(Claim::Membership { group, member, role }, "the membership certificate")?;
    let issuing = match role {
        Role::Admin => Some(cert(Claim::Issuing { group, member }, "the issuing certificate")?),
        Role::Member => None,
    };
    let mut chain = vec![own.clone()];
    chain.extend(admin.chain.iter().cloned());
    Ok(Credential {
        membership,
        issuing,
        chain,
        kept,
    })
}

/// The credential record publishing `c`, signed by the admin `admin_id` with its key:
/// its version is the certificate's start (a newer one replaces it everywhere), and it
/// ends with the certificate.
pub fn record(
    admin_key: &KeyPair,
    admin_id: MemberId,
    group: &Uuid,
    c: &Credential,
    now_ms: i64,
) -> Result<Record, CredentialError> {
    let mut r = Record::about(CREDENTIAL_TYPE, admin_id, c.membership.member_id, now_ms, 0);
    r.version = admission::membership_version(&c.membership);
    r.expires_ms = c.membership.not_after.unix_timestamp().saturating_mul(1000);
    r.data = c.encode();
    r.sign(group, admin_key)?;
    Ok(r)
}

/// The creator's certificates issued again with the root key: membership and issuing,
/// for the same key, valid for `lifetime` from now (the root outlives any lifetime a
/// group may set).
pub fn renew_creator(
    m: &Membership,
    root_key: &KeyPair,
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<Membership, CredentialError> {
    let group = m.group.id;
    let member = m.membership.member_id;
    let spec = |claim| CertSpec {
        common_name: m.membership.common_name.clone(),
        claim,
        not_before: start(now, &m.root),
        not_after: clock::add(now, lifetime).min(m.root.not_after),
    };
    let spki = m.membership.spki.clone();
    let make = |claim, what| -> Result<Cert, PkiError> {
        let der = pki::issue(&spec(claim), &spki, &m.root.der, root_key)?;
        Cert::parse(&der, what)
    };
    let membership = make(
        Claim::Membership {
            group,
            member,
            role: Role::Admin,
        },
        "the membership certificate",
    )?;
    let issuing = make(Claim::Issuing { group, member }, "the issuing certificate")?;
    pki::verify_chain(&m.root, &[], &membership, group, now)?;
    let mut renewed = m.clone();
    renewed.membership = membership;
    renewed.issuing = Some(issuing);
    renewed.chain = Vec::new();
    renewed.role = Role::Admin;
    Ok(renewed)
}

/// `m` itself, or (for the creator, when its certificates are due) renewed with the
/// root key and saved: every tool the creator runs keeps the group alive.
pub fn renew_creator_if_due(m: Membership, now: OffsetDateTime) -> Result<Membership, CredentialError> {
    if !creator_due(&m, now) {
        return Ok(m);
    }
    let Some(root_key) = m.root_key()? else {
        return Ok(m);
    };
    let lifetime = Duration::from_secs(m.group.member_lifetime_secs);
    let renewed = renew_creator(&m, &root_key, lifetime, now)?;
    renewed.save()?;
    tracing::info!(
        "renewed the creator's certificates until {}",
        clock::format_rfc3339(renewed.membership.not_after)
    );
    Ok(renewed)
}

/// `m` with the certificates of credential `c` (which the caller verified is for its
/// member): the role follows the new certificate, an admin's issuing certificate
/// comes with it, a member keeps none.
pub fn adopt(m: &Membership, c: &Credential) -> Membership {
    let mut renewed = m.clone();
    if let Claim::Membership { role, .. } = c.membership.claim {
        renewed.role = role;
    }
    renewed.membership = c.membership.clone();
    renewed.issuing = c.issuing.clone();
    renewed.chain = c.chain.clone();
    renewed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::admission::{Admission, Lifetimes, Rejection};
    use crate::membership::GroupInfo;
    use crate::pki::KeyType;
    use crate::record::Record;

    pub(crate) const DAY: Duration = Duration::from_secs(86_400);

    /// A member of the fixture's group: its key and membership.
    pub(crate) struct Held {
        pub key: KeyPair,
        pub m: Membership,
    }

    impl Held {
        /// Its identity (a fresh self-signed identity certificate for its key).
        pub(crate) fn identity(&self) -> crate::identity::Identity {
            let spec = CertSpec {
                common_name: self.m.membership.common_name.clone(),
                claim: Claim::Identity,
                not_before: self.m.membership.not_before,
                not_after: clock::add(self.m.membership.not_before, pki::ROOT_LIFETIME),
            };
            let cert = Cert::parse(&pki::self_signed(&spec, &self.key).unwrap(), "identity").unwrap();
            let der = self.key.serialize_der();
            crate::identity::Identity {
                name: self.m.identity.clone(),
                key: KeyPair::try_from(der.as_slice()).unwrap(),
                cert,
            }
        }
    }

    /// A group made at `t0` with a 30-day member lifetime: the creator (root-issued,
    /// admin, 90 days), an admin it invited (60 days), and a member that admin invited
    /// (30 days).
    pub(crate) struct Fixture {
        pub root_key: KeyPair,
        pub creator: Held,
        pub admin: Held,
        pub member: Held,
        pub t0: OffsetDateTime,
    }

    /// `by` invites `name` at `t0` for `term` (capped at `by`'s own issuing certificate).
    pub(crate) fn invite(by: &Held, name: &str, role: Role, t0: OffsetDateTime, term: Duration) -> Held {
        let key = KeyType::Ed25519.generate().unwrap();
        let spki = pki::spki_of(&key);
        let member = pki::member_id(&spki);
        let group = by.m.group.id;
        let own = by.m.issuing.as_ref().unwrap();
        let spec = |claim| CertSpec {
            common_name: name.into(),
            claim,
            not_before: t0,
            not_after: clock::add(t0, term).min(own.not_after),
        };
        let make = |claim| Cert::parse(&pki::issue(&spec(claim), &spki, &own.der, &by.key).unwrap(), "t").unwrap();
        let membership = make(Claim::Membership { group, member, role });
        let issuing = (role == Role::Admin).then(|| make(Claim::Issuing { group, member }));
        let mut chain = vec![own.clone()];
        chain.extend(by.m.chain.iter().cloned());
        let mut m = by.m.clone();
        m.identity = name.into();
        m.role = role;
        m.membership = membership;
        m.issuing = issuing;
        m.chain = chain;
        m.creator = false;
        Held { key, m }
    }

    pub(crate) fn fixture(t0: OffsetDateTime) -> Fixture {
        let root_key = KeyType::Ed25519.generate().unwrap();
        let group = GroupInfo {
            id: Uuid::new_v4(),
            name: "g".into(),
            classifier: String::new(),
            message_lifetime_secs: 7 * 86_400,
            member_lifetime_secs: 30 * 86_400,
            presence_lifetime_secs: 300,
        };
        let root_spec = CertSpec {
            common_name: "g root".into(),
            claim: Claim::Root { group: group.id },
            not_before: t0,
            not_after: clock::add(t0, pki::ROOT_LIFETIME),
        };
        let root = Cert::parse(&pki::self_signed(&root_spec, &root_key).unwrap(), "root").unwrap();
        let key = KeyType::Ed25519.generate().unwrap();
        let spki = pki::spki_of(&key);
        let member = pki::member_id(&spki);
        // A bare membership whose certificates renew_creator makes.
        let placeholder = Cert::parse(
            &pki::issue(
                &CertSpec {
                    common_name: "creator".into(),
                    claim: Claim::Membership {
                        group: group.id,
                        member,
                        role: Role::Admin,
                    },
                    not_before: t0,
                    not_after: clock::add(t0, DAY),
                },
                &spki,
                &root.der,
                &root_key,
            )
            .unwrap(),
            "t",
        )
        .unwrap();
        let bare = Membership {
            identity: "creator".into(),
            group,
            role: Role::Admin,
            root,
            membership: placeholder,
            issuing: None,
            chain: Vec::new(),
            listen: "127.0.0.1:0".parse().unwrap(),
            bootstrap: Vec::new(),
            joined: t0,
            creator: true,
            dir: std::path::PathBuf::from("/nonexistent"),
        };
        let m = renew_creator(&bare, &root_key, 90 * DAY, clock::add(t0, pki::BACKDATE)).unwrap();
        let creator = Held { key, m };
        let admin = invite(&creator, "admin", Role::Admin, t0, 60 * DAY);
        let member = invite(&admin, "member", Role::Member, t0, 30 * DAY);
        Fixture {
            root_key,
            creator,
            admin,
            member,
            t0,
        }
    }

    fn admission(f: &Fixture) -> Admission {
        let m = &f.creator.m;
        Admission::new(
            m.group.id,
            m.root.clone(),
            Lifetimes::from_secs(7 * 86_400, 300),
            (m.membership.member_id, m.membership.clone()),
        )
    }

    fn ms(t: OffsetDateTime) -> i64 {
        t.unix_timestamp() * 1000
    }

    #[test]
    fn a_certificate_is_due_in_the_last_tenth_of_its_lifetime() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let cert = &f.member.m.membership;
        assert!(!due(cert, 30 * DAY, clock::add(f.t0, 26 * DAY)));
        assert!(due(cert, 30 * DAY, clock::add(f.t0, 27 * DAY)));
        assert!(due(cert, 30 * DAY, clock::add(f.t0, 40 * DAY)), "ended counts as due");
    }

    #[test]
    fn a_renewal_keeps_key_name_and_role_and_is_capped_by_the_admins_own_certificate() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let later = clock::add(f.t0, 20 * DAY);
        let c = issue(
            &f.admin.key,
            &f.admin.m,
            &f.member.m.membership,
            30 * DAY,
            later,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(c.membership.spki, f.member.m.membership.spki);
        assert_eq!(c.membership.common_name, "member");
        assert!(matches!(
            c.membership.claim,
            Claim::Membership { role: Role::Member, .. }
        ));
        assert!(c.issuing.is_none());
        assert_eq!(c.membership.not_after, clock::add(later, 30 * DAY));
        // Asked for longer than the admin's own issuing certificate lasts: capped at it.
        let c = issue(
            &f.admin.key,
            &f.admin.m,
            &f.member.m.membership,
            90 * DAY,
            later,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(c.membership.not_after, f.admin.m.issuing.as_ref().unwrap().not_after);
        // An admin renewed gets a new issuing certificate beside its membership.
        let c = issue(
            &f.creator.key,
            &f.creator.m,
            &f.admin.m.membership,
            90 * DAY,
            later,
            Vec::new(),
        )
        .unwrap();
        assert!(c.issuing.is_some());
        assert_eq!(
            c.membership.not_after,
            clock::add(later, 90 * DAY).min(f.creator.m.issuing.as_ref().unwrap().not_after)
        );
    }

    #[test]
    fn full_terms_and_terms_cut_short_by_the_issuer_renew_on_their_own_deliberate_short_ones_do_not() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let admin_issuing = f.admin.m.issuing.as_ref().unwrap();
        let full = &f.member.m.membership;
        assert!(renews_on_its_own(full, Some(admin_issuing), 30 * DAY));
        // Issued ten days later for 90 days, capped at the admin's end: fifty days, yet
        // renewed under a 90-day lifetime.
        let later = clock::add(f.t0, 10 * DAY);
        let capped = issue(&f.admin.key, &f.admin.m, full, 90 * DAY, later, Vec::new())
            .unwrap()
            .membership;
        assert_eq!(capped.not_after, admin_issuing.not_after);
        assert!(renews_on_its_own(&capped, Some(admin_issuing), 90 * DAY));
        assert!(
            !renews_on_its_own(&capped, None, 90 * DAY),
            "capped, but the issuer is unknown"
        );
        // Granted for five days on purpose.
        let short = invite(&f.admin, "brief", Role::Member, f.t0, 5 * DAY).m.membership;
        assert!(!renews_on_its_own(&short, Some(admin_issuing), 30 * DAY));
    }

    /// Red-team finding: an admin could issue the creator (or an admin above it) a
    /// brief certificate that every node then took for the newest, cutting it off.
    #[test]
    fn nobody_issues_for_the_creator_or_an_admin_above_it() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let mut a = admission(&f);
        a.learn(f.admin.m.membership.member_id, f.admin.m.membership.clone());
        let t = clock::add(f.t0, DAY);
        let group = f.admin.m.group.id;
        // What a hostile admin would publish (issue() itself refuses to shorten): a
        // brief member certificate for `subject`, under `by`'s issuing certificate.
        let forged = |by: &Held, subject: &Cert| {
            let leaf = Cert::parse(
                &pki::issue(
                    &CertSpec {
                        common_name: subject.common_name.clone(),
                        claim: Claim::Membership {
                            group,
                            member: subject.member_id,
                            role: Role::Member,
                        },
                        not_before: t,
                        not_after: clock::add(t, Duration::from_secs(120)),
                    },
                    &subject.spki,
                    &by.m.issuing.as_ref().unwrap().der,
                    &by.key,
                )
                .unwrap(),
                "t",
            )
            .unwrap();
            let mut chain = vec![by.m.issuing.clone().unwrap()];
            chain.extend(by.m.chain.iter().cloned());
            let c = Credential {
                membership: leaf,
                issuing: None,
                chain,
                kept: Vec::new(),
            };
            record(&by.key, by.m.membership.member_id, &group, &c, ms(t)).unwrap()
        };
        let for_creator = forged(&f.admin, &f.creator.m.membership);
        assert_eq!(
            a.verify_credential_record(&for_creator, ms(t)).unwrap_err(),
            Rejection::ForAnAncestor
        );
        // An admin the admin invited, issuing for the admin above it.
        let deputy = invite(&f.admin, "deputy", Role::Admin, f.t0, 30 * DAY);
        let for_its_issuer = forged(&deputy, &f.admin.m.membership);
        assert_eq!(
            a.verify_credential_record(&for_its_issuer, ms(t)).unwrap_err(),
            Rejection::ForAnAncestor
        );
        // The same forgery for a member beside it passes: the rule is about rank.
        let peer = forged(&deputy, &f.member.m.membership);
        assert!(a.verify_credential_record(&peer, ms(t)).is_ok());
    }

    /// Red-team finding: two certificates for one member with the same start were
    /// settled by arrival order. The order is total now (start, end, bytes), and the
    /// later issue wins (a role change takes effect even if it ends sooner).
    #[test]
    fn the_later_issued_certificate_is_kept_in_any_order() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let t = clock::add(f.t0, 2 * DAY);
        let cert = |start: OffsetDateTime, end: OffsetDateTime| {
            Cert::parse(
                &pki::issue(
                    &CertSpec {
                        common_name: "admin".into(),
                        claim: f.admin.m.membership.claim.clone(),
                        not_before: start,
                        not_after: end,
                    },
                    &f.admin.m.membership.spki,
                    &f.creator.m.issuing.as_ref().unwrap().der,
                    &f.creator.key,
                )
                .unwrap(),
                "t",
            )
            .unwrap()
        };
        let long = cert(t, clock::add(t, 60 * DAY));
        let same_start_shorter = cert(t, clock::add(t, 30 * DAY));
        let later = cert(clock::add(t, Duration::from_secs(60)), clock::add(t, DAY));
        let member = f.admin.m.membership.member_id;
        for order in [
            [&long, &same_start_shorter, &later],
            [&later, &same_start_shorter, &long],
            [&same_start_shorter, &later, &long],
        ] {
            let mut a = admission(&f);
            for c in order {
                a.learn(member, c.clone());
            }
            assert_eq!(a.cert(&member).unwrap().der, later.der);
        }
        let mut a = admission(&f);
        for c in [&long, &same_start_shorter] {
            a.learn(member, c.clone());
        }
        assert_eq!(a.cert(&member).unwrap().der, long.der, "same start: the later end");
    }

    #[test]
    fn a_renewal_that_would_not_end_later_is_refused() {
        let f = fixture(clock::from_unix(1_800_000_000));
        // The creator renews the member far out; the admin, whose own certificate ends
        // sooner, cannot "renew" it shorter.
        let renewed = renew_creator(&f.creator.m, &f.root_key, 60 * DAY, clock::add(f.t0, DAY)).unwrap();
        let far = issue(
            &f.creator.key,
            &renewed,
            &f.member.m.membership,
            60 * DAY,
            clock::add(f.t0, DAY),
            Vec::new(),
        )
        .unwrap();
        let err = issue(
            &f.admin.key,
            &f.admin.m,
            &far.membership,
            30 * DAY,
            clock::add(f.t0, 2 * DAY),
            Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, CredentialError::WouldNotExtend { .. }), "{err}");
    }

    #[test]
    fn only_an_admin_with_a_live_issuing_certificate_renews() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let err = issue(
            &f.member.key,
            &f.member.m,
            &f.admin.m.membership,
            30 * DAY,
            f.t0,
            Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, CredentialError::NotAdmin { .. }), "{err}");
        let err = issue(
            &f.admin.key,
            &f.admin.m,
            &f.member.m.membership,
            30 * DAY,
            clock::add(f.t0, 61 * DAY),
            Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, CredentialError::IssuerExpired { .. }), "{err}");
    }

    #[test]
    fn the_creator_renews_itself_with_the_root_key_and_everyone_after_it() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let year = clock::add(f.t0, 365 * DAY);
        assert!(creator_due(&f.creator.m, year));
        let renewed = renew_creator(&f.creator.m, &f.root_key, 30 * DAY, year).unwrap();
        assert!(!creator_due(&renewed, year));
        pki::verify_chain(&renewed.root, &[], &renewed.membership, renewed.group.id, year).unwrap();
        // Its renewal of a member whose membership ended long ago verifies now.
        let c = issue(
            &f.creator.key,
            &renewed,
            &f.admin.m.membership,
            30 * DAY,
            year,
            Vec::new(),
        )
        .unwrap();
        let r = record(
            &f.creator.key,
            renewed.membership.member_id,
            &renewed.group.id,
            &c,
            ms(year),
        )
        .unwrap();
        assert_eq!(
            admission(&f)
                .verify_credential_record(&r, ms(year))
                .unwrap()
                .membership
                .der,
            c.membership.der
        );
    }

    #[test]
    fn a_credential_is_checked_from_the_record_alone() {
        let f = fixture(clock::from_unix(1_800_000_000));
        let a = admission(&f);
        let t = clock::add(f.t0, 20 * DAY);
        let group = f.admin.m.group.id;
        let c = issue(
            &f.admin.key,
            &f.admin.m,
            &f.member.m.membership,
            30 * DAY,
            t,
            Vec::new(),
        )
        .unwrap();
        let good = record(&f.admin.key, f.admin.m.membership.member_id, &group, &c, ms(t)).unwrap();
        assert!(good.id_is_bound());
        assert_eq!(
            a.verify_credential_record(&good, ms(t)).unwrap().membership.der,
            c.membership.der
        );
        let refused = |r: &Record| a.verify_credential_record(r, ms(t)).unwrap_err();
        // Published by someone other than the admin whose certificate issued it.
        let by_creator = record(&f.creator.key, f.creator.m.membership.member_id, &group, &c, ms(t)).unwrap();
        assert_eq!(refused(&by_creator), Rejection::NotIssuedByCreator);
        // The subject changed after issuing (to the admin itself): the admin's own
        // issuing certificate then reads as the subject's, and what is left of the
        // chain was not issued by the record's creator.
        let mut other = good.clone();
        other.attributes = vec![(
            crate::record::SUBJECT_ATTR.into(),
            crate::record::AttrValue::Str(f.admin.m.membership.member_id.to_string()),
        )];
        other.id = other.expected_id();
        other.sign(&group, &f.admin.key).unwrap();
        assert_eq!(refused(&other), Rejection::NotIssuedByCreator);
        // Changed to a third member: the chain is for another member.
        let third_member = invite(&f.admin, "third", Role::Member, f.t0, 30 * DAY);
        let mut third = good.clone();
        third.attributes = vec![(
            crate::record::SUBJECT_ATTR.into(),
            crate::record::AttrValue::Str(third_member.m.membership.member_id.to_string()),
        )];
        third.id = third.expected_id();
        third.sign(&group, &f.admin.key).unwrap();
        assert_eq!(refused(&third), Rejection::ChainForAnotherMember);
        // A made-up version.
        let mut pinned = good.clone();
        pinned.version += 1;
        pinned.sign(&group, &f.admin.key).unwrap();
        assert!(matches!(refused(&pinned), Rejection::MembershipVersion(_)));
        // A signature by anyone else.
        let mut forged = good.clone();
        forged.sign(&group, &f.member.key).unwrap();
        assert_eq!(refused(&forged), Rejection::BadSignature);
        // A member cannot issue: it has no issuing certificate to put in the chain, and
        // a chain naming someone else's is not its.
        let mut by_member = good.clone();
        by_member.creator = f.member.m.membership.member_id;
        by_member.modifier = by_member.creator;
        by_member.sign(&group, &f.member.key).unwrap();
        assert_eq!(refused(&by_member), Rejection::NotIssuedByCreator);
    }
}
