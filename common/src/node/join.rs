//! Password joins over the network: the issuing admin's node answers a joiner that
//! reached it with the [`tls::JOIN_ALPN`] protocol ([`JoinService::serve`]), and
//! `group-join --password-file` asks ([`request`]). The rules are in
//! [`crate::password`]; this is their I/O.
//!
//! The connection carries four JSON frames and nothing of the group's: the joiner's
//! SPAKE2 message, the admin's message and confirmation, the joiner's confirmation, and
//! the admin's ordinary invitation for the joiner's identity (or a refusal).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use uuid::Uuid;

use crate::clock;
use crate::identity::{Identity, PublicIdentity};
use crate::invitation::{Invitation, InviteSpec};
use crate::member::MemberId;
use crate::membership::Membership;
use crate::password::{
    self, Admitter, Challenge, EXPORTER_LABEL, Grant, JoinProof, JoinRequest, Joiner, Outcome, PasswordInvitation,
    Refusal,
};
use crate::tls;

/// How long each step of the exchange may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole exchange may take on the admin's side (it holds a handshake slot).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest frame a joiner may send (its messages are a few hundred bytes).
const MAX_JOINER_FRAME: usize = 4096;
/// The largest frame the admin's node may send (an invitation).
const MAX_ADMIN_FRAME: usize = 512 * 1024;
/// How long the joiner waits to reach one address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the invitation the admin's node issues can be used (the joiner uses it at
/// once; an hour leaves room for a joiner whose clock is off).
const ISSUED_EXPIRES: Duration = Duration::from_secs(3600);

/// Why a password join failed, on the joiner's side.
#[derive(Debug, Error)]
pub enum JoinError {
    /// No address of the admin answered.
    #[error(
        "cannot reach the admin who issued the invitation ({issuer}) at {addresses}: its group-chat must be running; last error: {last}"
    )]
    Unreachable {
        /// The admin.
        issuer: String,
        /// Where it was tried.
        addresses: String,
        /// The last failure.
        last: String,
    },
    /// The admin's node turned the joiner away.
    #[error("the admin's node refused: {0}")]
    Refused(String),
    /// The password did not match what the admin's node knows.
    #[error("{0}")]
    WrongPassword(String),
    /// The exchange broke off.
    #[error("the exchange with the admin's node failed: {0}")]
    Exchange(String),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The admin's side: answers password joiners for one membership.
#[derive(Debug)]
pub struct JoinService {
    identity: Identity,
    dir: PathBuf,
    /// One exchange at a time per invitation: its guesses and uses are counted in
    /// order.
    turns: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl JoinService {
    /// The service of `identity`'s membership kept in `dir`.
    pub fn new(identity: &Identity, dir: PathBuf) -> JoinService {
        JoinService {
            identity: identity.duplicate(),
            dir,
            turns: Mutex::new(HashMap::new()),
        }
    }

    fn turn(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(id).or_default().clone()
    }

    /// Forgets `id`'s turn when nobody else holds it, so the map holds only exchanges
    /// under way.
    fn end_turn(&self, id: Uuid, turn: Arc<tokio::sync::Mutex<()>>) {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's.
        if Arc::strong_count(&turn) == 2 {
            turns.remove(&id);
        }
    }

    /// The grant of invitation `id` kept here.
    fn grant(&self, id: &Uuid) -> Result<Grant, Refusal> {
        Grant::load(&self.dir, id)
            .map_err(|e| Refusal::Issue(e.to_string()))?
            .ok_or(Refusal::Unknown)
    }

    /// Exchanges under way.
    pub fn turns(&self) -> usize {
        self.turns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Runs one exchange with a joiner on `stream` (a [`tls::JOIN_ALPN`] connection).
    /// Returns what happened, for the node's log.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        joiner: &PublicIdentity,
        exporter: &[u8],
    ) -> Result<String, String> {
        let req: JoinRequest = step(read_json(stream, MAX_JOINER_FRAME)).await?;
        let who = format!("{} ({})", joiner.friendly_name(), joiner.member_id());
        match self.exchange(stream, joiner, exporter, &req).await {
            Ok(()) => Ok(format!("{who} joined with password invitation {}", req.invitation)),
            Err(refusal) => {
                let _ = step(write_json(stream, &Outcome::Refused(refusal.to_string()))).await;
                let _ = tokio::time::timeout(STEP_TIMEOUT, stream.shutdown()).await;
                // The details of a failure to issue stay here, never sent to the joiner.
                let detail = match &refusal {
                    Refusal::Issue(d) => format!(": {d}"),
                    _ => String::new(),
                };
                Err(format!("password join of {who} refused: {refusal}{detail}"))
            }
        }
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        joiner: &PublicIdentity,
        exporter: &[u8],
        req: &JoinRequest,
    ) -> Result<(), Refusal> {
        // Unknown ids are turned away before anything is kept for them.
        self.grant(&req.invitation)?;
        let turn = self.turn(req.invitation);
        let result = match turn.clone().try_lock_owned() {
            // One exchange at a time per invitation; another waits for nothing.
            Err(_) => Err(Refusal::Busy),
            Ok(_held) => self.exchange_in_turn(stream, joiner, exporter, req).await,
        };
        self.end_turn(req.invitation, turn);
        result
    }

    async fn exchange_in_turn<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        joiner: &PublicIdentity,
        exporter: &[u8],
        req: &JoinRequest,
    ) -> Result<(), Refusal> {
        let issue = |e: &dyn std::fmt::Display| Refusal::Issue(e.to_string());
        // Read again in turn: the one read before may be stale by now.
        let mut grant = self.grant(&req.invitation)?;
        let joiner_id = joiner.member_id();
        grant.check(&joiner_id, clock::now())?;
        // Counted before the answer: a joiner who stops half-way has used a guess.
        grant.wrong += 1;
        grant.save(&self.dir).map_err(|e| issue(&e))?;
        let wrong = Refusal::WrongPassword {
            wrong: grant.wrong,
            max: grant.max_wrong,
        };
        let (admitter, challenge) =
            Admitter::on_request(&grant, &joiner.member_id(), &self.identity.member_id(), req, exporter)?;
        step(write_json(stream, &challenge)).await.map_err(|_| wrong.clone())?;
        let proof: JoinProof = step(read_json(stream, MAX_JOINER_FRAME))
            .await
            .map_err(|_| wrong.clone())?;
        if !admitter.on_proof(&proof) {
            return Err(wrong);
        }
        grant.wrong -= 1;
        // Signing and reading the store block: off the node's thread.
        let (identity, dir, g, j) = (
            self.identity.duplicate(),
            self.dir.clone(),
            grant.clone(),
            joiner.clone(),
        );
        let invitation = tokio::task::spawn_blocking(move || issue_for(&identity, dir, &g, &j))
            .await
            .unwrap_or_else(|e| Err(Refusal::Issue(e.to_string())));
        let xml = match invitation {
            Ok(xml) => xml,
            Err(e) => {
                grant.save(&self.dir).map_err(|e| issue(&e))?;
                return Err(e);
            }
        };
        grant.spend(joiner_id);
        grant.save(&self.dir).map_err(|e| issue(&e))?;
        step(write_json(stream, &Outcome::Invitation(xml)))
            .await
            .map_err(|e| Refusal::Issue(format!("the joiner left before its invitation was sent: {e}")))?;
        Ok(())
    }
}

/// An ordinary invitation for `joiner`, as `invite-create` would make it now, from the
/// membership saved in `dir` (a renewal since the node started included).
fn issue_for(identity: &Identity, dir: PathBuf, grant: &Grant, joiner: &PublicIdentity) -> Result<String, Refusal> {
    let m = Membership::load(&identity.name, dir).map_err(|e| Refusal::Issue(e.to_string()))?;
    let spec = InviteSpec {
        role: grant.role,
        valid_for: grant.valid_for_secs.map(Duration::from_secs),
        expires: ISSUED_EXPIRES,
        addresses: Vec::new(),
    };
    let inv = Invitation::create(identity, &m, joiner, &spec).map_err(|e| Refusal::Issue(e.to_string()))?;
    Ok(inv.to_xml())
}

/// The joiner's side: reaches the admin who issued `inv` at its addresses, proves it
/// knows `password` for `identity`, and returns the ordinary invitation the admin's
/// node issued for it (XML, to check and join as any invitation).
pub async fn request(inv: &PasswordInvitation, identity: &Identity, password: &str) -> Result<String, JoinError> {
    let body = &inv.body;
    let secret = password::derive_secret(password, &body.invitation_id);
    let connector = TlsConnector::from(tls::joiner_client(identity, &inv.root, body.group.id)?);
    let name = tls::server_name(Some(&body.issuer_id))?;
    let mut last = String::from("no address to try");
    for addr in &body.addresses {
        let reached = async {
            let tcp = within(CONNECT_TIMEOUT, TcpStream::connect(addr.as_str())).await?;
            let _ = tcp.set_nodelay(true);
            within(STEP_TIMEOUT, connector.connect(name.clone(), tcp))
                .await
                .map_err(|e| format!("TLS: {e}"))
        };
        let mut stream = match reached.await {
            Ok(s) => s,
            Err(e) => {
                last = format!("{addr}: {e}");
                continue;
            }
        };
        let mut exporter = [0u8; 32];
        stream
            .get_ref()
            .1
            .export_keying_material(&mut exporter, EXPORTER_LABEL, None)
            .map_err(|e| JoinError::Exchange(e.to_string()))?;
        return exchange(
            &mut stream,
            &secret,
            identity.member_id(),
            body.issuer_id,
            body.invitation_id,
            &exporter,
        )
        .await;
    }
    Err(JoinError::Unreachable {
        issuer: format!("{} ({})", body.issuer_name, body.issuer_id),
        addresses: body.addresses.join(", "),
        last,
    })
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &[u8; 32],
    me: MemberId,
    admin: MemberId,
    invitation: Uuid,
    exporter: &[u8],
) -> Result<String, JoinError> {
    let broke = JoinError::Exchange;
    let (joiner, req) = Joiner::start(secret, &me, &admin, &invitation);
    step(write_json(stream, &req)).await.map_err(broke)?;
    let (spake, confirm) = match step(read_json::<_, Challenge>(stream, MAX_ADMIN_FRAME))
        .await
        .map_err(broke)?
    {
        Challenge::Spake { spake, confirm } => (spake, confirm),
        Challenge::Refused(why) => return Err(JoinError::Refused(crate::names::sanitize(&why))),
    };
    // A refusal can come instead of a challenge too: the outcome's shape.
    let proof = joiner.on_challenge(&spake, &confirm, exporter).map_err(|why| {
        JoinError::WrongPassword(format!(
            "{why}; the admin counts wrong guesses and locks the invitation after {}",
            password::MAX_WRONG_GUESSES
        ))
    })?;
    step(write_json(stream, &proof)).await.map_err(broke)?;
    let outcome: Outcome = step(read_json(stream, MAX_ADMIN_FRAME)).await.map_err(broke)?;
    let _ = tokio::time::timeout(STEP_TIMEOUT, stream.shutdown()).await;
    match outcome {
        Outcome::Invitation(xml) => Ok(xml),
        Outcome::Refused(why) => Err(JoinError::Refused(crate::names::sanitize(&why))),
    }
}

/// `f` within `limit`, its error and the timeout as text.
async fn within<T, E: std::fmt::Display>(limit: Duration, f: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Runs one step of the exchange within [`STEP_TIMEOUT`].
async fn step<T>(f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| format!("no answer within {STEP_TIMEOUT:?}"))?
}

async fn write_json<S: AsyncWrite + Unpin, T: Serialize>(stream: &mut S, msg: &T) -> Result<(), String> {
    let body = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

/// Reads one frame of at most `max` bytes (the length is checked before anything is
/// allocated) and parses it.
async fn read_json<S: AsyncRead + Unpin, T: DeserializeOwned>(stream: &mut S, max: usize) -> Result<T, String> {
    let payload = crate::wire::read_bounded(stream, max).await?;
    serde_json::from_slice(&payload).map_err(|e| format!("malformed message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Home;

    fn service() -> (tempfile::TempDir, JoinService, PublicIdentity) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(dir.path())).unwrap();
        let admin = Identity::create(&home, "alice", crate::pki::KeyType::Ed25519, "alice").unwrap();
        let joiner = Identity::create(&home, "eve", crate::pki::KeyType::Ed25519, "eve").unwrap();
        let svc = JoinService::new(&admin, dir.path().join("membership"));
        (dir, svc, joiner.public())
    }

    async fn frame(stream: &mut tokio::io::DuplexStream, body: &[u8]) {
        stream.write_all(&(body.len() as u32).to_be_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
    }

    /// Red-team finding: every unknown invitation id an outsider named stayed in the
    /// node's memory for good.
    #[tokio::test]
    async fn unknown_invitations_are_refused_and_leave_nothing_behind() {
        let (_dir, svc, eve) = service();
        for _ in 0..200 {
            let (mut a, mut b) = tokio::io::duplex(64 * 1024);
            let req = serde_json::to_vec(&JoinRequest {
                invitation: Uuid::new_v4(),
                spake: "AAAA".into(),
            })
            .unwrap();
            frame(&mut b, &req).await;
            let out = svc.serve(&mut a, &eve, b"x").await;
            assert!(out.unwrap_err().contains("no such password invitation"));
            let answer: Outcome = read_json(&mut b, MAX_ADMIN_FRAME).await.unwrap();
            assert!(matches!(answer, Outcome::Refused(_)));
        }
        assert_eq!(svc.turns(), 0);
    }

    /// A second exchange on an invitation while one is under way is told to try again
    /// at once, never queued behind it (holding a handshake slot), and its guess is not
    /// counted.
    #[tokio::test]
    async fn a_second_exchange_on_one_invitation_is_told_to_retry_and_costs_no_guess() {
        let (_dir, svc, eve) = service();
        let id = Uuid::new_v4();
        let grant = Grant {
            id,
            secret: "AAAA".into(),
            role: crate::pki::Role::Member,
            valid_for_secs: None,
            expires: crate::clock::format_rfc3339(crate::clock::add(crate::clock::now(), Duration::from_secs(3600))),
            uses: 1,
            used: 0,
            wrong: 0,
            max_wrong: password::MAX_WRONG_GUESSES,
            members: Vec::new(),
        };
        grant.save_new(&svc.dir).unwrap();
        let held = svc.turn(id).try_lock_owned().unwrap();
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let req = serde_json::to_vec(&JoinRequest {
            invitation: id,
            spake: "AAAA".into(),
        })
        .unwrap();
        frame(&mut b, &req).await;
        let out = svc.serve(&mut a, &eve, b"x").await;
        assert!(out.unwrap_err().contains("under way"));
        assert_eq!(Grant::load(&svc.dir, &id).unwrap().unwrap().wrong, 0);
        drop(held);
    }

    /// Red-team finding: an outsider could make the node allocate a megabyte per
    /// connection with one length prefix.
    #[tokio::test]
    async fn a_joiner_frame_over_its_small_limit_is_refused_before_it_is_read() {
        let (_dir, svc, eve) = service();
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        b.write_all(&(1024u32 * 1024).to_be_bytes()).await.unwrap();
        let out = svc.serve(&mut a, &eve, b"x").await;
        assert!(out.unwrap_err().contains("at most 4096"));
    }
}
