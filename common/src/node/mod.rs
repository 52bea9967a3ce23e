//! The online peer on tokio: the driver of the sans-I/O [`crate::core`]. One actor task
//! owns the core over the SQLite store and carries its outputs out: frames to the
//! connection tasks ([`conn`]), dials, closes, events to the front end, replies to the
//! [`Handle`]. Every decision is the core's; handshakes in progress are counted per
//! address ([`pending`]) so no one host can keep members from connecting.

pub mod conn;
pub mod control;
pub mod join;
pub mod lan;
pub mod pending;
pub mod portmap;
pub mod relay;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::clock;
use crate::core::known::{KNOWN_PEERS_FILE, KnownPeers};
use crate::core::{self, Command, ConnId, Core, CoreError, Input, Now, Output, Reply, RequestId};
use crate::credential;
use crate::home::{self, HomeError, Lock};
use crate::identity::Identity;
use crate::member::MemberId;
use crate::membership::{self, Membership};
use crate::pki;
use crate::store::{Durability, STORE_FILE, Store, StoreError};
use crate::tls::{self, TlsConfigs};
use crate::wire::{Message, Purpose};
use conn::{ConnEvent, DialSpec, Heard, PunchSpec, RelayedDial, SILENCE_LIMIT, Writer};
use relay::RelayService;

pub use crate::core::admission::{MAX_CLOCK_SKEW_MS, decode_chain, encode_chain};
pub use crate::core::flow::{LAGGING_BYTES, STALLED_BYTES};
pub use crate::core::mesh::{MAX_BACKOFF, MIN_BACKOFF, TARGET_NEIGHBOURS};
pub use crate::core::{
    ConnChange, ConnKind, ConnReason, DEFAULT_MAX_NEIGHBOURS, Event, MemberChange, MemberInfo, PeerSpec, Post, Stats,
    Status, TICK, Via,
};

/// Most events waiting for the front end: whispers and member changes come from
/// other members, and a front end that stops reading must not make the node hold them
/// without end. Beyond it events are dropped, and the front end is told how many.
pub const EVENT_QUEUE: usize = 4096;

/// Most connection events taken in before one commit.
pub const MAX_EVENTS_PER_COMMIT: usize = 256;
/// How long a leaving node waits for its queues to drain.
pub const LEAVE_DRAIN: Duration = Duration::from_secs(2);

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
    /// The core refused.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The membership file or the root key could not be read or written.
    #[error(transparent)]
    Membership(#[from] membership::MembershipError),
    /// The creator's certificates could not be renewed.
    #[error("cannot renew the creator's certificates: {0}")]
    Renewal(#[from] crate::credential::CredentialError),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
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
    pub initial_messages: Vec<Post>,
    /// Dial members found in presence records and the invitation (true), or only
    /// `peers` (false: fixed topologies in tests).
    pub discover: bool,
    /// Ask the gateway for a port mapping when listening on a private address only
    /// (see [`portmap`]).
    pub port_mapping: bool,
    /// Announce this member on the LAN and look for others there (see [`lan`]).
    pub mdns: bool,
    /// Ask neighbours to dial this node back at its addresses, and advertise only
    /// those that work (see [`core::reach`]).
    pub check_reach: bool,
    /// Tell the front end when scripts' records expire (only when it shows record
    /// events).
    pub record_events: bool,
}

/// Where a command's answer goes.
enum Asker {
    Published(oneshot::Sender<Result<Uuid, CoreError>>),
    Whispered(oneshot::Sender<Result<MemberId, CoreError>>),
    Members(oneshot::Sender<Vec<MemberInfo>>),
    Status(oneshot::Sender<Status>),
    Left(oneshot::Sender<()>),
    Admitted(oneshot::Sender<Vec<Result<(), String>>>),
}

/// A cloneable handle to a running node.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<(Command, Asker)>,
    seq: watch::Receiver<i64>,
    /// This node's member id.
    pub member_id: MemberId,
    /// Addresses this node advertises.
    pub addresses: Vec<String>,
    /// Counters.
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for Asker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Asker")
    }
}

impl Handle {
    async fn ask<T>(&self, cmd: Command, make: impl FnOnce(oneshot::Sender<T>) -> Asker) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((cmd, make(tx))).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Publishes a chat message; returns its record id once it is durable.
    pub async fn publish(&self, text: &str) -> Result<Uuid, NodeError> {
        self.post(Post::from(text)).await
    }

    /// Publishes a chat message with a lifetime or as an action; returns its record id
    /// once it is durable.
    pub async fn post(&self, post: Post) -> Result<Uuid, NodeError> {
        Ok(self.ask(Command::Publish(post), Asker::Published).await??)
    }

    /// Replaces the text of chat message `id` (own, or any as an admin).
    pub async fn edit(&self, id: Uuid, text: &str) -> Result<Uuid, NodeError> {
        let cmd = Command::Edit {
            id,
            text: text.to_string(),
        };
        Ok(self.ask(cmd, Asker::Published).await??)
    }

    /// Deletes chat message `id` (own, or any as an admin).
    pub async fn delete(&self, id: Uuid) -> Result<Uuid, NodeError> {
        Ok(self.ask(Command::Delete(id), Asker::Published).await??)
    }

    /// Resolves when the node has stopped.
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }

    /// Hands in records signed on this machine (an admin's actions): each is judged as
    /// a peer's would be, then stored and flooded; the result says, in order, what
    /// became of each.
    pub async fn admit(&self, bodies: Vec<Vec<u8>>) -> Result<Vec<Result<(), String>>, NodeError> {
        self.ask(Command::Admit(bodies), Asker::Admitted).await
    }

    /// Whispers to a present member (friendly name or member-id prefix); returns the
    /// member it was sent to.
    pub async fn whisper(&self, member: &str, text: &str) -> Result<MemberId, NodeError> {
        let cmd = Command::Whisper {
            to: member.to_string(),
            text: text.to_string(),
        };
        Ok(self.ask(cmd, Asker::Whispered).await??)
    }

    /// The member list: present members plus this node.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, NodeError> {
        self.ask(Command::Members, Asker::Members).await
    }

    /// Current status.
    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(Command::Status, Asker::Status).await
    }

    /// Leaves cleanly: removes presence, sends what is queued, closes connections.
    pub async fn leave(&self) -> Result<(), NodeError> {
        self.ask(Command::Leave, Asker::Left).await
    }

    /// A receiver of the store's highest arrival number: when it changes, read the
    /// new records from the store (`Store::after`).
    pub fn follow(&self) -> watch::Receiver<i64> {
        self.seq.clone()
    }
}

/// One connection's tasks, as the driver holds them.
struct Link {
    writer: Writer,
    reader: tokio::task::AbortHandle,
    write_task: tokio::task::AbortHandle,
    heard: Heard,
}

/// Ends a connection's tasks: the reader at once; the writer may flush what is queued
/// and shut the socket down, but a peer that does not read gets only a short grace,
/// then the task and its queue go (whether the node closed it or the peer's side ended
/// first: a peer that half-closes and never reads would otherwise keep both forever).
fn retire(l: Link) {
    l.reader.abort();
    let task = l.write_task;
    drop(l.writer);
    tokio::spawn(async move {
        tokio::time::sleep(conn::CLOSE_GRACE).await;
        task.abort();
    });
}

/// The actor: the core and what carries its outputs out.
struct Driver {
    core: Core<Store>,
    links: HashMap<ConnId, Link>,
    askers: HashMap<RequestId, Asker>,
    next_request: RequestId,
    tls: TlsConfigs,
    advertised: Vec<String>,
    /// Circuits this node relays for others.
    relays: Arc<RelayService>,
    /// Where it listens (hole punches leave from this port).
    bound: SocketAddr,
    /// Stops the port mapping task (which removes the mapping), if one runs.
    mapping: Option<oneshot::Sender<oneshot::Sender<()>>>,
    /// Stops LAN discovery (which withdraws the announcement), if it runs.
    discovery: Option<oneshot::Sender<oneshot::Sender<()>>>,
    /// Whether the node has no neighbour (LAN discovery looks only then).
    alone: watch::Sender<bool>,
    conn_tx: mpsc::Sender<ConnEvent>,
    next_id: Arc<AtomicUsize>,
    events: mpsc::Sender<Event>,
    /// Events dropped because the front end fell [`EVENT_QUEUE`] behind.
    events_dropped: u64,
    seq_tx: watch::Sender<i64>,
    known_path: PathBuf,
    /// The group root's key, when this node is the creator's.
    root_key: Option<rcgen::KeyPair>,
    /// When the creator next checks whether its own certificates are due.
    next_self_renewal: Instant,
    _checkpointer: crate::store::Checkpointer,
}

/// The time now, as the core takes it.
fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ns: clock::now_precise().unix_timestamp_nanos() as i64,
    }
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_be_bytes(b)
}

/// Starts a node. Returns its handle, its event stream and the actor's join handle.
pub async fn start(cfg: NodeConfig) -> Result<(Handle, mpsc::Receiver<Event>, tokio::task::JoinHandle<()>), NodeError> {
    tls::install_default_provider();
    let m = &cfg.membership;
    let lock = Lock::acquire(
        &m.dir.join(crate::store::STORE_LOCK),
        &format!("the store of {:?} in {:?}", m.identity, m.group.name),
    )?;
    // The creator renews its own certificates with the root key whenever they are
    // due, so a group whose creator comes back after a long while lives on.
    let root_key = m.root_key()?;
    let mut cfg = cfg;
    cfg.membership = credential::renew_creator_if_due(cfg.membership, clock::now())?;
    let m = &cfg.membership;
    let cfg_dir = m.dir.clone();
    if let Err(e) = pki::verify_chain(&m.root, &m.chain, &m.membership, m.group.id, clock::now()) {
        // Ended, yet sound at its end: a member back from a long absence tries with it,
        // since an admin may have renewed it meanwhile (peers let it in if so).
        let ended = m.membership.not_after < clock::now();
        if !ended || pki::verify_chain(&m.root, &m.chain, &m.membership, m.group.id, m.membership.not_after).is_err() {
            return Err(e.into());
        }
        tracing::warn!(
            "this membership ended at {}: connecting with it in case an admin renewed it",
            clock::format_rfc3339(m.membership.not_after)
        );
    }
    let store = Store::open(&m.dir.join(STORE_FILE), cfg.durability)?;
    // WAL checkpoints (with their fsync) run on a thread of their own, off the path
    // from receiving a record to forwarding it.
    let checkpointer = store.spawn_checkpointer()?;
    let tls = tls::configs(&cfg.identity, m)?;
    let joins = Arc::new(join::JoinService::new(&cfg.identity, m.dir.clone()));
    let listener = conn::listen(cfg.listen).map_err(|source| NodeError::Listen {
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
    let known_path = m.dir.join(KNOWN_PEERS_FILE);
    let known = KnownPeers::parse(&std::fs::read_to_string(&known_path).unwrap_or_default());
    let seq0 = store.max_seq()?;
    let core_cfg = core::Config {
        identity: cfg.identity,
        membership: cfg.membership,
        advertised: advertised.clone(),
        advertise_given: !cfg.advertise.is_empty(),
        peers: cfg.peers,
        max_neighbours: cfg.max_neighbours,
        discover: cfg.discover,
        known,
        initial_messages: cfg.initial_messages,
        seed: random_seed(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()).min(8),
        quota: core::QuotaLimits::default(),
        check_reach: cfg.check_reach,
        record_events: cfg.record_events,
    };
    let core = Core::new(core_cfg, store, now())?;
    for (member, cert) in core.known_certs() {
        tls.note_renewed(*member, cert.not_after.unix_timestamp());
    }
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (seq_tx, seq_rx) = watch::channel(seq0);
    let (conn_tx, conn_rx) = mpsc::channel(4096);
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let hello = hello(Purpose::Neighbour, &advertised, 0);
    let stats = core.stats();
    let next_id = Arc::new(AtomicUsize::new(1));
    let relays = Arc::new(RelayService::new(core.member_id(), conn_tx.clone()));
    // The port mapping lives as long as the node; it is removed on a clean exit.
    // mDNS on the interfaces of the LAN addresses it listens on, if any.
    let lan_ips = if cfg.mdns {
        lan::announced(&advertised)
    } else {
        Vec::new()
    };
    let (alone_tx, alone_rx) = watch::channel(true);
    let discovery = (!lan_ips.is_empty()).then(|| {
        let (stop, stopped) = oneshot::channel();
        let group = core.membership().group.id;
        tokio::spawn(lan::run(
            group,
            lan_ips,
            bound.port(),
            conn_tx.clone(),
            alone_rx,
            stopped,
        ));
        stop
    });
    let lans = portmap::wanted(&advertised, !cfg.advertise.is_empty(), !cfg.port_mapping);
    let mapping = (!lans.is_empty()).then(|| {
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(portmap::run(lans, bound.port(), conn_tx.clone(), stopped));
        stop
    });
    tokio::spawn(conn::accept_loop(
        listener,
        tls.clone(),
        hello,
        conn_tx.clone(),
        next_id.clone(),
        stats.clone(),
        joins,
        relays.clone(),
    ));
    let handle = Handle {
        tx: cmd_tx,
        seq: seq_rx,
        member_id: core.member_id(),
        addresses: advertised.clone(),
        stats,
    };
    // Admin actions from this machine take effect at once through it; without it they
    // wait in the store for the next start.
    match control::listen(&cfg_dir).and_then(|l| Ok((l, control::owner(&cfg_dir)?))) {
        Ok((listener, owner)) => {
            tokio::spawn(control::serve(listener, owner, handle.clone()));
        }
        Err(e) => tracing::warn!("no control socket (group-admin will wait for the next start): {e}"),
    }
    // Boxed: the task's future then holds a pointer, not the driver (and the core)
    // itself, so building it costs no large copies on the caller's stack.
    let mut driver = Box::new(Driver {
        core,
        links: HashMap::new(),
        askers: HashMap::new(),
        next_request: 1,
        tls,
        advertised,
        relays,
        bound,
        mapping,
        discovery,
        alone: alone_tx,
        conn_tx,
        next_id,
        events: events_tx,
        events_dropped: 0,
        seq_tx,
        known_path,
        root_key,
        next_self_renewal: Instant::now(),
        _checkpointer: checkpointer,
    });
    let task = tokio::spawn(async move {
        let _lock = lock;
        driver.run(conn_rx, cmd_rx).await;
    });
    Ok((handle, events_rx, task))
}

fn hello(purpose: Purpose, addresses: &[String], nonce: u64) -> Message {
    Message::Hello {
        version: crate::wire::PROTOCOL_VERSION,
        purpose,
        addresses: addresses.to_vec(),
        nonce,
    }
}

impl Driver {
    async fn run(&mut self, mut conn_rx: mpsc::Receiver<ConnEvent>, mut cmd_rx: mpsc::Receiver<(Command, Asker)>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.core.handle_timeout(now());
        self.carry_out();
        loop {
            tokio::select! {
                Some(ev) = conn_rx.recv() => {
                    self.on_conn_event(ev);
                    // Take whatever else has arrived, then commit it all at once.
                    for _ in 0..MAX_EVENTS_PER_COMMIT {
                        match conn_rx.try_recv() {
                            Ok(ev) => self.on_conn_event(ev),
                            Err(_) => break,
                        }
                    }
                    // What the core queued for these events goes to the writers first,
                    // so the counts it floods by include it.
                    self.carry_out();
                    self.report_queued();
                    self.core.flush(now());
                }
                cmd = cmd_rx.recv() => match cmd {
                    Some((Command::Leave, asker)) => {
                        self.core.handle(now(), Input::Command(0, Command::Leave));
                        self.leave().await;
                        // Answered once the queues are drained and the connections closed.
                        if let Asker::Left(tx) = asker {
                            let _ = tx.send(());
                        }
                        return;
                    }
                    Some((cmd, asker)) => self.ask(cmd, asker),
                    // Every handle dropped: leave as if asked.
                    None => {
                        self.core.handle(now(), Input::Command(0, Command::Leave));
                        return self.leave().await;
                    }
                },
                _ = tick.tick() => self.on_tick(),
            }
            self.carry_out();
        }
    }

    fn ask(&mut self, cmd: Command, asker: Asker) {
        let req = self.next_request;
        self.next_request += 1;
        self.askers.insert(req, asker);
        self.core.handle(now(), Input::Command(req, cmd));
        self.carry_out();
    }

    fn on_conn_event(&mut self, ev: ConnEvent) {
        let input = match ev {
            ConnEvent::Up(up) => {
                let up = *up;
                self.links.insert(
                    up.conn.id,
                    Link {
                        writer: up.writer,
                        reader: up.reader,
                        write_task: up.write_task,
                        heard: up.heard,
                    },
                );
                Input::Up(Box::new(up.conn))
            }
            ConnEvent::Down(id, reason) => {
                if let Some(l) = self.links.remove(&id) {
                    retire(l);
                }
                Input::Down(id, reason)
            }
            ConnEvent::Core(input) => input,
            // The permit goes when the core has the frame: its bytes are the core's now.
            ConnEvent::Frame(id, msg, _permit) => Input::Frame(id, msg),
        };
        self.core.handle(now(), input);
    }

    /// Tells the core how much each connection still has queued.
    fn report_queued(&mut self) {
        let t = now();
        for (id, link) in &self.links {
            let (queued, written) = (link.writer.queued_bytes(), link.writer.written_bytes());
            self.core.handle(t, Input::Queued(*id, queued, written));
        }
    }

    fn on_tick(&mut self) {
        let t = now();
        self.carry_out();
        self.report_queued();
        let silent: Vec<(ConnId, Duration)> = self
            .links
            .iter()
            .map(|(id, l)| (*id, l.heard.silent_for()))
            .filter(|(_, quiet)| *quiet > SILENCE_LIMIT)
            .collect();
        for (id, _) in silent {
            self.core.handle(t, Input::Silent(id, SILENCE_LIMIT));
        }
        self.core.handle_timeout(t);
        if let Some(key) = &self.root_key
            && t.instant >= self.next_self_renewal
        {
            let m = self.core.membership();
            let lifetime = Duration::from_secs(m.group.member_lifetime_secs.max(1));
            self.next_self_renewal =
                t.instant + (lifetime / 20).clamp(Duration::from_secs(1), core::RENEWAL_CHECK_EVERY);
            if credential::creator_due(m, clock::now()) {
                let lifetime = Duration::from_secs(m.group.member_lifetime_secs);
                let renewed = credential::renew_creator(m, key, lifetime, clock::now()).and_then(|r| {
                    r.save()?;
                    Ok(r)
                });
                match renewed {
                    Ok(renewed) => self.core.handle(t, Input::Renewed(Box::new(renewed))),
                    Err(e) => self.tell(Event::Error(format!("cannot renew the creator's certificates: {e}"))),
                }
            }
        }
    }

    /// Carries out everything the core asked for.
    fn carry_out(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Transmit { conn, frame } => {
                    if let Some(l) = self.links.get(&conn) {
                        l.writer.send(frame);
                    }
                }
                Output::Dial {
                    addr,
                    expected,
                    purpose,
                    nonce,
                } => self.dial(addr, expected, purpose, nonce),
                Output::Close { conn } => {
                    if let Some(l) = self.links.remove(&conn) {
                        retire(l);
                    }
                }
                Output::DialRelayed {
                    hop,
                    target,
                    purpose,
                    nonce,
                } => {
                    let spec = RelayedDial {
                        id: self.new_conn_id(),
                        hop,
                        target,
                        purpose,
                        hello: hello(purpose, &self.advertised, nonce),
                    };
                    tokio::spawn(conn::dial_relayed(
                        spec,
                        self.tls.clone(),
                        self.conn_tx.clone(),
                        self.core.stats(),
                    ));
                }
                Output::AcceptRelayed { relay, addr, token } => {
                    tokio::spawn(conn::accept_relayed(
                        self.new_conn_id(),
                        relay,
                        addr,
                        token,
                        self.tls.clone(),
                        hello(Purpose::Neighbour, &self.advertised, 0),
                        self.conn_tx.clone(),
                        self.core.stats(),
                    ));
                }
                Output::RelayRefused { token, refusal } => self.relays.refuse(&token, refusal),
                Output::Punch {
                    target,
                    addr,
                    client,
                    nonce,
                } => {
                    let spec = PunchSpec {
                        id: self.new_conn_id(),
                        target,
                        addr,
                        local: self.bound,
                        client,
                        hello: hello(Purpose::Direct, &self.advertised, nonce),
                    };
                    tokio::spawn(conn::punch(
                        spec,
                        self.tls.clone(),
                        self.conn_tx.clone(),
                        self.core.stats(),
                    ));
                }
                Output::DialBack {
                    conn,
                    member,
                    addr,
                    nonce,
                } => {
                    let hello = hello(Purpose::DialBack, &[], nonce);
                    let events = self.conn_tx.clone();
                    let tls = self.tls.clone();
                    tokio::spawn(async move {
                        let result = conn::dial_back(addr, member, &hello, &tls).await;
                        let input = Input::DialedBack {
                            conn,
                            nonce,
                            addr,
                            result,
                        };
                        let _ = events.send(ConnEvent::Core(input)).await;
                    });
                }
                Output::Event(e) => {
                    if let Event::Credential { member, until_ms, .. } = &e {
                        self.tls.note_renewed(*member, until_ms.div_euclid(1000));
                    }
                    if let Event::Status(s) = &e {
                        self.alone.send_if_modified(|alone| {
                            let changed = *alone != (s.neighbours == 0);
                            *alone = s.neighbours == 0;
                            changed
                        });
                    }
                    self.tell(e);
                }
                Output::Reply(req, reply) => self.answer(req, reply),
                Output::ChatStored(seq) => {
                    self.seq_tx.send_replace(seq);
                }
                Output::KnownPeers(text) => {
                    if let Err(e) = home::replace_file(&self.known_path, text.as_bytes()) {
                        tracing::warn!("cannot remember where members are: {e}");
                    }
                }
                Output::Membership(m) => {
                    if let Err(e) = self.tls.present(&m) {
                        self.tell(Event::Error(format!("cannot present the renewed membership: {e}")));
                    }
                    if let Err(e) = m.save() {
                        self.tell(Event::Error(format!(
                            "cannot save the renewed membership (it is in the group's records, and is adopted again at the next start): {e}"
                        )));
                    }
                }
            }
        }
        // Bodies owed beyond the budget wait for room: hear as soon as there is some.
        for id in self.core.owing() {
            if let Some(l) = self.links.get(&id) {
                l.writer.arm();
            }
        }
    }

    /// Hands an event to the front end, or counts it dropped when the front end is
    /// [`EVENT_QUEUE`] behind; the count goes out first once there is room.
    fn tell(&mut self, e: Event) {
        use mpsc::error::TrySendError;
        if self.events_dropped > 0 {
            let note = Event::Error(format!(
                "{} events were dropped: the display fell {EVENT_QUEUE} events behind",
                self.events_dropped
            ));
            match self.events.try_send(note) {
                Ok(()) => self.events_dropped = 0,
                Err(_) => {
                    self.events_dropped += 1;
                    return;
                }
            }
        }
        if let Err(TrySendError::Full(_)) = self.events.try_send(e) {
            self.events_dropped += 1;
        }
    }

    fn answer(&mut self, req: RequestId, reply: Reply) {
        let Some(asker) = self.askers.remove(&req) else { return };
        match (asker, reply) {
            (Asker::Published(tx), Reply::Published(r)) => drop(tx.send(r)),
            (Asker::Whispered(tx), Reply::Whispered(r)) => drop(tx.send(r)),
            (Asker::Members(tx), Reply::Members(r)) => drop(tx.send(r)),
            (Asker::Status(tx), Reply::Status(r)) => drop(tx.send(r)),
            (Asker::Left(tx), Reply::Left) => drop(tx.send(())),
            (Asker::Admitted(tx), Reply::Admitted(r)) => drop(tx.send(r)),
            (asker, reply) => tracing::error!("reply {reply:?} does not answer {asker:?}"),
        }
    }

    fn new_conn_id(&self) -> ConnId {
        self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as ConnId
    }

    fn dial(&mut self, addr: SocketAddr, expected: Option<MemberId>, purpose: Purpose, nonce: u64) {
        let id = self.new_conn_id();
        let spec = DialSpec {
            id,
            addr,
            expected,
            purpose,
            hello: hello(purpose, &self.advertised, nonce),
        };
        tokio::spawn(conn::dial(
            spec,
            self.tls.clone(),
            self.conn_tx.clone(),
            self.core.stats(),
        ));
    }

    /// After the core removed presence: give writers a moment to send what is queued
    /// (the tombstone included), then close every connection.
    async fn leave(&mut self) {
        self.carry_out();
        // The gateway forgets the mapping, and the LAN the announcement, while the
        // queues drain.
        let stop = |task: Option<oneshot::Sender<oneshot::Sender<()>>>| {
            task.map(|stop| {
                let (done, stopped) = oneshot::channel();
                let _ = stop.send(done);
                stopped
            })
        };
        let unmapped = stop(self.mapping.take());
        let unannounced = stop(self.discovery.take());
        let deadline = Instant::now() + LEAVE_DRAIN;
        while Instant::now() < deadline && self.links.values().any(|l| l.writer.queued_bytes() > 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (_, l) in self.links.drain() {
            l.reader.abort();
        }
        // Let the write tasks flush and shut their sockets down.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for stopped in [unmapped, unannounced].into_iter().flatten() {
            let _ = tokio::time::timeout(portmap::REMOVE_TIMEOUT * 2, stopped).await;
        }
    }
}
