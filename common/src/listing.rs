//! Listing and leaving groups (Peer Grouping's PeerEnumGroups and PeerGroupDelete):
//! what `group-list` prints of each membership, and `group-leave`, which removes a
//! membership with its record store.

use std::time::Duration;

use serde_json::json;
use thiserror::Error;

use crate::clock;
use crate::core::properties::Properties;
use crate::group::identity_lock;
use crate::home::{self, Home, HomeError, Lock};
use crate::membership::{self, Membership, MembershipError};
use crate::record::MEMBERSHIP_TYPE;
use crate::store::{STORE_FILE, STORE_LOCK, Store};

/// Errors listing or leaving groups.
#[derive(Debug, Error)]
pub enum ListingError {
    /// The creator holds the root key.
    #[error(
        "{identity:?} created {group:?} and holds its root key, the only way to renew the group's certificates: leaving deletes it for good; pass --force to leave anyway"
    )]
    Creator {
        /// The identity.
        identity: String,
        /// The group's name.
        group: String,
    },
    /// The membership is online.
    #[error("group-chat is running for {identity:?} in {group:?}: stop it first ({why})")]
    Online {
        /// The identity.
        identity: String,
        /// The group's name.
        group: String,
        /// What the lock said.
        why: String,
    },
    /// No such identity here.
    #[error("no identity {0:?} in this home: identity-export --list shows the identities")]
    UnknownIdentity(String),
    /// The membership could not be read.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The filesystem failed.
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// One line of `group-list`.
#[derive(Debug, Clone)]
pub struct Row {
    /// Local identity.
    pub identity: String,
    /// The membership.
    pub membership: Membership,
    /// Members whose membership record its store holds (itself included).
    pub members: usize,
    /// The group's properties in force (PeerGroupGetProperties), from its store.
    pub properties: Properties,
}

impl Row {
    /// Tab-separated: identity, group name, group id, role, valid until, members known,
    /// where it listens.
    pub fn to_line(&self) -> String {
        let m = &self.membership;
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.identity,
            crate::names::sanitize(&m.group.name),
            m.group.id,
            m.role,
            clock::format_rfc3339(m.membership.not_after),
            self.members,
            m.listen
        )
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        let m = &self.membership;
        json!({
            "identity": self.identity,
            "group": m.group.name,
            "id": m.group.id,
            "role": m.role.name(),
            "valid_until": clock::format_rfc3339(m.membership.not_after),
            "members": self.members,
            "listen": m.listen.to_string(),
            "creator": m.creator,
            "properties": {
                "name": self.properties.name,
                "classifier": self.properties.classifier,
                "comment": self.properties.comment,
                "message_lifetime": clock::format_duration(Duration::from_secs(self.properties.message_lifetime_secs)),
                "presence_lifetime": clock::format_duration(Duration::from_secs(self.properties.presence_lifetime_secs)),
            },
        })
        .to_string()
    }
}

/// The memberships of `identity`, or of every identity in `home`, sorted by identity
/// then group name.
pub fn rows(home: &Home, identity: Option<&str>) -> Result<Vec<Row>, ListingError> {
    let identities = match identity {
        Some(name) => {
            home::check_name(name)?;
            if !home.identity_dir(name).exists() {
                return Err(ListingError::UnknownIdentity(name.to_string()));
            }
            vec![name.to_string()]
        }
        None => home.identity_names()?,
    };
    let mut out = Vec::new();
    for name in identities {
        for m in membership::list(home, &name)? {
            let (members, properties) = from_store(&m);
            out.push(Row {
                identity: name.clone(),
                membership: m,
                members,
                properties,
            });
        }
    }
    Ok(out)
}

/// How many members' membership records `m`'s store holds, and the properties in
/// force (0 and the group's creation values if it cannot be read).
fn from_store(m: &Membership) -> (usize, Properties) {
    let Ok(store) = Store::open_read_only(&m.dir.join(STORE_FILE)) else {
        return (0, Properties::of_group(&m.group));
    };
    let members = store.of_type(&MEMBERSHIP_TYPE).map_or(0, |r| r.len());
    let properties =
        crate::admin::properties_in_force(m, &store).map_or_else(|_| Properties::of_group(&m.group), |(p, _)| p);
    (members, properties)
}

/// Removes `identity`'s membership of the group `query` names, with its store: refused
/// while `group-chat` runs for it, and for the creator unless `force`. Returns the
/// membership removed.
pub fn leave(home: &Home, identity: &str, query: &str, force: bool) -> Result<Membership, ListingError> {
    let _identity = identity_lock(home, identity)?;
    let m = membership::find(home, identity, query)?;
    if m.creator && !force {
        return Err(ListingError::Creator {
            identity: identity.to_string(),
            group: m.group.name.clone(),
        });
    }
    let store_lock = Lock::acquire(&m.dir.join(STORE_LOCK), "the store").map_err(|e| match e {
        HomeError::Locked { .. } => ListingError::Online {
            identity: identity.to_string(),
            group: m.group.name.clone(),
            why: e.to_string(),
        },
        other => ListingError::Home(other),
    })?;
    // Moved aside in one step, then deleted: an interrupted leave leaves either the
    // whole membership or none of it where tools look.
    let aside = m.dir.with_file_name(format!(".leaving-{}", m.group.id));
    std::fs::rename(&m.dir, &aside).map_err(HomeError::io("move aside", &m.dir))?;
    if let Some(parent) = m.dir.parent() {
        home::sync_dir(parent)?;
    }
    drop(store_lock);
    std::fs::remove_dir_all(&aside).map_err(HomeError::io("remove", &aside))?;
    Ok(m)
}
