//! Identities: a key pair and a self-signed identity certificate, kept under the home,
//! and the public identity XML that `identity-export` prints and `invite-create` reads.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

use crate::clock;
use crate::home::{self, Home, HomeError, Staging};
use crate::member::MemberId;
use crate::pki::{self, Cert, CertSpec, Claim, KeyType, PkiError};
use crate::xml::{self, Occurs, Schema, XmlError};

/// Root element of the identity XML.
pub const IDENTITY_ROOT: &str = "peergroup-identity";

const IDENTITY_SCHEMA: Schema = Schema {
    root: IDENTITY_ROOT,
    version: "1",
    fields: &[
        ("member-id", Occurs::Once),
        ("friendly-name", Occurs::Once),
        ("key-type", Occurs::Once),
        ("certificate", Occurs::Once),
    ],
};

/// Longest friendly name, in characters.
pub const MAX_FRIENDLY_NAME: usize = 64;

/// Errors about identities.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// No identity of that local name.
    #[error("no identity named {0:?} in this home")]
    Unknown(String),
    /// The friendly name is unusable.
    #[error("invalid friendly name {0:?}: use 1-64 printable characters")]
    BadFriendlyName(String),
    /// Stored files are damaged.
    #[error("identity {name:?} is damaged: {reason}")]
    Damaged {
        /// Local name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The identity XML is malformed.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// A field of the identity XML is wrong.
    #[error("{source_name}:{line}: {message}")]
    BadField {
        /// Where the XML came from.
        source_name: String,
        /// Line of the field.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A certificate problem.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A filesystem problem.
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// A local identity: its secret key and certificate.
pub struct Identity {
    /// Local name (a label on this machine only).
    pub name: String,
    /// The secret key.
    pub key: KeyPair,
    /// The identity certificate.
    pub cert: Cert,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Member id of this identity.
    pub fn member_id(&self) -> MemberId {
        self.cert.member_id
    }

    /// Friendly name carried in the certificate.
    pub fn friendly_name(&self) -> &str {
        &self.cert.common_name
    }

    /// Loads identity `name` from `home`.
    pub fn load(home: &Home, name: &str) -> Result<Identity, IdentityError> {
        home::check_name(name)?;
        let dir = home.identity_dir(name);
        if !dir.join("identity.pem").exists() {
            return Err(IdentityError::Unknown(name.to_string()));
        }
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(HomeError::io("read", &path))
        };
        Identity::from_pem(name, &read("identity.pem")?, &read("key.pem")?)
    }

    /// The identity `name` from its certificate and private key (PEM), checked to
    /// belong together.
    pub fn from_pem(name: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity, IdentityError> {
        let damaged = |reason: String| IdentityError::Damaged {
            name: name.to_string(),
            reason,
        };
        let cert_der = CertificateDer::from_pem_slice(cert_pem).map_err(|e| damaged(format!("identity.pem: {e}")))?;
        let cert = Cert::parse(&cert_der, "the identity certificate")?;
        if cert.claim != Claim::Identity {
            return Err(damaged("identity.pem is not an identity certificate".into()));
        }
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(key_pem).map_err(|e| damaged(format!("key.pem: {e}")))?;
        let key = KeyPair::from_der_and_sign_algo(&PrivateKeyDer::Pkcs8(key_der), cert.key_type.rcgen_algorithm())
            .map_err(|e| damaged(format!("key.pem: {e}")))?;
        if pki::spki_of(&key) != cert.spki {
            return Err(damaged("key.pem does not match identity.pem".into()));
        }
        Ok(Identity {
            name: name.to_string(),
            key,
            cert,
        })
    }

    /// Writes this identity into `home` under its name: the key file 0600, both files
    /// at once or not at all. Fails if the name is taken: keys are never overwritten.
    pub fn install(&self, home: &Home) -> Result<(), IdentityError> {
        home::check_name(&self.name)?;
        home.ensure()?;
        let target = home.identity_dir(&self.name);
        let staging = Staging::new(&target)?;
        home::write_new_file(&staging.join("key.pem"), self.key.serialize_pem().as_bytes(), true)?;
        home::write_new_file(
            &staging.join("identity.pem"),
            pem("CERTIFICATE", &self.cert.der).as_bytes(),
            false,
        )?;
        staging.commit(&target)?;
        Ok(())
    }

    /// Creates identity `name` with a fresh key. Fails if it exists: keys are never
    /// overwritten. The files appear all at once or not at all.
    pub fn create(home: &Home, name: &str, key_type: KeyType, friendly_name: &str) -> Result<Identity, IdentityError> {
        home::check_name(name)?;
        check_friendly_name(friendly_name)?;
        home.ensure()?;
        let key = key_type.generate()?;
        let now = clock::now();
        let spec = CertSpec {
            common_name: friendly_name.to_string(),
            claim: Claim::Identity,
            not_before: clock::from_unix(now.unix_timestamp() - pki::BACKDATE.as_secs() as i64),
            not_after: clock::add(now, pki::ROOT_LIFETIME),
        };
        let der = pki::self_signed(&spec, &key)?;
        let id = Identity {
            name: name.to_string(),
            key,
            cert: Cert::parse(&der, "the identity certificate")?,
        };
        id.install(home)?;
        Ok(id)
    }

    /// Loads `name`, creating it first if it does not exist; `true` when created.
    pub fn load_or_create(
        home: &Home,
        name: &str,
        key_type: KeyType,
        friendly_name: Option<&str>,
    ) -> Result<(Identity, bool), IdentityError> {
        match Identity::load(home, name) {
            Ok(id) => Ok((id, false)),
            Err(IdentityError::Unknown(_)) => {
                match Identity::create(home, name, key_type, friendly_name.unwrap_or(name)) {
                    Ok(id) => Ok((id, true)),
                    // Another process created it between our look and our rename.
                    Err(IdentityError::Home(HomeError::Io { .. }))
                        if home.identity_dir(name).join("identity.pem").exists() =>
                    {
                        Ok((Identity::load(home, name)?, false))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A second handle on the same identity (the key is not `Clone`: it is rebuilt
    /// from its encoding).
    pub fn duplicate(&self) -> Identity {
        let der = self.key.serialize_der();
        let key = KeyPair::from_der_and_sign_algo(
            &PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            self.cert.key_type.rcgen_algorithm(),
        )
        .expect("a key this process holds re-encodes");
        Identity {
            name: self.name.clone(),
            key,
            cert: self.cert.clone(),
        }
    }

    /// The public identity to hand to an inviter.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            cert: self.cert.clone(),
        }
    }
}

/// Checks a friendly name: 1-64 characters, no control characters.
pub fn check_friendly_name(name: &str) -> Result<(), IdentityError> {
    let n = name.chars().count();
    if n == 0 || n > MAX_FRIENDLY_NAME || name.chars().any(char::is_control) || name.trim() != name {
        return Err(IdentityError::BadFriendlyName(name.to_string()));
    }
    Ok(())
}

/// PEM-encodes DER bytes (rustls-pki-types reads PEM but does not write it).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes base64 that may be wrapped over several lines.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64.decode(compact).ok()
}

/// Someone's public identity: the certificate inside the identity XML.
#[derive(Debug, Clone)]
pub struct PublicIdentity {
    /// The identity certificate.
    pub cert: Cert,
}

impl PublicIdentity {
    /// Member id.
    pub fn member_id(&self) -> MemberId {
        self.cert.member_id
    }

    /// Friendly name.
    pub fn friendly_name(&self) -> &str {
        &self.cert.common_name
    }

    /// The identity XML (readable copies of the certificate's fields, then the
    /// certificate itself, which is the only part trusted).
    pub fn to_xml(&self) -> String {
        let mut w = xml::Writer::new(IDENTITY_ROOT, "1");
        w.field("member-id", &self.cert.member_id.to_string())
            .field("friendly-name", &self.cert.common_name)
            .field("key-type", self.cert.key_type.name())
            .base64_field("certificate", &B64.encode(&self.cert.der));
        w.finish()
    }

    /// Reads and checks identity XML: the certificate must be a peergroup identity
    /// certificate, signed by its own key, and every readable copy must match it.
    pub fn from_xml(source_name: &str, bytes: &[u8]) -> Result<PublicIdentity, IdentityError> {
        let doc = xml::parse(source_name, bytes, &IDENTITY_SCHEMA)?;
        let bad = |field: &str, message: String| IdentityError::BadField {
            source_name: source_name.to_string(),
            line: doc.line_of(field),
            message,
        };
        let der = decode_base64(doc.required("certificate"))
            .ok_or_else(|| bad("certificate", "<certificate> is not valid base64".into()))?;
        let cert = Cert::parse(&der, "the identity certificate").map_err(|e| bad("certificate", e.to_string()))?;
        if cert.claim != Claim::Identity || cert.is_ca {
            return Err(bad(
                "certificate",
                "the certificate is not an identity certificate".into(),
            ));
        }
        if !cert.is_signed_by(&cert) {
            return Err(bad(
                "certificate",
                "the identity certificate is not signed by its own key".into(),
            ));
        }
        for (field, value) in [
            ("member-id", cert.member_id.to_string().as_str()),
            ("friendly-name", cert.common_name.as_str()),
            ("key-type", cert.key_type.name()),
        ] {
            if doc.required(field).trim() != value {
                return Err(bad(
                    field,
                    format!("<{field}> does not match the certificate (which says {value:?})"),
                ));
            }
        }
        Ok(PublicIdentity { cert })
    }
}

/// Summary of a local identity for `identity-export --list`.
#[derive(Debug, Clone)]
pub struct IdentitySummary {
    /// Local name.
    pub name: String,
    /// Member id.
    pub member_id: MemberId,
    /// Key type.
    pub key_type: KeyType,
    /// Friendly name.
    pub friendly_name: String,
}

impl IdentitySummary {
    /// One JSON object: `name`, `member_id`, `key_type`, `friendly_name`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "name": self.name,
            "member_id": self.member_id.to_string(),
            "key_type": self.key_type.to_string(),
            "friendly_name": self.friendly_name,
        })
        .to_string()
    }
}

/// Lists local identities; a damaged one is reported, not skipped silently.
pub fn list(home: &Home) -> Result<Vec<IdentitySummary>, IdentityError> {
    let mut out = Vec::new();
    for name in home.identity_names()? {
        let path = home.identity_dir(&name).join("identity.pem");
        let der = CertificateDer::from_pem_file(&path).map_err(|e| IdentityError::Damaged {
            name: name.clone(),
            reason: format!("identity.pem: {e}"),
        })?;
        let cert = Cert::parse(&der, "the identity certificate")?;
        out.push(IdentitySummary {
            name,
            member_id: cert.member_id,
            key_type: cert.key_type,
            friendly_name: cert.common_name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_export_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path())).unwrap();
        let (alice, created) = Identity::load_or_create(&home, "alice", KeyType::P256, Some("Alice A.")).unwrap();
        assert!(created);
        let (again, created) = Identity::load_or_create(&home, "alice", KeyType::Ed25519, None).unwrap();
        assert!(!created);
        assert_eq!(again.member_id(), alice.member_id());
        let xml = alice.public().to_xml();
        let back = PublicIdentity::from_xml("alice.xml", xml.as_bytes()).unwrap();
        assert_eq!(back.member_id(), alice.member_id());
        assert_eq!(back.friendly_name(), "Alice A.");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.identity_dir("alice").join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            Identity::create(&home, "alice", KeyType::Ed25519, "x").is_err(),
            "key overwritten"
        );
    }

    #[test]
    fn changed_readable_copies_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path())).unwrap();
        let alice = Identity::create(&home, "alice", KeyType::Ed25519, "alice").unwrap();
        let xml = alice
            .public()
            .to_xml()
            .replace("<friendly-name>alice<", "<friendly-name>mallory<");
        let err = PublicIdentity::from_xml("a.xml", xml.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match the certificate"), "{err}");
    }
}
