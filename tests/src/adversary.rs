//! The attacker's side: a member (or an outsider) that speaks TLS to alice from the
//! test itself, to present credentials no member holds and to send records and frames
//! no honest peer would. Each attack waits until alice has judged what it sent (a
//! control record reaching bob and carol, or alice cutting the connection), so that a
//! check after it proves something.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::record::{self, CHAT_TYPE, MEMBERSHIP_TYPE, Record};
use common::wire::{Message, PROTOCOL_VERSION, Purpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::group::{GROUP, Member, WAIT, member_connection, send_inside_tls};
use crate::honest::{Honest, Latency, MIN_PHASE, conns};
use crate::unix_ms;
use common::member::MemberId;

/// A group's default message lifetime (7 days), in ms.
pub const MESSAGE_LIFETIME_MS: i64 = 7 * 86_400 * 1000;

/// A member's credentials, loaded from its home, to sign records and speak TLS with.
pub struct Creds {
    /// The member's id, as records carry it.
    pub id: MemberId,
    /// The member's identity (its key signs records and TLS handshakes).
    pub identity: common::identity::Identity,
    /// The member's membership of [`GROUP`], with its chain.
    pub membership: common::membership::Membership,
}

// By hand: the identity holds a secret key, and has no `Debug` of its own.
impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("id", &self.id)
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl Creds {
    /// Loads `m`'s credentials for [`GROUP`] from its home.
    pub fn of(m: &Member) -> Creds {
        let home = common::home::Home::resolve(Some(m.home.path())).unwrap();
        let identity = common::identity::Identity::load(&home, m.name).unwrap();
        let membership = common::membership::find(&home, m.name, GROUP).unwrap();
        Creds {
            id: m.id.parse().unwrap(),
            identity,
            membership,
        }
    }

    /// The membership certificate then its chain, DER.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        let m = &self.membership;
        std::iter::once(&m.membership)
            .chain(&m.chain)
            .map(|c| c.der.clone())
            .collect()
    }

    /// Signs `r` with this member's identity key, for the group.
    pub fn sign(&self, mut r: Record) -> Record {
        r.sign(&self.membership.group.id, &self.identity.key).unwrap();
        r
    }

    /// The membership record the member's own node publishes.
    pub fn membership_record(&self) -> Record {
        let m = &self.membership;
        let mut r = Record::new(MEMBERSHIP_TYPE, self.id, unix_ms(), 0);
        r.id = record::per_member_id(&MEMBERSHIP_TYPE, &self.id);
        r.version = m.membership.not_before.unix_timestamp() as u64;
        r.expires_ms = m.membership.not_after.unix_timestamp() * 1000;
        r.data = common::node::encode_chain(&m.membership, &m.chain);
        self.sign(r)
    }

    /// The store of this member's node, read beside it.
    pub fn store(&self) -> common::store::Store {
        common::store::Store::open_read_only(&self.membership.dir.join(common::store::STORE_FILE)).unwrap()
    }
}

/// A chat record by `creator` (also its modifier) with the group's lifetime, unsigned.
pub fn chat(creator: MemberId, text: &str, created_ms: i64) -> Record {
    let mut r = Record::new(CHAT_TYPE, creator, created_ms, MESSAGE_LIFETIME_MS);
    r.data = text.as_bytes().to_vec();
    r
}

// ---- TLS as an attacker ------------------------------------------------------------

/// Accepts any server certificate: the attacker wants to reach alice's verifier, not to
/// be stopped by its own.
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A TLS 1.3 client config presenting `chain` (leaf first) with `key`.
pub fn client_config(chain: Vec<Vec<u8>>, key: &rcgen::KeyPair) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let certs = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(algorithms)))
        .with_client_auth_cert(certs, key)
        .unwrap();
    config.enable_sni = false;
    Arc::new(config)
}

/// Dials `addr` with `config`, sends a Hello and waits for the member's answer. A
/// member that accepted would send its Hello; `Ok` is how long it took to refuse (an
/// alert, a reset or end of stream), `Err` says what happened instead.
pub fn tls_attempt(config: &Arc<ClientConfig>, addr: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), common::tls::server_name(None).unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let hello = Message::Hello {
        version: PROTOCOL_VERSION,
        purpose: Purpose::Neighbour,
        addresses: Vec::new(),
        nonce: 1,
    };
    // The member may refuse before this is written: that is its answer.
    let _ = s.write_all(&hello.encode()).and_then(|_| s.flush());
    let mut got = 0;
    let mut buf = [0u8; 4096];
    while start.elapsed() < WAIT {
        match s.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(n) => {
                got += n;
                return Err(format!("accepted: the member sent {got} bytes of frames"));
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Ok(start.elapsed()),
        }
    }
    Err(format!("still open after {WAIT:?}"))
}

/// Tries `config` against alice again and again for the phase; each try must be refused
/// within 5 s. Returns how many were made.
pub fn keep_knocking(addr: &str, config: &Arc<ClientConfig>, who: &str) -> usize {
    let start = Instant::now();
    let mut tries = 0;
    while start.elapsed() < MIN_PHASE {
        match tls_attempt(config, addr) {
            Ok(t) => assert!(t < Duration::from_secs(5), "{who}: refused only after {t:?}"),
            Err(e) => panic!("{who}: {e}"),
        }
        tries += 1;
        // A persistent attacker, not a handshake flood: 10 tries a second.
        std::thread::sleep(Duration::from_millis(100));
    }
    tries
}

/// Credentials no member holds, each a description, a chain (DER, leaf first) and its
/// key: self-signed certificates of several kinds, and a membership of this group issued
/// by a look-alike root with the group's id.
pub fn forged_credentials(group: common::membership::GroupInfo) -> Vec<(&'static str, Vec<Vec<u8>>, rcgen::KeyPair)> {
    use common::pki::{self, CertSpec, Claim, KeyType, Role};
    let now = common::clock::now();
    let from = common::clock::from_unix(now.unix_timestamp() - 60);
    let until = common::clock::add(now, Duration::from_secs(3600));
    let spec = |claim: Claim| CertSpec {
        common_name: "mallory".into(),
        claim,
        not_before: from,
        not_after: until,
    };
    let mut out = Vec::new();
    // A stranger's identity certificate (what identity-export makes), self-signed.
    let key = KeyType::Ed25519.generate().unwrap();
    out.push((
        "a self-signed identity certificate",
        vec![pki::self_signed(&spec(Claim::Identity), &key).unwrap()],
        key,
    ));
    // A self-signed certificate claiming admin membership of this very group.
    let key = KeyType::Ed25519.generate().unwrap();
    let claim = Claim::Membership {
        group: group.id,
        member: pki::member_id(&pki::spki_of(&key)),
        role: Role::Admin,
    };
    out.push((
        "a self-signed admin membership of this group",
        vec![pki::self_signed(&spec(claim), &key).unwrap()],
        key,
    ));
    // A membership issued by a look-alike root of the same group id.
    let key = KeyType::Ed25519.generate().unwrap();
    let root_key = KeyType::Ed25519.generate().unwrap();
    let root = pki::self_signed(&spec(Claim::Root { group: group.id }), &root_key).unwrap();
    let claim = Claim::Membership {
        group: group.id,
        member: pki::member_id(&pki::spki_of(&key)),
        role: Role::Admin,
    };
    let leaf = pki::issue(&spec(claim), &pki::spki_of(&key), &root, &root_key).unwrap();
    out.push(("a membership from a look-alike root", vec![leaf, root], key));
    // An ordinary self-signed TLS certificate (P-256), nothing peergroup about it.
    let generic = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    out.push((
        "a generic self-signed certificate",
        vec![generic.cert.der().to_vec()],
        generic.signing_key,
    ));
    out
}

// ---- records and frames as an attacker -----------------------------------------------

/// A member's TLS connection, as the attacker holds it.
pub type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// `attacker`'s own connection to alice, once alice has taken it up (frames sent before
/// alice knows the connection would not be looked at, and the test would prove nothing).
pub fn connect_to_alice(h: &Honest, attacker: &Member) -> Stream {
    let before = conns(&h.events(0), "up", &attacker.id);
    let s = member_connection(attacker, &h.members[0].addr);
    h.wait(0, &format!("{} connected", attacker.name), |evs| {
        conns(evs, "up", &attacker.id) > before
    });
    s
}

/// Sends each of `records` to alice in a Records frame of its own (flooded and sync
/// frames alternately), then a control record: a chat line `"{label}: control"` by
/// `attacker` (whose credentials are `c`), which alice must admit and forward. Once bob
/// and carol show it, alice has judged everything sent before it.
pub fn send_records(h: &Honest, attacker: &Member, c: &Creds, records: &[Record], label: &str) {
    let control_text = format!("{label}: control");
    let control = c.sign(chat(c.id, &control_text, unix_ms()));
    let mut s = connect_to_alice(h, attacker);
    for (i, r) in records.iter().enumerate() {
        let frame = Message::Records {
            sync: i % 2 == 1,
            bodies: vec![r.encode()],
        };
        s.write_all(&frame.encode()).expect("send records");
    }
    let frame = Message::Records {
        sync: false,
        bodies: vec![control.encode()],
    };
    s.write_all(&frame.encode())
        .and_then(|_| s.flush())
        .expect("send records");
    h.wait_everywhere(&control_text);
    // A record alice admitted was flooded to bob and carol before the control record;
    // give a crossing sync a moment all the same.
    std::thread::sleep(Duration::from_millis(300));
}

/// Asserts that none of alice, bob and carol stored a record with `r`'s id, version and
/// signature.
#[track_caller]
pub fn assert_not_stored(stores: &[common::store::Store], r: &Record, what: &str) {
    for (i, store) in stores.iter().enumerate() {
        let held = store.get(&r.id).unwrap();
        assert!(
            held.as_ref().is_none_or(|held| held.signature != r.signature),
            "{what}: admitted by {}",
            ["alice", "bob", "carol"][i]
        );
    }
}

/// An attack phase in which `attacker` opens connection after connection, each sending
/// `bytes(n)` for the n-th, and each must be cut (see [`cut_off`]).
pub fn cut_phase(
    h: &Honest,
    attacker: &Member,
    what: &str,
    calm: Latency,
    bytes: impl Fn(u32) -> (&'static str, Vec<u8>),
) {
    let cuts = h.attack(what, what, calm, |_| {
        let start = Instant::now();
        let mut cuts = Vec::new();
        for n in 0u32.. {
            if start.elapsed() >= MIN_PHASE {
                break;
            }
            let (label, b) = bytes(n);
            cuts.push(cut_off(h, attacker, label, &b));
        }
        cuts
    });
    eprintln!(
        "{what}: {} connections cut, the slowest after {:?}",
        cuts.len(),
        cuts.iter().max().unwrap()
    );
}

/// A connection of `attacker`'s to alice sends `bytes`: alice must cut it within 2 s
/// and report it down, saying why; returns how long the cut took.
pub fn cut_off(h: &Honest, attacker: &Member, what: &str, bytes: &[u8]) -> Duration {
    let mut s = connect_to_alice(h, attacker);
    let before = conns(&h.events(0), "down", &attacker.id);
    let cut = send_inside_tls(&mut s, bytes, Duration::from_secs(5));
    let cut = cut.unwrap_or_else(|| panic!("{what}: still connected after 5 s"));
    assert!(cut < Duration::from_secs(2), "{what}: cut off only after {cut:?}");
    let events = h.wait(0, &format!("{} down ({what})", attacker.name), |evs| {
        conns(evs, "down", &attacker.id) > before
    });
    let down = events
        .iter()
        .rfind(|e| e["event"] == "connection" && e["change"] == "down" && e["member"] == attacker.id.as_str())
        .unwrap();
    let reason = down["reason"].as_str().unwrap_or_default();
    assert!(
        ["frame", "record", "sync", "hello"].iter().any(|w| reason.contains(w)),
        "{what}: unclear reason: {down}"
    );
    cut
}

/// Pseudo-random bytes (xorshift), the same for the same seed.
pub fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// One frame: length prefix, then `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}
