//! Invitations: an admin's signed offer of membership to one identity, carried as XML.
//!
//! What is trusted travels in signed bytes only: the certificates (signed by their
//! issuers) and one JSON *body* signed by the inviter's identity key, which holds the
//! group, role, validity, the invitation's own expiry, the addresses and the SHA-256 of
//! every certificate. Both are base64 in the XML and verified as they are, so there is no
//! XML canonicalisation; the readable copies in the XML must equal the signed values.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

use crate::clock;
use crate::core::admission::{Admission, Lifetimes};
use crate::core::properties::Properties;
use crate::group::{GroupError, identity_lock};
use crate::home::{self, Home, HomeError, Staging};
use crate::identity::{Identity, PublicIdentity, decode_base64};
use crate::member::MemberId;
use crate::membership::{self, GroupInfo, MEMBERSHIP_FILE, Membership, MembershipError};
use crate::pki::{self, Cert, CertSpec, Claim, PkiError, Role};
use crate::record::{PROPERTIES_TYPE, Record};
use crate::store::{Durability, STORE_FILE, Store};
use crate::xml::{self, Occurs, Schema, XmlError};

/// Root element of the invitation XML.
pub const INVITATION_ROOT: &str = "peergroup-invitation";
/// Default time an invitation can be used to join.
pub const DEFAULT_EXPIRES: Duration = Duration::from_secs(15 * 86_400);

const INVITATION_SCHEMA: Schema = Schema {
    root: INVITATION_ROOT,
    version: "1",
    fields: &[
        ("group-id", Occurs::Once),
        ("group-name", Occurs::Once),
        ("role", Occurs::Once),
        ("member-id", Occurs::Once),
        ("issuer-id", Occurs::Once),
        ("expires", Occurs::Once),
        ("root-certificate", Occurs::Once),
        ("membership-certificate", Occurs::Once),
        ("issuing-certificate", Occurs::Optional),
        ("chain-certificate", Occurs::Many(pki::MAX_ISSUING_LINKS)),
        ("signed-body", Occurs::Once),
        ("signature", Occurs::Once),
    ],
};

/// Errors about invitations. Each renders as one line.
#[derive(Debug, Error)]
pub enum InvitationError {
    /// The XML is malformed or breaks the format.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// A field does not decode.
    #[error("{source_name}:{line}: {message}")]
    BadField {
        /// Where the invitation came from.
        source_name: String,
        /// Line of the field.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A signature, digest, chain or copy does not hold.
    #[error("{source_name}: invitation not trusted: {reason}")]
    NotTrusted {
        /// Where the invitation came from.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// The invitation can no longer be used.
    #[error("{source_name}: invitation expired on {expires} (issued {issued})")]
    Expired {
        /// Where the invitation came from.
        source_name: String,
        /// Its expiry.
        expires: String,
        /// When it was issued.
        issued: String,
    },
    /// The membership it grants is outside its validity.
    #[error("{source_name}: {reason}")]
    OutsideValidity {
        /// Where the invitation came from.
        source_name: String,
        /// Which certificate and which dates.
        reason: String,
    },
    /// Issued for another identity.
    #[error(
        "{source_name}: invitation is for {for_name:?} (member {for_id}), not for identity {identity:?} (member {identity_id})"
    )]
    WrongIdentity {
        /// Where the invitation came from.
        source_name: String,
        /// Invitee's friendly name.
        for_name: String,
        /// Invitee's member id.
        for_id: String,
        /// The local identity.
        identity: String,
        /// Its member id.
        identity_id: String,
    },
    /// Already a member.
    #[error("identity {identity:?} already belongs to group {name:?} ({id})")]
    AlreadyJoined {
        /// The local identity.
        identity: String,
        /// Group name.
        name: String,
        /// Group id.
        id: String,
    },
    /// The inviter may not issue this invitation.
    #[error("{0}")]
    NotAllowed(String),
    /// Membership problem.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// Certificate problem while issuing.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Filesystem problem.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// Group or store problem while joining.
    #[error(transparent)]
    Group(#[from] GroupError),
}

impl InvitationError {
    /// What the user can do about it, when there is something.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            InvitationError::NotTrusted { .. } => "the file was changed or forged; ask the inviter to send it again",
            InvitationError::Expired { .. } => {
                "ask the inviter for a new invitation (invite-create --expires sets how long one lasts)"
            }
            InvitationError::OutsideValidity { .. } => {
                "check this machine's clock, or ask the inviter for a new invitation"
            }
            InvitationError::WrongIdentity { .. } => {
                "join with the identity it was made for (--identity), or send the inviter this identity's XML"
            }
            InvitationError::AlreadyJoined { .. } => {
                "use group-chat to go online; to join again, remove the membership first"
            }
            _ => return None,
        })
    }
}

/// The signed body of an invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// Body format version (1).
    pub format: u32,
    /// The group.
    pub group: GroupInfo,
    /// Role granted.
    pub role: Role,
    /// Invitee member id.
    pub member_id: MemberId,
    /// Invitee friendly name.
    pub member_name: String,
    /// Membership validity start (RFC 3339).
    pub valid_from: String,
    /// Membership validity end (RFC 3339).
    pub valid_until: String,
    /// Last moment the invitation can be used to join (RFC 3339).
    pub expires: String,
    /// When it was issued (RFC 3339).
    pub issued: String,
    /// Inviter member id.
    pub issuer_id: MemberId,
    /// Inviter friendly name.
    pub issuer_name: String,
    /// Where the inviter and other members listen.
    pub addresses: Vec<String>,
    /// SHA-256 (hex) of the root certificate.
    pub root_sha256: String,
    /// SHA-256 (hex) of the invitee's membership certificate.
    pub membership_sha256: String,
    /// SHA-256 (hex) of the invitee's issuing certificate (admins).
    pub issuing_sha256: Option<String>,
    /// SHA-256 (hex) of each chain certificate, nearest first.
    pub chain_sha256: Vec<String>,
    /// The group's newest property change (a property record, base64), when an admin
    /// has changed its properties: the invitee stores it at once, so it judges records
    /// by the lifetimes in force as every member does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<String>,
}

/// A parsed invitation (see [`Invitation::verify`] before trusting it).
#[derive(Debug, Clone)]
pub struct Invitation {
    /// Where it came from, for messages.
    pub source_name: String,
    /// The signed body.
    pub body: Body,
    body_bytes: Vec<u8>,
    signature: Vec<u8>,
    /// The group root.
    pub root: Cert,
    /// The invitee's membership certificate.
    pub membership: Cert,
    /// The invitee's issuing certificate (admins).
    pub issuing: Option<Cert>,
    /// The inviter's issuing chain, nearest first (`chain[0]` signed the invitee's
    /// certificates and its key signed the body).
    pub chain: Vec<Cert>,
}

/// What `invite-create` asks for.
#[derive(Debug, Clone)]
pub struct InviteSpec {
    /// Role to grant.
    pub role: Role,
    /// How long the membership lasts.
    /// How long the membership lasts; `None`: the group's member lifetime, shortened
    /// to the inviter's own remaining validity.
    pub valid_for: Option<Duration>,
    /// How long the invitation can be used.
    pub expires: Duration,
    /// Extra bootstrap addresses, first in the list.
    pub addresses: Vec<String>,
}

impl Invitation {
    /// Issues an invitation for `invitee` from `inviter`'s membership `m`.
    pub fn create(
        inviter: &Identity,
        m: &Membership,
        invitee: &PublicIdentity,
        spec: &InviteSpec,
    ) -> Result<Invitation, InvitationError> {
        let now = clock::now();
        let group = m.group.id;
        let Some(own_issuing) = m.issuing.as_ref().filter(|_| m.role == Role::Admin) else {
            return Err(InvitationError::NotAllowed(format!(
                "identity {:?} is a {} of group {:?}, not an admin: only admins can invite",
                m.identity, m.role, m.group.name
            )));
        };
        if spec.role > m.role {
            return Err(InvitationError::NotAllowed(format!(
                "identity {:?} cannot grant role {} above its own ({})",
                m.identity, spec.role, m.role
            )));
        }
        // The inviter's own credentials must be sound now, or its invitations are not.
        pki::verify_chain(&m.root, &m.chain, own_issuing, group, now)?;
        pki::verify_chain(&m.root, &m.chain, &m.membership, group, now)?;
        if spec.role == Role::Admin && m.issuing_depth() >= pki::MAX_ISSUING_LINKS {
            return Err(InvitationError::NotAllowed(format!(
                "an admin invited by {:?} would be issuing link {} of the chain; at most {} are allowed: invite as member, or ask an admin nearer the creator",
                m.identity,
                m.issuing_depth() + 1,
                pki::MAX_ISSUING_LINKS
            )));
        }
        let until = match spec.valid_for {
            Some(d) => clock::add(now, d),
            None => clock::add(now, Duration::from_secs(m.group.member_lifetime_secs)).min(own_issuing.not_after),
        };
        if until > own_issuing.not_after {
            let max_days = (own_issuing.not_after - now).whole_days();
            return Err(InvitationError::NotAllowed(format!(
                "the membership would last until {}, beyond the inviter's own ({}): use --valid-for {}d or less",
                clock::format_rfc3339(until),
                clock::format_rfc3339(own_issuing.not_after),
                max_days.max(0)
            )));
        }
        let start = clock::from_unix(now.unix_timestamp() - pki::BACKDATE.as_secs() as i64).max(own_issuing.not_before);
        // An invitation is of no use once the membership it grants has ended.
        let expires = clock::add(now, spec.expires).min(until);
        let member_id = invitee.member_id();
        let name = invitee.friendly_name().to_string();
        let spec_for = |claim| CertSpec {
            common_name: name.clone(),
            claim,
            not_before: start,
            not_after: until,
        };
        let membership_der = pki::issue(
            &spec_for(Claim::Membership {
                group,
                member: member_id,
                role: spec.role,
            }),
            &invitee.cert.spki,
            &own_issuing.der,
            &inviter.key,
        )?;
        let membership = Cert::parse(&membership_der, "the membership certificate")?;
        let issuing = match spec.role {
            Role::Admin => {
                let der = pki::issue(
                    &spec_for(Claim::Issuing {
                        group,
                        member: member_id,
                    }),
                    &invitee.cert.spki,
                    &own_issuing.der,
                    &inviter.key,
                )?;
                Some(Cert::parse(&der, "the issuing certificate")?)
            }
            Role::Member => None,
        };
        let mut chain = vec![own_issuing.clone()];
        chain.extend(m.chain.iter().cloned());
        // The inviter's own store, read once: who is present, and the properties in force.
        let store = Store::open_read_only(&m.dir.join(STORE_FILE)).ok();
        let (own, present) = store
            .as_ref()
            .map(|s| present_addresses(s, m, now.unix_timestamp().saturating_mul(1000)))
            .unwrap_or_default();
        // The inviter's own live presence first: it holds what its running node learnt
        // (a port mapping's public address) beyond where it listens.
        let addresses = membership::merge_addresses(
            spec.addresses
                .iter()
                .chain(own.iter().take(OWN_PRESENCE_ADDRESSES))
                .chain(&m.advertised_addresses())
                .chain(&present)
                .chain(&m.bootstrap),
        );
        // Under the name and classifier in force: the invitee knows it by them.
        let (properties, change) = match &store {
            Some(store) => crate::admin::properties_in_force(m, store).map_err(GroupError::from)?,
            None => (Properties::of_group(&m.group), None),
        };
        let mut group_info = m.group.clone();
        group_info.name = properties.name;
        group_info.classifier = properties.classifier;
        let body = Body {
            format: 1,
            group: group_info,
            role: spec.role,
            member_id,
            member_name: name,
            valid_from: clock::format_rfc3339(start),
            valid_until: clock::format_rfc3339(until),
            expires: clock::format_rfc3339(expires),
            issued: clock::format_rfc3339(now),
            issuer_id: inviter.member_id(),
            issuer_name: inviter.friendly_name().to_string(),
            addresses,
            root_sha256: pki::sha256_hex(&m.root.der),
            membership_sha256: pki::sha256_hex(&membership.der),
            issuing_sha256: issuing.as_ref().map(|c| pki::sha256_hex(&c.der)),
            chain_sha256: chain.iter().map(|c| pki::sha256_hex(&c.der)).collect(),
            properties: change.map(|r| B64.encode(r.encode())),
        };
        Invitation::sign(body, m.root.clone(), membership, issuing, chain, &inviter.key)
    }

    /// Signs `body` with `key` and bundles it with its certificates. This trusts its
    /// input: [`Invitation::create`] is the checked way to issue one; tests use this to
    /// build forged invitations, which [`Invitation::parse`] and [`Invitation::verify`]
    /// must refuse.
    pub fn sign(
        body: Body,
        root: Cert,
        membership: Cert,
        issuing: Option<Cert>,
        chain: Vec<Cert>,
        key: &rcgen::KeyPair,
    ) -> Result<Invitation, InvitationError> {
        let body_bytes =
            serde_json::to_vec(&body).map_err(|e| PkiError::Crypto(format!("encode the invitation: {e}")))?;
        let signature = pki::sign(key, &body_bytes)?;
        Ok(Invitation {
            source_name: "invitation".into(),
            body,
            body_bytes,
            signature,
            root,
            membership,
            issuing,
            chain,
        })
    }

    /// The invitation XML.
    pub fn to_xml(&self) -> String {
        let b = &self.body;
        let mut w = xml::Writer::new(INVITATION_ROOT, "1");
        w.field("group-id", &b.group.id.to_string())
            .field("group-name", &b.group.name)
            .field("role", b.role.name())
            .field("member-id", &b.member_id.to_string())
            .field("issuer-id", &b.issuer_id.to_string())
            .field("expires", &b.expires)
            .base64_field("root-certificate", &B64.encode(&self.root.der))
            .base64_field("membership-certificate", &B64.encode(&self.membership.der));
        if let Some(c) = &self.issuing {
            w.base64_field("issuing-certificate", &B64.encode(&c.der));
        }
        for c in &self.chain {
            w.base64_field("chain-certificate", &B64.encode(&c.der));
        }
        w.base64_field("signed-body", &B64.encode(&self.body_bytes))
            .base64_field("signature", &B64.encode(&self.signature));
        w.finish()
    }

    /// Parses invitation XML and checks everything that does not depend on the clock or
    /// on who reads it: certificate encodings, the body's signature by the inviter,
    /// certificate digests, readable copies. Use [`Invitation::verify`] next.
    pub fn parse(source_name: &str, bytes: &[u8]) -> Result<Invitation, InvitationError> {
        let doc = xml::parse(source_name, bytes, &INVITATION_SCHEMA)?;
        let src = source_name.to_string();
        let bad = |field: &str, message: String| InvitationError::BadField {
            source_name: src.clone(),
            line: doc.line_of(field),
            message,
        };
        let untrusted = |reason: String| InvitationError::NotTrusted {
            source_name: src.clone(),
            reason,
        };
        let decode = |field: &str, text: &str| {
            decode_base64(text).ok_or_else(|| bad(field, format!("<{field}> is not valid base64")))
        };
        // Stage 1, shape: every certificate decodes and is DER X.509 at all.
        let der = |field: &str, text: &str, what: &str| -> Result<Vec<u8>, InvitationError> {
            let bytes = decode(field, text)?;
            if !pki::is_der_certificate(&bytes) {
                return Err(bad(field, format!("{what} is not a DER X.509 certificate")));
            }
            Ok(bytes)
        };
        let root_der = der(
            "root-certificate",
            doc.required("root-certificate"),
            "the root certificate",
        )?;
        let membership_der = der(
            "membership-certificate",
            doc.required("membership-certificate"),
            "the membership certificate",
        )?;
        let issuing_der = doc
            .get("issuing-certificate")
            .map(|t| der("issuing-certificate", t, "the issuing certificate"))
            .transpose()?;
        let chain_der = doc
            .all("chain-certificate")
            .into_iter()
            .map(|t| der("chain-certificate", t, "a chain certificate"))
            .collect::<Result<Vec<_>, _>>()?;
        let body_bytes = decode("signed-body", doc.required("signed-body"))?;
        let signature = decode("signature", doc.required("signature"))?;
        // Stage 2, signature: the inviter (chain[0]) signed the body. From here on any
        // changed byte is "not trusted".
        let signer_der = chain_der
            .first()
            .ok_or_else(|| untrusted("it has no chain certificate, so no admin signed it".into()))?;
        let signer = Cert::parse(signer_der, "the inviter's certificate").map_err(|e| untrusted(e.to_string()))?;
        let body: Body = open_body(&signer, &body_bytes, &signature, "inviter").map_err(untrusted)?;
        check_body(body.format, &body.group).map_err(untrusted)?;
        // Stage 3, digests: the certificates are exactly those the inviter signed.
        let digests_match = body.root_sha256 == pki::sha256_hex(&root_der)
            && body.membership_sha256 == pki::sha256_hex(&membership_der)
            && body.issuing_sha256 == issuing_der.as_deref().map(pki::sha256_hex)
            && body.chain_sha256 == chain_der.iter().map(|c| pki::sha256_hex(c)).collect::<Vec<_>>();
        if !digests_match {
            return Err(untrusted("its certificates are not the ones the inviter signed".into()));
        }
        let cert = |bytes: &[u8], what: &str| Cert::parse(bytes, what).map_err(|e| untrusted(e.to_string()));
        let root = cert(&root_der, "the root certificate")?;
        let membership = cert(&membership_der, "the membership certificate")?;
        let issuing = issuing_der
            .as_deref()
            .map(|d| cert(d, "the issuing certificate"))
            .transpose()?;
        let chain = chain_der
            .iter()
            .map(|d| cert(d, "a chain certificate"))
            .collect::<Result<Vec<_>, _>>()?;
        if body.issuer_id != signer.member_id {
            return Err(untrusted("the signer is not the inviter named in the body".into()));
        }
        check_readable_copies(
            &doc,
            &[
                ("group-id", body.group.id.to_string()),
                ("group-name", body.group.name.clone()),
                ("role", body.role.name().to_string()),
                ("member-id", body.member_id.to_string()),
                ("issuer-id", body.issuer_id.to_string()),
                ("expires", body.expires.clone()),
            ],
        )
        .map_err(untrusted)?;
        for address in &body.addresses {
            membership::parse_address(address).map_err(|e| untrusted(e.to_string()))?;
        }
        Ok(Invitation {
            source_name: src,
            body,
            body_bytes,
            signature,
            root,
            membership,
            issuing,
            chain,
        })
    }

    /// Checks the invitation at `now`: chains to the group root, role and ids consistent,
    /// the invitation unexpired and the membership it grants valid.
    pub fn verify(&self, now: OffsetDateTime) -> Result<(), InvitationError> {
        let src = &self.source_name;
        let untrusted = |reason: String| InvitationError::NotTrusted {
            source_name: src.clone(),
            reason,
        };
        let b = &self.body;
        let group = b.group.id;
        let expires = clock::parse_rfc3339(&b.expires).map_err(|e| untrusted(e.to_string()))?;
        if now > expires {
            return Err(InvitationError::Expired {
                source_name: src.clone(),
                expires: b.expires.clone(),
                issued: b.issued.clone(),
            });
        }
        let check = |leaf: &Cert| match pki::verify_chain(&self.root, &self.chain, leaf, group, now) {
            Ok(claim) => Ok(claim),
            Err(e @ (PkiError::Expired { .. } | PkiError::NotYetValid { .. })) => {
                Err(InvitationError::OutsideValidity {
                    source_name: src.clone(),
                    reason: e.to_string(),
                })
            }
            Err(e) => Err(untrusted(e.to_string())),
        };
        match check(&self.membership)? {
            Claim::Membership { member, role, .. } if member == b.member_id && role == b.role => {}
            _ => {
                return Err(untrusted(
                    "the membership certificate does not match the signed body".into(),
                ));
            }
        }
        match (&self.issuing, b.role) {
            (None, Role::Member) => {}
            (Some(issuing), Role::Admin) => match check(issuing)? {
                Claim::Issuing { member, .. } if member == b.member_id => {}
                _ => {
                    return Err(untrusted(
                        "the issuing certificate does not match the signed body".into(),
                    ));
                }
            },
            _ => return Err(untrusted("the role does not match the certificates".into())),
        }
        if b.valid_from != clock::format_rfc3339(self.membership.not_before)
            || b.valid_until != clock::format_rfc3339(self.membership.not_after)
        {
            return Err(untrusted(
                "the validity in the body differs from the certificate's".into(),
            ));
        }
        self.property_change().map_err(untrusted)?;
        Ok(())
    }

    /// The property change the invitation carries, checked as a node checks one.
    pub fn property_change(&self) -> Result<Option<Record>, String> {
        let Some(text) = &self.body.properties else {
            return Ok(None);
        };
        let bytes = decode_base64(text).ok_or("its property change is not valid base64")?;
        let r = Record::decode(&bytes).map_err(|e| format!("its property change does not decode: {e}"))?;
        if r.rtype != PROPERTIES_TYPE || !r.id_is_bound() {
            return Err("its property change is not a property record".into());
        }
        let g = &self.body.group;
        let admission = Admission::new(
            g.id,
            self.root.clone(),
            Lifetimes::from_secs(g.message_lifetime_secs, g.presence_lifetime_secs),
            (self.membership.member_id, self.membership.clone()),
        );
        admission
            .verify_properties_record(&r)
            .map_err(|e| format!("its property change does not verify: {e}"))?;
        Ok(Some(r))
    }

    /// Checks that the invitation was issued for `identity`'s key.
    pub fn check_for(&self, identity: &Identity) -> Result<(), InvitationError> {
        if self.membership.spki != identity.cert.spki {
            return Err(InvitationError::WrongIdentity {
                source_name: self.source_name.clone(),
                for_name: self.body.member_name.clone(),
                for_id: self.body.member_id.to_string(),
                identity: identity.name.clone(),
                identity_id: identity.member_id().to_string(),
            });
        }
        Ok(())
    }

    /// The summary for `group-join --inspect --json`: the fields of [`Invitation::describe`]
    /// as one object (lifetimes in seconds, `chain` the number of issuing links,
    /// `addresses` a list).
    pub fn describe_json(&self) -> serde_json::Value {
        let b = &self.body;
        let change = self.property_change().ok().flatten();
        let p = change
            .and_then(|r| Properties::of_record(&r).ok())
            .unwrap_or_else(|| Properties::of_group(&b.group));
        serde_json::json!({
            "kind": "identity",
            "group": b.group.name,
            "group_id": b.group.id.to_string(),
            "classifier": b.group.classifier,
            "issuer": b.issuer_name,
            "issuer_id": b.issuer_id.to_string(),
            "subject": b.member_name,
            "subject_id": b.member_id.to_string(),
            "role": b.role.name(),
            "valid_from": b.valid_from,
            "valid_until": b.valid_until,
            "expires": b.expires,
            "issued": b.issued,
            "chain": self.chain.len(),
            "comment": p.comment,
            "message_lifetime": p.message_lifetime_secs,
            "presence_lifetime": p.presence_lifetime_secs,
            "addresses": b.addresses,
        })
    }

    /// Readable summary for `group-join --inspect`: `key: value` lines.
    pub fn describe(&self) -> String {
        let b = &self.body;
        let mut out = String::new();
        let mut line = |k: &str, v: &str| out.push_str(&format!("{k}: {v}\n"));
        line("group", &format!("{} ({})", b.group.name, b.group.id));
        if !b.group.classifier.is_empty() {
            line("classifier", &b.group.classifier);
        }
        line("issuer", &format!("{} ({})", b.issuer_name, b.issuer_id));
        line("subject", &format!("{} ({})", b.member_name, b.member_id));
        line("role", b.role.name());
        line("valid-from", &b.valid_from);
        line("valid-until", &b.valid_until);
        line("expires", &b.expires);
        line("issued", &b.issued);
        line(
            "chain",
            &format!("{} issuing link(s) to the group root", self.chain.len()),
        );
        // The lifetimes in force: the newest property change it carries, if any.
        let change = self.property_change().ok().flatten();
        let p = change
            .and_then(|r| Properties::of_record(&r).ok())
            .unwrap_or_else(|| Properties::of_group(&b.group));
        if !p.comment.is_empty() {
            line("comment", &p.comment);
        }
        line(
            "message-lifetime",
            &clock::format_duration(Duration::from_secs(p.message_lifetime_secs)),
        );
        line(
            "presence-lifetime",
            &clock::format_duration(Duration::from_secs(p.presence_lifetime_secs)),
        );
        for a in &b.addresses {
            line("address", a);
        }
        out
    }
}

/// Joins the group of a verified invitation as `identity`; `listen` is where this member
/// will accept peers. Nothing is left behind on failure.
pub fn join(
    home: &Home,
    identity: &Identity,
    invitation: &Invitation,
    listen: std::net::SocketAddr,
) -> Result<Membership, InvitationError> {
    let _lock = identity_lock(home, &identity.name)?;
    invitation.check_for(identity)?;
    invitation.verify(clock::now())?;
    let b = &invitation.body;
    not_joined(home, identity, &b.group)?;
    let target = home.membership_dir(&identity.name, &b.group.id);
    let membership = Membership {
        identity: identity.name.clone(),
        group: b.group.clone(),
        role: b.role,
        root: invitation.root.clone(),
        membership: invitation.membership.clone(),
        issuing: invitation.issuing.clone(),
        chain: invitation.chain.clone(),
        listen,
        bootstrap: b.addresses.clone(),
        joined: clock::now(),
        creator: false,
        dir: target.clone(),
    };
    let staging = Staging::new(&target)?;
    home::write_new_file(&staging.join(MEMBERSHIP_FILE), membership.to_json().as_bytes(), false)?;
    let mut store = Store::open(&staging.join(STORE_FILE), Durability::Normal).map_err(GroupError::from)?;
    if let Some(r) = invitation
        .property_change()
        .map_err(|reason| InvitationError::NotTrusted {
            source_name: invitation.source_name.clone(),
            reason,
        })?
    {
        let now_ns = clock::now().unix_timestamp().saturating_mul(1_000_000_000);
        store
            .put_batch(&[crate::store::Put::new(r, false, now_ns)])
            .map_err(GroupError::from)?;
    }
    drop(store);
    staging.commit(&target)?;
    Ok(membership)
}

/// The signed body of an invitation file: `signature` by `signer` over `body`, then
/// parsed. `who` names the signer in the error.
pub(crate) fn open_body<T: serde::de::DeserializeOwned>(
    signer: &Cert,
    body: &[u8],
    signature: &[u8],
    who: &str,
) -> Result<T, String> {
    if !signer.verify(body, signature) {
        return Err(format!("the signature does not verify with the {who}'s certificate"));
    }
    serde_json::from_slice(body).map_err(|e| format!("the signed body does not parse: {e}"))
}

/// A signed body's format (1) and group.
pub(crate) fn check_body(format: u32, group: &GroupInfo) -> Result<(), String> {
    if format != 1 {
        return Err(format!("signed body format {format} is not supported"));
    }
    group.check().map_err(|e| e.to_string())
}

/// Every readable copy in `doc` equals its signed value.
pub(crate) fn check_readable_copies(doc: &xml::Document, copies: &[(&str, String)]) -> Result<(), String> {
    for (field, value) in copies {
        if doc.required(field).trim() != value {
            return Err(format!(
                "<{field}> (line {}) differs from the signed value {value:?}",
                doc.line_of(field)
            ));
        }
    }
    Ok(())
}

/// Refuses if `identity` is a member of `group` already (checked before a password
/// join asks the admin, so a use is not spent on it).
pub fn not_joined(home: &Home, identity: &Identity, group: &GroupInfo) -> Result<(), InvitationError> {
    if home.membership_dir(&identity.name, &group.id).exists() {
        return Err(InvitationError::AlreadyJoined {
            identity: identity.name.clone(),
            name: group.name.clone(),
            id: group.id.to_string(),
        });
    }
    Ok(())
}

/// Addresses of the members `store` (the inviter's own, holding only verified records)
/// shows present (live presence records), so the invitee can find the group even when
/// the inviter is gone by then.
/// Most addresses taken from the inviter's own presence, so a long list there (after
/// a crash, from an old network) cannot crowd out other members' addresses.
const OWN_PRESENCE_ADDRESSES: usize = 4;

/// The addresses live presence records in `store` advertise: the inviter's own, and
/// everyone else's.
fn present_addresses(store: &Store, m: &Membership, now_ms: i64) -> (Vec<String>, Vec<String>) {
    let (mut own, mut others) = (Vec::new(), Vec::new());
    for r in store.of_type(&crate::record::PRESENCE_TYPE).unwrap_or_default() {
        if r.deleted || r.expires_ms <= now_ms {
            continue;
        }
        let into = if r.creator == m.membership.member_id {
            &mut own
        } else {
            &mut others
        };
        into.extend(r.presence_addresses());
    }
    (own, others)
}
