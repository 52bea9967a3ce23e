//! Password invitations (PeerGroupCreatePasswordInvitation / PeerGroupPasswordJoin): an
//! invitation bound to no identity, which anyone who knows its password can use to
//! join. The password never travels: the joiner and the issuing admin's node prove to
//! each other that they know it with SPAKE2 (a PAKE: a recorded transcript does not let
//! anyone test guesses offline), bound to the TLS session they run it in, and the admin's
//! node then issues an ordinary invitation for the joiner's identity over that
//! connection.
//!
//! This module holds the invitation file, the admin's secret record of it (a
//! [`Grant`]: role, validity, uses, wrong guesses) and both ends of the exchange as pure
//! state machines; [`crate::node::join`] runs them over the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::{hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use spake2::{Ed25519Group, Identity as SpakeId, Password, Spake2};
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::clock;
use crate::home::{self, HomeError};
use crate::identity::{Identity, decode_base64};
use crate::invitation;
use crate::member::MemberId;
use crate::membership::{self, GroupInfo, Membership};
use crate::pki::{self, Cert, Claim, PkiError, Role};
use crate::xml::{self, Occurs, Schema, XmlError};

/// Root element of a password invitation.
pub const PASSWORD_INVITATION_ROOT: &str = "peergroup-password-invitation";
/// Wrong passwords an invitation takes before it is locked for good.
pub const MAX_WRONG_GUESSES: u32 = 5;
/// Most uses one invitation may allow.
pub const MAX_USES: u32 = 1000;
/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// PBKDF2-HMAC-SHA256 rounds turning a password into the exchange's secret: the admin
/// keeps only that secret, so a copy of its files costs a guesser this much per try.
pub const PBKDF2_ROUNDS: u32 = 100_000;
/// Where an admin's password invitations are kept, in its membership directory.
pub const GRANTS_DIR: &str = "password-invitations";
/// The TLS exporter label the exchange is bound to.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-peergroup-password-join";

const SCHEMA: Schema = Schema {
    root: PASSWORD_INVITATION_ROOT,
    version: "1",
    fields: &[
        ("invitation-id", Occurs::Once),
        ("group-id", Occurs::Once),
        ("group-name", Occurs::Once),
        ("role", Occurs::Once),
        ("issuer-id", Occurs::Once),
        ("expires", Occurs::Once),
        ("uses", Occurs::Once),
        ("root-certificate", Occurs::Once),
        ("chain-certificate", Occurs::Many(pki::MAX_ISSUING_LINKS + 1)),
        ("signed-body", Occurs::Once),
        ("signature", Occurs::Once),
    ],
};

/// Errors about password invitations.
#[derive(Debug, Error)]
pub enum PasswordError {
    /// The XML is malformed.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// Something in it does not hold together.
    #[error("{source_name}: password invitation not trusted: {reason}")]
    NotTrusted {
        /// Where it came from.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// It can no longer be used.
    #[error("{source_name}: this password invitation expired at {expires}: ask an admin for a new one")]
    Expired {
        /// Where it came from.
        source_name: String,
        /// When.
        expires: String,
    },
    /// Not allowed to issue it.
    #[error("{0}")]
    NotAllowed(String),
    /// The password is too short.
    #[error("the password has {0} characters; use at least {MIN_PASSWORD_CHARS}")]
    WeakPassword(usize),
    /// Certificates failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The admin's files failed.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// A grant file is damaged.
    #[error("password invitation {0} is damaged here: {1}")]
    DamagedGrant(Uuid, String),
}

/// Why an admin's node turns a joiner away (said to the joiner, one line).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// Not an invitation of this admin's.
    #[error("this admin has no such password invitation (it was never issued here, or the admin left the group)")]
    Unknown,
    /// Past its expiry.
    #[error("the password invitation expired at {0}: ask an admin for a new one")]
    Expired(String),
    /// Every use taken.
    #[error("the password invitation was used {0} time(s), all it allows: ask an admin for a new one")]
    UsedUp(u32),
    /// Too many wrong passwords.
    #[error("the password invitation is locked after {0} wrong passwords: ask an admin for a new one")]
    Locked(u32),
    /// The password did not match (or the joiner gave up mid-way).
    #[error("wrong password ({wrong} of {max} wrong guesses; the invitation locks at {max})")]
    WrongPassword {
        /// Wrong guesses so far.
        wrong: u32,
        /// The limit.
        max: u32,
    },
    /// The joiner's message is malformed.
    #[error("malformed join request: {0}")]
    Malformed(String),
    /// The admin could not issue the membership (the details stay in its log).
    #[error("the admin's node could not issue the membership (its log says why)")]
    Issue(String),
    /// Another join with the same invitation is under way.
    #[error("another join with this invitation is under way: try again in a moment")]
    Busy,
}

/// What a password invitation's signed body says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// Body format version (1).
    pub format: u32,
    /// The invitation's id (what the admin's node looks it up by).
    pub invitation_id: Uuid,
    /// The group.
    pub group: GroupInfo,
    /// Role granted.
    pub role: Role,
    /// How long the membership lasts, seconds (`None`: the group's member lifetime,
    /// capped at the admin's own).
    pub valid_for_secs: Option<u64>,
    /// Last moment it can be used (RFC 3339).
    pub expires: String,
    /// When it was issued (RFC 3339).
    pub issued: String,
    /// How many identities may join with it (1: single use).
    pub uses: u32,
    /// The issuing admin's member id: the node to reach.
    pub issuer_id: MemberId,
    /// Its friendly name.
    pub issuer_name: String,
    /// Where the issuing admin listens.
    pub addresses: Vec<String>,
    /// SHA-256 (hex) of the root certificate.
    pub root_sha256: String,
    /// SHA-256 (hex) of each chain certificate (the admin's issuing certificate first).
    pub chain_sha256: Vec<String>,
}

/// A password invitation (see [`PasswordInvitation::verify`] before trusting it).
#[derive(Debug, Clone)]
pub struct PasswordInvitation {
    /// Where it came from, for messages.
    pub source_name: String,
    /// The signed body.
    pub body: Body,
    body_bytes: Vec<u8>,
    signature: Vec<u8>,
    /// The group root.
    pub root: Cert,
    /// The issuing admin's issuing chain, nearest first.
    pub chain: Vec<Cert>,
}

/// What `invite-create --password-file` asks for.
#[derive(Debug, Clone)]
pub struct PasswordSpec {
    /// Role to grant.
    pub role: Role,
    /// How long each membership lasts (`None`: the group's member lifetime).
    pub valid_for: Option<Duration>,
    /// How long the invitation can be used.
    pub expires: Duration,
    /// How many identities may join with it.
    pub uses: u32,
    /// Extra addresses, first in the list.
    pub addresses: Vec<String>,
}

/// The admin's own record of a password invitation, kept 0600 in its membership
/// directory: the secret the password became, and what is left of the invitation.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The invitation id.
    pub id: Uuid,
    /// [`derive_secret`] of the password, base64.
    pub secret: String,
    /// Role granted.
    pub role: Role,
    /// Membership length, seconds (`None`: the group's member lifetime).
    pub valid_for_secs: Option<u64>,
    /// Last moment it can be used (RFC 3339).
    pub expires: String,
    /// Identities it may let in.
    pub uses: u32,
    /// Identities it let in.
    pub used: u32,
    /// Wrong passwords so far.
    pub wrong: u32,
    /// Wrong passwords before it locks.
    pub max_wrong: u32,
    /// The identities it let in: one coming back (its join failed on its side after
    /// the membership was issued) is issued again without spending a use.
    #[serde(default)]
    pub members: Vec<MemberId>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: it is as good as the password to the exchange.
        f.debug_struct("Grant")
            .field("id", &self.id)
            .field("used", &self.used)
            .field("wrong", &self.wrong)
            .finish_non_exhaustive()
    }
}

/// The secret both ends feed SPAKE2: PBKDF2 of the password, salted with the
/// invitation id.
pub fn derive_secret(password: &str, invitation: &Uuid) -> [u8; 32] {
    let mut salt = b"peergroup password invitation\0".to_vec();
    salt.extend_from_slice(invitation.as_bytes());
    let mut out = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(PBKDF2_ROUNDS).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, &salt, password.as_bytes(), &mut out);
    out
}

/// Checks a password given to `invite-create`.
pub fn check_password(password: &str) -> Result<(), PasswordError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(PasswordError::WeakPassword(n));
    }
    Ok(())
}

impl PasswordInvitation {
    /// Issues a password invitation from admin `inviter`'s membership `m`, and the grant
    /// its node keeps.
    pub fn create(
        inviter: &Identity,
        m: &Membership,
        spec: &PasswordSpec,
        password: &str,
    ) -> Result<(PasswordInvitation, Grant), PasswordError> {
        check_password(password)?;
        let now = clock::now();
        let Some(own_issuing) = m.issuing.as_ref().filter(|_| m.role == Role::Admin) else {
            return Err(PasswordError::NotAllowed(format!(
                "identity {:?} is a {} of group {:?}, not an admin: only admins can invite",
                m.identity, m.role, m.group.name
            )));
        };
        if spec.role > m.role {
            return Err(PasswordError::NotAllowed(format!(
                "identity {:?} cannot grant role {} above its own ({})",
                m.identity, spec.role, m.role
            )));
        }
        if spec.role == Role::Admin && m.issuing_depth() >= pki::MAX_ISSUING_LINKS {
            return Err(PasswordError::NotAllowed(format!(
                "an admin invited by {:?} would be issuing link {} of the chain; at most {} are allowed: invite as member, or ask an admin nearer the creator",
                m.identity,
                m.issuing_depth() + 1,
                pki::MAX_ISSUING_LINKS
            )));
        }
        if let Some(d) = spec.valid_for
            && clock::add(now, d) > own_issuing.not_after
        {
            return Err(PasswordError::NotAllowed(format!(
                "the membership would last until {}, beyond the inviter's own ({}): use --valid-for {}d or less",
                clock::format_rfc3339(clock::add(now, d)),
                clock::format_rfc3339(own_issuing.not_after),
                (own_issuing.not_after - now).whole_days().max(0)
            )));
        }
        if spec.uses == 0 || spec.uses > MAX_USES {
            return Err(PasswordError::NotAllowed(format!(
                "--uses {} is out of range: use 1 to {MAX_USES}",
                spec.uses
            )));
        }
        pki::verify_chain(&m.root, &m.chain, own_issuing, m.group.id, now)?;
        pki::verify_chain(&m.root, &m.chain, &m.membership, m.group.id, now)?;
        let addresses = membership::merge_addresses(spec.addresses.iter().chain(&m.advertised_addresses()));
        if addresses.is_empty() {
            return Err(PasswordError::NotAllowed(format!(
                "identity {:?} has no address others can dial in {:?} (it listens on port 0): give --address HOST:PORT where its group-chat will listen",
                m.identity, m.group.name
            )));
        }
        // The joiner must find this admin online: the invitation lasts no longer than
        // the admin's own certificates.
        let expires = clock::add(now, spec.expires).min(own_issuing.not_after);
        let mut chain = vec![own_issuing.clone()];
        chain.extend(m.chain.iter().cloned());
        let id = Uuid::new_v4();
        let body = Body {
            format: 1,
            invitation_id: id,
            group: m.group.clone(),
            role: spec.role,
            valid_for_secs: spec.valid_for.map(|d| d.as_secs()),
            expires: clock::format_rfc3339(expires),
            issued: clock::format_rfc3339(now),
            uses: spec.uses,
            issuer_id: inviter.member_id(),
            issuer_name: inviter.friendly_name().to_string(),
            addresses,
            root_sha256: pki::sha256_hex(&m.root.der),
            chain_sha256: chain.iter().map(|c| pki::sha256_hex(&c.der)).collect(),
        };
        let body_bytes =
            serde_json::to_vec(&body).map_err(|e| PkiError::Crypto(format!("encode the invitation: {e}")))?;
        let signature = pki::sign(&inviter.key, &body_bytes)?;
        let grant = Grant {
            id,
            secret: B64.encode(derive_secret(password, &id)),
            role: spec.role,
            valid_for_secs: body.valid_for_secs,
            expires: body.expires.clone(),
            uses: spec.uses,
            used: 0,
            wrong: 0,
            max_wrong: MAX_WRONG_GUESSES,
            members: Vec::new(),
        };
        let inv = PasswordInvitation {
            source_name: "password invitation".into(),
            body,
            body_bytes,
            signature,
            root: m.root.clone(),
            chain,
        };
        Ok((inv, grant))
    }

    /// The invitation XML.
    pub fn to_xml(&self) -> String {
        let b = &self.body;
        let mut w = xml::Writer::new(PASSWORD_INVITATION_ROOT, "1");
        w.field("invitation-id", &b.invitation_id.to_string())
            .field("group-id", &b.group.id.to_string())
            .field("group-name", &b.group.name)
            .field("role", b.role.name())
            .field("issuer-id", &b.issuer_id.to_string())
            .field("expires", &b.expires)
            .field("uses", &b.uses.to_string())
            .base64_field("root-certificate", &B64.encode(&self.root.der));
        for c in &self.chain {
            w.base64_field("chain-certificate", &B64.encode(&c.der));
        }
        w.base64_field("signed-body", &B64.encode(&self.body_bytes))
            .base64_field("signature", &B64.encode(&self.signature));
        w.finish()
    }

    /// Whether `bytes` look like a password invitation (its root element), so
    /// `group-join` can tell the two kinds apart before parsing.
    pub fn is_one(bytes: &[u8]) -> bool {
        let head = &bytes[..bytes.len().min(512)];
        String::from_utf8_lossy(head).contains(&format!("<{PASSWORD_INVITATION_ROOT}"))
    }

    /// Parses password invitation XML and checks what does not depend on the clock:
    /// the body's signature by the admin's issuing certificate, the certificates'
    /// digests, the readable copies.
    pub fn parse(source_name: &str, bytes: &[u8]) -> Result<PasswordInvitation, PasswordError> {
        let doc = xml::parse(source_name, bytes, &SCHEMA)?;
        let untrusted = |reason: String| PasswordError::NotTrusted {
            source_name: source_name.to_string(),
            reason,
        };
        let decode = |field: &str, text: &str| {
            decode_base64(text).ok_or_else(|| untrusted(format!("<{field}> is not valid base64")))
        };
        let root_der = decode("root-certificate", doc.required("root-certificate"))?;
        let chain_der = doc
            .all("chain-certificate")
            .into_iter()
            .map(|t| decode("chain-certificate", t))
            .collect::<Result<Vec<_>, _>>()?;
        let body_bytes = decode("signed-body", doc.required("signed-body"))?;
        let signature = decode("signature", doc.required("signature"))?;
        let cert = |bytes: &[u8], what: &str| Cert::parse(bytes, what).map_err(|e| untrusted(e.to_string()));
        let chain = chain_der
            .iter()
            .map(|d| cert(d, "a chain certificate"))
            .collect::<Result<Vec<_>, _>>()?;
        let signer = chain
            .first()
            .ok_or_else(|| untrusted("it has no chain certificate, so no admin signed it".into()))?;
        let body: Body = invitation::open_body(signer, &body_bytes, &signature, "admin").map_err(untrusted)?;
        invitation::check_body(body.format, &body.group).map_err(untrusted)?;
        if body.root_sha256 != pki::sha256_hex(&root_der)
            || body.chain_sha256 != chain_der.iter().map(|c| pki::sha256_hex(c)).collect::<Vec<_>>()
        {
            return Err(untrusted("its certificates are not the ones the admin signed".into()));
        }
        if body.issuer_id != signer.member_id {
            return Err(untrusted("the signer is not the admin named in the body".into()));
        }
        if body.uses == 0 || body.uses > MAX_USES {
            return Err(untrusted(format!("it allows {} uses", body.uses)));
        }
        invitation::check_readable_copies(
            &doc,
            &[
                ("invitation-id", body.invitation_id.to_string()),
                ("group-id", body.group.id.to_string()),
                ("group-name", body.group.name.clone()),
                ("role", body.role.name().to_string()),
                ("issuer-id", body.issuer_id.to_string()),
                ("expires", body.expires.clone()),
                ("uses", body.uses.to_string()),
            ],
        )
        .map_err(untrusted)?;
        if body.addresses.is_empty() {
            return Err(untrusted("it names no address of the admin".into()));
        }
        for address in &body.addresses {
            membership::parse_address(address).map_err(|e| untrusted(e.to_string()))?;
        }
        Ok(PasswordInvitation {
            source_name: source_name.to_string(),
            body,
            body_bytes,
            signature,
            root: cert(&root_der, "the root certificate")?,
            chain,
        })
    }

    /// Checks it at `now`: unexpired, and signed by an admin of the group under its
    /// root.
    pub fn verify(&self, now: OffsetDateTime) -> Result<(), PasswordError> {
        let src = &self.source_name;
        let untrusted = |reason: String| PasswordError::NotTrusted {
            source_name: src.clone(),
            reason,
        };
        let expires = clock::parse_rfc3339(&self.body.expires).map_err(|e| untrusted(e.to_string()))?;
        if now > expires {
            return Err(PasswordError::Expired {
                source_name: src.clone(),
                expires: self.body.expires.clone(),
            });
        }
        let (leaf, issuers) = self.chain.split_first().ok_or_else(|| untrusted("no chain".into()))?;
        match pki::verify_chain(&self.root, issuers, leaf, self.body.group.id, now) {
            Ok(Claim::Issuing { member, .. }) if member == self.body.issuer_id => Ok(()),
            Ok(_) => Err(untrusted(
                "it was not signed with an admin's issuing certificate".into(),
            )),
            Err(e) => Err(untrusted(e.to_string())),
        }
    }

    /// What it says, for `group-join --inspect --json`: one object.
    pub fn describe_json(&self) -> serde_json::Value {
        let b = &self.body;
        serde_json::json!({
            "kind": "password",
            "invitation": b.invitation_id.to_string(),
            "group": b.group.name,
            "group_id": b.group.id.to_string(),
            "classifier": b.group.classifier,
            "issuer": b.issuer_name,
            "issuer_id": b.issuer_id.to_string(),
            "role": b.role.name(),
            "issued": b.issued,
            "expires": b.expires,
            "uses": b.uses,
            "valid_for": b.valid_for_secs,
            "chain": self.chain.len(),
            "addresses": b.addresses,
        })
    }

    /// Readable summary for `group-join --inspect`: `key: value` lines.
    pub fn describe(&self) -> String {
        let b = &self.body;
        let valid_for = b.valid_for_secs.map_or("the group's member lifetime".to_string(), |s| {
            clock::format_duration(Duration::from_secs(s))
        });
        // Printed before the signature is checked: every field made safe for a terminal.
        let safe = crate::names::sanitize;
        format!(
            "kind: password invitation\ninvitation: {}\ngroup: {} ({})\nrole: {}\nissued by: {} ({})\nissued: {}\nexpires: {}\nuses: {}\nmembership lasts: {}\naddresses: {}\n",
            b.invitation_id,
            safe(&b.group.name),
            b.group.id,
            b.role,
            safe(&b.issuer_name),
            b.issuer_id,
            safe(&b.issued),
            safe(&b.expires),
            if b.uses == 1 {
                "single use".to_string()
            } else {
                format!("up to {} identities", b.uses)
            },
            valid_for,
            safe(&b.addresses.join(", "))
        )
    }
}

impl Grant {
    /// The file that holds grant `id` in membership directory `dir`.
    pub fn path(dir: &Path, id: &Uuid) -> PathBuf {
        dir.join(GRANTS_DIR).join(format!("{id}.json"))
    }

    /// Writes a new grant into `dir` (0600).
    pub fn save_new(&self, dir: &Path) -> Result<(), PasswordError> {
        let grants = dir.join(GRANTS_DIR);
        home::create_private_dir(&grants)?;
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        home::write_new_file(&Grant::path(dir, &self.id), &bytes, true)?;
        Ok(())
    }

    /// Replaces the saved grant with this one (0600).
    pub fn save(&self, dir: &Path) -> Result<(), PasswordError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        home::replace_secret_file(&Grant::path(dir, &self.id), &bytes)?;
        Ok(())
    }

    /// Loads grant `id` from `dir`; `None` if there is none.
    pub fn load(dir: &Path, id: &Uuid) -> Result<Option<Grant>, PasswordError> {
        let path = Grant::path(dir, id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HomeError::io("read", &path)(e).into()),
        };
        let g: Grant = serde_json::from_slice(&bytes).map_err(|e| PasswordError::DamagedGrant(*id, e.to_string()))?;
        if g.id != *id {
            return Err(PasswordError::DamagedGrant(*id, "it names another invitation".into()));
        }
        Ok(Some(g))
    }

    /// Whether `joiner` may try it at `now`.
    pub fn check(&self, joiner: &MemberId, now: OffsetDateTime) -> Result<(), Refusal> {
        if self.wrong >= self.max_wrong {
            return Err(Refusal::Locked(self.wrong));
        }
        if self.used >= self.uses && !self.members.contains(joiner) {
            return Err(Refusal::UsedUp(self.used));
        }
        match clock::parse_rfc3339(&self.expires) {
            Ok(t) if now <= t => Ok(()),
            _ => Err(Refusal::Expired(self.expires.clone())),
        }
    }

    /// Counts `joiner`'s join: a use, unless it is one the invitation let in before.
    pub fn spend(&mut self, joiner: MemberId) {
        if !self.members.contains(&joiner) {
            self.used += 1;
            self.members.push(joiner);
        }
    }

    fn secret(&self) -> Result<Vec<u8>, Refusal> {
        decode_base64(&self.secret)
            .filter(|s| s.len() == 32)
            .ok_or_else(|| Refusal::Issue("its secret is damaged".into()))
    }
}

/// The joiner's first message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Which invitation.
    pub invitation: Uuid,
    /// SPAKE2 message A, base64.
    pub spake: String,
}

/// The admin's answer to a [`JoinRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Challenge {
    /// SPAKE2 message B and the admin's confirmation, base64.
    Spake {
        /// Message B.
        spake: String,
        /// HMAC proving the admin derived the same key.
        confirm: String,
    },
    /// Turned away.
    Refused(String),
}

/// The joiner's confirmation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinProof {
    /// HMAC proving the joiner derived the same key, base64.
    pub confirm: String,
}

/// The admin's last word.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Outcome {
    /// An ordinary invitation for the joiner's identity (XML).
    Invitation(String),
    /// Turned away.
    Refused(String),
}

/// The identities SPAKE2 binds: the joiner (its member id and the invitation) and the
/// admin.
fn spake_ids(joiner: &MemberId, admin: &MemberId, invitation: &Uuid) -> (SpakeId, SpakeId) {
    let a = format!("peergroup joiner {joiner} invitation {invitation}");
    let b = format!("peergroup admin {admin}");
    (SpakeId::new(a.as_bytes()), SpakeId::new(b.as_bytes()))
}

/// One side's key confirmation: HMAC-SHA256 under the SPAKE2 key over the side, the
/// TLS exporter value and both messages, so a transcript from another session (or the
/// other side's own confirmation) proves nothing here.
fn confirmation(key: &[u8], side: &[u8], exporter: &[u8], msg_a: &[u8], msg_b: &[u8]) -> hmac::Tag {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    for part in [side, exporter, msg_a, msg_b] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    ctx.sign()
}

fn verify_confirmation(key: &[u8], side: &[u8], exporter: &[u8], msg_a: &[u8], msg_b: &[u8], tag: &[u8]) -> bool {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut msg = Vec::new();
    for part in [side, exporter, msg_a, msg_b] {
        msg.extend_from_slice(&(part.len() as u64).to_be_bytes());
        msg.extend_from_slice(part);
    }
    hmac::verify(&k, &msg, tag).is_ok()
}

/// The joiner's side of the exchange.
#[derive(Debug)]
pub struct Joiner {
    state: Spake2<Ed25519Group>,
    msg_a: Vec<u8>,
}

impl Joiner {
    /// Starts with the secret of the password and the parties' ids.
    pub fn start(secret: &[u8; 32], joiner: &MemberId, admin: &MemberId, invitation: &Uuid) -> (Joiner, JoinRequest) {
        let (a, b) = spake_ids(joiner, admin, invitation);
        let (state, msg_a) = Spake2::<Ed25519Group>::start_a(&Password::new(secret), &a, &b);
        let req = JoinRequest {
            invitation: *invitation,
            spake: B64.encode(&msg_a),
        };
        (Joiner { state, msg_a }, req)
    }

    /// Checks the admin's confirmation and makes the joiner's; an error when the admin
    /// does not know the same password (or the session differs).
    pub fn on_challenge(self, spake: &str, confirm: &str, exporter: &[u8]) -> Result<JoinProof, String> {
        let msg_b = decode_base64(spake).ok_or("the admin's message is not base64")?;
        let tag = decode_base64(confirm).ok_or("the admin's confirmation is not base64")?;
        let key = self
            .state
            .finish(&msg_b)
            .map_err(|e| format!("the admin's message is malformed: {e:?}"))?;
        if !verify_confirmation(&key, b"admin", exporter, &self.msg_a, &msg_b, &tag) {
            return Err(
                "wrong password: the admin's node does not know the one given (or the connection was tampered with)"
                    .into(),
            );
        }
        let mine = confirmation(&key, b"joiner", exporter, &self.msg_a, &msg_b);
        Ok(JoinProof {
            confirm: B64.encode(mine.as_ref()),
        })
    }
}

/// The admin's side of the exchange, after its challenge.
#[derive(Debug)]
pub struct Admitter {
    key: Vec<u8>,
    msg_a: Vec<u8>,
    msg_b: Vec<u8>,
    exporter: Vec<u8>,
}

impl Admitter {
    /// Answers `req` for the joiner `joiner` with `grant`'s secret.
    pub fn on_request(
        grant: &Grant,
        joiner: &MemberId,
        admin: &MemberId,
        req: &JoinRequest,
        exporter: &[u8],
    ) -> Result<(Admitter, Challenge), Refusal> {
        let secret = grant.secret()?;
        let msg_a = decode_base64(&req.spake).ok_or_else(|| Refusal::Malformed("its message is not base64".into()))?;
        let (a, b) = spake_ids(joiner, admin, &grant.id);
        let (state, msg_b) = Spake2::<Ed25519Group>::start_b(&Password::new(&secret), &a, &b);
        let key = state.finish(&msg_a).map_err(|e| Refusal::Malformed(format!("{e:?}")))?;
        let confirm = confirmation(&key, b"admin", exporter, &msg_a, &msg_b);
        let challenge = Challenge::Spake {
            spake: B64.encode(&msg_b),
            confirm: B64.encode(confirm.as_ref()),
        };
        Ok((
            Admitter {
                key,
                msg_a,
                msg_b,
                exporter: exporter.to_vec(),
            },
            challenge,
        ))
    }

    /// Whether the joiner's proof shows it knows the password.
    pub fn on_proof(&self, proof: &JoinProof) -> bool {
        decode_base64(&proof.confirm).is_some_and(|tag| {
            verify_confirmation(&self.key, b"joiner", &self.exporter, &self.msg_a, &self.msg_b, &tag)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (MemberId, MemberId, Uuid) {
        let j: MemberId = format!("{:040x}", 1).parse().unwrap();
        let a: MemberId = format!("{:040x}", 2).parse().unwrap();
        (j, a, Uuid::new_v4())
    }

    fn grant(id: Uuid, password: &str) -> Grant {
        Grant {
            id,
            secret: B64.encode(derive_secret(password, &id)),
            role: Role::Member,
            valid_for_secs: None,
            expires: clock::format_rfc3339(clock::add(clock::now(), Duration::from_secs(3600))),
            uses: 1,
            used: 0,
            wrong: 0,
            max_wrong: MAX_WRONG_GUESSES,
            members: Vec::new(),
        }
    }

    /// Runs the exchange; what the joiner and the admin conclude.
    fn run(joiner_pw: &str, admin_pw: &str, exporters: (&[u8], &[u8])) -> (Result<JoinProof, String>, bool) {
        let (j, a, id) = ids();
        let g = grant(id, admin_pw);
        let (joiner, req) = Joiner::start(&derive_secret(joiner_pw, &id), &j, &a, &id);
        let (admitter, challenge) = Admitter::on_request(&g, &j, &a, &req, exporters.1).unwrap();
        let Challenge::Spake { spake, confirm } = challenge else {
            panic!("refused")
        };
        let proof = joiner.on_challenge(&spake, &confirm, exporters.0);
        let admitted = proof.as_ref().is_ok_and(|p| admitter.on_proof(p));
        (proof, admitted)
    }

    /// Red-team finding: `--inspect` prints the body before its chain is checked, so
    /// anyone can sign what it says: nothing of it may reach a terminal raw.
    #[test]
    fn what_inspect_prints_is_safe_for_a_terminal() {
        let f = crate::credential::tests::fixture(clock::now());
        let evil = "a\u{1b}]0;owned\u{7}\u{202e}b";
        let mut group = f.creator.m.group.clone();
        group.name = evil.into();
        let inv = PasswordInvitation {
            source_name: "x".into(),
            body: Body {
                format: 1,
                invitation_id: Uuid::nil(),
                group,
                role: Role::Member,
                valid_for_secs: None,
                expires: evil.into(),
                issued: evil.into(),
                uses: 1,
                issuer_id: ids().1,
                issuer_name: evil.into(),
                addresses: vec![evil.into()],
                root_sha256: String::new(),
                chain_sha256: Vec::new(),
            },
            body_bytes: Vec::new(),
            signature: Vec::new(),
            root: f.creator.m.root.clone(),
            chain: Vec::new(),
        };
        let shown = inv.describe();
        assert!(
            !shown.chars().any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{shown:?}"
        );
        assert_eq!(shown.lines().count(), 10, "{shown}");
    }

    #[test]
    fn the_right_password_admits_and_a_wrong_one_fails_at_both_ends() {
        let (proof, admitted) = run("correct horse", "correct horse", (b"x", b"x"));
        assert!(proof.is_ok() && admitted);
        let (proof, admitted) = run("correct horsf", "correct horse", (b"x", b"x"));
        assert!(proof.unwrap_err().contains("wrong password"));
        assert!(!admitted);
    }

    #[test]
    fn the_exchange_is_bound_to_its_tls_session() {
        // Same password, different sessions (a relay between two TLS connections).
        let (proof, admitted) = run("correct horse", "correct horse", (b"session 1", b"session 2"));
        assert!(proof.is_err());
        assert!(!admitted);
    }

    #[test]
    fn a_proof_from_another_joiner_or_a_replayed_one_is_refused() {
        let (j, a, id) = ids();
        let g = grant(id, "correct horse");
        let secret = derive_secret("correct horse", &id);
        let (joiner, req) = Joiner::start(&secret, &j, &a, &id);
        let (first, challenge) = Admitter::on_request(&g, &j, &a, &req, b"x").unwrap();
        let Challenge::Spake { spake, confirm } = challenge else {
            panic!()
        };
        let proof = joiner.on_challenge(&spake, &confirm, b"x").unwrap();
        assert!(first.on_proof(&proof));
        // The same request replayed in a new exchange: the admin's fresh message B
        // gives another key, and the old proof does not fit it.
        let (second, _) = Admitter::on_request(&g, &j, &a, &req, b"x").unwrap();
        assert!(!second.on_proof(&proof));
        // A proof made for another joiner's id does not fit this one.
        let other: MemberId = format!("{:040x}", 3).parse().unwrap();
        let (third, _) = Admitter::on_request(&g, &other, &a, &req, b"x").unwrap();
        assert!(!third.on_proof(&proof));
        assert!(!first.on_proof(&JoinProof { confirm: "AAAA".into() }));
    }

    #[test]
    fn a_grant_is_refused_once_expired_used_up_or_locked() {
        let id = Uuid::new_v4();
        let mut g = grant(id, "correct horse");
        let now = clock::now();
        let (carol, dave, _) = ids();
        assert_eq!(g.check(&carol, now), Ok(()));
        g.wrong = MAX_WRONG_GUESSES;
        assert_eq!(g.check(&carol, now), Err(Refusal::Locked(MAX_WRONG_GUESSES)));
        g.wrong = 0;
        g.spend(carol);
        assert_eq!(g.check(&dave, now), Err(Refusal::UsedUp(1)));
        // Carol again (her side failed after the issue): issued again, no use spent.
        assert_eq!(g.check(&carol, now), Ok(()));
        g.spend(carol);
        assert_eq!(g.used, 1);
        assert!(matches!(
            g.check(&carol, clock::add(now, Duration::from_secs(7200))),
            Err(Refusal::Expired(_))
        ));
    }

    #[test]
    fn the_secret_depends_on_the_password_and_the_invitation() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(derive_secret("pw long enough", &a), derive_secret("pw long enough", &a));
        assert_ne!(derive_secret("pw long enough", &a), derive_secret("pw long enough", &b));
        assert_ne!(derive_secret("pw long enough", &a), derive_secret("pw long enougH", &a));
        assert!(check_password("short").is_err());
    }
}
