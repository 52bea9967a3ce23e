//! TLS 1.3 with mutual authentication between members of one group.
//!
//! Both sides present their membership chain and verify the other's against the group
//! root with [`pki::verify_chain`] (every link's dates, the root's own dates, group,
//! roles) and then through webpki as well. Peers are dialled by IP and identified by
//! member id: the client names the member it expects as the server name
//! `<member-id>.member.invalid` (or `any.member.invalid` for any member), SNI is off.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use thiserror::Error;
use uuid::Uuid;

use crate::clock;
use crate::identity::Identity;
use crate::member::MemberId;
use crate::membership::Membership;
use crate::pki::{self, Cert, Claim};

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
    let verifier = Arc::new(GroupVerifier {
        root: m.root.clone(),
        group: m.group.id,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut chain = vec![CertificateDer::from(m.membership.der.clone())];
    chain.extend(m.chain.iter().map(|c| CertificateDer::from(c.der.clone())));
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.serialize_der()));
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain.clone(), key())?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key())?;
    client.enable_sni = false;
    Ok(TlsConfigs {
        server: Arc::new(server),
        client: Arc::new(client),
    })
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
        match pki::verify_chain(&self.root, &issuers, &leaf, self.group, clock::now()) {
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

/// Makes sure the process-wide default provider is aws-lc-rs (rustls panics if two are
/// compiled in and none is chosen).
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default(rustls::crypto::aws_lc_rs::default_provider());
}
