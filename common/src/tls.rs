//! TLS 1.3 with mutual authentication between members of one group.
//!
//! Both sides present their membership chain and verify the other's against the group
//! root with [`pki::verify_chain`] (every link's dates, the root's own dates, group,
//! roles) and then through webpki as well. Peers are dialled by IP and identified by
//! member id: the client names the member it expects as the server name
//! `<member-id>.member.invalid` (or `any.member.invalid` for any member), SNI is off.
//!
//! One exception: a joiner with a password invitation is not a member yet. It offers
//! the ALPN protocol [`JOIN_ALPN`], presents its self-signed identity certificate, and
//! the server answers with [`TlsConfigs::join_server`], whose connections carry the
//! password exchange only ([`crate::node::join`]), never the group's protocol.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use thiserror::Error;
use uuid::Uuid;

use crate::clock;
use crate::identity::Identity;
use crate::member::MemberId;
use crate::membership::Membership;
use crate::pki::{self, Cert, Claim, PkiError};

/// What a dial that reached another member than the expected one fails with (inside
/// rustls' certificate error, so the dialler can tell it from other failures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongMember {
    /// Who answered.
    pub found: MemberId,
    /// The server name dialled.
    pub dialled: String,
}

impl fmt::Display for WrongMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the peer is member {}, not the one dialled ({})",
            self.found, self.dialled
        )
    }
}

impl std::error::Error for WrongMember {}

/// The [`WrongMember`] inside a failed TLS connect, if that is why it failed.
pub fn wrong_member(e: &std::io::Error) -> Option<&WrongMember> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => o.0.downcast_ref::<WrongMember>(),
        _ => None,
    }
}

/// Server name that accepts any member of the group.
pub const ANY_MEMBER: &str = "any.member.invalid";
/// The ALPN protocol of a password join.
pub const JOIN_ALPN: &[u8] = b"peergroup-join/1";
/// The ALPN protocol of a relay circuit (see `node::relay`): members on both sides, as
/// on any member connection, but the connection carries a circuit, not frames.
pub const RELAY_ALPN: &[u8] = b"peergroup-relay/1";

/// Errors setting up TLS.
#[derive(Debug, Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
    /// A server name could not be built.
    #[error("invalid member id {0:?}")]
    BadMember(String),
}

/// The TLS configurations of one membership.
#[derive(Clone)]
pub struct TlsConfigs {
    /// For accepting peers.
    pub server: Arc<ServerConfig>,
    /// For dialling peers.
    pub client: Arc<ClientConfig>,
    /// For dialling a relay (see [`RELAY_ALPN`]).
    pub relay_client: Arc<ClientConfig>,
    /// For accepting a password joiner (see [`JOIN_ALPN`]).
    pub join_server: Arc<ServerConfig>,
    /// The chain and key both present: replaced when the membership is renewed.
    current: Arc<CurrentCert>,
    /// Who holds a newer certificate, and until when.
    renewed: Arc<Renewed>,
}

impl TlsConfigs {
    /// Notes that `member` holds a certificate valid until `until` (unix seconds, the
    /// latest noted wins): an older, ended one of its still gets it in.
    pub fn note_renewed(&self, member: MemberId, until: i64) {
        let mut map = self.renewed.0.write().unwrap_or_else(|e| e.into_inner());
        let t = map.entry(member).or_insert(until);
        *t = (*t).max(until);
    }

    /// Presents `m`'s certificates from the next handshake on (a renewal; connections
    /// already up keep theirs).
    pub fn present(&self, m: &Membership) -> Result<(), TlsError> {
        let key = certified_key(&self.current.pkcs8, m, &self.current.provider)?;
        *self.current.key.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

/// The certificate both configurations present, swapped in place on renewal.
struct CurrentCert {
    key: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
    /// The identity's private key (PKCS#8), for the next chain.
    pkcs8: Vec<u8>,
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.write_str("CurrentCert")
    }
}

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The membership chain (leaf first) with the identity's key.
fn certified_key(pkcs8: &[u8], m: &Membership, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut chain = vec![CertificateDer::from(m.membership.der.clone())];
    chain.extend(m.chain.iter().map(|c| CertificateDer::from(c.der.clone())));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    Ok(Arc::new(CertifiedKey::from_der(chain, key, provider)?))
}

impl fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfigs")
    }
}

/// The server name to dial a member with (`None`: any member).
pub fn server_name(member: Option<&MemberId>) -> Result<ServerName<'static>, TlsError> {
    let name = match member {
        Some(m) => pki::member_dns_name(m),
        None => ANY_MEMBER.to_string(),
    };
    ServerName::try_from(name.clone()).map_err(|_| TlsError::BadMember(name))
}

/// Builds both configurations from a membership and the identity's key.
pub fn configs(identity: &Identity, m: &Membership) -> Result<TlsConfigs, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let renewed = Arc::new(Renewed::default());
    let verifier = Arc::new(GroupVerifier {
        root: m.root.clone(),
        group: m.group.id,
        algorithms: provider.signature_verification_algorithms,
        renewed: renewed.clone(),
    });
    let pkcs8 = identity.key.serialize_der();
    let current = Arc::new(CurrentCert {
        key: RwLock::new(certified_key(&pkcs8, m, &provider)?),
        provider: provider.clone(),
        pkcs8,
    });
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(current.clone());
    let mut join_server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(JoinerVerifier {
            algorithms: provider.signature_verification_algorithms,
        }))
        .with_cert_resolver(current.clone());
    join_server.alpn_protocols = vec![JOIN_ALPN.to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(current.clone());
    client.enable_sni = false;
    let mut relay_client = client.clone();
    relay_client.alpn_protocols = vec![RELAY_ALPN.to_vec()];
    Ok(TlsConfigs {
        server: Arc::new(server),
        client: Arc::new(client),
        relay_client: Arc::new(relay_client),
        join_server: Arc::new(join_server),
        current,
        renewed,
    })
}

/// The issuers the peer presented after its certificate (already verified).
pub fn peer_chain(certs: Option<&[CertificateDer<'_>]>) -> Vec<Cert> {
    certs
        .unwrap_or_default()
        .iter()
        .skip(1)
        .filter_map(|c| Cert::parse(c, "a chain certificate").ok())
        .collect()
}

/// The peer's membership certificate after a completed handshake.
pub fn peer_certificate(certs: Option<&[CertificateDer<'_>]>) -> Option<Cert> {
    Cert::parse(certs?.first()?, "the peer's certificate").ok()
}

/// Verifies a peer's chain against the group root, for both client and server.
struct GroupVerifier {
    root: Cert,
    group: Uuid,
    algorithms: WebPkiSupportedAlgorithms,
    renewed: Arc<Renewed>,
}

/// Members known to hold a newer certificate than one they may still present, and
/// until when it is valid (unix seconds): a member that was away past its end gets in
/// with the old one (for the same key) and adopts the new one from the group's records.
#[derive(Debug, Default)]
struct Renewed(RwLock<HashMap<MemberId, i64>>);

impl Renewed {
    fn valid_now(&self, member: &MemberId) -> bool {
        let until = self.0.read().unwrap_or_else(|e| e.into_inner()).get(member).copied();
        until.is_some_and(|t| t >= clock::now().unix_timestamp())
    }
}

impl fmt::Debug for GroupVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupVerifier")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl GroupVerifier {
    /// Checks the chain; returns the member id it certifies.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<MemberId, rustls::Error> {
        let refuse = |why: String| rustls::Error::General(format!("not a member of this group: {why}"));
        if intermediates.len() > pki::MAX_ISSUING_LINKS {
            return Err(refuse("chain too long".into()));
        }
        let leaf = Cert::parse(end_entity, "the peer's membership certificate").map_err(|e| refuse(e.to_string()))?;
        let issuers = intermediates
            .iter()
            .map(|c| Cert::parse(c, "a chain certificate"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(e.to_string()))?;
        let now = clock::now();
        let checked = match pki::verify_chain(&self.root, &issuers, &leaf, self.group, now) {
            // Ended, but the group holds a newer certificate for this key: the chain
            // must have been sound at its end.
            Err(PkiError::Expired { .. }) if leaf.not_after < now && self.renewed.valid_now(&leaf.member_id) => {
                pki::verify_chain(&self.root, &issuers, &leaf, self.group, leaf.not_after)
            }
            other => other,
        };
        match checked {
            Ok(Claim::Membership { member, .. }) => Ok(member),
            Ok(_) => Err(refuse("not a membership certificate".into())),
            Err(e) => Err(refuse(e.to_string())),
        }
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for GroupVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let member = self.check(end_entity, intermediates)?;
        if let ServerName::DnsName(name) = server_name
            && name.as_ref() != ANY_MEMBER
            && name.as_ref() != pki::member_dns_name(&member)
        {
            let wrong = WrongMember {
                found: member,
                dialled: name.as_ref().to_string(),
            };
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                rustls::OtherError(Arc::new(wrong)),
            )));
        }
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
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for GroupVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
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
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The configuration a password joiner dials the issuing admin with: it presents its
/// identity certificate and expects a member of the group under `root` (the server name
/// says which).
pub fn joiner_client(identity: &Identity, root: &Cert, group: Uuid) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(GroupVerifier {
        root: root.clone(),
        group,
        algorithms: provider.signature_verification_algorithms,
        renewed: Arc::new(Renewed::default()),
    });
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.serialize_der()));
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![CertificateDer::from(identity.cert.der.clone())], key)?;
    client.enable_sni = false;
    client.alpn_protocols = vec![JOIN_ALPN.to_vec()];
    Ok(Arc::new(client))
}

/// Accepts a joiner's self-signed identity certificate (alone, valid now): what the
/// handshake proves is that the joiner holds its key; the password proves the rest.
struct JoinerVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for JoinerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinerVerifier")
    }
}

impl ClientCertVerifier for JoinerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let refuse = |why: &str| rustls::Error::General(format!("not an identity certificate: {why}"));
        if !intermediates.is_empty() {
            return Err(refuse("it comes with a chain"));
        }
        let cert = Cert::parse(end_entity, "the joiner's identity certificate").map_err(|e| refuse(&e.to_string()))?;
        if cert.claim != Claim::Identity || !cert.is_signed_by(&cert) {
            return Err(refuse("it is not a self-signed peergroup identity"));
        }
        let now = clock::now();
        if now < cert.not_before || now > cert.not_after {
            return Err(refuse("it is outside its validity"));
        }
        Ok(ClientCertVerified::assertion())
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
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Makes sure the process-wide default provider is aws-lc-rs (rustls panics if two are
/// compiled in and none is chosen).
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default(rustls::crypto::aws_lc_rs::default_provider());
}
