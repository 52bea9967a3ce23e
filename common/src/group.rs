//! Creating a group: a root key and certificate, the creator's issuing and membership
//! certificates, the group's properties and an empty record store, all in place at once.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use uuid::Uuid;

use crate::clock;
use crate::home::{self, Home, Lock, Staging};
use crate::identity::{self, Identity};
use crate::membership::{self, GroupInfo, MEMBERSHIP_FILE, Membership, MembershipError, ROOT_KEY_FILE};
use crate::pki::{self, Cert, CertSpec, Claim, PkiError, Role};
use crate::store::{Durability, STORE_FILE, Store, StoreError};

/// Errors from creating a group.
#[derive(Debug, Error)]
pub enum GroupError {
    /// The identity already has a group of that name.
    #[error("identity {identity:?} already has a group named {name:?} ({id})")]
    NameTaken {
        /// The identity.
        identity: String,
        /// The name.
        name: String,
        /// The existing group's id.
        id: Uuid,
    },
    /// A presence lifetime too short to refresh in time.
    #[error("presence lifetime {0} is too short: use at least 3s")]
    PresenceTooShort(String),
    /// A lifetime beyond what certificates can hold.
    #[error("{what} {value} is longer than the group root's 100-year lifetime")]
    TooLong {
        /// Which lifetime.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// Membership problem.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// Certificate problem.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Filesystem problem.
    #[error(transparent)]
    Home(#[from] home::HomeError),
    /// Identity problem.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
}

/// What `group-create` asks for.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Friendly name.
    pub name: String,
    /// Classifier.
    pub classifier: String,
    /// Where the creator will listen.
    pub listen: SocketAddr,
    /// Chat message lifetime.
    pub message_lifetime: Duration,
    /// Default membership lifetime (also the creator's own).
    pub member_lifetime: Duration,
    /// How long a member's presence lasts without a refresh (members refresh at a
    /// third of it): how soon a member that vanished without leaving drops off the list.
    pub presence_lifetime: Duration,
}

/// Path of the identity's lock, held while its memberships change.
pub fn identity_lock(home: &Home, identity: &str) -> Result<Lock, home::HomeError> {
    Lock::acquire(
        &home.identity_dir(identity).join(".lock"),
        &format!("identity {identity:?}'s store"),
    )
}

/// Creates a group with `creator` as its first admin and returns the membership.
pub fn create(home: &Home, creator: &Identity, spec: &GroupSpec) -> Result<Membership, GroupError> {
    let _lock = identity_lock(home, &creator.name)?;
    membership::check_group_text("group name", &spec.name, false)?;
    membership::check_group_text("classifier", &spec.classifier, true)?;
    if let Some(m) = membership::list(home, &creator.name)?
        .into_iter()
        .find(|m| m.group.name == spec.name)
    {
        return Err(GroupError::NameTaken {
            identity: creator.name.clone(),
            name: spec.name.clone(),
            id: m.group.id,
        });
    }
    if spec.member_lifetime >= pki::ROOT_LIFETIME {
        return Err(GroupError::TooLong {
            what: "member lifetime",
            value: clock::format_duration(spec.member_lifetime),
        });
    }
    if spec.presence_lifetime < Duration::from_secs(3) {
        return Err(GroupError::PresenceTooShort(clock::format_duration(
            spec.presence_lifetime,
        )));
    }
    if spec.presence_lifetime >= pki::ROOT_LIFETIME {
        return Err(GroupError::TooLong {
            what: "presence lifetime",
            value: clock::format_duration(spec.presence_lifetime),
        });
    }
    let group = GroupInfo {
        id: Uuid::new_v4(),
        name: spec.name.clone(),
        classifier: spec.classifier.clone(),
        message_lifetime_secs: spec.message_lifetime.as_secs(),
        member_lifetime_secs: spec.member_lifetime.as_secs(),
        presence_lifetime_secs: spec.presence_lifetime.as_secs(),
    };
    // The root key has the creator's key type, so an RSA creator gets an RSA group.
    let root_key = creator.cert.key_type.generate()?;
    let now = clock::now();
    let start = clock::from_unix(now.unix_timestamp() - pki::BACKDATE.as_secs() as i64);
    let root_der = pki::self_signed(
        &CertSpec {
            common_name: format!("{} root", spec.name),
            claim: Claim::Root { group: group.id },
            not_before: start,
            not_after: clock::add(now, pki::ROOT_LIFETIME),
        },
        &root_key,
    )?;
    let root = Cert::parse(&root_der, "the group root")?;
    let until = clock::add(now, spec.member_lifetime);
    let spki = pki::spki_of(&creator.key);
    let issuing_der = pki::issue(
        &CertSpec {
            common_name: creator.friendly_name().to_string(),
            claim: Claim::Issuing {
                group: group.id,
                member: creator.member_id(),
            },
            not_before: start,
            not_after: until,
        },
        &spki,
        &root.der,
        &root_key,
    )?;
    let issuing = Cert::parse(&issuing_der, "the issuing certificate")?;
    // Membership and issuing certificates are siblings under one parent (here the root),
    // so a member's stored chain is that parent's chain for both.
    let membership_der = pki::issue(
        &CertSpec {
            common_name: creator.friendly_name().to_string(),
            claim: Claim::Membership {
                group: group.id,
                member: creator.member_id(),
                role: Role::Admin,
            },
            not_before: start,
            not_after: until,
        },
        &spki,
        &root.der,
        &root_key,
    )?;
    let membership_cert = Cert::parse(&membership_der, "the membership certificate")?;
    pki::verify_chain(&root, &[], &membership_cert, group.id, now)?;
    pki::verify_chain(&root, &[], &issuing, group.id, now)?;

    let target = home.membership_dir(&creator.name, &group.id);
    let staging = Staging::new(&target)?;
    let membership = Membership {
        identity: creator.name.clone(),
        group,
        role: Role::Admin,
        root,
        membership: membership_cert,
        issuing: Some(issuing),
        chain: Vec::new(),
        listen: spec.listen,
        bootstrap: Vec::new(),
        joined: now,
        creator: true,
        dir: target.clone(),
    };
    home::write_new_file(&staging.join(ROOT_KEY_FILE), root_key.serialize_pem().as_bytes(), true)?;
    home::write_new_file(&staging.join(MEMBERSHIP_FILE), membership.to_json().as_bytes(), false)?;
    drop(Store::open(&staging.join(STORE_FILE), Durability::Normal)?);
    staging.commit(&target)?;
    Ok(membership)
}
