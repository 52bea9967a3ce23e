//! Connection I/O: dialling, accepting, the TLS handshake and Hello exchange, then one
//! reader and one writer task per connection. The tasks only move frames; every
//! decision is the node actor's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor, TlsConnector, TlsStream};

use super::join::JoinService;
use super::pending::{Pending, ReportRate};
use super::relay::{self, RelayService, Token};
use crate::core::flow::{FRAME_OVERHEAD, SERVE_BYTES};
use crate::core::relay::Hop;
use crate::core::{AUTH_EVENTS_PER_SECOND, ConnId, ConnReason, ConnUp, Input, Stats, Via};
use crate::identity::PublicIdentity;
use crate::member::MemberId;
use crate::password;
use crate::pki::Cert;
use crate::sync::SyncKey;
use crate::tls::{self, TlsConfigs};
use crate::wire::{self, Message, Purpose};

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TLS handshake plus Hello exchange may take; slow or silent clients are cut.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accepted connection may stay silent before its first byte. An honest
/// client sends its ClientHello the moment TCP connects, so it arrives half a round trip
/// after the accept: 2 s is four round trips of a 500 ms satellite path, and leaves room
/// for a lost ClientHello to be resent on ordinary paths (Linux resends after about
/// three round trips, 200 ms at least); a client unlucky beyond that just redials. A
/// connection that says nothing holds its slot a fifth of [`HANDSHAKE_TIMEOUT`].
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(2);
/// Most handshakes in progress at once. Beyond it a connection is refused at once: the
/// accept loop never waits, so the kernel's queue keeps draining and a stranger's idle
/// sockets cannot queue ahead of a member for minutes. A handshake takes a few round
/// trips and about a millisecond of CPU, so honest arrivals are far below 64 in flight;
/// 64 bounds what strangers can hold to 64 descriptors of the usual 1,024.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Most handshakes in progress from one address (an IPv4 address, an IPv6 /64: see
/// [`super::pending::AddressKey`]); the excess is refused at once, before it counts against
/// [`MAX_PENDING_HANDSHAKES`]. A member dials a peer once per purpose (a neighbour, a
/// whisper), so even a few members behind one NAT rarely have more than a handful in
/// flight; 8 leaves them that while one address holds at most an eighth of the slots.
pub const MAX_PENDING_PER_ADDRESS: usize = 8;

/// Write buffer per connection: frames are coalesced up to this size before rustls
/// encrypts them (16 KiB is one TLS record); larger buffers only cost idle memory.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// A writer with nothing to send for this long sends a Ping, so the peer hears from it.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// A connection that has received nothing for this long is dead (a partition, a
/// crashed host, a cut cable: TCP alone would wait minutes) and is closed, so the node
/// dials someone reachable. Several keepalives long, so a busy peer is not cut.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);

/// A connection's byte stream under its TLS: TCP, or a relay circuit (itself TLS to
/// the relay).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A member connection's stream, after its TLS handshake.
type Stream = Box<dyn Io>;

/// What a connection task tells the node: a connection up (with the tasks' handles,
/// which the driver keeps) or down, or an input for the core as it is.
#[derive(Debug)]
pub enum ConnEvent {
    /// A connection finished its handshake and Hello exchange.
    Up(Box<Up>),
    /// The connection ended.
    Down(ConnId, ConnReason),
    /// A failed dial or a failed incoming handshake; a queue that drained.
    Core(Input),
    /// A frame, holding its bytes of the connection's inbound budget until the node
    /// has taken it.
    Frame(ConnId, Message, OwnedSemaphorePermit),
}

/// Most bytes of frames read from one connection and not yet taken by the node: two
/// of the largest frames. The reader waits beyond it (back-pressure onto the sender),
/// so the node's inbound queue is bounded in bytes, not only in frames.
pub const INBOUND_BYTES: usize = 2 * wire::MAX_FRAME_BYTES;

/// How long a closed connection's writer may go on flushing what was queued before it
/// is stopped (a peer that does not read would keep it, and its queue, forever).
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A connection ready for frames: what the core learns, and the tasks' handles.
#[derive(Debug)]
pub struct Up {
    /// What the core learns.
    pub conn: ConnUp,
    /// Send side of the writer's queue.
    pub writer: Writer,
    /// Stops the reader task.
    pub reader: AbortHandle,
    /// Stops the writer task.
    pub write_task: AbortHandle,
    /// When the peer was last heard from.
    pub heard: Heard,
}

/// When a connection last received any bytes (shared by its reader and the node).
#[derive(Debug, Clone)]
pub struct Heard(Arc<AtomicU64>);

impl Heard {
    fn new() -> Self {
        let h = Heard(Arc::new(AtomicU64::new(0)));
        h.touch();
        h
    }

    fn millis() -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.0.store(Self::millis(), Ordering::Relaxed);
    }

    /// While the reader waits for the node to take a frame it reads nothing; that
    /// wait is ours, not the peer's silence.
    fn hold(&self) {
        self.0.store(u64::MAX, Ordering::Relaxed);
    }

    /// How long since the last bytes arrived.
    pub fn silent_for(&self) -> Duration {
        Duration::from_millis(Self::millis().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

/// A reader that notes every arrival of bytes, even in the middle of a large frame
/// crawling over a slow link, so only true silence counts.
struct Watched<R> {
    inner: R,
    heard: Heard,
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.heard.touch();
        }
        polled
    }
}

/// The sending side of one connection: an unbounded queue whose byte count the node
/// watches, so it can stop flooding to a slow neighbour (and catch it up by sync later)
/// without ever dropping a frame it queued.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Arc<Vec<u8>>>,
    queued: Arc<AtomicUsize>,
    written: Arc<AtomicU64>,
    armed: Arc<AtomicBool>,
}

impl Writer {
    /// Queues one encoded frame; false if the connection is gone.
    pub fn send(&self, frame: Arc<Vec<u8>>) -> bool {
        let cost = frame.len() + FRAME_OVERHEAD;
        self.queued.fetch_add(cost, Ordering::Relaxed);
        if self.tx.send(frame).is_err() {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues a message.
    pub fn send_message(&self, msg: &Message) -> bool {
        self.send(Arc::new(msg.encode()))
    }

    /// Bytes queued and not yet written to the socket (each frame with
    /// [`FRAME_OVERHEAD`]).
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Bytes of frames written so far: it grows while the peer reads at all.
    pub fn written_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Asks the writer to report (once) when its queue drains below half the serving
    /// budget: the core has bodies owed that wait for room.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Relaxed);
    }
}

/// What a dial is for: where, whom, why, and our Hello (with its nonce).
#[derive(Debug, Clone)]
pub struct DialSpec {
    /// The connection's id.
    pub id: ConnId,
    /// Where.
    pub addr: SocketAddr,
    /// The member expected there, if any.
    pub expected: Option<MemberId>,
    /// Why.
    pub purpose: Purpose,
    /// Our Hello.
    pub hello: Message,
}

/// Dials, authenticates, exchanges Hello, and reports through `events`.
pub async fn dial(spec: DialSpec, tls: TlsConfigs, events: mpsc::Sender<ConnEvent>, stats: Arc<Stats>) {
    let DialSpec {
        id,
        addr,
        expected,
        purpose,
        hello,
    } = spec;
    let transport = |t: String| ConnReason::Transport(t);
    let result = async {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| transport("connect timed out".into()))?
            .map_err(|e| transport(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = tls::server_name(expected.as_ref()).map_err(|e| transport(e.to_string()))?;
        let connector = TlsConnector::from(tls.client.clone());
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| match tls::wrong_member(&e) {
                    Some(w) => ConnReason::WrongMember(w.to_string()),
                    None => transport(format!("TLS: {e}")),
                })?;
            finish(TlsStream::Client(stream), &hello, true).await.map_err(transport)
        })
        .await
        .map_err(|_| transport("handshake timed out".into()))??;
        Ok::<_, ConnReason>(stream)
    }
    .await;
    match result {
        Ok(h) => {
            let mine = hello_nonce(&hello);
            start(
                id,
                h,
                (addr, Via::Direct, None),
                true,
                Some(purpose),
                (mine, 0),
                events,
                stats,
            )
            .await;
        }
        Err(reason) => {
            let _ = events
                .send(ConnEvent::Core(Input::DialFailed {
                    addr,
                    purpose,
                    expected,
                    reason,
                }))
                .await;
        }
    }
}

/// A dial through a relay: the relay, the member on the far side, why, our Hello.
#[derive(Debug, Clone)]
pub struct RelayedDial {
    /// The connection's id.
    pub id: ConnId,
    /// The relay and where to dial it.
    pub hop: Hop,
    /// The member on the far side.
    pub target: MemberId,
    /// Why.
    pub purpose: Purpose,
    /// Our Hello.
    pub hello: Message,
}

/// Asks a relay for a circuit to the target, runs TLS to the target inside it (as the
/// client, expecting the target), exchanges Hello, and reports through `events`.
pub async fn dial_relayed(spec: RelayedDial, tls: TlsConfigs, events: mpsc::Sender<ConnEvent>, stats: Arc<Stats>) {
    let RelayedDial {
        id,
        hop,
        target,
        purpose,
        hello,
    } = spec;
    let result = async {
        let (circuit, seen) = relay::open(&tls, hop.relay, hop.addr, relay::Request::Connect(target)).await?;
        let h = secure(circuit, &tls, Some(target), &hello).await;
        h.map(|h| (h, seen)).map_err(|e| format!("inside the circuit: {e}"))
    }
    .await;
    match result {
        Ok((h, seen)) => {
            let mine = hello_nonce(&hello);
            start(
                id,
                h,
                (hop.addr, Via::Relayed, seen),
                true,
                Some(purpose),
                (mine, 0),
                events,
                stats,
            )
            .await;
        }
        Err(reason) => {
            let failed = Input::RelayFailed {
                relay: hop.relay,
                addr: hop.addr,
                target,
                purpose,
                reason,
            };
            let _ = events.send(ConnEvent::Core(failed)).await;
        }
    }
}

/// Takes the circuit `token` that `relay` (at `addr`) offered: dials it back, then
/// accepts TLS inside the circuit as from any member dialling in.
#[allow(clippy::too_many_arguments)]
pub async fn accept_relayed(
    id: ConnId,
    relay: MemberId,
    addr: SocketAddr,
    token: Token,
    tls: TlsConfigs,
    mut hello: Message,
    events: mpsc::Sender<ConnEvent>,
    stats: Arc<Stats>,
) {
    if let Message::Hello { nonce, .. } = &mut hello {
        *nonce = random_nonce();
    }
    let result = async {
        let (circuit, seen) = relay::open(&tls, relay, addr, relay::Request::Accept(token)).await?;
        let h = secure(circuit, &tls, None, &hello).await;
        h.map(|h| (h, seen)).map_err(|e| format!("inside the circuit: {e}"))
    }
    .await;
    match result {
        Ok((h, seen)) => {
            let mine = hello_nonce(&hello);
            start(id, h, (addr, Via::Relayed, seen), false, None, (0, mine), events, stats).await;
        }
        Err(reason) => {
            let reason = format!("relayed by {}: {reason}", relay.short());
            tracing::info!("{reason}");
            let _ = events.send(ConnEvent::Core(Input::AcceptFailed { addr, reason })).await;
        }
    }
}

/// Listens on `addr` with SO_REUSEPORT, so hole punches can leave from the same port
/// (a NAT then maps them as it maps the listening port). The port is first bound
/// without it, so a port another program (or another member) holds is refused as
/// before rather than shared.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match bind_listener(addr) {
        // `[::]` on a host without IPv6 (disabled, or no IPv6 in the kernel), or one
        // that cannot make it dual-stack: IPv4 alone, on the same port. A port in use
        // is said as it is.
        Err(e)
            if addr == SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port())
                && e.kind() != std::io::ErrorKind::AddrInUse =>
        {
            tracing::info!("cannot listen on IPv6 here ({e}): listening on IPv4 only");
            bind_listener(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()))
        }
        other => other,
    }
}

/// The listening socket: SO_REUSEPORT (for hole punches) once the port was found free;
/// on `[::]`, dual-stack whatever the host's default (`net.ipv6.bindv6only`), so IPv4
/// members reach it too.
fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    if addr.port() != 0 {
        // Bound without SO_REUSEPORT first: a port another program holds is refused
        // here, not shared with it. SO_REUSEADDR as std sets it: connections of a
        // killed predecessor in TIME_WAIT do not hold the port.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if addr.is_ipv6() {
            probe.set_only_v6(false)?;
        }
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into())?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// How long a hole punch keeps dialling.
pub const PUNCH_WINDOW: Duration = Duration::from_secs(5);

/// A hole punch: the member, its predicted address, our listening address (the punch
/// leaves from its port), our role in TLS, our Hello.
#[derive(Debug, Clone)]
pub struct PunchSpec {
    /// The connection's id.
    pub id: ConnId,
    /// The member.
    pub target: MemberId,
    /// Where it should be reachable from outside.
    pub addr: SocketAddr,
    /// Our listening address.
    pub local: SocketAddr,
    /// Whether we are the TLS client.
    pub client: bool,
    /// Our Hello.
    pub hello: Message,
}

/// Dials the target from our listening port while it dials us (TCP simultaneous
/// open), again and again for [`PUNCH_WINDOW`], then runs TLS in the role agreed and
/// Hello; reports the connection up (`via: punched`) or the failure.
pub async fn punch(spec: PunchSpec, tls: TlsConfigs, events: mpsc::Sender<ConnEvent>, stats: Arc<Stats>) {
    let PunchSpec {
        id,
        target,
        addr,
        local,
        client,
        hello,
    } = spec;
    let started = Instant::now();
    // From a node listening on [::], an IPv4 peer is dialled at its mapped address.
    let to = match (local, addr) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        _ => addr,
    };
    let result = async {
        let tcp = loop {
            let socket = punch_socket(local)?;
            match tokio::time::timeout(Duration::from_secs(1), socket.connect(to)).await {
                Ok(Ok(tcp)) => break tcp,
                Ok(Err(e)) if started.elapsed() >= PUNCH_WINDOW => return Err(format!("connect: {e}")),
                Err(_) if started.elapsed() >= PUNCH_WINDOW => return Err("no answer".to_string()),
                // A target that refuses at once is tried about ten times in the window,
                // not as fast as it answers.
                _ => tokio::time::sleep(Duration::from_millis(400)).await,
            }
        };
        let _ = tcp.set_nodelay(true);
        secure(tcp, &tls, client.then_some(target), &hello).await
    }
    .await;
    match result {
        // The server side's TLS takes any member: the one punched to must answer.
        Ok(h) if h.cert.member_id == target => {
            let mine = hello_nonce(&hello);
            let tie = if client { (mine, 0) } else { (0, mine) };
            let purpose = client.then_some(Purpose::Direct);
            start(id, h, (addr, Via::Punched, None), client, purpose, tie, events, stats).await;
        }
        Ok(h) => {
            let reason = format!("{} answered instead", h.cert.member_id.short());
            let _ = events
                .send(ConnEvent::Core(Input::PunchFailed { target, addr, reason }))
                .await;
        }
        Err(reason) => {
            tracing::debug!("hole punch to {addr} failed: {reason}");
            let _ = events
                .send(ConnEvent::Core(Input::PunchFailed { target, addr, reason }))
                .await;
        }
    }
}

/// Dials `member` back at `addr` for a reachability check: TCP, TLS expecting that
/// member, and the Hello exchange (ours names the check), within
/// [`CONNECT_TIMEOUT`] and [`HANDSHAKE_TIMEOUT`]; then closes.
pub async fn dial_back(addr: SocketAddr, member: MemberId, hello: &Message, tls: &TlsConfigs) -> Result<(), String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let h = secure(tcp, tls, Some(member), hello).await?;
    let mut stream = h.stream;
    let _ = stream.shutdown().await;
    Ok(())
}

/// A socket bound to the listening address `local`, sharing its port (SO_REUSEPORT) so
/// the NAT maps the connection as it maps the listening port; dual-stack on `[::]`, as
/// the listener is, so it can reach IPv4 peers whatever the host's default.
fn punch_socket(local: SocketAddr) -> Result<tokio::net::TcpSocket, String> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(local), Type::STREAM, None).map_err(|e| format!("socket: {e}"))?;
    if local.is_ipv6() {
        socket.set_only_v6(false).map_err(|e| format!("socket: {e}"))?;
    }
    socket.set_reuse_address(true).map_err(|e| e.to_string())?;
    socket.set_reuse_port(true).map_err(|e| e.to_string())?;
    socket.bind(&local.into()).map_err(|e| format!("bind {local}: {e}"))?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    // An unconnected socket handed to tokio to connect (what `from_std_stream` is for).
    Ok(tokio::net::TcpSocket::from_std_stream(socket.into()))
}

/// TLS over `stream`, as the client expecting member `expect`, or (`None`) as the
/// server taking any member, then the Hello exchange; within [`HANDSHAKE_TIMEOUT`].
/// For streams other than a plain dial or accept: relay circuits and hole punches.
async fn secure<S: Io>(
    stream: S,
    tls: &TlsConfigs,
    expect: Option<MemberId>,
    hello: &Message,
) -> Result<Handshaken, String> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        match expect {
            Some(member) => {
                let name = tls::server_name(Some(&member)).map_err(|e| e.to_string())?;
                let stream = TlsConnector::from(tls.client.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| match tls::wrong_member(&e) {
                        Some(w) => w.to_string(),
                        None => format!("TLS: {e}"),
                    })?;
                finish(TlsStream::Client(stream), hello, true).await
            }
            None => {
                let stream = TlsAcceptor::from(tls.server.clone())
                    .accept(stream)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                finish(TlsStream::Server(stream), hello, false).await
            }
        }
    })
    .await
    .map_err(|_| "the handshake timed out".to_string())?
}

/// Our nonce in a Hello.
fn hello_nonce(hello: &Message) -> u64 {
    match hello {
        Message::Hello { nonce, .. } => *nonce,
        _ => 0,
    }
}

/// A fresh tie-break nonce for an accepted connection.
fn random_nonce() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_be_bytes(b)
}

/// Accepts connections until the listener fails; ids come from `next_id`. `hello` is
/// our Hello; each accepted connection gets a fresh nonce in it. The loop never waits
/// for a handshake slot: a connection over [`MAX_PENDING_PER_ADDRESS`] or
/// [`MAX_PENDING_HANDSHAKES`] is closed as soon as it is accepted.
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop(
    listener: TcpListener,
    tls: TlsConfigs,
    hello: Message,
    events: mpsc::Sender<ConnEvent>,
    next_id: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    joins: Arc<JoinService>,
    relays: Arc<RelayService>,
) {
    let pending = Pending::new(MAX_PENDING_PER_ADDRESS, MAX_PENDING_HANDSHAKES);
    // The core shows no more than this anyway; more would only crowd the event queue.
    let mut reports = ReportRate::new(AUTH_EVENTS_PER_SECOND);
    loop {
        let (tcp, addr) = match listener.accept().await {
            // An IPv4 peer of a dual-stack listener arrives as ::ffff:a.b.c.d: shown,
            // judged and dialled back as the IPv4 address it is.
            Ok((tcp, addr)) => (tcp, SocketAddr::new(addr.ip().to_canonical(), addr.port())),
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match pending.admit(addr.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                // Closed before anything else: a refusal costs one accept and one close,
                // holds no descriptor, and never waits on the node.
                drop(tcp);
                tracing::info!("refused connection from {addr}: {refused}");
                if reports.allow(Instant::now()) {
                    let reason = refused.to_string();
                    let _ = events.try_send(ConnEvent::Core(Input::AcceptFailed { addr, reason }));
                }
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let joins = joins.clone();
        let relays = relays.clone();
        let mut hello = hello.clone();
        if let Message::Hello { nonce, .. } = &mut hello {
            *nonce = random_nonce();
        }
        let events = events.clone();
        let stats = stats.clone();
        let id = next_id.fetch_add(1, Ordering::Relaxed) as ConnId;
        tokio::spawn(async move {
            let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                first_bytes(&tcp).await?;
                let start = LazyConfigAcceptor::new(Acceptor::default(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                // A password joiner (not a member yet) asks for the join protocol: it
                // gets that exchange and nothing else.
                let offers = |alpn: &[u8]| {
                    start
                        .client_hello()
                        .alpn()
                        .is_some_and(|mut offered| offered.any(|p| p == alpn))
                };
                let (join, relay) = (offers(tls::JOIN_ALPN), offers(tls::RELAY_ALPN));
                let config = if join {
                    tls.join_server.clone()
                } else {
                    tls.server.clone()
                };
                let stream = start.into_stream(config).await.map_err(|e| format!("TLS: {e}"))?;
                if join {
                    return Ok(Accepted::Joiner(Box::new(stream)));
                }
                if relay {
                    return Ok(Accepted::Relay(Box::new(stream)));
                }
                finish(TlsStream::Server(stream), &hello, false)
                    .await
                    .map(|h| Accepted::Member(Box::new(h)))
            })
            .await;
            let result = match result {
                Ok(Ok(Accepted::Joiner(mut stream))) => {
                    // Within the handshake slot: joins count against the same limits.
                    let outcome = serve_joiner(&joins, &mut stream).await;
                    drop(slot);
                    match outcome {
                        Ok(done) => tracing::info!("{done}"),
                        Err(reason) => {
                            tracing::info!("from {addr}: {reason}");
                            let _ = events.send(ConnEvent::Core(Input::AcceptFailed { addr, reason })).await;
                        }
                    }
                    return;
                }
                Ok(Ok(Accepted::Relay(stream))) => {
                    // A member (TLS proved it) asking for a circuit: the handshake slot
                    // is held until its request is judged, the relay's limits after.
                    let peer = tls::peer_certificate(stream.get_ref().1.peer_certificates()).map(|c| c.member_id);
                    let Some(peer) = peer else {
                        tracing::info!("refused a relay connection from {addr}: no membership certificate");
                        return;
                    };
                    match relays.serve(*stream, peer, slot).await {
                        Ok(done) => tracing::info!("{done}"),
                        Err(why) => tracing::info!("from {addr}: {why}"),
                    }
                    return;
                }
                Ok(Ok(Accepted::Member(h))) => Ok(Ok(*h)),
                Ok(Err(e)) => Ok(Err(e)),
                Err(e) => Err(e),
            };
            drop(slot);
            match result {
                // A neighbour dialling back for a check this node asked: TLS and Hello
                // are the whole of it.
                Ok(Ok(h)) if h.purpose == Purpose::DialBack => {
                    let (member, nonce) = (h.cert.member_id, h.nonce);
                    let dialled_in = Input::DialedIn {
                        member,
                        nonce,
                        source: addr,
                    };
                    let _ = events.send(ConnEvent::Core(dialled_in)).await;
                }
                Ok(Ok(h)) => {
                    let mine = hello_nonce(&hello);
                    start(id, h, (addr, Via::Direct, None), false, None, (0, mine), events, stats).await;
                }
                Ok(Err(reason)) => {
                    tracing::info!("refused connection from {addr}: {reason}");
                    let _ = events.send(ConnEvent::Core(Input::AcceptFailed { addr, reason })).await;
                }
                Err(_) => {
                    tracing::info!("refused connection from {addr}: handshake timed out");
                    let reason = "handshake timed out".to_string();
                    let _ = events.send(ConnEvent::Core(Input::AcceptFailed { addr, reason })).await;
                }
            }
        });
    }
}

/// What an accepted connection turned out to be.
enum Accepted {
    /// A member, after the Hello exchange.
    Member(Box<Handshaken>),
    /// A password joiner, after TLS.
    Joiner(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A member asking for a relay circuit, after TLS.
    Relay(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Runs a password joiner's exchange (see [`super::join`]).
async fn serve_joiner(
    joins: &JoinService,
    stream: &mut tokio_rustls::server::TlsStream<TcpStream>,
) -> Result<String, String> {
    let conn = stream.get_ref().1;
    let joiner = tls::peer_certificate(conn.peer_certificates())
        .map(|cert| PublicIdentity { cert })
        .ok_or("a password joiner presented no identity certificate")?;
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, password::EXPORTER_LABEL, None)
        .map_err(|e| format!("cannot bind the password exchange to TLS: {e}"))?;
    tokio::time::timeout(super::join::JOIN_TIMEOUT, joins.serve(stream, &joiner, &exporter))
        .await
        .map_err(|_| "a password join timed out".to_string())?
}

/// Waits for the peer's first byte (without taking it), so a connection that says
/// nothing gives its slot back after [`FIRST_BYTES_TIMEOUT`], not [`HANDSHAKE_TIMEOUT`].
async fn first_bytes(tcp: &TcpStream) -> Result<(), String> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, tcp.peek(&mut byte)).await {
        Ok(Ok(0)) => Err("the peer closed the connection before the handshake".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("before the handshake: {e}")),
        Err(_) => Err(format!("no handshake bytes within {FIRST_BYTES_TIMEOUT:?}")),
    }
}

/// A connection after the handshake and the Hello exchange.
struct Handshaken {
    stream: Stream,
    cert: Cert,
    chain: Vec<Cert>,
    purpose: Purpose,
    nonce: u64,
    sync_key: SyncKey,
}

/// After TLS: read the peer's certificate, send our Hello, read theirs.
async fn finish<S: Io>(mut stream: TlsStream<S>, hello: &Message, outbound: bool) -> Result<Handshaken, String> {
    let certs = match &stream {
        TlsStream::Client(s) => s.get_ref().1.peer_certificates(),
        TlsStream::Server(s) => s.get_ref().1.peer_certificates(),
    };
    let cert = tls::peer_certificate(certs).ok_or("the peer presented no membership certificate")?;
    let chain = tls::peer_chain(certs);
    stream
        .write_all(&hello.encode())
        .await
        .map_err(|e| format!("send hello: {e}"))?;
    stream.flush().await.map_err(|e| format!("send hello: {e}"))?;
    // With TLS 1.3 a server that refuses our certificate says so on this first read.
    let payload = wire::read_frame(&mut stream)
        .await
        .map_err(|e| {
            if outbound {
                format!("refused by the peer: {e}")
            } else {
                format!("hello: {e}")
            }
        })?
        .ok_or("the peer closed the connection during the handshake")?;
    let decoded = Message::decode(&payload).map_err(|e| match wire::hello_version(&payload) {
        Some(v) if v != wire::PROTOCOL_VERSION => format!("peer speaks protocol version {v}"),
        _ => e.to_string(),
    });
    match decoded? {
        // The addresses a peer's Hello names are its claim only: where to dial comes
        // from signed presence records and from connections that reached a member.
        Message::Hello {
            version,
            purpose,
            nonce,
            ..
        } if version == wire::PROTOCOL_VERSION => Ok(Handshaken {
            sync_key: sync_key(&stream)?,
            stream: Box::new(stream),
            cert,
            chain,
            purpose,
            nonce,
        }),
        Message::Hello { version, .. } => Err(format!("peer speaks protocol version {version}")),
        _ => Err("the peer did not start with hello".into()),
    }
}

/// The connection's sync key: keying material exported from its TLS session (RFC 8446
/// section 7.5), the same at both ends and unknown to anyone else.
fn sync_key<S>(stream: &TlsStream<S>) -> Result<SyncKey, String> {
    const LABEL: &[u8] = b"EXPORTER-peergroup-sync-key";
    let mut key = [0u8; 16];
    let exported = match stream {
        TlsStream::Client(s) => s.get_ref().1.export_keying_material(&mut key, LABEL, None).map(|_| ()),
        TlsStream::Server(s) => s.get_ref().1.export_keying_material(&mut key, LABEL, None).map(|_| ()),
    };
    exported.map_err(|e| format!("cannot derive the sync key: {e}"))?;
    Ok(SyncKey::new(key))
}

/// Spawns the reader and writer tasks and tells the node the connection is up.
/// `purpose` is ours when we dialled (else the peer's Hello says); `tie` has our nonce
/// in place, the peer's is filled in from its Hello.
#[allow(clippy::too_many_arguments)]
async fn start(
    id: ConnId,
    h: Handshaken,
    (addr, via, observed): (SocketAddr, Via, Option<IpAddr>),
    outbound: bool,
    purpose: Option<Purpose>,
    mut tie: (u64, u64),
    events: mpsc::Sender<ConnEvent>,
    stats: Arc<Stats>,
) {
    if outbound {
        tie.1 = h.nonce;
    } else {
        tie.0 = h.nonce;
    }
    let (read_half, write_half) = tokio::io::split(h.stream);
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = Writer {
        tx,
        queued: queued.clone(),
        written: written.clone(),
        armed: armed.clone(),
    };
    let drained = Drained {
        id,
        armed,
        written,
        events: events.clone(),
    };
    let write_task = tokio::spawn(write_loop(write_half, rx, queued, drained, stats.clone())).abort_handle();
    let heard = Heard::new();
    let watched = Watched {
        inner: read_half,
        heard: heard.clone(),
    };
    // The reader waits until the node has been told of the connection: a frame must
    // never reach the node before the connection it came on.
    let (told, go) = oneshot::channel::<()>();
    let reader = tokio::spawn(read_loop(id, watched, events.clone(), stats, go)).abort_handle();
    let up = Up {
        conn: ConnUp {
            id,
            member: h.cert.member_id,
            cert: h.cert,
            chain: h.chain,
            addr,
            outbound,
            purpose: purpose.unwrap_or(h.purpose),
            tie,
            sync_key: h.sync_key,
            via,
            observed,
        },
        writer,
        reader,
        write_task,
        heard,
    };
    if events.send(ConnEvent::Up(Box::new(up))).await.is_ok() {
        let _ = told.send(());
    }
}

async fn read_loop(
    id: ConnId,
    mut read: Watched<ReadHalf<Stream>>,
    events: mpsc::Sender<ConnEvent>,
    stats: Arc<Stats>,
    go: oneshot::Receiver<()>,
) {
    if go.await.is_err() {
        return;
    }
    let inbound = Arc::new(Semaphore::new(INBOUND_BYTES));
    let reason = loop {
        let payload = match wire::read_frame(&mut read).await {
            Ok(Some(payload)) => payload,
            Ok(None) => break "closed by peer".to_string(),
            Err(e) => break format!("bad frame: {e}"),
        };
        let frame_bytes = payload.len().min(INBOUND_BYTES);
        stats.bytes_in.fetch_add(payload.len() as u64 + 4, Ordering::Relaxed);
        match Message::decode(&payload) {
            // Its arrival was the point; the node need not wake for it.
            Ok(Message::Ping) => {}
            // A full node queue or inbound budget makes us wait here: back-pressure
            // onto the sender.
            Ok(msg) => {
                drop(payload);
                read.heard.hold();
                let Ok(permit) = inbound.clone().acquire_many_owned(frame_bytes as u32).await else {
                    return;
                };
                if events.send(ConnEvent::Frame(id, msg, permit)).await.is_err() {
                    return;
                }
                read.heard.touch();
            }
            Err(e) => break format!("bad frame: {e}"),
        }
    };
    let _ = events.send(ConnEvent::Down(id, ConnReason::Transport(reason))).await;
}

/// How a writer tells the node its queue drained, when the node asked (see
/// [`Writer::arm`]).
struct Drained {
    id: ConnId,
    armed: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    events: mpsc::Sender<ConnEvent>,
}

impl Drained {
    fn after_write(&self, queued: usize) {
        if queued < SERVE_BYTES / 2 && self.armed.swap(false, Ordering::Relaxed) {
            // A full event queue means the node is busy and its tick reports anyway.
            let written = self.written.load(Ordering::Relaxed);
            let _ = self
                .events
                .try_send(ConnEvent::Core(Input::Queued(self.id, queued, written)));
        }
    }
}

async fn write_loop(
    write: WriteHalf<Stream>,
    mut rx: mpsc::UnboundedReceiver<Arc<Vec<u8>>>,
    queued: Arc<AtomicUsize>,
    drained: Drained,
    stats: Arc<Stats>,
) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write);
    // Each frame leaves the count once written, so a slow reader shows progress frame
    // by frame, not only when a whole batch is through.
    let wrote = |frame: &[u8]| {
        queued.fetch_sub(frame.len() + FRAME_OVERHEAD, Ordering::Relaxed);
        drained.written.fetch_add(frame.len() as u64, Ordering::Relaxed);
        stats.bytes_out.fetch_add(frame.len() as u64, Ordering::Relaxed);
    };
    loop {
        let frame = match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                // Not counted in `queued`: the node never queued it.
                let ping = Message::Ping.encode();
                if out.write_all(&ping).await.is_err() || out.flush().await.is_err() {
                    break;
                }
                stats.bytes_out.fetch_add(ping.len() as u64, Ordering::Relaxed);
                continue;
            }
        };
        if out.write_all(&frame).await.is_err() {
            break;
        }
        wrote(&frame);
        // Flushing per frame costs ~10x: write what is queued, flush when empty.
        while let Ok(more) = rx.try_recv() {
            if out.write_all(&more).await.is_err() {
                return;
            }
            wrote(&more);
        }
        if out.flush().await.is_err() {
            break;
        }
        drained.after_write(queued.load(Ordering::Relaxed));
    }
    let _ = out.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::clock;
    use crate::credential::tests::fixture;

    /// What a hostile relay does to the stream from the asker to the target.
    #[derive(Debug, Clone, Copy)]
    enum Harm {
        /// Flips the bits of one byte.
        Flip,
        /// Leaves one byte out.
        Drop,
    }

    /// Copies `from` to `to`, harming the byte at the offset `at` holds (counted from
    /// the start of the stream; `usize::MAX`: none), and counts the bytes in `seen`.
    async fn carry<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        mut from: R,
        mut to: W,
        harm: Harm,
        at: Arc<AtomicUsize>,
        seen: Arc<AtomicUsize>,
    ) {
        let mut buf = [0u8; 4096];
        let mut offset = 0usize;
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut chunk = buf[..n].to_vec();
            let target = at.load(Ordering::SeqCst);
            if (offset..offset + n).contains(&target) {
                match harm {
                    Harm::Flip => chunk[target - offset] ^= 0xff,
                    Harm::Drop => {
                        chunk.remove(target - offset);
                    }
                }
            }
            offset += n;
            seen.store(offset, Ordering::SeqCst);
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    /// Issue 12, bad input: a relay that changes or drops a byte of the circuit, in the
    /// handshake or after it, never gets an altered whisper through: the TLS between the
    /// two ends inside the circuit refuses it, and each end says so rather than hanging
    /// (a dropped byte stalls a handshake until its timeout, which paused time runs
    /// through at once).
    #[tokio::test(start_paused = true)]
    async fn a_relay_that_changes_or_drops_a_byte_breaks_the_tls_inside() {
        let f = fixture(clock::now() - time::Duration::hours(1));
        let asker = tls::configs(&f.member.identity(), &f.member.m).unwrap();
        let target = tls::configs(&f.admin.identity(), &f.admin.m).unwrap();
        let target_id = f.admin.m.membership.member_id;
        let hello = |nonce| Message::Hello {
            version: wire::PROTOCOL_VERSION,
            purpose: Purpose::Direct,
            addresses: vec![],
            nonce,
        };
        let whisper = Message::Whisper { text: "psst".into() };
        // Offsets in the handshake, and (None) a few bytes into the whisper after it.
        for harm in [Harm::Flip, Harm::Drop] {
            for offset in [Some(3), Some(200), Some(1200), None] {
                let (a, relay_a) = tokio::io::duplex(1 << 16);
                let (b, relay_b) = tokio::io::duplex(1 << 16);
                let ((a_read, a_write), (b_read, b_write)) = (tokio::io::split(relay_a), tokio::io::split(relay_b));
                let at = Arc::new(AtomicUsize::new(offset.unwrap_or(usize::MAX)));
                let seen = Arc::new(AtomicUsize::new(0));
                let unseen = Arc::new(AtomicUsize::new(0));
                tokio::spawn(carry(a_read, b_write, harm, at.clone(), seen.clone()));
                tokio::spawn(carry(
                    b_read,
                    a_write,
                    harm,
                    Arc::new(AtomicUsize::new(usize::MAX)),
                    unseen,
                ));
                let (hello_a, hello_b) = (hello(1), hello(2));
                let (client, server) = tokio::join!(
                    secure(a, &asker, Some(target_id), &hello_a),
                    secure(b, &target, None, &hello_b)
                );
                let case = format!("{harm:?} at {offset:?}");
                let (mut client, mut server) = match (client, server) {
                    (Ok(c), Ok(s)) => (c, s),
                    (c, s) => {
                        assert!(offset.is_some(), "{case}: the clean handshake failed");
                        assert!(c.is_err() && s.is_err(), "{case}: one end went on");
                        continue;
                    }
                };
                assert!(offset.is_none(), "{case}: a harmed handshake completed");
                at.store(seen.load(Ordering::SeqCst) + 8, Ordering::SeqCst);
                // The whisper, then a Ping as an idle connection sends every second:
                // a dropped byte leaves a record short until more bytes come.
                client.stream.write_all(&whisper.encode()).await.unwrap();
                client.stream.write_all(&Message::Ping.encode()).await.unwrap();
                client.stream.flush().await.unwrap();
                let read = tokio::time::timeout(Duration::from_secs(5), wire::read_frame(&mut server.stream))
                    .await
                    .unwrap_or_else(|_| panic!("{case}: the target hung"));
                match read {
                    Ok(Some(frame)) => panic!("{case}: a harmed frame came through: {:?}", Message::decode(&frame)),
                    Ok(None) => panic!("{case}: the stream ended as if nothing had happened"),
                    Err(_) => {}
                }
            }
        }
    }
}
