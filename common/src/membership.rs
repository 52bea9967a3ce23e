//! Memberships: what a local identity holds for one group (the group's properties and
//! root, its role, its certificates and chain, its listen address, known addresses),
//! stored as `membership.json` beside the membership's record store.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::clock;
use crate::home::{self, Home, HomeError};
use crate::identity::decode_base64;
use crate::pki::{Cert, PkiError, Role};

/// File name of the membership description.
pub const MEMBERSHIP_FILE: &str = "membership.json";
/// File name of the group root's secret key (creator only).
pub const ROOT_KEY_FILE: &str = "root-key.pem";
/// Most bootstrap addresses kept or put in an invitation.
pub const MAX_ADDRESSES: usize = 16;
/// Default lifetime of chat messages.
pub const DEFAULT_MESSAGE_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// Default lifetime of a membership.
pub const DEFAULT_MEMBER_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// Default lifetime of a presence record.
pub const DEFAULT_PRESENCE_LIFETIME: Duration = Duration::from_secs(300);
/// Longest group friendly name or classifier, in characters.
pub const MAX_GROUP_NAME: usize = 128;

/// Errors about memberships.
#[derive(Debug, Error)]
pub enum MembershipError {
    /// No group matches.
    #[error("identity {identity:?} has no group {query:?}{known}")]
    UnknownGroup {
        /// The identity.
        identity: String,
        /// What was asked for.
        query: String,
        /// " (it has: ...)" or " (it has none)".
        known: String,
    },
    /// Several groups match.
    #[error("group {query:?} is ambiguous for identity {identity:?}: {candidates}")]
    Ambiguous {
        /// The identity.
        identity: String,
        /// What was asked for.
        query: String,
        /// "name (id), ...".
        candidates: String,
    },
    /// The membership file is damaged.
    #[error("membership {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A listen or bootstrap address is not HOST:PORT.
    #[error("invalid address {0:?}: write IP:PORT, e.g. 192.0.2.7:7400 or [2001:db8::7]:7400")]
    BadAddress(String),
    /// A group name or classifier is unusable.
    #[error("invalid {what} {value:?}: use 1-{MAX_GROUP_NAME} printable characters")]
    BadGroupName {
        /// "group name" or "classifier".
        what: &'static str,
        /// The value.
        value: String,
    },
    /// No free port could be found.
    #[error("cannot pick a listen port on {addr}: {source}")]
    NoPort {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate problem.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A filesystem problem.
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// A group's identity and properties, as every member holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupInfo {
    /// Group id.
    pub id: Uuid,
    /// Friendly name.
    pub name: String,
    /// Classifier (free text, like Windows' group classifier).
    pub classifier: String,
    /// How long chat messages live, in seconds.
    pub message_lifetime_secs: u64,
    /// How long a membership granted by default lasts, in seconds.
    pub member_lifetime_secs: u64,
    /// How long a presence record lives, in seconds.
    pub presence_lifetime_secs: u64,
}

impl GroupInfo {
    /// Checks names and lifetimes (they may come from a peer's invitation).
    pub fn check(&self) -> Result<(), MembershipError> {
        check_group_text("group name", &self.name, false)?;
        check_group_text("classifier", &self.classifier, true)?;
        let max = clock::MAX_DURATION.as_secs();
        for v in [
            self.message_lifetime_secs,
            self.member_lifetime_secs,
            self.presence_lifetime_secs,
        ] {
            if v == 0 || v > max {
                return Err(MembershipError::BadGroupName {
                    what: "lifetime",
                    value: v.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Checks a group name or classifier: printable, bounded, no surrounding blanks.
pub fn check_group_text(what: &'static str, value: &str, may_be_empty: bool) -> Result<(), MembershipError> {
    let n = value.chars().count();
    if (n == 0 && !may_be_empty) || n > MAX_GROUP_NAME || value.chars().any(char::is_control) || value.trim() != value {
        return Err(MembershipError::BadGroupName {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipFile {
    format: u32,
    group: GroupInfo,
    role: Role,
    root: String,
    membership: String,
    issuing: Option<String>,
    chain: Vec<String>,
    listen: String,
    bootstrap: Vec<String>,
    joined: String,
    creator: bool,
}

/// One identity's membership of one group.
#[derive(Debug, Clone)]
pub struct Membership {
    /// Local identity name.
    pub identity: String,
    /// The group.
    pub group: GroupInfo,
    /// This member's role.
    pub role: Role,
    /// The group root certificate (trust anchor).
    pub root: Cert,
    /// This member's membership certificate.
    pub membership: Cert,
    /// This member's issuing certificate (admins only).
    pub issuing: Option<Cert>,
    /// Issuers of `membership` and `issuing` (siblings under one parent), nearest
    /// first, root excluded: empty for the creator.
    pub chain: Vec<Cert>,
    /// Address to listen on (port 0: a fresh port each start).
    pub listen: SocketAddr,
    /// Addresses of other members learned from the invitation or the network.
    pub bootstrap: Vec<String>,
    /// When this membership was created here.
    pub joined: OffsetDateTime,
    /// Whether this identity created the group (holds the root key).
    pub creator: bool,
    /// The membership directory.
    pub dir: PathBuf,
}

impl Membership {
    /// Serialises the membership file.
    pub fn to_json(&self) -> String {
        let file = MembershipFile {
            format: 1,
            group: self.group.clone(),
            role: self.role,
            root: B64.encode(&self.root.der),
            membership: B64.encode(&self.membership.der),
            issuing: self.issuing.as_ref().map(|c| B64.encode(&c.der)),
            chain: self.chain.iter().map(|c| B64.encode(&c.der)).collect(),
            listen: self.listen.to_string(),
            bootstrap: self.bootstrap.clone(),
            joined: clock::format_rfc3339(self.joined),
            creator: self.creator,
        };
        serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
    }

    /// Loads the membership stored in `dir` for `identity`.
    pub fn load(identity: &str, dir: PathBuf) -> Result<Membership, MembershipError> {
        let path = dir.join(MEMBERSHIP_FILE);
        let bytes = std::fs::read(&path).map_err(HomeError::io("read", &path))?;
        Membership::from_json(identity, dir, &bytes)
    }

    /// The membership a membership file's bytes describe, for `identity`, kept in `dir`.
    pub fn from_json(identity: &str, dir: PathBuf, bytes: &[u8]) -> Result<Membership, MembershipError> {
        let path = dir.join(MEMBERSHIP_FILE);
        let damaged = |reason: String| MembershipError::Damaged {
            path: path.clone(),
            reason,
        };
        let file: MembershipFile = serde_json::from_slice(bytes).map_err(|e| damaged(e.to_string()))?;
        let cert = |b64: &str, what: &str| -> Result<Cert, MembershipError> {
            let der = decode_base64(b64).ok_or_else(|| damaged(format!("{what} is not base64")))?;
            Ok(Cert::parse(&der, what)?)
        };
        Ok(Membership {
            identity: identity.to_string(),
            role: file.role,
            root: cert(&file.root, "the group root")?,
            membership: cert(&file.membership, "the membership certificate")?,
            issuing: file
                .issuing
                .as_deref()
                .map(|c| cert(c, "the issuing certificate"))
                .transpose()?,
            chain: file
                .chain
                .iter()
                .map(|c| cert(c, "a chain certificate"))
                .collect::<Result<_, _>>()?,
            listen: file
                .listen
                .parse()
                .map_err(|_| damaged(format!("bad listen address {:?}", file.listen)))?,
            bootstrap: file.bootstrap,
            joined: clock::parse_rfc3339(&file.joined).map_err(|e| damaged(e.to_string()))?,
            creator: file.creator,
            group: file.group,
            dir,
        })
    }

    /// Rewrites the membership file atomically (after a change of addresses, say).
    pub fn save(&self) -> Result<(), MembershipError> {
        home::replace_file(&self.dir.join(MEMBERSHIP_FILE), self.to_json().as_bytes())?;
        Ok(())
    }

    /// Addresses other members can dial: the listen address, or every interface
    /// address when listening on the unspecified address (loopback last).
    pub fn advertised_addresses(&self) -> Vec<String> {
        advertised_addresses(self.listen)
    }

    /// The group root's private key, which only the creator holds (`None` for anyone
    /// else).
    pub fn root_key(&self) -> Result<Option<rcgen::KeyPair>, MembershipError> {
        if !self.creator {
            return Ok(None);
        }
        let path = self.dir.join(ROOT_KEY_FILE);
        let damaged = |reason: String| MembershipError::Damaged {
            path: path.clone(),
            reason,
        };
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(&path).map_err(|e| damaged(e.to_string()))?;
        let key = rcgen::KeyPair::from_der_and_sign_algo(
            &rustls_pki_types::PrivateKeyDer::Pkcs8(der),
            self.root.key_type.rcgen_algorithm(),
        )
        .map_err(|e| damaged(e.to_string()))?;
        if crate::pki::spki_of(&key) != self.root.spki {
            return Err(damaged("the root key does not match the group root".into()));
        }
        Ok(Some(key))
    }

    /// Depth of this member's issuing certificate below the root (1 for the creator).
    pub fn issuing_depth(&self) -> usize {
        self.chain.len() + 1
    }
}

/// See [`Membership::advertised_addresses`].
pub fn advertised_addresses(listen: SocketAddr) -> Vec<String> {
    if listen.port() == 0 {
        return Vec::new();
    }
    if !listen.ip().is_unspecified() {
        return vec![listen.to_string()];
    }
    let want_v6 = listen.is_ipv6();
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| want_v6 || ip.is_ipv4())
        .filter(|ip| match ip {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(v4) => !v4.is_link_local(),
        })
        .collect();
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
    ips.dedup();
    ips.into_iter()
        .take(MAX_ADDRESSES)
        .map(|ip| SocketAddr::new(ip, listen.port()).to_string())
        .collect()
}

/// Whether this host can open an IPv6 socket at all.
pub fn ipv6_works() -> bool {
    TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// Parses a listen address; `IP:0` picks a free port now so invitations can name it.
/// The default is every address, IPv6 and IPv4 (`[::]`, dual-stack), or IPv4 only
/// (`0.0.0.0`) on a host without IPv6.
pub fn choose_listen(text: Option<&str>) -> Result<SocketAddr, MembershipError> {
    let addr: SocketAddr = match text {
        Some(t) => parse_address(t)?,
        None if ipv6_works() => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0),
        None => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
    };
    if addr.port() != 0 || text.is_some() {
        return Ok(addr);
    }
    let listener = TcpListener::bind(addr).map_err(|source| MembershipError::NoPort {
        addr: addr.to_string(),
        source,
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| MembershipError::NoPort {
            addr: addr.to_string(),
            source,
        })?
        .port();
    Ok(SocketAddr::new(addr.ip(), port))
}

/// Parses `IP:PORT` (IPv6 in brackets).
pub fn parse_address(text: &str) -> Result<SocketAddr, MembershipError> {
    text.trim()
        .parse()
        .map_err(|_| MembershipError::BadAddress(text.to_string()))
}

/// Every membership of `identity`, sorted by group name.
pub fn list(home: &Home, identity: &str) -> Result<Vec<Membership>, MembershipError> {
    let mut out = Vec::new();
    for name in home::list_dir_names(&home.groups_dir(identity))? {
        if let Ok(id) = Uuid::parse_str(&name) {
            out.push(Membership::load(identity, home.membership_dir(identity, &id))?);
        }
    }
    out.sort_by(|a, b| (&a.group.name, a.group.id).cmp(&(&b.group.name, b.group.id)));
    Ok(out)
}

/// Finds `identity`'s membership by group friendly name, id, or unique id prefix.
pub fn find(home: &Home, identity: &str, query: &str) -> Result<Membership, MembershipError> {
    let all = list(home, identity)?;
    let q = query.trim().to_ascii_lowercase();
    if let Some(m) = all.iter().find(|m| m.group.id.to_string() == q) {
        return Ok(m.clone());
    }
    let by_name: Vec<&Membership> = all.iter().filter(|m| m.group.name == query).collect();
    let by_prefix: Vec<&Membership> = if q.is_empty() {
        Vec::new()
    } else {
        all.iter().filter(|m| m.group.id.to_string().starts_with(&q)).collect()
    };
    let candidates = if by_name.is_empty() { by_prefix } else { by_name };
    let describe = |ms: &[&Membership]| {
        ms.iter()
            .map(|m| format!("{} ({})", m.group.name, m.group.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(MembershipError::UnknownGroup {
            identity: identity.to_string(),
            query: query.to_string(),
            known: if all.is_empty() {
                " (it has none)".into()
            } else {
                format!(" (it has: {})", describe(&all.iter().collect::<Vec<_>>()))
            },
        }),
        many => Err(MembershipError::Ambiguous {
            identity: identity.to_string(),
            query: query.to_string(),
            candidates: describe(many),
        }),
    }
}

/// Keeps the first [`MAX_ADDRESSES`] distinct, well-formed addresses, in order.
pub fn merge_addresses<'a>(lists: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in lists {
        if parse_address(a).is_ok() && !out.contains(a) && out.len() < MAX_ADDRESSES {
            out.push(a.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_merged_and_bounded() {
        let a: Vec<String> = (0..40).map(|i| format!("127.0.0.1:{}", 1000 + i % 20)).collect();
        let merged = merge_addresses(&a);
        assert_eq!(merged.len(), MAX_ADDRESSES);
        assert!(merge_addresses(&["nonsense".to_string()]).is_empty());
    }

    #[test]
    fn listen_defaults_to_a_chosen_port() {
        let addr = choose_listen(None).unwrap();
        assert!(addr.ip().is_unspecified() && addr.port() != 0);
        assert_eq!(choose_listen(Some("127.0.0.1:0")).unwrap().port(), 0);
        assert!(choose_listen(Some("localhost:1")).is_err());
        assert_eq!(
            advertised_addresses("127.0.0.1:7400".parse().unwrap()),
            vec!["127.0.0.1:7400"]
        );
    }
}
