//! The online peer: one actor task owns the node's state (store, sync index, members,
//! presence, connections) and reacts to commands from its [`Handle`], frames from
//! connection tasks and a periodic tick. Connection I/O lives in [`conn`].
//!
//! Rules kept here: a record is verified (membership of creator and modifier, signature,
//! size, times) and committed to the store before it is flooded, synced or shown; a
//! record whose creator's or modifier's membership has not arrived yet waits for it; a
//! neighbour that cannot keep up is not flooded but caught up by sync, never dropped.

pub mod conn;
pub mod known;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::clock;
use crate::home::{HomeError, Lock};
use crate::identity::Identity;
use crate::membership::{self, Membership};
use crate::pki::{self, Cert, Claim, Role};
use crate::record::{self, AttrValue, CHAT_TYPE, MEMBERSHIP_TYPE, PRESENCE_TYPE, Record};
use crate::store::{Durability, Put, STORE_FILE, Store, StoreError};
use crate::sync::{self, Item, ItemSet};
use crate::tls::{self, TlsConfigs};
use crate::wire::{Message, Purpose};
use conn::{ConnEvent, ConnId, ConnUp, Heard, SILENCE_LIMIT, Writer};

/// Default cap on neighbour connections.
pub const DEFAULT_MAX_NEIGHBOURS: usize = 8;
/// How many neighbours a node dials on its own (more may dial it, up to the cap).
pub const TARGET_NEIGHBOURS: usize = 3;
/// Clock skew tolerated in record times.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Records held back waiting for a membership, at most.
pub const MAX_PENDING_RECORDS: usize = 10_000;
/// Queued bytes beyond which a neighbour is no longer flooded (it catches up by sync).
pub const LAGGING_BYTES: usize = 4 * 1024 * 1024;
/// Queued bytes beyond which a peer that does not read is disconnected.
pub const STALLED_BYTES: usize = 64 * 1024 * 1024;
/// How often the node ticks (dials, lag checks).
pub const TICK: Duration = Duration::from_millis(200);
/// How often expired records are purged.
pub const PURGE_EVERY: Duration = Duration::from_secs(5);
/// How long an unused direct (whisper) connection stays open.
pub const DIRECT_IDLE: Duration = Duration::from_secs(60);
/// First redial delay; doubles per failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest redial delay. Short, because after a partition heals the next redial is
/// what re-merges the halves; a failed dial of a dead address costs almost nothing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// Cores available for parallel signature checks, asked once.
static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Most connection events taken in before one commit.
pub const MAX_EVENTS_PER_COMMIT: usize = 256;
/// Batches at least this large have their signatures verified on every core.
pub const PARALLEL_VERIFY_MIN: usize = 64;
/// Most failed incoming handshakes reported per second (the rest are only logged).
pub const AUTH_EVENTS_PER_SECOND: u32 = 5;
/// Largest Records frame the node builds.
const RECORDS_FRAME_BUDGET: usize = 512 * 1024;

/// Errors from running a node.
#[derive(Debug, Error)]
pub enum NodeError {
    /// Another process is online with this membership.
    #[error(transparent)]
    Locked(#[from] HomeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Cannot listen.
    #[error("unable to listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Our own credentials are not valid now.
    #[error("this membership is not usable: {0}")]
    Credentials(#[from] pki::PkiError),
    /// A record could not be made.
    #[error(transparent)]
    Record(#[from] record::RecordError),
    /// No present member matches.
    #[error("no present member matches {0:?}")]
    NoSuchMember(String),
    /// Several present members match.
    #[error("{0:?} matches several present members: {1}")]
    AmbiguousMember(String, String),
    /// The text is not acceptable.
    #[error("message of {0} bytes is over the {max}-byte limit", max = record::MAX_CHAT_BYTES)]
    TooLong(usize),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// A peer to dial: `[MEMBER_ID@]IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The member expected there (any member when `None`).
    pub member: Option<String>,
    /// Where.
    pub addr: SocketAddr,
}

impl std::str::FromStr for PeerSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (member, addr) = match s.split_once('@') {
            Some((m, a)) => {
                let m = m.to_ascii_lowercase();
                if !pki::is_member_id(&m) {
                    return Err(format!("invalid member id {m:?} in {s:?}: expected 40 hex digits"));
                }
                (Some(m), a)
            }
            None => (None, s),
        };
        let addr = membership::parse_address(addr).map_err(|e| e.to_string())?;
        Ok(PeerSpec { member, addr })
    }
}

/// How to run a node.
#[derive(Debug)]
pub struct NodeConfig {
    /// The local identity.
    pub identity: Identity,
    /// Its membership of the group.
    pub membership: Membership,
    /// Where to listen (the membership's stored address unless overridden).
    pub listen: SocketAddr,
    /// Addresses to advertise instead of the bound ones (behind port forwarding).
    pub advertise: Vec<String>,
    /// Peers to dial besides those from presence and the invitation.
    pub peers: Vec<PeerSpec>,
    /// Cap on neighbour connections.
    pub max_neighbours: usize,
    /// Store durability.
    pub durability: Durability,
    /// Chat messages to publish before going online (for `--send`).
    pub initial_messages: Vec<String>,
    /// Dial members found in presence records and the invitation (true), or only
    /// `peers` (false: fixed topologies in tests).
    pub discover: bool,
}

/// Traffic and work counters of a node, shared with its connection tasks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frame bytes written to sockets (before TLS).
    pub bytes_out: std::sync::atomic::AtomicU64,
    /// Frame bytes read from sockets (before TLS).
    pub bytes_in: std::sync::atomic::AtomicU64,
    /// Records received that were already held (no verification spent).
    pub duplicates: std::sync::atomic::AtomicU64,
    /// Records accepted from peers.
    pub accepted: std::sync::atomic::AtomicU64,
}

impl Stats {
    /// Total frame bytes in both directions.
    pub fn total_bytes(&self) -> u64 {
        self.bytes_in.load(std::sync::atomic::Ordering::Relaxed)
            + self.bytes_out.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Status flags, as `group-chat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Accepting connections.
    pub listening: bool,
    /// Has at least one neighbour.
    pub connected: bool,
    /// Finished a first sync with a neighbour.
    pub synchronized: bool,
    /// Neighbour count.
    pub neighbours: usize,
}

/// A present member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member id.
    pub member: String,
    /// Friendly name.
    pub name: String,
    /// Whether it is this node.
    pub is_self: bool,
}

/// Member list changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// A neighbour connection to it came up.
    Connected,
    /// The last neighbour connection to it went down.
    Disconnected,
    /// Its presence appeared.
    Joined,
    /// Its presence was removed or expired.
    Left,
    /// Its presence changed (name or addresses).
    Updated,
}

/// Connection kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A mesh neighbour.
    Neighbour,
    /// A direct (whisper) connection.
    Direct,
}

impl From<Purpose> for ConnKind {
    fn from(p: Purpose) -> ConnKind {
        match p {
            Purpose::Neighbour => ConnKind::Neighbour,
            Purpose::Direct => ConnKind::Direct,
        }
    }
}

/// Connection changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnChange {
    /// Up.
    Up,
    /// Down.
    Down,
    /// A dial failed.
    Failed,
}

/// What the node reports. Chat messages are not events: front ends follow the store
/// (see [`Handle::follow`]), so a slow reader never holds the node back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Has a neighbour and finished its first sync (once).
    Ready,
    /// Status changed.
    Status(Status),
    /// A member list change.
    Member {
        /// What changed.
        change: MemberChange,
        /// Member id.
        member: String,
        /// Friendly name.
        name: String,
    },
    /// A connection change.
    Connection {
        /// Which kind.
        kind: ConnKind,
        /// What happened.
        change: ConnChange,
        /// The member, when known.
        member: Option<String>,
        /// The remote address.
        address: String,
        /// Why (down, failed).
        reason: Option<String>,
    },
    /// A whisper arrived.
    Whisper {
        /// Sender member id.
        from: String,
        /// Sender friendly name.
        name: String,
        /// The text.
        text: String,
        /// Unix ns of arrival.
        recv_ns: i64,
    },
    /// Something went wrong that the user should see.
    Error(String),
}

/// Where the answer to a whisper request goes.
type WhisperReply = oneshot::Sender<Result<String, NodeError>>;

enum Command {
    Publish(String, oneshot::Sender<Result<Uuid, NodeError>>),
    Whisper(String, String, WhisperReply),
    Members(oneshot::Sender<Vec<MemberInfo>>),
    Status(oneshot::Sender<Status>),
    Leave(oneshot::Sender<()>),
}

enum Input {
    Conn(ConnEvent),
    Command(Command),
}

/// A cloneable handle to a running node.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    seq: watch::Receiver<i64>,
    /// This node's member id.
    pub member_id: String,
    /// Addresses this node advertises.
    pub addresses: Vec<String>,
    /// Counters.
    pub stats: Arc<Stats>,
}

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Publishes a chat message; returns its record id once it is durable.
    pub async fn publish(&self, text: &str) -> Result<Uuid, NodeError> {
        self.ask(|tx| Command::Publish(text.to_string(), tx)).await?
    }

    /// Whispers to a present member (friendly name or member-id prefix); returns the
    /// member id it was sent to.
    pub async fn whisper(&self, member: &str, text: &str) -> Result<String, NodeError> {
        self.ask(|tx| Command::Whisper(member.to_string(), text.to_string(), tx))
            .await?
    }

    /// The member list: present members plus this node.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, NodeError> {
        self.ask(Command::Members).await
    }

    /// Current status.
    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(Command::Status).await
    }

    /// Leaves cleanly: removes presence, sends what is queued, closes connections.
    pub async fn leave(&self) -> Result<(), NodeError> {
        self.ask(Command::Leave).await
    }

    /// A receiver of the store's highest arrival number: when it changes, read the
    /// new records from the store (`Store::after`).
    pub fn follow(&self) -> watch::Receiver<i64> {
        self.seq.clone()
    }
}

struct Conn {
    member: [u8; 20],
    member_hex: String,
    name: String,
    addr: SocketAddr,
    outbound: bool,
    purpose: Purpose,
    writer: Writer,
    reader: tokio::task::AbortHandle,
    heard: Heard,
    lagging: bool,
    syncing: bool,
    last_used: Instant,
}

struct Presence {
    name: String,
    addresses: Vec<String>,
    expires_ms: i64,
}

struct PendingRecord {
    body: Vec<u8>,
    via_sync: bool,
    from: Option<ConnId>,
}

struct Backoff {
    until: Instant,
    delay: Duration,
}

struct Node {
    group: Uuid,
    me: [u8; 20],
    me_hex: String,
    my_name: String,
    identity: Identity,
    membership: Membership,
    store: Store,
    items: ItemSet,
    certs: HashMap<[u8; 20], Cert>,
    presence: HashMap<[u8; 20], Presence>,
    known: known::KnownPeers,
    pending: HashMap<[u8; 20], Vec<PendingRecord>>,
    pending_count: usize,
    conns: HashMap<ConnId, Conn>,
    dialing: HashSet<SocketAddr>,
    backoff: HashMap<SocketAddr, Backoff>,
    peers: Vec<PeerSpec>,
    whispers: HashMap<[u8; 20], Vec<(String, WhisperReply)>>,
    advertised: Vec<String>,
    max_neighbours: usize,
    tls: TlsConfigs,
    hello: Message,
    discover: bool,
    stats: Arc<Stats>,
    conn_tx: mpsc::Sender<ConnEvent>,
    next_id: Arc<AtomicUsize>,
    events: mpsc::UnboundedSender<Event>,
    seq_tx: watch::Sender<i64>,
    status: Status,
    ready_sent: bool,
    presence_version: u64,
    last_presence: Instant,
    last_purge: Instant,
    stopping: bool,
    auth_failures: (Instant, u32),
    /// Signature results computed in parallel for the batch being admitted.
    prevalidated: HashMap<(Uuid, [u8; 16]), bool>,
    /// Records admitted from peers but not yet committed: one commit for every frame
    /// that arrived together (group commit), then one flood.
    batch: Vec<(Put, Option<ConnId>)>,
    _checkpointer: crate::store::Checkpointer,
}

fn now_ms() -> i64 {
    let t = clock::now_precise();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn now_ns() -> i64 {
    clock::now_precise().unix_timestamp_nanos() as i64
}

fn hex_to_bytes(id: &str) -> Option<[u8; 20]> {
    record::member_bytes(id)
}

/// Starts a node. Returns its handle, its event stream and the actor's join handle.
pub async fn start(
    cfg: NodeConfig,
) -> Result<(Handle, mpsc::UnboundedReceiver<Event>, tokio::task::JoinHandle<()>), NodeError> {
    tls::install_default_provider();
    let m = &cfg.membership;
    let lock = Lock::acquire(
        &m.dir.join("store.lock"),
        &format!("the store of {:?} in {:?}", m.identity, m.group.name),
    )?;
    let now = clock::now();
    pki::verify_chain(&m.root, &m.chain, &m.membership, m.group.id, now)?;
    let mut store = Store::open(&m.dir.join(STORE_FILE), cfg.durability)?;
    // WAL checkpoints (with their fsync) run on a thread of their own, off the path
    // from receiving a record to forwarding it.
    let checkpointer = store.spawn_checkpointer()?;
    let tls = tls::configs(&cfg.identity, m)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| NodeError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| NodeError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let advertised = if cfg.advertise.is_empty() {
        membership::advertised_addresses(bound)
    } else {
        cfg.advertise.clone()
    };
    let me = hex_to_bytes(cfg.identity.member_id()).ok_or_else(|| NodeError::NoSuchMember("self".into()))?;

    let mut items = ItemSet::new();
    for (id, version, digest) in store.summaries()? {
        items.insert(Item {
            id: *id.as_bytes(),
            version,
            digest,
        });
    }
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (seq_tx, seq_rx) = watch::channel(store.max_seq()?);
    let (conn_tx, mut conn_rx) = mpsc::channel(4096);
    let (cmd_tx, mut cmd_rx) = mpsc::channel(256);
    let hello = Message::Hello {
        version: crate::wire::PROTOCOL_VERSION,
        purpose: Purpose::Neighbour,
        addresses: advertised.clone(),
    };
    let mut certs = HashMap::new();
    certs.insert(me, m.membership.clone());
    let purge_before = store.purge_expired(now_ms())?;
    drop(purge_before);
    let mut node = Node {
        group: m.group.id,
        me,
        me_hex: cfg.identity.member_id().to_string(),
        my_name: cfg.identity.friendly_name().to_string(),
        membership: cfg.membership.clone(),
        identity: cfg.identity,
        store,
        items,
        certs,
        presence: HashMap::new(),
        known: known::KnownPeers::load(&m.dir),
        pending: HashMap::new(),
        pending_count: 0,
        conns: HashMap::new(),
        dialing: HashSet::new(),
        backoff: HashMap::new(),
        peers: cfg.peers,
        whispers: HashMap::new(),
        advertised: advertised.clone(),
        max_neighbours: cfg.max_neighbours.max(1),
        tls: tls.clone(),
        hello: hello.clone(),
        discover: cfg.discover,
        stats: Arc::new(Stats::default()),
        conn_tx: conn_tx.clone(),
        next_id: Arc::new(AtomicUsize::new(1)),
        events: events_tx,
        seq_tx,
        status: Status::default(),
        ready_sent: false,
        presence_version: 0,
        last_presence: Instant::now(),
        last_purge: Instant::now(),
        stopping: false,
        auth_failures: (Instant::now(), 0),
        prevalidated: HashMap::new(),
        batch: Vec::new(),
        _checkpointer: checkpointer,
    };
    node.load_known()?;
    node.publish_membership()?;
    for text in &cfg.initial_messages {
        node.publish_chat(text)?;
    }
    node.publish_presence(false)?;
    node.set_status(|s| s.listening = true);
    tokio::spawn(conn::accept_loop(
        listener,
        tls,
        hello,
        conn_tx,
        node.next_id.clone(),
        node.stats.clone(),
    ));
    let handle = Handle {
        tx: cmd_tx,
        seq: seq_rx,
        member_id: node.me_hex.clone(),
        addresses: advertised,
        stats: node.stats.clone(),
    };
    let task = tokio::spawn(async move {
        let _lock = lock;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        node.maintain();
        loop {
            let input = tokio::select! {
                Some(ev) = conn_rx.recv() => Input::Conn(ev),
                cmd = cmd_rx.recv() => match cmd {
                    Some(c) => Input::Command(c),
                    // Every handle dropped: leave as if asked.
                    None => { node.leave().await; return; }
                },
                _ = tick.tick() => { node.flush_batch(); node.on_tick(); continue; }
            };
            match input {
                Input::Conn(ev) => {
                    node.on_conn_event(ev);
                    // Take whatever else has arrived, then commit it all at once.
                    for _ in 0..MAX_EVENTS_PER_COMMIT {
                        match conn_rx.try_recv() {
                            Ok(ev) => node.on_conn_event(ev),
                            Err(_) => break,
                        }
                    }
                    node.flush_batch();
                }
                Input::Command(Command::Leave(reply)) => {
                    node.leave().await;
                    let _ = reply.send(());
                    return;
                }
                Input::Command(c) => node.on_command(c),
            }
        }
    });
    Ok((handle, events_rx, task))
}

impl Node {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn set_status(&mut self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status;
        f(&mut s);
        s.neighbours = self.neighbour_count();
        s.connected = s.neighbours > 0;
        if s != self.status {
            self.status = s;
            self.emit(Event::Status(s));
        }
        if s.connected && s.synchronized && !self.ready_sent {
            self.ready_sent = true;
            self.emit(Event::Ready);
        }
    }

    fn neighbour_count(&self) -> usize {
        self.conns.values().filter(|c| c.purpose == Purpose::Neighbour).count()
    }

    /// Loads verified memberships and live presence from the store at start.
    fn load_known(&mut self) -> Result<(), NodeError> {
        let now = clock::now();
        for r in self.store.of_type(&MEMBERSHIP_TYPE)? {
            if let Ok(cert) = self.verify_membership_record(&r, now) {
                self.certs.insert(r.creator, cert);
            }
        }
        let t = now_ms();
        let mut learnt = false;
        for r in self.store.of_type(&PRESENCE_TYPE)? {
            if r.creator != self.me && !r.deleted && r.expires_ms > t {
                let p = presence_of(&r);
                learnt |= self.known.note(&pki::hex(&r.creator), &p.addresses);
                self.presence.insert(r.creator, p);
            }
            if r.creator == self.me {
                self.presence_version = self.presence_version.max(r.version);
            }
        }
        if learnt && let Err(e) = self.known.save() {
            tracing::warn!("cannot remember where members are: {e}");
        }
        Ok(())
    }

    // ---- publishing ----------------------------------------------------------------

    fn sign_and_store(&mut self, mut r: Record) -> Result<Uuid, NodeError> {
        r.sign(&self.group, &self.identity.key)?;
        let body = r.encode();
        let id = r.id;
        self.items.insert(Item {
            id: *id.as_bytes(),
            version: r.version,
            digest: r.digest(),
        });
        let put = Put {
            record: r,
            body,
            via_sync: false,
            received_ns: now_ns(),
        };
        self.store.put_batch(std::slice::from_ref(&put))?;
        self.after_commit(vec![put], None);
        Ok(id)
    }

    fn publish_chat(&mut self, text: &str) -> Result<Uuid, NodeError> {
        if text.len() > record::MAX_CHAT_BYTES {
            return Err(NodeError::TooLong(text.len()));
        }
        let lifetime =
            i64::try_from(self.membership.group.message_lifetime_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut r = Record::new(CHAT_TYPE, self.me, now_ms(), lifetime);
        r.data = text.as_bytes().to_vec();
        self.sign_and_store(r)
    }

    fn publish_membership(&mut self) -> Result<(), NodeError> {
        let id = record::per_member_id(&MEMBERSHIP_TYPE, &self.me);
        let m = &self.membership;
        let version = u64::try_from(m.membership.not_before.unix_timestamp())
            .unwrap_or(1)
            .max(1);
        if self.items.get(id.as_bytes()).is_some_and(|i| i.version >= version) {
            return Ok(());
        }
        let mut r = Record::new(MEMBERSHIP_TYPE, self.me, now_ms(), 0);
        r.id = id;
        r.version = version;
        r.expires_ms = m.membership.not_after.unix_timestamp().saturating_mul(1000);
        r.data = encode_chain(&m.membership, &m.chain);
        self.sign_and_store(r)?;
        Ok(())
    }

    fn publish_presence(&mut self, leaving: bool) -> Result<(), NodeError> {
        let t = now_ms();
        let lifetime =
            i64::try_from(self.membership.group.presence_lifetime_secs.saturating_mul(1000)).unwrap_or(300_000);
        // Versions follow the clock so a restarted node's presence is always newer.
        self.presence_version = (self.presence_version + 1).max(t as u64);
        let mut r = Record::new(PRESENCE_TYPE, self.me, t, lifetime);
        r.id = record::per_member_id(&PRESENCE_TYPE, &self.me);
        r.version = self.presence_version;
        r.deleted = leaving;
        r.attributes.push(("name".into(), AttrValue::Str(self.my_name.clone())));
        r.attributes
            .push(("addresses".into(), AttrValue::Str(self.advertised.join(","))));
        self.last_presence = Instant::now();
        self.sign_and_store(r)?;
        Ok(())
    }

    // ---- commands ------------------------------------------------------------------

    fn on_command(&mut self, c: Command) {
        self.flush_batch();
        match c {
            Command::Publish(text, reply) => {
                let _ = reply.send(self.publish_chat(&text));
            }
            Command::Whisper(who, text, reply) => self.whisper(&who, text, reply),
            Command::Members(reply) => {
                let _ = reply.send(self.members());
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status);
            }
            Command::Leave(_) => {}
        }
    }

    fn members(&self) -> Vec<MemberInfo> {
        let mut out = vec![MemberInfo {
            member: self.me_hex.clone(),
            name: self.my_name.clone(),
            is_self: true,
        }];
        let mut others: Vec<MemberInfo> = self
            .presence
            .iter()
            .map(|(id, p)| MemberInfo {
                member: pki::hex(id),
                name: p.name.clone(),
                is_self: false,
            })
            .collect();
        others.sort_by(|a, b| (&a.name, &a.member).cmp(&(&b.name, &b.member)));
        out.extend(others);
        out
    }

    fn resolve_member(&self, query: &str) -> Result<[u8; 20], NodeError> {
        let q = query.to_ascii_lowercase();
        let present: Vec<([u8; 20], &str)> = self.presence.iter().map(|(id, p)| (*id, p.name.as_str())).collect();
        let mut by_name: Vec<_> = present.iter().filter(|(_, n)| *n == query).collect();
        if by_name.is_empty() {
            by_name = present.iter().filter(|(_, n)| n.eq_ignore_ascii_case(query)).collect();
        }
        let matches: Vec<_> = if by_name.is_empty() {
            present
                .iter()
                .filter(|(id, _)| !q.is_empty() && pki::hex(id).starts_with(&q))
                .collect()
        } else {
            by_name
        };
        match matches.as_slice() {
            [one] => Ok(one.0),
            [] => Err(NodeError::NoSuchMember(query.to_string())),
            many => Err(NodeError::AmbiguousMember(
                query.to_string(),
                many.iter()
                    .map(|(id, n)| format!("{n} ({})", &pki::hex(id)[..8]))
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    fn whisper(&mut self, who: &str, text: String, reply: WhisperReply) {
        let target = match self.resolve_member(who) {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let hex = pki::hex(&target);
        if let Some(conn) = self.conns.values_mut().find(|c| c.member == target) {
            conn.last_used = Instant::now();
            let ok = conn.writer.send_message(&Message::Whisper { text });
            let _ = reply.send(if ok {
                Ok(hex)
            } else {
                Err(NodeError::NoSuchMember(who.to_string()))
            });
            return;
        }
        let addrs: Vec<SocketAddr> = self
            .presence
            .get(&target)
            .map(|p| p.addresses.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        let Some(addr) = addrs.first().copied() else {
            let _ = reply.send(Err(NodeError::NoSuchMember(who.to_string())));
            return;
        };
        self.whispers.entry(target).or_default().push((text, reply));
        if self.whispers[&target].len() == 1 {
            self.dial(addr, Some(hex), Purpose::Direct);
        }
    }

    // ---- connections ---------------------------------------------------------------

    fn dial(&mut self, addr: SocketAddr, expected: Option<String>, purpose: Purpose) {
        if purpose == Purpose::Neighbour && !self.dialing.insert(addr) {
            return;
        }
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as ConnId;
        let hello = match &self.hello {
            Message::Hello { version, addresses, .. } => Message::Hello {
                version: *version,
                purpose,
                addresses: addresses.clone(),
            },
            other => other.clone(),
        };
        tokio::spawn(conn::dial(
            id,
            addr,
            expected,
            purpose,
            self.tls.clone(),
            hello,
            self.conn_tx.clone(),
            self.stats.clone(),
        ));
    }

    fn on_conn_event(&mut self, ev: ConnEvent) {
        // Anything but more records sees the store as the peer will: commit first.
        if !matches!(ev, ConnEvent::Frame(_, Message::Records { .. })) {
            self.flush_batch();
        }
        match ev {
            ConnEvent::Up(up) => self.on_up(*up),
            ConnEvent::Frame(id, msg) => self.on_frame(id, msg),
            ConnEvent::Down(id, reason) => self.on_down(id, &reason),
            ConnEvent::AcceptFailed { addr, reason } => {
                // Anyone can knock: report at most a few per second, not a flood.
                let now = Instant::now();
                if now.duration_since(self.auth_failures.0) > Duration::from_secs(1) {
                    self.auth_failures = (now, 0);
                }
                self.auth_failures.1 += 1;
                if self.auth_failures.1 <= AUTH_EVENTS_PER_SECOND {
                    self.emit(Event::Connection {
                        kind: ConnKind::Neighbour,
                        change: ConnChange::Failed,
                        member: None,
                        address: addr.to_string(),
                        reason: Some(format!("authentication failed: {reason}")),
                    });
                }
            }
            ConnEvent::DialFailed {
                addr,
                purpose,
                expected,
                reason,
            } => {
                self.dialing.remove(&addr);
                if purpose == Purpose::Neighbour && expected.is_some() && reason.contains(tls::WRONG_MEMBER) {
                    // `--peer ID@ADDR` names someone who is not there: a mistake in the
                    // command line, not a member to retry. Drop that entry (its backoff
                    // would also hold back dials of the address without an id) and say so.
                    self.peers.retain(|p| !(p.addr == addr && p.member == expected));
                    self.backoff.remove(&addr);
                    self.emit(Event::Error(format!(
                        "--peer {}@{addr}: {reason}; no longer dialling it as that member",
                        expected.as_deref().unwrap_or_default()
                    )));
                } else {
                    self.note_failure(addr);
                }
                let kind = ConnKind::from(purpose);
                self.emit(Event::Connection {
                    kind,
                    change: ConnChange::Failed,
                    member: expected.clone(),
                    address: addr.to_string(),
                    reason: Some(reason.clone()),
                });
                if purpose == Purpose::Direct
                    && let Some(target) = expected.as_deref().and_then(hex_to_bytes)
                {
                    for (_, reply) in self.whispers.remove(&target).unwrap_or_default() {
                        let _ = reply.send(Err(NodeError::NoSuchMember(format!(
                            "{} (unreachable: {reason})",
                            pki::hex(&target)
                        ))));
                    }
                }
            }
        }
    }

    fn note_failure(&mut self, addr: SocketAddr) {
        let b = self.backoff.entry(addr).or_insert(Backoff {
            until: Instant::now(),
            delay: MIN_BACKOFF / 2,
        });
        b.delay = (b.delay * 2).min(MAX_BACKOFF);
        // Jitter keeps restarting peers from dialling in lockstep.
        let spread = (b.delay.as_millis() as u64 / 4).max(100);
        let jitter = Duration::from_millis(u64::from(rand_u16()) % spread);
        b.until = Instant::now() + b.delay + jitter;
    }

    fn on_up(&mut self, up: ConnUp) {
        if up.outbound {
            self.dialing.remove(&up.addr);
            self.backoff.remove(&up.addr);
        }
        let Some(member) = hex_to_bytes(&up.member) else {
            up.reader.abort();
            return;
        };
        if member == self.me || self.stopping {
            // Dialled ourselves through one of our own addresses.
            up.reader.abort();
            if member == self.me
                && let Ok(a) = up.addr.to_string().parse::<SocketAddr>()
            {
                self.backoff.insert(
                    a,
                    Backoff {
                        until: Instant::now() + Duration::from_secs(3600),
                        delay: MAX_BACKOFF,
                    },
                );
            }
            return;
        }
        // The peer's chain was verified in the handshake: keep its certificate, and
        // admit records that were waiting for it.
        if let std::collections::hash_map::Entry::Vacant(slot) = self.certs.entry(member) {
            slot.insert(up.cert.clone());
            let mut accepted = Vec::new();
            self.release_pending(member, &mut accepted);
            self.batch.extend(accepted.into_iter().map(|p| (p, None)));
        }
        let name = self
            .presence
            .get(&member)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| up.cert.common_name.clone());
        if up.purpose == Purpose::Neighbour {
            let dialer_me = up.outbound;
            if let Some((&old_id, old)) = self
                .conns
                .iter()
                .find(|(_, c)| c.member == member && c.purpose == Purpose::Neighbour)
            {
                // Both sides dialled: keep the connection dialled by the lower member id,
                // a rule both ends apply alike.
                let preferred_dialer_is_me = self.me < member;
                let new_preferred = dialer_me == preferred_dialer_is_me;
                let old_preferred = old.outbound == preferred_dialer_is_me;
                if new_preferred || !old_preferred {
                    self.close(old_id, "replaced by a newer connection");
                } else {
                    up.reader.abort();
                    return;
                }
            } else if !up.outbound && self.neighbour_count() >= self.max_neighbours {
                up.reader.abort();
                self.emit(Event::Connection {
                    kind: ConnKind::Neighbour,
                    change: ConnChange::Failed,
                    member: Some(up.member.clone()),
                    address: up.addr.to_string(),
                    reason: Some(format!("refused: already {} neighbours", self.max_neighbours)),
                });
                return;
            }
        }
        let kind = ConnKind::from(up.purpose);
        let had_neighbour = self
            .conns
            .values()
            .any(|c| c.member == member && c.purpose == Purpose::Neighbour);
        let conn = Conn {
            member,
            member_hex: up.member.clone(),
            name: name.clone(),
            addr: up.addr,
            outbound: up.outbound,
            purpose: up.purpose,
            writer: up.writer,
            reader: up.reader,
            heard: up.heard,
            lagging: false,
            syncing: false,
            last_used: Instant::now(),
        };
        self.conns.insert(up.id, conn);
        self.emit(Event::Connection {
            kind,
            change: ConnChange::Up,
            member: Some(up.member.clone()),
            address: up.addr.to_string(),
            reason: None,
        });
        if up.purpose == Purpose::Neighbour {
            if !had_neighbour {
                self.emit(Event::Member {
                    change: MemberChange::Connected,
                    member: up.member.clone(),
                    name,
                });
            }
            self.set_status(|_| {});
            if up.outbound {
                self.start_sync(up.id);
            }
        }
        if let Some(queued) = self.whispers.remove(&member)
            && let Some(c) = self.conns.get(&up.id)
        {
            for (text, reply) in queued {
                let ok = c.writer.send_message(&Message::Whisper { text });
                let _ = reply.send(if ok {
                    Ok(up.member.clone())
                } else {
                    Err(NodeError::Stopped)
                });
            }
        }
    }

    fn close(&mut self, id: ConnId, reason: &str) {
        if let Some(c) = self.conns.remove(&id) {
            c.reader.abort();
            // Dropping the writer ends the write task, which shuts the socket down.
            self.after_down(c, reason);
        }
    }

    fn on_down(&mut self, id: ConnId, reason: &str) {
        if let Some(c) = self.conns.remove(&id) {
            if c.outbound {
                self.note_failure(c.addr);
            }
            self.after_down(c, reason);
        }
    }

    fn after_down(&mut self, c: Conn, reason: &str) {
        let kind = ConnKind::from(c.purpose);
        self.emit(Event::Connection {
            kind,
            change: ConnChange::Down,
            member: Some(c.member_hex.clone()),
            address: c.addr.to_string(),
            reason: Some(reason.to_string()),
        });
        if c.purpose == Purpose::Neighbour
            && !self
                .conns
                .values()
                .any(|o| o.member == c.member && o.purpose == Purpose::Neighbour)
        {
            self.emit(Event::Member {
                change: MemberChange::Disconnected,
                member: c.member_hex.clone(),
                name: c.name.clone(),
            });
        }
        self.set_status(|_| {});
    }

    /// Dials more neighbours when below the target, from --peer, the invitation's
    /// addresses and presence records, skipping ones in backoff.
    fn maintain(&mut self) {
        if self.stopping {
            return;
        }
        let target = TARGET_NEIGHBOURS.min(self.max_neighbours);
        let have = self.neighbour_count() + self.dialing.len();
        if have >= target {
            return;
        }
        let connected: HashSet<[u8; 20]> = self
            .conns
            .values()
            .filter(|c| c.purpose == Purpose::Neighbour)
            .map(|c| c.member)
            .collect();
        let connected_addrs: HashSet<SocketAddr> = self.conns.values().map(|c| c.addr).collect();
        let own: HashSet<String> = self.advertised.iter().cloned().collect();
        let now = Instant::now();
        let mut candidates: Vec<(SocketAddr, Option<String>)> = Vec::new();
        let push = |addr: SocketAddr, member: Option<String>, candidates: &mut Vec<(SocketAddr, Option<String>)>| {
            if own.contains(&addr.to_string())
                || connected_addrs.contains(&addr)
                || self.dialing.contains(&addr)
                || self.backoff.get(&addr).is_some_and(|b| b.until > now)
                || member
                    .as_deref()
                    .and_then(hex_to_bytes)
                    .is_some_and(|m| connected.contains(&m) || m == self.me)
                || candidates.iter().any(|(a, _)| *a == addr)
            {
                return;
            }
            candidates.push((addr, member));
        };
        for p in &self.peers {
            push(p.addr, p.member.clone(), &mut candidates);
        }
        let mut others: Vec<(SocketAddr, Option<String>)> = Vec::new();
        let discovered = if self.discover {
            self.presence.iter().collect::<Vec<_>>()
        } else {
            Vec::new()
        };
        for (id, p) in discovered {
            for a in &p.addresses {
                if let Ok(addr) = a.parse() {
                    push(addr, Some(pki::hex(id)), &mut others);
                }
            }
        }
        for a in self.membership.bootstrap.iter().filter(|_| self.discover) {
            if let Ok(addr) = a.parse() {
                push(addr, None, &mut others);
            }
        }
        shuffle(&mut others);
        candidates.extend(others);
        // Last, where members were seen before: found again after everyone was away.
        for (member, a) in self.known.addresses().filter(|_| self.discover) {
            if let Ok(addr) = a.parse() {
                push(addr, Some(member.to_string()), &mut candidates);
            }
        }
        for (addr, member) in candidates.into_iter().take(target - have) {
            self.dial(addr, member, Purpose::Neighbour);
        }
    }

    fn on_tick(&mut self) {
        if self.stopping {
            return;
        }
        self.maintain();
        // Lagging neighbours whose queue has drained catch up by sync; ones that read
        // nothing at all are cut off.
        let mut resync = Vec::new();
        let mut stalled = Vec::new();
        for (id, c) in &mut self.conns {
            let queued = c.writer.queued_bytes();
            if queued > STALLED_BYTES {
                stalled.push(*id);
            } else if c.lagging && queued < LAGGING_BYTES / 4 && !c.syncing {
                c.lagging = false;
                resync.push(*id);
            }
        }
        for id in stalled {
            self.close(id, "the peer is not reading");
        }
        let silent: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.heard.silent_for() > SILENCE_LIMIT)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            self.close(id, "nothing heard for 5 s");
        }
        for id in resync {
            self.start_sync(id);
        }
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.purpose == Purpose::Direct && c.last_used.elapsed() > DIRECT_IDLE)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.close(id, "idle");
        }
        let refresh = Duration::from_secs(self.membership.group.presence_lifetime_secs.max(3) / 3);
        if self.last_presence.elapsed() >= refresh
            && let Err(e) = self.publish_presence(false)
        {
            self.emit(Event::Error(format!("cannot refresh presence: {e}")));
        }
        if self.last_purge.elapsed() >= PURGE_EVERY {
            self.last_purge = Instant::now();
            self.purge();
        }
    }

    fn purge(&mut self) {
        let t = now_ms();
        match self.store.purge_expired(t) {
            Ok(gone) => {
                for (id, rtype, creator) in gone {
                    self.items.remove(id.as_bytes());
                    if rtype == PRESENCE_TYPE
                        && let Some(p) = self.presence.remove(&creator)
                    {
                        self.emit(Event::Member {
                            change: MemberChange::Left,
                            member: pki::hex(&creator),
                            name: p.name,
                        });
                    }
                }
            }
            Err(e) => self.emit(Event::Error(format!("cannot purge expired records: {e}"))),
        }
        let expired: Vec<[u8; 20]> = self
            .presence
            .iter()
            .filter(|(_, p)| p.expires_ms <= t)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.presence.remove(&id) {
                self.emit(Event::Member {
                    change: MemberChange::Left,
                    member: pki::hex(&id),
                    name: p.name,
                });
            }
        }
    }

    async fn leave(&mut self) {
        if let Err(e) = self.publish_presence(true) {
            self.emit(Event::Error(format!("cannot remove presence: {e}")));
        }
        self.stopping = true;
        // Give writers a moment to send what is queued (the tombstone included).
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.conns.values().any(|c| c.writer.queued_bytes() > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.remove(&id) {
                c.reader.abort();
            }
        }
        // Let the write tasks flush and shut their sockets down.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // ---- frames --------------------------------------------------------------------

    fn on_frame(&mut self, id: ConnId, msg: Message) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        conn.last_used = Instant::now();
        let purpose = conn.purpose;
        match msg {
            Message::Whisper { text } => {
                let from = conn.member_hex.clone();
                let name = self
                    .presence
                    .get(&conn.member)
                    .map(|p| p.name.clone())
                    .unwrap_or_else(|| conn.name.clone());
                self.emit(Event::Whisper {
                    from,
                    name,
                    text,
                    recv_ns: now_ns(),
                });
            }
            // Readers drop pings; nothing to do should one get here.
            Message::Ping => {}
            _ if purpose == Purpose::Direct => self.close(id, "only whispers are allowed on a direct connection"),
            Message::Hello { .. } => self.close(id, "unexpected hello"),
            Message::Records { sync, bodies } => self.on_records(id, bodies, sync),
            Message::Want { ids } => self.send_bodies(id, &ids),
            Message::SyncRanges { from_initiator, ranges } => self.on_sync_ranges(id, from_initiator, &ranges),
            Message::SyncEnd => {
                if let Some(c) = self.conns.get(&id) {
                    c.writer.send_message(&Message::SyncEndAck);
                }
                self.set_status(|s| s.synchronized = true);
            }
            Message::SyncEndAck => self.finish_sync(id),
        }
    }

    /// Our sync session with `id` is complete: we hold the union of both sets.
    fn finish_sync(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.syncing = false;
        }
        self.set_status(|s| s.synchronized = true);
    }

    fn start_sync(&mut self, id: ConnId) {
        let ranges = sync::encode_ranges(&sync::initiate(&self.items));
        if let Some(c) = self.conns.get_mut(&id) {
            c.syncing = true;
            c.writer.send_message(&Message::SyncRanges {
                from_initiator: true,
                ranges,
            });
        }
    }

    fn on_sync_ranges(&mut self, id: ConnId, from_initiator: bool, bytes: &[u8]) {
        let incoming = match sync::decode_ranges(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.close(id, &format!("bad sync message: {e}"));
                return;
            }
        };
        if !from_initiator && incoming.is_empty() {
            if let Some(c) = self.conns.get(&id) {
                c.writer.send_message(&Message::SyncEnd);
            }
            // The peer answered our last wants before this empty reply (one ordered
            // stream): we hold the union now, without waiting for SyncEndAck.
            self.finish_sync(id);
            return;
        }
        let outcome = match sync::reconcile(&self.items, &incoming) {
            Ok(o) => o,
            Err(e) => {
                self.close(id, &format!("bad sync message: {e}"));
                return;
            }
        };
        let send: Vec<Uuid> = outcome.send.iter().map(|b| Uuid::from_bytes(*b)).collect();
        self.send_bodies(id, &send);
        let Some(c) = self.conns.get(&id) else { return };
        for chunk in outcome.want.chunks(crate::wire::MAX_WANT_IDS) {
            c.writer.send_message(&Message::Want {
                ids: chunk.iter().map(|b| Uuid::from_bytes(*b)).collect(),
            });
        }
        if from_initiator {
            c.writer.send_message(&Message::SyncRanges {
                from_initiator: false,
                ranges: sync::encode_ranges(&outcome.reply),
            });
        } else if outcome.reply.is_empty() {
            c.writer.send_message(&Message::SyncEnd);
            if outcome.want.is_empty() && outcome.send.is_empty() {
                // Nothing outstanding either way (what we pushed is only the peer's once
                // it acknowledges): no need to wait for SyncEndAck.
                self.finish_sync(id);
            }
        } else {
            c.writer.send_message(&Message::SyncRanges {
                from_initiator: true,
                ranges: sync::encode_ranges(&outcome.reply),
            });
        }
    }

    /// Sends stored records by id (answers to Want and sync), in frames of bounded size.
    fn send_bodies(&mut self, id: ConnId, ids: &[Uuid]) {
        if ids.is_empty() {
            return;
        }
        let bodies = match self.store.bodies(ids) {
            Ok(b) => b,
            Err(e) => {
                self.emit(Event::Error(format!("cannot read the store: {e}")));
                return;
            }
        };
        let Some(c) = self.conns.get(&id) else { return };
        for frame in pack(bodies) {
            c.writer.send_message(&Message::Records {
                sync: true,
                bodies: frame,
            });
        }
    }

    fn on_records(&mut self, from: ConnId, bodies: Vec<Vec<u8>>, via_sync: bool) {
        let mut records = Vec::with_capacity(bodies.len());
        for body in bodies {
            match Record::decode(&body) {
                Ok(r) => records.push((r, body)),
                Err(e) => {
                    self.close(from, &format!("malformed record: {e}"));
                    return;
                }
            }
        }
        self.prevalidated = self.verify_in_parallel(&records);
        let mut accepted = Vec::new();
        for (r, body) in records {
            self.admit(r, body, via_sync, Some(from), &mut accepted);
        }
        self.prevalidated.clear();
        self.batch.extend(accepted.into_iter().map(|p| (p, Some(from))));
    }

    /// Commits the admitted records in one transaction, then floods each to every
    /// neighbour but the one it came from.
    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let puts: Vec<Put> = batch.iter().map(|(p, _)| p.clone()).collect();
        if let Err(e) = self.store.put_batch(&puts) {
            for p in &puts {
                self.items.remove(p.record.id.as_bytes());
            }
            self.emit(Event::Error(format!("cannot store records: {e}")));
            return;
        }
        let sources: HashSet<Option<ConnId>> = batch.iter().map(|(_, f)| *f).collect();
        if sources.len() == 1 {
            let from = batch[0].1;
            self.after_commit(puts, from);
        } else {
            // Records from several neighbours: each goes everywhere but where it came from.
            for source in sources {
                let part: Vec<Put> = batch
                    .iter()
                    .filter(|(_, f)| *f == source)
                    .map(|(p, _)| p.clone())
                    .collect();
                self.after_commit(part, source);
            }
        }
    }

    /// Verifies the signatures of a large batch (sync brings thousands) on every core
    /// before the sequential checks: signature checks are ~60 % of the work, and one
    /// core verifies only ~35,000 Ed25519 signatures a second. Records already held or
    /// whose signer is unknown are left for the sequential path.
    fn verify_in_parallel(&self, records: &[(Record, Vec<u8>)]) -> HashMap<(Uuid, [u8; 16]), bool> {
        // available_parallelism reads cgroup files: ask once, and only for big batches.
        if records.len() < PARALLEL_VERIFY_MIN {
            return HashMap::new();
        }
        let threads = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8));
        if threads < 2 {
            return HashMap::new();
        }
        let work: Vec<(&Record, &Cert)> = records
            .iter()
            .filter(|(r, _)| r.rtype != MEMBERSHIP_TYPE)
            .filter(|(r, _)| {
                self.items
                    .get(r.id.as_bytes())
                    .is_none_or(|e| e.version < r.version || (e.version == r.version && e.digest != r.digest()))
            })
            .filter_map(|(r, _)| self.certs.get(&r.modifier).map(|c| (r, c)))
            .collect();
        let group = self.group;
        let chunk = work.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(r, c)| ((r.id, r.digest()), r.verify_signature(&group, c)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        })
    }

    /// Decides whether a received record is stored: skips copies we have, checks times,
    /// membership and signature, applies the conflict rule. Accepted records go into
    /// `accepted` (and the sync index) for one batched commit.
    fn admit(&mut self, r: Record, body: Vec<u8>, via_sync: bool, from: Option<ConnId>, accepted: &mut Vec<Put>) {
        let digest = r.digest();
        let existing = self.items.get(r.id.as_bytes());
        if let Some(e) = existing
            && (e.version > r.version || (e.version == r.version && e.digest == digest))
        {
            self.stats.duplicates.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let t = now_ms();
        if r.expires_ms <= t {
            return;
        }
        if let Err(why) = self.check_times(&r, t) {
            tracing::info!("rejected record {} from {}: {why}", r.id, r.creator_id());
            return;
        }
        if r.rtype == MEMBERSHIP_TYPE {
            match self.verify_membership_record(&r, clock::now()) {
                Ok(cert) => {
                    self.certs.insert(r.creator, cert);
                }
                Err(why) => {
                    tracing::info!("rejected membership record from {}: {why}", r.creator_id());
                    return;
                }
            }
        } else {
            for m in [r.creator, r.modifier] {
                // A membership that has ended since we learnt it counts as unknown, as on
                // a node started now: else an expired member, refused at the handshake,
                // could go on publishing through any member who relays for it.
                if !self.certs.get(&m).is_some_and(|c| valid_at(c, t)) {
                    self.hold(m, body, via_sync, from);
                    return;
                }
            }
            if let Err(why) = self.check_record(&r) {
                tracing::info!("rejected record {} from {}: {why}", r.id, r.creator_id());
                return;
            }
        }
        if let Some(e) = existing
            && e.version == r.version
        {
            // Two copies of one version: the conflict rule picks, the same on every peer.
            let ours = accepted
                .iter()
                .rev()
                .find(|p| p.record.id == r.id)
                .map(|p| p.record.clone())
                .or_else(|| self.store.get(&r.id).ok().flatten());
            if let Some(ours) = ours
                && record::compare(&r, &ours) != std::cmp::Ordering::Greater
            {
                return;
            }
        }
        self.items.insert(Item {
            id: *r.id.as_bytes(),
            version: r.version,
            digest,
        });
        self.stats.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let creator = r.creator;
        let is_membership = r.rtype == MEMBERSHIP_TYPE;
        accepted.push(Put {
            record: r,
            body,
            via_sync,
            received_ns: now_ns(),
        });
        if is_membership {
            self.release_pending(creator, accepted);
        }
    }

    /// Admits the records that waited for `member`'s membership, now known.
    fn release_pending(&mut self, member: [u8; 20], accepted: &mut Vec<Put>) {
        if let Some(waiting) = self.pending.remove(&member) {
            self.pending_count -= waiting.len();
            for p in waiting {
                if let Ok(r) = Record::decode(&p.body) {
                    self.admit(r, p.body, p.via_sync, p.from, accepted);
                }
            }
        }
    }

    fn hold(&mut self, member: [u8; 20], body: Vec<u8>, via_sync: bool, from: Option<ConnId>) {
        if self.pending_count >= MAX_PENDING_RECORDS {
            // Bounded memory: a record not held now comes back with the next sync.
            return;
        }
        let list = self.pending.entry(member).or_default();
        if list.iter().any(|p| p.body == body) {
            return;
        }
        list.push(PendingRecord { body, via_sync, from });
        self.pending_count += 1;
    }

    fn check_times(&self, r: &Record, t: i64) -> Result<(), String> {
        if r.created_ms > t + MAX_CLOCK_SKEW_MS || r.modified_ms > t + MAX_CLOCK_SKEW_MS {
            return Err("created or modified in the future".into());
        }
        if r.modified_ms < r.created_ms {
            return Err("modified before created".into());
        }
        let g = &self.membership.group;
        let secs_ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let max_life = match r.rtype {
            t if t == PRESENCE_TYPE => secs_ms(g.presence_lifetime_secs),
            t if t == MEMBERSHIP_TYPE => i64::MAX,
            _ => secs_ms(g.message_lifetime_secs),
        };
        if r.expires_ms.saturating_sub(r.modified_ms) > max_life.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err("lives longer than the group allows".into());
        }
        Ok(())
    }

    /// Checks a non-membership record whose creator and modifier are known.
    fn check_record(&self, r: &Record) -> Result<(), String> {
        let modifier = &self.certs[&r.modifier];
        if r.modifier != r.creator {
            let admin = matches!(modifier.claim, Claim::Membership { role: Role::Admin, .. });
            if !admin || r.rtype == PRESENCE_TYPE {
                return Err("modified by someone other than its creator".into());
            }
        }
        if r.rtype == PRESENCE_TYPE && r.id != record::per_member_id(&PRESENCE_TYPE, &r.creator) {
            return Err("presence record with a foreign id".into());
        }
        if r.rtype == CHAT_TYPE && (r.data.len() > record::MAX_CHAT_BYTES || std::str::from_utf8(&r.data).is_err()) {
            return Err("chat text is not UTF-8 within the size limit".into());
        }
        let valid = match self.prevalidated.get(&(r.id, r.digest())) {
            Some(v) => *v,
            None => r.verify_signature(&self.group, modifier),
        };
        if !valid {
            return Err("bad signature".into());
        }
        Ok(())
    }

    /// A membership record carries its chain: check it against the root and the signature.
    fn verify_membership_record(&self, r: &Record, now: time::OffsetDateTime) -> Result<Cert, String> {
        if r.creator != r.modifier || r.id != record::per_member_id(&MEMBERSHIP_TYPE, &r.creator) {
            return Err("not published by the member itself".into());
        }
        let certs = decode_chain(&r.data).ok_or("its chain does not decode")?;
        let (leaf, chain) = certs.split_first().ok_or("empty chain")?;
        let m = &self.membership;
        let claim = pki::verify_chain_links(&m.root, chain, leaf, m.group.id, now).map_err(|e| e.to_string())?;
        match claim {
            Claim::Membership { member, .. } if hex_to_bytes(&member) == Some(r.creator) => {}
            _ => return Err("the chain is for another member".into()),
        }
        if r.expires_ms > leaf.not_after.unix_timestamp().saturating_mul(1000) + MAX_CLOCK_SKEW_MS {
            return Err("outlives the membership".into());
        }
        if !r.verify_signature(&self.group, leaf) {
            return Err("bad signature".into());
        }
        Ok(leaf.clone())
    }

    /// After records are durable: flood them, update presence, tell front ends.
    fn after_commit(&mut self, accepted: Vec<Put>, from: Option<ConnId>) {
        let mut max_seq_changed = false;
        for p in &accepted {
            if p.record.rtype == PRESENCE_TYPE {
                self.apply_presence(&p.record);
            }
            if p.record.rtype == CHAT_TYPE {
                max_seq_changed = true;
            }
        }
        let bodies: Vec<Vec<u8>> = accepted.into_iter().map(|p| p.body).collect();
        let frames: Vec<Arc<Vec<u8>>> = pack(bodies)
            .into_iter()
            .map(|b| Arc::new(Message::Records { sync: false, bodies: b }.encode()))
            .collect();
        for (id, c) in &mut self.conns {
            if Some(*id) == from || c.purpose != Purpose::Neighbour || c.lagging {
                continue;
            }
            if c.writer.queued_bytes() > LAGGING_BYTES {
                // Never drop: stop flooding this one and catch it up by sync later.
                c.lagging = true;
                continue;
            }
            for f in &frames {
                c.writer.send(f.clone());
            }
        }
        if max_seq_changed {
            self.seq_tx.send_replace(self.store.last_seq());
        }
    }

    fn apply_presence(&mut self, r: &Record) {
        if r.creator == self.me {
            return;
        }
        let member = pki::hex(&r.creator);
        if r.deleted || r.expires_ms <= now_ms() {
            if let Some(p) = self.presence.remove(&r.creator) {
                self.emit(Event::Member {
                    change: MemberChange::Left,
                    member,
                    name: p.name,
                });
            }
            return;
        }
        let new = presence_of(r);
        if self.known.note(&member, &new.addresses)
            && let Err(e) = self.known.save()
        {
            tracing::warn!("cannot remember where {member} is: {e}");
        }
        let change = match self.presence.get(&r.creator) {
            None => Some(MemberChange::Joined),
            Some(old) if old.name != new.name || old.addresses != new.addresses => Some(MemberChange::Updated),
            Some(_) => None,
        };
        let name = new.name.clone();
        self.presence.insert(r.creator, new);
        for c in self.conns.values_mut().filter(|c| c.member == r.creator) {
            c.name = name.clone();
        }
        if let Some(change) = change {
            self.emit(Event::Member { change, member, name });
        }
    }
}

/// Whether `t_ms` (unix ms) lies in `cert`'s validity, to the second, as the TLS
/// verifier checks it at the handshake.
fn valid_at(cert: &Cert, t_ms: i64) -> bool {
    let t = t_ms.div_euclid(1000);
    cert.not_before.unix_timestamp() <= t && t <= cert.not_after.unix_timestamp()
}

fn presence_of(r: &Record) -> Presence {
    Presence {
        name: r.attr_str("name").unwrap_or("?").to_string(),
        addresses: r.presence_addresses(),
        expires_ms: r.expires_ms,
    }
}

/// Groups bodies into Records frames under the size budget.
fn pack(bodies: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for b in bodies {
        if !cur.is_empty() && (size + b.len() > RECORDS_FRAME_BUDGET || cur.len() >= crate::wire::MAX_RECORDS_PER_FRAME)
        {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += b.len() + 4;
        cur.push(b);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Encodes a membership chain for a membership record: count, then length-prefixed DER.
pub fn encode_chain(leaf: &Cert, chain: &[Cert]) -> Vec<u8> {
    let mut out = vec![(chain.len() + 1) as u8];
    for c in std::iter::once(leaf).chain(chain) {
        out.extend_from_slice(&(c.der.len() as u32).to_be_bytes());
        out.extend_from_slice(&c.der);
    }
    out
}

/// Decodes [`encode_chain`]'s output.
pub fn decode_chain(mut b: &[u8]) -> Option<Vec<Cert>> {
    let (&n, rest) = b.split_first()?;
    b = rest;
    if n == 0 || n as usize > pki::MAX_ISSUING_LINKS + 1 {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..n {
        if b.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        b = &b[4..];
        if b.len() < len {
            return None;
        }
        out.push(Cert::parse(&b[..len], "a chain certificate").ok()?);
        b = &b[len..];
    }
    b.is_empty().then_some(out)
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u16::from_be_bytes(b)
}

fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rand_u16() as usize % (i + 1);
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a record whose creator's membership had ended was admitted by a node
    /// that learnt the membership while it was valid (tests/tests/adversarial.rs).
    #[test]
    fn a_membership_is_valid_from_its_first_to_its_last_second() {
        let key = pki::KeyType::Ed25519.generate().unwrap();
        let from = clock::from_unix(1_800_000_000);
        let spec = pki::CertSpec {
            common_name: "m".into(),
            claim: Claim::Identity,
            not_before: from,
            not_after: clock::add(from, Duration::from_secs(60)),
        };
        let cert = Cert::parse(&pki::self_signed(&spec, &key).unwrap(), "c").unwrap();
        let ms = 1_800_000_000_000;
        assert!(!valid_at(&cert, ms - 1), "before its start");
        assert!(valid_at(&cert, ms), "at its start");
        assert!(valid_at(&cert, ms + 60_999), "in its last second");
        assert!(!valid_at(&cert, ms + 61_000), "after its end");
    }
}
