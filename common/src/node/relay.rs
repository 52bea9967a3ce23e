//! Relay circuits, the I/O (the rules are [`crate::core::relay`]). A member that
//! cannot be dialled stays reachable through a neighbour that can:
//!
//! 1. The member who wants to connect (A) dials the relay (R) with the ALPN protocol
//!    [`tls::RELAY_ALPN`], mutual TLS with membership certificates as on any member
//!    connection, and asks `Connect(target)`.
//! 2. R checks its limits, names the circuit with a random token and offers it to the
//!    target (B) over their neighbour connection (`Message::RelayOffer`).
//! 3. B dials R back the same way and answers `Accept(token)`; R checks B is the target.
//! 4. R tells both `Ok` and copies bytes between the two connections, within
//!    [`CIRCUIT_BYTES`] each way and [`CIRCUIT_LIFETIME`]. A and B run their own TLS
//!    inside (A as the client, expecting B), so R sees ciphertext only, and a relay
//!    that drops or changes a byte breaks that TLS, never a member's trust.
//!
//! A request and an answer are one frame each: a 4-byte length and a payload of at
//! most [`MAX_REQUEST`] (request) or [`MAX_ANSWER`] (answer) bytes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::{TlsConnector, client, server};

use super::conn::{CONNECT_TIMEOUT, ConnEvent};
use crate::core::Input;
use crate::core::relay::{CIRCUIT_BYTES, CIRCUIT_LIFETIME, Circuits, Refusal};
use crate::member::{MEMBER_ID_BYTES, MemberId};
use crate::tls::{self, TlsConfigs};
use crate::wire::RELAY_TOKEN_BYTES;

/// A circuit's token.
pub type Token = [u8; RELAY_TOKEN_BYTES];

/// Largest request payload.
pub const MAX_REQUEST: usize = 64;
/// Largest answer payload.
pub const MAX_ANSWER: usize = 512;
/// How long a relay waits for a request once TLS is up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a relay waits for the target to take a circuit.
pub const TAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a circuit's end may take to tell each side.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the member asking waits for the relay's answer (the target dials back
/// meanwhile).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);

const CONNECT: u8 = 1;
const ACCEPT: u8 = 2;
const OK: u8 = 0;
const REFUSED: u8 = 1;

/// What a member asks of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A circuit to this member.
    Connect(MemberId),
    /// The circuit offered with this token.
    Accept(Token),
}

impl Request {
    /// Its payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Connect(m) => [&[CONNECT][..], m.as_bytes()].concat(),
            Request::Accept(t) => [&[ACCEPT][..], t].concat(),
        }
    }

    /// Reads a payload; anything else is refused.
    pub fn decode(p: &[u8]) -> Result<Request, String> {
        match p.split_first() {
            Some((&CONNECT, rest)) if rest.len() == MEMBER_ID_BYTES => {
                Ok(Request::Connect(MemberId::from_slice(rest).ok_or("bad member id")?))
            }
            Some((&ACCEPT, rest)) if rest.len() == RELAY_TOKEN_BYTES => {
                Ok(Request::Accept(rest.try_into().map_err(|_| "bad token")?))
            }
            _ => Err("malformed relay request".into()),
        }
    }
}

/// Writes one frame.
async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, payload: &[u8]) -> Result<(), String> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    s.write_all(&frame).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())
}

/// The relay's answer: `Ok` (with the address it sees the other end at, so the two
/// can try a direct connection), or a refusal with its reason.
async fn answer<S: AsyncWrite + Unpin>(s: &mut S, result: &Result<Option<IpAddr>, String>) -> Result<(), String> {
    match result {
        Ok(seen) => {
            let mut p = vec![OK];
            match seen {
                Some(IpAddr::V4(v4)) => p.extend_from_slice(&v4.octets()),
                Some(IpAddr::V6(v6)) => p.extend_from_slice(&v6.octets()),
                None => {}
            }
            write_frame(s, &p).await
        }
        Err(why) => {
            let mut p = vec![REFUSED];
            p.extend_from_slice(&why.as_bytes()[..why.len().min(MAX_ANSWER - 1)]);
            write_frame(s, &p).await
        }
    }
}

/// What the relay saw the other end's connection come from, in an `Ok` answer.
fn seen(p: &[u8]) -> Option<Option<IpAddr>> {
    match p.len() {
        0 => Some(None),
        4 => <[u8; 4]>::try_from(p).ok().map(|b| Some(IpAddr::from(b))),
        16 => <[u8; 16]>::try_from(p).ok().map(|b| Some(IpAddr::from(b))),
        _ => None,
    }
}

/// Dials `relay` at `addr` and asks `req`; the stream, once the relay said `Ok`, is
/// the circuit; with it, the address the relay sees the other end at.
pub async fn open(
    tls: &TlsConfigs,
    relay: MemberId,
    addr: SocketAddr,
    req: Request,
) -> Result<(client::TlsStream<TcpStream>, Option<IpAddr>), String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = tls::server_name(Some(&relay)).map_err(|e| e.to_string())?;
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        let mut stream = TlsConnector::from(tls.relay_client.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| match tls::wrong_member(&e) {
                Some(w) => w.to_string(),
                None => format!("TLS: {e}"),
            })?;
        write_frame(&mut stream, &req.encode()).await?;
        let reply = crate::wire::read_bounded(&mut stream, MAX_ANSWER)
            .await
            .map_err(|e| format!("no answer from the relay: {e}"))?;
        match reply.split_first() {
            Some((&OK, rest)) if seen(rest).is_some() => Ok((stream, seen(rest).flatten())),
            Some((&REFUSED, why)) => Err(format!(
                "refused: {}",
                crate::names::sanitize(&String::from_utf8_lossy(why))
            )),
            _ => Err("a malformed answer from the relay".into()),
        }
    })
    .await
    .map_err(|_| "the relay did not answer in time".to_string())?
}

/// A circuit waiting for its target to take it.
struct Waiting {
    from: MemberId,
    target: MemberId,
    taken: oneshot::Sender<Result<server::TlsStream<TcpStream>, Refusal>>,
}

/// The relay side: circuits open and waiting, shared by the connections that serve
/// them.
pub struct RelayService {
    me: MemberId,
    circuits: Mutex<Circuits>,
    waiting: Mutex<HashMap<Token, Waiting>>,
    events: mpsc::Sender<ConnEvent>,
}

impl std::fmt::Debug for RelayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayService")
    }
}

/// Frees a circuit's place when its serving task ends, however it ends.
struct Place<'a> {
    service: &'a RelayService,
    from: MemberId,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        lock(&self.service.circuits).release(self.from);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RelayService {
    /// A relay for member `me`, asking its node through `events`.
    pub fn new(me: MemberId, events: mpsc::Sender<ConnEvent>) -> RelayService {
        RelayService {
            me,
            circuits: Mutex::new(Circuits::default()),
            waiting: Mutex::new(HashMap::new()),
            events,
        }
    }

    /// The node could not offer circuit `token` to its target.
    pub fn refuse(&self, token: &Token, refusal: Refusal) {
        if let Some(w) = lock(&self.waiting).remove(token) {
            let _ = w.taken.send(Err(refusal));
        }
    }

    /// Serves one relay connection from member `peer` (proved by TLS) until its
    /// circuit ends; returns what happened, for the log. `slot` (the connection's
    /// handshake slot) is held until the request is read and judged: a connection that
    /// never asks counts against the accept limits, as a handshake does.
    pub async fn serve<S>(
        &self,
        mut stream: server::TlsStream<TcpStream>,
        peer: MemberId,
        slot: S,
    ) -> Result<String, String> {
        let req = tokio::time::timeout(REQUEST_TIMEOUT, crate::wire::read_bounded(&mut stream, MAX_REQUEST))
            .await
            .map_err(|_| "no relay request in time".to_string())?
            .and_then(|p| Request::decode(&p));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                let _ = answer(&mut stream, &Err(e.clone())).await;
                return Err(format!("relay request from {peer}: {e}"));
            }
        };
        match req {
            Request::Accept(token) => {
                let w = lock(&self.waiting).remove(&token);
                drop(slot);
                match w {
                    Some(w) if w.target == peer => {
                        // The asking side's task answers both and carries the circuit.
                        let _ = w.taken.send(Ok(stream));
                        Ok(format!("{peer} took a relayed circuit from {}", w.from))
                    }
                    Some(w) => {
                        // Someone else's token: the circuit is spoilt for its target too.
                        let _ = w.taken.send(Err(Refusal::NoAnswer));
                        let _ = answer(&mut stream, &Err("no such circuit".into())).await;
                        Err(format!("{peer} answered a relay circuit meant for {}", w.target))
                    }
                    None => {
                        let _ = answer(&mut stream, &Err("no such circuit".into())).await;
                        Err(format!("{peer} answered an unknown relay circuit"))
                    }
                }
            }
            Request::Connect(target) => self.connect(stream, peer, target, slot).await,
        }
    }

    async fn connect<S>(
        &self,
        mut a: server::TlsStream<TcpStream>,
        from: MemberId,
        target: MemberId,
        slot: S,
    ) -> Result<String, String> {
        let admitted = lock(&self.circuits).admit(self.me, from, target, Instant::now());
        if let Err(refusal) = admitted {
            let _ = answer(&mut a, &Err(refusal.to_string())).await;
            return Err(format!("refused a circuit from {from} to {target}: {refusal}"));
        }
        // The circuit limits hold it from here.
        drop(slot);
        let _place = Place { service: self, from };
        let mut token = [0u8; RELAY_TOKEN_BYTES];
        if aws_lc_rs::rand::fill(&mut token).is_err() || lock(&self.waiting).contains_key(&token) {
            let _ = answer(&mut a, &Err(Refusal::Internal.to_string())).await;
            return Err(format!("no circuit from {from} to {target}: no fresh token"));
        }
        let (taken, take) = oneshot::channel();
        lock(&self.waiting).insert(token, Waiting { from, target, taken });
        let asked = self
            .events
            .send(ConnEvent::Core(Input::RelayRequest { token, from, target }))
            .await;
        let outcome = if asked.is_err() {
            Err(Refusal::NotConnected)
        } else {
            match tokio::time::timeout(TAKE_TIMEOUT, take).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) | Err(_) => Err(Refusal::NoAnswer),
            }
        };
        lock(&self.waiting).remove(&token);
        let mut b = match outcome {
            Ok(b) => b,
            Err(refusal) => {
                let _ = answer(&mut a, &Err(refusal.to_string())).await;
                return Err(format!("no circuit from {from} to {target}: {refusal}"));
            }
        };
        // Each end learns where the relay sees the other (for hole punching).
        // Canonical: a relay listening on [::] sees IPv4 peers as ::ffff:a.b.c.d.
        let ip = |s: &server::TlsStream<TcpStream>| s.get_ref().0.peer_addr().ok().map(|a| a.ip().to_canonical());
        let (a_ip, b_ip) = (ip(&a), ip(&b));
        answer(&mut b, &Ok(a_ip)).await?;
        answer(&mut a, &Ok(b_ip)).await?;
        tracing::info!("relaying between {from} and {target}");
        let carried = splice(a, b).await;
        Ok(format!("relayed circuit from {from} to {target} ended: {carried}"))
    }
}

/// Copies bytes both ways until either side ends, a direction passes
/// [`CIRCUIT_BYTES`], or [`CIRCUIT_LIFETIME`] is up; says which.
async fn splice<A, B>(a: A, b: B) -> String
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let ended = tokio::time::timeout(CIRCUIT_LIFETIME, async {
        tokio::select! {
            r = pipe(&mut ar, &mut bw) => r,
            r = pipe(&mut br, &mut aw) => r,
        }
    })
    .await;
    // A side that reads nothing would keep a shutdown (its close_notify) waiting for
    // ever, and the circuit's place with it.
    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, aw.shutdown()).await;
    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, bw.shutdown()).await;
    match ended {
        Ok(why) => why,
        Err(_) => format!("its {CIRCUIT_LIFETIME:?} were up"),
    }
}

/// Copies one direction within [`CIRCUIT_BYTES`].
async fn pipe<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(r: &mut R, w: &mut W) -> String {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => return format!("closed after {total} bytes"),
            Ok(n) => n,
            Err(e) => return format!("{e} after {total} bytes"),
        };
        total += n as u64;
        if total > CIRCUIT_BYTES {
            return format!("over the {CIRCUIT_BYTES}-byte limit");
        }
        if let Err(e) = w.write_all(&buf[..n]).await {
            return format!("{e} after {total} bytes");
        }
        if let Err(e) = w.flush().await {
            return format!("{e} after {total} bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The address in an `Ok` answer: none, IPv4 or IPv6; any other length is a
    /// malformed answer.
    #[test]
    fn an_answer_carries_no_address_or_a_whole_one() {
        assert_eq!(seen(&[]), Some(None));
        assert_eq!(seen(&[11, 11, 0, 2]), Some(Some("11.11.0.2".parse().unwrap())));
        assert_eq!(seen(&[0; 16]), Some(Some("::".parse().unwrap())));
        for n in [1, 3, 5, 15, 17] {
            assert_eq!(seen(&vec![1; n]), None, "{n} bytes");
        }
    }

    #[test]
    fn requests_round_trip_and_nothing_else_is_taken() {
        let m = MemberId::from_bytes([3; MEMBER_ID_BYTES]);
        for r in [Request::Connect(m), Request::Accept([5; RELAY_TOKEN_BYTES])] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
            let mut longer = r.encode();
            longer.push(0);
            assert!(Request::decode(&longer).is_err());
            assert!(Request::decode(&r.encode()[..5]).is_err());
        }
        assert!(Request::decode(&[]).is_err());
        assert!(Request::decode(&[9; 21]).is_err());
    }

    /// A stream that ends at once when read and never takes a byte or a shutdown.
    struct Stalled;

    impl AsyncRead for Stalled {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Stalled {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Pending
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }
    }

    /// Red-team finding: a side that half-closed and never read kept the circuit's end
    /// (its shutdown) waiting for ever, and the circuit's place with it.
    #[tokio::test(start_paused = true)]
    async fn a_circuit_ends_even_when_a_side_never_reads() {
        let (near, _far) = tokio::io::duplex(1024);
        let ended = tokio::time::timeout(CIRCUIT_LIFETIME + Duration::from_secs(30), splice(Stalled, near)).await;
        assert!(ended.is_ok(), "the circuit never ended");
    }

    #[tokio::test]
    async fn a_circuit_carries_bytes_both_ways_and_stops_at_its_limit() {
        let (a_near, mut a_far) = tokio::io::duplex(64 * 1024);
        let (b_near, mut b_far) = tokio::io::duplex(64 * 1024);
        let spliced = tokio::spawn(splice(a_near, b_near));
        a_far.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        b_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        b_far.write_all(b"back").await.unwrap();
        let mut got = [0u8; 4];
        a_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");
        // Past the limit the circuit ends, both sides with it.
        let chunk = vec![0u8; 64 * 1024];
        let writer = tokio::spawn(async move {
            let mut sent = 0u64;
            while sent <= CIRCUIT_BYTES + chunk.len() as u64 {
                if a_far.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len() as u64;
            }
        });
        let mut sink = Vec::new();
        let _ = b_far.read_to_end(&mut sink).await;
        assert!((sink.len() as u64) <= CIRCUIT_BYTES, "{} bytes got through", sink.len());
        let why = spliced.await.unwrap();
        assert!(why.contains("limit"), "{why}");
        writer.await.unwrap();
    }
}
