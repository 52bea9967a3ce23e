//! Moving and backing up (PeerIdentityExport/Import, PeerGroupExportConfig/ImportConfig,
//! PeerGroupExportDatabase/ImportDatabase): an identity with its private key, or a
//! membership with its record store, sealed with a passphrase by age's scrypt
//! recipient (ASCII armour), and brought back on another machine.
//!
//! A group import trusts nothing it reads but the passphrase: every record goes
//! through a node's own rules as if a peer had sent it, and what fails them (forged,
//! expired, revoked, over a quota) is left out.

use std::io::{Read, Write};
use std::path::PathBuf;

use age::secrecy::SecretString;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::clock;
use crate::core::{self, Command, Config, Core, Input, Now, Output};
use crate::home::{self, Home, HomeError, Staging};
use crate::identity::{self, Identity, IdentityError, pem};
use crate::member::MemberId;
use crate::membership::{MEMBERSHIP_FILE, Membership, MembershipError, ROOT_KEY_FILE};
use crate::pki;
use crate::record::{CREDENTIAL_TYPE, MEMBERSHIP_TYPE, PRESENCE_TYPE, PROPERTIES_TYPE, REVOCATION_TYPE, Record};
use crate::store::{Durability, Put, STORE_FILE, Store, StoreError};

/// The largest passphrase file read, in bytes.
pub const MAX_PASSPHRASE_BYTES: usize = 4096;
/// The lowest scrypt work factor (log2 N) a user may ask for: tests use low ones, since
/// the default would slow every test.
pub const MIN_WORK_FACTOR: u8 = 1;
/// The scrypt work factor exports are sealed with unless told otherwise: 2^18 (256 MiB
/// of memory, a fraction of a second here), in the range age itself picks.
pub const DEFAULT_WORK_FACTOR: u8 = 18;
/// The highest scrypt work factor sealed or opened (2^20: 1 GiB of memory): the factor
/// is in the file's unauthenticated header, so without a ceiling any file could make
/// an import spend gigabytes and seconds before the passphrase is even checked.
pub const MAX_WORK_FACTOR: u8 = 20;
/// Below this work factor a passphrase is cheap to guess from the file: said on stderr.
pub const WEAK_WORK_FACTOR: u8 = 15;
/// The largest export read or written.
pub const MAX_EXPORT_BYTES: usize = 1 << 30;

const IDENTITY_FORMAT: &str = "peergroup identity";
const GROUP_FORMAT: &str = "peergroup group";

/// Errors of exports and imports.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The passphrase file could not be read.
    #[error("cannot read the passphrase from {0}: {1}")]
    PassphraseUnreadable(String, std::io::Error),
    /// The passphrase file holds nothing.
    #[error("the passphrase from {0} is empty: put the passphrase on the first line")]
    EmptyPassphrase(String),
    /// The passphrase file is too large to be one.
    #[error("{0} holds more than {MAX_PASSPHRASE_BYTES} bytes: it is not a passphrase file")]
    PassphraseTooLong(String),
    /// The passphrase does not open the file.
    #[error("wrong passphrase for {0} (or it was sealed for another passphrase)")]
    WrongPassphrase(String),
    /// Not an age file, or damaged.
    #[error("{0} is not a peergroup export sealed with a passphrase, or it is damaged: {1}")]
    NotAnExport(String, String),
    /// An export of another kind (an identity given to group-import, say).
    #[error("{source_name} is {found}, not {wanted}")]
    WrongKind {
        /// Where it came from.
        source_name: String,
        /// What it holds.
        found: String,
        /// What was asked for.
        wanted: &'static str,
    },
    /// The work factor would take too long to open here.
    #[error(
        "{0} asks for more scrypt work than the {MAX_WORK_FACTOR} (1 GiB of memory) this tool allows: it was not sealed by peergroup"
    )]
    TooMuchWork(String),
    /// An export larger than an import reads.
    #[error("the export would be {0} bytes, more than the {MAX_EXPORT_BYTES} an import reads")]
    TooLarge(usize),
    /// The identity's name is taken in this home.
    #[error("identity {0:?} already exists in this home: import under another name with --name")]
    NameTaken(String),
    /// This home holds that identity already.
    #[error("this home already holds that identity as {name:?} (member id {member}): nothing to import")]
    AlreadyHere {
        /// Its local name here.
        name: String,
        /// Its member id.
        member: MemberId,
    },
    /// A membership of another identity.
    #[error(
        "{source_name} is the membership of member {member} ({name}), not of identity {identity:?} (member id {identity_member}): import that identity first and give its name with --identity"
    )]
    OtherIdentity {
        /// Where it came from.
        source_name: String,
        /// The member it belongs to.
        member: MemberId,
        /// Its certificate name.
        name: String,
        /// The identity named.
        identity: String,
        /// That identity's member id.
        identity_member: MemberId,
    },
    /// The identity is a member already.
    #[error(
        "identity {identity:?} is already a member of group {group:?} ({id}): run group-leave for it first to replace it with this export"
    )]
    AlreadyMember {
        /// The identity.
        identity: String,
        /// The group's name.
        group: String,
        /// The group id.
        id: uuid::Uuid,
    },
    /// The membership inside does not verify.
    #[error("{0}: its membership does not verify: {1}")]
    BadMembership(String, String),
    /// The node's rules could not run.
    #[error("cannot check the records: {0}")]
    Core(String),
    /// Sealing failed.
    #[error("cannot seal the export: {0}")]
    Seal(String),
    /// An identity could not be read or written.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A membership could not be read.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The home could not be written.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A passphrase, kept out of debug output and wiped when dropped.
pub type Passphrase = SecretString;

/// Reads a passphrase: the first line of `source` (a file, or stdin for `-`), without
/// its line end.
pub fn read_passphrase(source: &str) -> Result<SecretString, BackupError> {
    let mut bytes = Vec::new();
    let limit = MAX_PASSPHRASE_BYTES as u64 + 1;
    let unreadable = |e| BackupError::PassphraseUnreadable(source.to_string(), e);
    if source == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
    } else {
        std::fs::File::open(source)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .map_err(unreadable)?;
    }
    if bytes.len() > MAX_PASSPHRASE_BYTES {
        return Err(BackupError::PassphraseTooLong(source.to_string()));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not UTF-8 text",
        ))
    })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(BackupError::EmptyPassphrase(source.to_string()));
    }
    Ok(SecretString::from(line.to_string()))
}

/// Seals `plain` with `passphrase` (age scrypt recipient, ASCII armour); `work_factor`
/// is scrypt's log2 N, age's own choice (about a second of work here) if `None`.
pub fn seal(plain: &[u8], passphrase: &SecretString, work_factor: Option<u8>) -> Result<String, BackupError> {
    let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
    let n = work_factor.unwrap_or(DEFAULT_WORK_FACTOR);
    recipient.set_work_factor(n.clamp(MIN_WORK_FACTOR, MAX_WORK_FACTOR));
    let seal_err = |e: &dyn std::fmt::Display| BackupError::Seal(e.to_string());
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .map_err(|e| seal_err(&e))?;
    let mut out = Vec::with_capacity(plain.len() * 4 / 3 + 512);
    let armor =
        age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).map_err(|e| seal_err(&e))?;
    let mut w = encryptor.wrap_output(armor).map_err(|e| seal_err(&e))?;
    w.write_all(plain).map_err(|e| seal_err(&e))?;
    w.finish().and_then(|armor| armor.finish()).map_err(|e| seal_err(&e))?;
    String::from_utf8(out).map_err(|e| seal_err(&e))
}

/// Opens what [`seal`] made with `passphrase`.
pub fn unseal(source_name: &str, sealed: &[u8], passphrase: &SecretString) -> Result<Vec<u8>, BackupError> {
    let not_export = |why: String| BackupError::NotAnExport(source_name.to_string(), why);
    let reader = age::armor::ArmoredReader::new(sealed);
    let decryptor = age::Decryptor::new(reader).map_err(|e| not_export(e.to_string()))?;
    if !decryptor.is_scrypt() {
        return Err(not_export("it is sealed for keys, not a passphrase".into()));
    }
    let mut identity = age::scrypt::Identity::new(passphrase.clone());
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    let mut r = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed
            | age::DecryptError::NoMatchingKeys => BackupError::WrongPassphrase(source_name.to_string()),
            age::DecryptError::ExcessiveWork { .. } => BackupError::TooMuchWork(source_name.to_string()),
            e => not_export(e.to_string()),
        })?;
    let mut plain = Vec::new();
    // The payload's MAC is checked chunk by chunk as it is read: a changed byte fails here.
    r.read_to_end(&mut plain).map_err(|e| not_export(e.to_string()))?;
    Ok(plain)
}

/// What an identity export holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    format: String,
    version: u32,
    /// The local name it had.
    name: String,
    /// The identity certificate, PEM.
    certificate: String,
    /// The private key, PKCS#8 PEM.
    key: String,
}

/// What a group export holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    format: String,
    version: u32,
    /// The membership file, as it was on disk.
    membership: String,
    /// The group root's private key, for the creator's membership.
    root_key: Option<String>,
    /// The stored records, each its signed encoding in base64.
    records: Vec<String>,
}

/// The payload's kind, from its `format` field, for a clear message on a mix-up.
fn kind_of(plain: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Head {
        format: Option<String>,
    }
    match serde_json::from_slice::<Head>(plain).ok().and_then(|h| h.format) {
        Some(f) if f == IDENTITY_FORMAT => "an identity export".into(),
        Some(f) if f == GROUP_FORMAT => "a group export".into(),
        Some(f) => format!("an export of unknown kind {f:?}"),
        None => "not a peergroup export".into(),
    }
}

/// `identity` with its private key, sealed with `passphrase`.
pub fn export_identity(
    id: &Identity,
    passphrase: &SecretString,
    work_factor: Option<u8>,
) -> Result<String, BackupError> {
    let file = IdentityFile {
        format: IDENTITY_FORMAT.into(),
        version: 1,
        name: id.name.clone(),
        certificate: pem("CERTIFICATE", &id.cert.der),
        key: id.key.serialize_pem(),
    };
    let plain = serde_json::to_vec(&file).map_err(|e| BackupError::Seal(e.to_string()))?;
    seal(&plain, passphrase, work_factor)
}

/// Opens an identity export and installs it in `home` under `name` (else the name it
/// had). Refused when the name is taken or the home holds that key already.
pub fn import_identity(
    home: &Home,
    source_name: &str,
    sealed: &[u8],
    passphrase: &SecretString,
    name: Option<&str>,
) -> Result<Identity, BackupError> {
    let plain = unseal(source_name, sealed, passphrase)?;
    let file: IdentityFile = serde_json::from_slice(&plain)
        .ok()
        .filter(|f: &IdentityFile| f.format == IDENTITY_FORMAT && f.version == 1)
        .ok_or_else(|| BackupError::WrongKind {
            source_name: source_name.to_string(),
            found: kind_of(&plain),
            wanted: "an identity export",
        })?;
    let name = name.unwrap_or(&file.name);
    home::check_name(name).map_err(IdentityError::from)?;
    let id = Identity::from_pem(name, file.certificate.as_bytes(), file.key.as_bytes())?;
    if home.identity_dir(name).exists() {
        return Err(BackupError::NameTaken(name.to_string()));
    }
    if let Some(other) = identity::list(home)?
        .into_iter()
        .find(|s| s.member_id == id.member_id())
    {
        return Err(BackupError::AlreadyHere {
            name: other.name,
            member: other.member_id,
        });
    }
    id.install(home)?;
    Ok(id)
}

/// `m` with its record store (and, for the creator, the root key), sealed with
/// `passphrase`; and how many records it holds.
pub fn export_group(
    m: &Membership,
    passphrase: &SecretString,
    work_factor: Option<u8>,
) -> Result<(String, usize), BackupError> {
    let store = Store::open_read_only(&m.dir.join(STORE_FILE))?;
    let ids: Vec<uuid::Uuid> = store.summaries()?.into_iter().map(|s| s.id).collect();
    let records: Vec<String> = store.bodies(&ids)?.iter().map(|b| B64.encode(b)).collect();
    let root_key = m.root_key()?.map(|k| k.serialize_pem());
    let file = GroupFile {
        format: GROUP_FORMAT.into(),
        version: 1,
        membership: m.to_json(),
        root_key,
        records,
    };
    let n = file.records.len();
    let plain = serde_json::to_vec(&file).map_err(|e| BackupError::Seal(e.to_string()))?;
    let sealed = seal(&plain, passphrase, work_factor)?;
    if sealed.len() > MAX_EXPORT_BYTES {
        return Err(BackupError::TooLarge(sealed.len()));
    }
    Ok((sealed, n))
}

/// What a group import brought in.
#[derive(Debug)]
pub struct Imported {
    /// The membership, as saved.
    pub membership: Membership,
    /// Records of the export stored (presence records, which are of a moment, are not
    /// counted: the node publishes its own when it next runs).
    pub kept: usize,
    /// Records of the export left out: they did not decode, had expired, or the node's
    /// rules refused them.
    pub refused: usize,
}

/// Opens a group export and installs it as `identity`'s membership in `home`, every
/// record checked by a node's rules as if a peer had sent it. Refused when it is
/// another identity's membership, or `identity` is a member of that group already;
/// nothing is left behind on failure.
pub fn import_group(
    home: &Home,
    identity: &Identity,
    source_name: &str,
    sealed: &[u8],
    passphrase: &SecretString,
) -> Result<Imported, BackupError> {
    let plain = unseal(source_name, sealed, passphrase)?;
    let file: GroupFile = serde_json::from_slice(&plain)
        .ok()
        .filter(|f: &GroupFile| f.format == GROUP_FORMAT && f.version == 1)
        .ok_or_else(|| BackupError::WrongKind {
            source_name: source_name.to_string(),
            found: kind_of(&plain),
            wanted: "a group export",
        })?;
    let _lock = crate::group::identity_lock(home, &identity.name)?;
    let bad = |why: String| BackupError::BadMembership(source_name.to_string(), why);
    // Placed at its home here once the group id is known.
    let parsed = Membership::from_json(&identity.name, PathBuf::new(), file.membership.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let target = home.membership_dir(&identity.name, &parsed.group.id);
    let mut m = Membership {
        dir: target.clone(),
        ..parsed
    };
    if m.membership.spki != identity.cert.spki {
        return Err(BackupError::OtherIdentity {
            source_name: source_name.to_string(),
            member: m.membership.member_id,
            name: m.membership.common_name.clone(),
            identity: identity.name.clone(),
            identity_member: identity.member_id(),
        });
    }
    // Checked as of its start: an expired membership comes back, and gets in again
    // with the renewal its store holds, or one an admin makes. Nothing of the file is
    // taken on its word that a certificate says: the role, the issuing certificate,
    // whether it is the creator's.
    let at = |c: &pki::Cert| c.not_before;
    match pki::verify_chain_links(&m.root, &m.chain, &m.membership, m.group.id, at(&m.membership)) {
        Ok(pki::Claim::Membership { member, role, .. }) if member == identity.member_id() => m.role = role,
        Ok(_) => return Err(bad("its certificate is not a membership of this identity".into())),
        Err(e) => return Err(bad(e.to_string())),
    }
    match (&m.issuing, m.role) {
        (None, pki::Role::Member) => {}
        (Some(c), pki::Role::Admin) => match pki::verify_chain_links(&m.root, &m.chain, c, m.group.id, at(c)) {
            Ok(pki::Claim::Issuing { member, .. }) if member == identity.member_id() && c.spki == m.membership.spki => {
            }
            Ok(_) => return Err(bad("its issuing certificate is not this identity's".into())),
            Err(e) => return Err(bad(e.to_string())),
        },
        _ => return Err(bad("its issuing certificate does not match its role".into())),
    }
    m.creator = m.membership.is_signed_by(&m.root);
    m.group.check().map_err(|e| bad(e.to_string()))?;
    if m.bootstrap.iter().any(|a| crate::membership::parse_address(a).is_err()) {
        return Err(bad("a bootstrap address is not IP:PORT".into()));
    }
    m.bootstrap = crate::membership::merge_addresses(&m.bootstrap);
    let root_key = match (&file.root_key, m.creator) {
        (Some(pem), true) => {
            let key = root_key_of(pem, &m).map_err(bad)?;
            Some(key.serialize_pem())
        }
        (None, false) => None,
        _ => return Err(bad("the root key does not match its creator flag".into())),
    };
    if target.exists() {
        return Err(BackupError::AlreadyMember {
            identity: identity.name.clone(),
            group: m.group.name.clone(),
            id: m.group.id,
        });
    }
    let (records, membership, counts) = check_records(identity, &m, &file.records)?;
    if let Some(adopted) = membership {
        m = Membership {
            dir: target.clone(),
            ..adopted
        };
    }
    let staging = Staging::new(&target)?;
    home::write_new_file(&staging.join(MEMBERSHIP_FILE), m.to_json().as_bytes(), false)?;
    if let Some(pem) = root_key {
        home::write_new_file(&staging.join(ROOT_KEY_FILE), pem.as_bytes(), true)?;
    }
    {
        let mut store = Store::open(&staging.join(STORE_FILE), Durability::Normal)?;
        store.put_batch(&records)?;
    }
    staging.commit(&target)?;
    Ok(Imported {
        membership: m,
        kept: counts.0,
        refused: counts.1,
    })
}

/// The root key in `pem`, checked to be the root's of `m`.
fn root_key_of(pem: &str, m: &Membership) -> Result<rcgen::KeyPair, String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())?;
    let key = rcgen::KeyPair::from_der_and_sign_algo(
        &rustls_pki_types::PrivateKeyDer::Pkcs8(der),
        m.root.key_type.rcgen_algorithm(),
    )
    .map_err(|e| e.to_string())?;
    if pki::spki_of(&key) != m.root.spki {
        return Err("the root key does not match the group root".into());
    }
    Ok(key)
}

/// Runs `bodies` through a node of `m` (in memory, connected to nobody), as a peer's
/// records: what it stores is what the import keeps. Also the membership the node
/// adopted, if a credential for it was among them; and how many of `bodies` were kept
/// and left out.
type Checked = (Vec<Put>, Option<Membership>, (usize, usize));

fn check_records(identity: &Identity, m: &Membership, bodies: &[String]) -> Result<Checked, BackupError> {
    let all: Vec<Option<(Record, Vec<u8>)>> = bodies
        .iter()
        .map(|b| B64.decode(b).ok().and_then(|b| Record::decode(&b).ok().map(|r| (r, b))))
        .collect();
    let undecodable = all.iter().filter(|d| d.is_none()).count();
    let mut decoded: Vec<(Record, Vec<u8>)> = all
        .into_iter()
        .flatten()
        .filter(|(r, _)| r.rtype != PRESENCE_TYPE)
        .collect();
    let copies: Vec<(uuid::Uuid, [u8; 16])> = decoded.iter().map(|(r, _)| (r.id, r.digest())).collect();
    // What proves others first (a record held for its creator's membership is released
    // when it comes, but this spares the holding).
    let rank = |t: &uuid::Uuid| match *t {
        t if t == MEMBERSHIP_TYPE => 0,
        t if t == CREDENTIAL_TYPE => 1,
        t if t == REVOCATION_TYPE => 2,
        t if t == PROPERTIES_TYPE => 3,
        _ => 4,
    };
    decoded.sort_by_key(|(r, _)| (rank(&r.rtype), r.created_ms));
    let now = Now {
        instant: std::time::Instant::now(),
        unix_ns: i64::try_from(clock::now_precise().unix_timestamp_nanos()).unwrap_or(i64::MAX),
    };
    let cfg = Config {
        identity: identity.duplicate(),
        membership: m.clone(),
        advertised: Vec::new(),
        advertise_given: false,
        peers: Vec::new(),
        max_neighbours: 0,
        discover: false,
        known: core::known::KnownPeers::default(),
        initial_messages: Vec::new(),
        seed: 1,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        quota: core::quota::QuotaLimits::default(),
        check_reach: false,
        record_events: false,
    };
    let mut node = Core::new(cfg, core::store::MemStore::new(), now).map_err(|e| BackupError::Core(e.to_string()))?;
    let bodies: Vec<Vec<u8>> = decoded.into_iter().map(|(_, b)| b).collect();
    node.handle(now, Input::Command(1, Command::Admit(bodies)));
    node.flush(now);
    let mut adopted = None;
    while let Some(o) = node.poll_output() {
        if let Output::Membership(m) = o {
            adopted = Some(*m);
        }
    }
    let now_ns = now.unix_ns;
    let puts: Vec<Put> = node
        .store()
        .records()
        // Presence is of a moment: the node publishes its own when it next runs.
        .filter(|r| r.rtype != PRESENCE_TYPE)
        .map(|r| Put::new(r.clone(), true, now_ns))
        .collect();
    let stored: std::collections::HashSet<(uuid::Uuid, [u8; 16])> =
        puts.iter().map(|p| (p.record.id, p.record.digest())).collect();
    let kept = copies.iter().filter(|c| stored.contains(c)).count();
    Ok((puts, adopted, (kept, copies.len() - kept + undecodable)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn pass(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn sealed_bytes_open_with_their_passphrase_only_and_any_change_is_caught() {
        let sealed = seal(b"secret stuff", &pass("correct horse"), Some(2)).unwrap();
        assert!(sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert_eq!(
            unseal("x", sealed.as_bytes(), &pass("correct horse")).unwrap(),
            b"secret stuff"
        );
        assert!(matches!(
            unseal("x", sealed.as_bytes(), &pass("wrong")),
            Err(BackupError::WrongPassphrase(_))
        ));
        // One changed character in the payload's armour.
        let mut bytes = sealed.into_bytes();
        let body_line = bytes.len() - 40;
        bytes[body_line] = if bytes[body_line] == b'A' { b'B' } else { b'A' };
        assert!(matches!(
            unseal("x", &bytes, &pass("correct horse")),
            Err(BackupError::NotAnExport(..))
        ));
        assert!(matches!(
            unseal("x", b"hello", &pass("correct horse")),
            Err(BackupError::NotAnExport(..))
        ));
    }

    /// Red-team finding: the work factor is in the file's unauthenticated header, and an
    /// import would spend whatever it named (gigabytes) before checking the passphrase.
    #[test]
    fn a_file_asking_for_more_scrypt_work_than_allowed_is_refused_at_once() {
        let mut recipient = age::scrypt::Recipient::new(pass("pw"));
        recipient.set_work_factor(2);
        let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient)).unwrap();
        let mut out = Vec::new();
        let mut w = encryptor.wrap_output(&mut out).unwrap();
        w.write_all(b"x").unwrap();
        w.finish().unwrap();
        // The stanza line is "-> scrypt SALT 2": make it ask for 2^22 (4 GiB), which age
        // alone would attempt on this machine.
        let text = String::from_utf8_lossy(&out).into_owned();
        let line = text.lines().find(|l| l.starts_with("-> scrypt ")).unwrap().to_string();
        let greedy = text.replacen(&line, &format!("{} 22", line.trim_end_matches(" 2")), 1);
        let started = std::time::Instant::now();
        assert!(matches!(
            unseal("x", greedy.as_bytes(), &pass("pw")),
            Err(BackupError::TooMuchWork(_))
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_passphrase_is_the_first_line_of_its_file_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "hunter2\r\nmore\n").unwrap();
        let p = read_passphrase(f.to_str().unwrap()).unwrap();
        assert_eq!(p.expose_secret(), "hunter2");
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(
            read_passphrase(f.to_str().unwrap()),
            Err(BackupError::EmptyPassphrase(_))
        ));
        std::fs::write(&f, vec![b'a'; MAX_PASSPHRASE_BYTES + 1]).unwrap();
        assert!(matches!(
            read_passphrase(f.to_str().unwrap()),
            Err(BackupError::PassphraseTooLong(_))
        ));
        assert!(matches!(
            read_passphrase(dir.path().join("none").to_str().unwrap()),
            Err(BackupError::PassphraseUnreadable(..))
        ));
    }

    /// A record store holding a chat message of alice's, a forged one and an expired
    /// one: the import keeps the first only, as a node would.
    #[test]
    fn a_group_comes_back_with_the_records_a_node_accepts_and_only_for_its_identity() {
        use crate::record::CHAT_TYPE;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ha, hb) = (
            Home::resolve(Some(a.path())).unwrap(),
            Home::resolve(Some(b.path())).unwrap(),
        );
        let alice = Identity::create(&ha, "alice", pki::KeyType::Ed25519, "Alice").unwrap();
        let spec = crate::group::GroupSpec {
            name: "Friends".into(),
            classifier: String::new(),
            listen: "127.0.0.1:0".parse().unwrap(),
            message_lifetime: std::time::Duration::from_secs(7 * 86_400),
            member_lifetime: std::time::Duration::from_secs(365 * 86_400),
            presence_lifetime: std::time::Duration::from_secs(300),
        };
        let m = crate::group::create(&ha, &alice, &spec).unwrap();
        let now_ms = clock::now().unix_timestamp() * 1000;
        let chat = |created_ms: i64, life_ms: i64, text: &str| {
            let mut r = Record::new(CHAT_TYPE, alice.member_id(), created_ms, life_ms);
            r.data = text.as_bytes().to_vec();
            r.sign(&m.group.id, &alice.key).unwrap();
            r
        };
        let good = chat(now_ms - 1000, 3_600_000, "kept");
        let mut forged = chat(now_ms - 900, 3_600_000, "forged");
        forged.data = b"changed after signing".to_vec();
        let expired = chat(now_ms - 2 * 86_400_000, 86_400_000, "expired");
        let mut store = Store::open(&m.dir.join(STORE_FILE), Durability::Normal).unwrap();
        let puts: Vec<Put> = [&good, &forged, &expired]
            .iter()
            .map(|r| Put::new((*r).clone(), false, 0))
            .collect();
        store.put_batch(&puts).unwrap();
        drop(store);
        let (sealed, n) = export_group(&m, &pass("pw"), Some(2)).unwrap();
        assert_eq!(n, 3);
        // Another identity cannot take it, and nothing is left behind.
        let bob = Identity::create(&hb, "bob", pki::KeyType::Ed25519, "Bob").unwrap();
        assert!(matches!(
            import_group(&hb, &bob, "x", sealed.as_bytes(), &pass("pw")),
            Err(BackupError::OtherIdentity { .. })
        ));
        assert!(crate::membership::list(&hb, "bob").unwrap().is_empty());
        let id_sealed = export_identity(&alice, &pass("pw"), Some(2)).unwrap();
        let alice_b = import_identity(&hb, "x", id_sealed.as_bytes(), &pass("pw"), None).unwrap();
        assert!(matches!(
            import_group(&hb, &alice_b, "x", id_sealed.as_bytes(), &pass("pw")),
            Err(BackupError::WrongKind { .. })
        ));
        let done = import_group(&hb, &alice_b, "x", sealed.as_bytes(), &pass("pw")).unwrap();
        assert_eq!((done.kept, done.refused), (1, 2));
        let back = Store::open_read_only(&done.membership.dir.join(STORE_FILE)).unwrap();
        let chats = back.of_type(&CHAT_TYPE).unwrap();
        assert_eq!(chats.len(), 1);
        assert_eq!(chats[0].id, good.id);
        assert!(
            done.membership.root_key().unwrap().is_some(),
            "the creator's root key came too"
        );
        assert!(matches!(
            import_group(&hb, &alice_b, "x", sealed.as_bytes(), &pass("pw")),
            Err(BackupError::AlreadyMember { .. })
        ));
        // Red-team finding: what membership.json says was taken on its word. Whoever
        // sealed the file (it needs only the passphrase) may have changed it.
        let plain = unseal("x", sealed.as_bytes(), &pass("pw")).unwrap();
        let file: GroupFile = serde_json::from_slice(&plain).unwrap();
        let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut json: serde_json::Value = serde_json::from_str(&file.membership).unwrap();
            edit(&mut json);
            let f = GroupFile {
                format: GROUP_FORMAT.into(),
                version: 1,
                membership: json.to_string(),
                root_key: file.root_key.clone(),
                records: Vec::new(),
            };
            seal(&serde_json::to_vec(&f).unwrap(), &pass("pw"), Some(2)).unwrap()
        };
        let c = tempfile::tempdir().unwrap();
        let hc = Home::resolve(Some(c.path())).unwrap();
        let alice_c = import_identity(&hc, "x", id_sealed.as_bytes(), &pass("pw"), None).unwrap();
        let junk = edited(&|j| j["bootstrap"] = serde_json::json!(["not an address"]));
        assert!(matches!(
            import_group(&hc, &alice_c, "x", junk.as_bytes(), &pass("pw")),
            Err(BackupError::BadMembership(..))
        ));
        let no_issuing = edited(&|j| j["issuing"] = serde_json::Value::Null);
        assert!(matches!(
            import_group(&hc, &alice_c, "x", no_issuing.as_bytes(), &pass("pw")),
            Err(BackupError::BadMembership(..))
        ));
        // The role and the creator flag come from the certificates, not the file.
        let demoted = edited(&|j| {
            j["role"] = serde_json::json!("member");
            j["creator"] = serde_json::json!(false);
        });
        let done = import_group(&hc, &alice_c, "x", demoted.as_bytes(), &pass("pw")).unwrap();
        assert_eq!(done.membership.role, pki::Role::Admin);
        assert!(done.membership.creator);
    }

    #[test]
    fn an_identity_comes_back_with_its_key_and_is_not_imported_twice() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (ha, hb) = (
            Home::resolve(Some(a.path())).unwrap(),
            Home::resolve(Some(b.path())).unwrap(),
        );
        let alice = Identity::create(&ha, "alice", pki::KeyType::Ed25519, "Alice").unwrap();
        let sealed = export_identity(&alice, &pass("pw"), Some(2)).unwrap();
        assert!(matches!(
            import_identity(&hb, "x", sealed.as_bytes(), &pass("nope"), None),
            Err(BackupError::WrongPassphrase(_))
        ));
        assert!(
            hb.identity_names().unwrap_or_default().is_empty(),
            "nothing half-written"
        );
        let back = import_identity(&hb, "x", sealed.as_bytes(), &pass("pw"), None).unwrap();
        assert_eq!(back.member_id(), alice.member_id());
        let loaded = Identity::load(&hb, "alice").unwrap();
        assert_eq!(loaded.key.serialize_der(), alice.key.serialize_der());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(hb.identity_dir("alice").join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            import_identity(&hb, "x", sealed.as_bytes(), &pass("pw"), None),
            Err(BackupError::NameTaken(_))
        ));
        assert!(matches!(
            import_identity(&hb, "x", sealed.as_bytes(), &pass("pw"), Some("alice2")),
            Err(BackupError::AlreadyHere { .. })
        ));
    }
}
