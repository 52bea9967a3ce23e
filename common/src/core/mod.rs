//! The node as a sans-I/O core: every decision of an online member (admission, sync
//! sessions, the mesh, presence, whisper routing, flow control) as plain Rust, in the
//! manner of quinn-proto. A driver feeds it [`Input`]s (connections up and down,
//! frames, commands) with the current time ([`Now`]), calls [`Core::handle_timeout`]
//! every [`TICK`] and [`Core::flush`] after each burst of inputs, and carries out what
//! [`Core::poll_output`] returns: frames to send, dials, closes, events, replies.
//!
//! Two drivers run this one type: the tokio node (`crate::node`: sockets, TLS, SQLite)
//! and the simulation (`crate::sim`: hundreds of nodes, simulated links and time).
//! Nothing here does I/O; the store is reached through [`RecordStore`].
//!
//! Rules kept here: a record is verified (membership of creator and modifier,
//! signature, size, times) and committed to the store before it is flooded, synced or
//! shown; a record whose creator's or modifier's membership has not arrived yet waits
//! for it; a neighbour that cannot keep up is not flooded but caught up by sync.

pub mod admission;
pub mod event;
pub mod flow;
pub mod known;
pub mod lonely;
pub mod mesh;
pub mod presence;
pub mod properties;
pub mod quota;
pub mod reach;
pub mod relay;
pub mod revocation;
pub mod rng;
pub mod session;
pub mod store;
pub mod whisper;

#[cfg(test)]
mod chat_tests;
#[cfg(test)]
mod credential_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod properties_tests;
#[cfg(test)]
mod reach_tests;
#[cfg(test)]
mod relay_tests;
#[cfg(test)]
mod revocation_tests;
#[cfg(test)]
mod test_support;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use uuid::Uuid;

use crate::clock;
use crate::credential;
use crate::identity::Identity;
use crate::member::MemberId;
use crate::membership::Membership;
use crate::names::ResolveError;
use crate::pki::{Cert, Claim, Role};
use crate::record::{
    self, AttrValue, CHAT_TYPE, CREDENTIAL_TYPE, MEMBERSHIP_TYPE, PRESENCE_TYPE, PROPERTIES_TYPE, REVOCATION_TYPE,
    Record, RecordError,
};
use crate::store::{Put, Summary};
use crate::sync::{Item, ItemSet, SyncKey};
use crate::wire::{self, DialOutcome, Message, Purpose};
use admission::{Admission, Held, HeldRecord, Lifetimes, Proof, Rejection, Verdict};
pub use event::{Advertised, ConnChange, ConnKind, ConnReason, Event, MemberChange, MemberInfo, Status, Via};
use flow::{Flow, FlowAction, OwedItem};
use known::KnownPeers;
pub use mesh::PeerSpec;
use mesh::{Keep, Mesh, TARGET_NEIGHBOURS, Tie, View};
use presence::Roster;
pub use quota::QuotaLimits;
use quota::Quotas;
use rng::Rng;
pub use store::{MemStore, RecordStore};
use whisper::{Next, Route, Way, Whispers};

/// Identifies one connection for the node's lifetime.
pub type ConnId = u64;
/// Identifies one command, so its reply finds its asker.
pub type RequestId = u64;

/// Default cap on neighbour connections.
pub const DEFAULT_MAX_NEIGHBOURS: usize = 8;
/// How often the driver calls [`Core::handle_timeout`].
pub const TICK: Duration = Duration::from_millis(200);
/// How often expired records are purged.
pub const PURGE_EVERY: Duration = Duration::from_secs(5);
/// Most [`Event::Expired`] told per purge (the rest are logged).
pub const MAX_EXPIRED_EVENTS: usize = 1000;
/// Most direct (whisper) connections open at once, and from one member: enough for a
/// busy person's conversations, far below the file descriptors a node has.
pub const MAX_DIRECT: usize = 32;
/// Most direct connections from (or to) one member: one each way, and one more while
/// an old one closes.
pub const MAX_DIRECT_PER_MEMBER: usize = 3;
/// How often an admin looks for credentials to renew, at most (a twentieth of the
/// member lifetime when that is shorter).
pub const RENEWAL_CHECK_EVERY: Duration = Duration::from_secs(60);
/// The known-peers file is rewritten at most this often.
pub const KNOWN_PEERS_EVERY: Duration = Duration::from_secs(5);
/// How long an unused direct (whisper) connection stays open.
pub const DIRECT_IDLE: Duration = Duration::from_secs(60);
/// Most failed incoming handshakes reported per second (the rest are only logged).
pub const AUTH_EVENTS_PER_SECOND: u32 = 5;
/// Most addresses found on the LAN kept to dial.
pub const LAN_FOUND: usize = 16;
/// How long a relayed connection replaced by a direct one stays open, so whispers the
/// other end sent on it before it switched still arrive.
pub const RELAYED_GRACE: Duration = Duration::from_secs(2);
/// How long the member that asked for a hole punch waits for the answer.
pub const PUNCH_ANSWER: Duration = Duration::from_secs(10);

/// Takes addresses mDNS found into `kept` (newest first, at most [`LAN_FOUND`]): new
/// ones push out the oldest where no member answered, never one where a member did,
/// so answers from anyone on the link cannot crowd real members out.
pub fn lan_found(kept: &mut VecDeque<(SocketAddr, bool)>, addrs: Vec<SocketAddr>) {
    for a in addrs {
        if kept.iter().any(|(k, _)| *k == a) {
            continue;
        }
        if kept.len() >= LAN_FOUND {
            match kept.iter().rposition(|(_, answered)| !answered) {
                Some(i) => {
                    kept.remove(i);
                }
                None => continue,
            }
        }
        kept.push_front((a, false));
    }
}
/// Soonest presence is published again because a relay it names was lost.
pub const RELAYS_REPUBLISH: Duration = Duration::from_secs(5);
/// Largest Records frame the node builds.
const RECORDS_FRAME_BUDGET: usize = 512 * 1024;

/// The time as the driver sees it: a monotonic instant for timers, the wall clock for
/// record times.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Wall-clock time, unix ns.
    pub unix_ns: i64,
}

impl Now {
    /// Wall-clock time, unix ms.
    pub fn unix_ms(&self) -> i64 {
        self.unix_ns.div_euclid(1_000_000)
    }
}

/// Errors the core answers commands with.
#[derive(Debug, Clone, Error)]
pub enum CoreError {
    /// No single present member matches.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A direct connection to the member could not be opened.
    #[error("{member} is unreachable: {reason}")]
    Unreachable {
        /// The member.
        member: MemberId,
        /// Why.
        reason: String,
    },
    /// The text is too long.
    #[error("message of {0} bytes is over the {max}-byte limit", max = record::MAX_CHAT_BYTES)]
    TooLong(usize),
    /// A record could not be made.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The store failed.
    #[error("cannot store records: {0}")]
    Store(String),
    /// The node is leaving.
    #[error("the node has stopped")]
    Stopped,
    /// This member has stored all its quota allows in the current window.
    #[error("over this member's quota of records for this hour: try later")]
    OverQuota,
    /// This node's own membership was revoked (its revocation is in its store).
    #[error("{0}")]
    Revoked(String),
    /// No live chat message with this id.
    #[error("no message {0} here (deleted, expired, or never received)")]
    NoMessage(Uuid),
    /// A message this member may not change, or a change that cannot be made.
    #[error("{0}")]
    Change(String),
}

/// Traffic and work counters of a node, shared with its driver's connection tasks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frame bytes written to sockets (before TLS).
    pub bytes_out: AtomicU64,
    /// Frame bytes read from sockets (before TLS).
    pub bytes_in: AtomicU64,
    /// Records received that were already held (no verification spent).
    pub duplicates: AtomicU64,
    /// Records accepted from peers.
    pub accepted: AtomicU64,
}

impl Stats {
    /// Total frame bytes in both directions.
    pub fn total_bytes(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed) + self.bytes_out.load(Ordering::Relaxed)
    }
}

/// How to start a core.
#[derive(Debug)]
pub struct Config {
    /// The local identity (its key signs our records).
    pub identity: Identity,
    /// Its membership of the group.
    pub membership: Membership,
    /// Addresses others can dial (what presence advertises).
    pub advertised: Vec<String>,
    /// Whether `advertised` was given by the user (`--advertise`) rather than found.
    pub advertise_given: bool,
    /// Peers to dial besides those from presence and the invitation.
    pub peers: Vec<PeerSpec>,
    /// Cap on neighbour connections.
    pub max_neighbours: usize,
    /// Dial members found in presence, the invitation and known peers (true), or only
    /// `peers` (false: fixed topologies in tests).
    pub discover: bool,
    /// Where members were seen before.
    pub known: KnownPeers,
    /// Chat messages to publish before going online (for `--send`).
    pub initial_messages: Vec<Post>,
    /// Seed of the core's randomness (jitter, shuffles, nonces, record ids).
    pub seed: u64,
    /// Threads for checking large batches of signatures (1: none).
    pub threads: usize,
    /// The quota figures (the real ones but in simulations).
    pub quota: QuotaLimits,
    /// Ask neighbours to dial this node back at its addresses (see [`reach`]); off for
    /// a node that only sends and leaves.
    pub check_reach: bool,
    /// Tell the front end when scripts' records expire ([`Event::Expired`]): only when
    /// it shows record events.
    pub record_events: bool,
}

/// A connection that finished its handshake and Hello exchange.
#[derive(Debug, Clone)]
pub struct ConnUp {
    /// Its id.
    pub id: ConnId,
    /// The peer's member id (from its verified certificate).
    pub member: MemberId,
    /// The peer's membership certificate, verified in the handshake.
    pub cert: Cert,
    /// The chain it presented with it (nearest issuer first, root excluded).
    pub chain: Vec<Cert>,
    /// Remote socket address.
    pub addr: SocketAddr,
    /// Whether we dialled.
    pub outbound: bool,
    /// Why the dialler connected.
    pub purpose: Purpose,
    /// The tie-break key from both Hellos (dialler's nonce, acceptor's nonce).
    pub tie: Tie,
    /// A secret only the two ends know (from their TLS session): it keys the sync
    /// fingerprints of this connection.
    pub sync_key: SyncKey,
    /// How it reached the peer (`addr` is the relay's when relayed).
    pub via: Via,
    /// Where the relay saw the peer's own connection come from (relayed only): with
    /// the peer's listening port, where to try a direct connection.
    pub observed: Option<IpAddr>,
}

/// What a driver tells the core.
#[derive(Debug)]
pub enum Input {
    /// A connection is up.
    Up(Box<ConnUp>),
    /// A frame arrived on a connection.
    Frame(ConnId, Message),
    /// The connection ended (the transport says why).
    Down(ConnId, ConnReason),
    /// Nothing arrived on the connection for this long.
    Silent(ConnId, Duration),
    /// An incoming connection failed its handshake.
    AcceptFailed {
        /// Where it came from.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// A dial failed before the connection was up.
    DialFailed {
        /// Where.
        addr: SocketAddr,
        /// Why we dialled.
        purpose: Purpose,
        /// The member expected there, if any.
        expected: Option<MemberId>,
        /// What went wrong.
        reason: ConnReason,
    },
    /// Bytes still queued to a connection, and bytes written to it so far (the driver's
    /// counts).
    Queued(ConnId, usize, u64),
    /// A command from the node's user.
    Command(RequestId, Command),
    /// This node's membership with newer certificates (the creator renewed its own
    /// with the root key, which only the driver reads).
    Renewed(Box<Membership>),
    /// As a relay: member `from` (proved by TLS) asks for a circuit to `target`, named
    /// by `token`; the relay's limits admitted it.
    RelayRequest {
        /// The circuit's token.
        token: [u8; wire::RELAY_TOKEN_BYTES],
        /// Who asks.
        from: MemberId,
        /// To whom.
        target: MemberId,
    },
    /// Addresses where members of this group announce themselves on the LAN (mDNS):
    /// dialled as an invitation's are, any member may answer.
    Found(Vec<SocketAddr>),
    /// A port mapping on the gateway: its public address and the protocol that made it
    /// (`upnp`, `nat-pmp`), or `None` when it was lost.
    Mapped(Option<(SocketAddr, &'static str)>),
    /// A hole punch to `target` at `addr` failed (the relayed connection stays).
    PunchFailed {
        /// The member.
        target: MemberId,
        /// Where it was tried.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// A dial-back asked for by [`Output::DialBack`] finished.
    DialedBack {
        /// The neighbour connection the request came on.
        conn: ConnId,
        /// The check.
        nonce: u64,
        /// Where it dialled.
        addr: SocketAddr,
        /// Whether TLS with the member completed, and if not why.
        result: Result<(), String>,
    },
    /// Member `member` (TLS proved it) dialled this node back for the check `nonce`.
    DialedIn {
        /// Who.
        member: MemberId,
        /// The check its Hello named.
        nonce: u64,
        /// Where the connection came from.
        source: SocketAddr,
    },
    /// A circuit through `relay` to `target` failed before the connection was up.
    RelayFailed {
        /// The relay.
        relay: MemberId,
        /// Where it was dialled.
        addr: SocketAddr,
        /// The member on the far side.
        target: MemberId,
        /// Why we asked.
        purpose: Purpose,
        /// What went wrong.
        reason: String,
    },
}

/// A chat message to publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Post {
    /// The text.
    pub text: String,
    /// How long it lives, ms: at most the group's message lifetime in force (`None`:
    /// that lifetime).
    pub lifetime_ms: Option<i64>,
    /// An action (`/me waves`), shown as `* name waves`.
    pub action: bool,
}

impl From<&str> for Post {
    fn from(text: &str) -> Post {
        Post::from(text.to_string())
    }
}

impl From<String> for Post {
    fn from(text: String) -> Post {
        Post {
            text,
            ..Post::default()
        }
    }
}

/// What a user asks of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Publish a chat message.
    Publish(Post),
    /// Replace the text of chat message `id` (this member's own, or any as an admin).
    Edit {
        /// The message.
        id: Uuid,
        /// Its new text.
        text: String,
    },
    /// Delete chat message `id` (this member's own, or any as an admin).
    Delete(Uuid),
    /// Whisper to a present member (friendly name or member-id prefix).
    Whisper {
        /// Who.
        to: String,
        /// What.
        text: String,
    },
    /// The member list.
    Members,
    /// The status.
    Status,
    /// Leave: remove presence; the driver then drains and closes.
    Leave,
    /// Records signed on this machine by this identity outside the node (an admin's
    /// actions from `group-admin`): each is judged as if a peer sent it, then stored
    /// and flooded.
    Admit(Vec<Vec<u8>>),
}

/// The answer to a [`Command`].
#[derive(Debug, Clone)]
pub enum Reply {
    /// The record id, once durable.
    Published(Result<Uuid, CoreError>),
    /// The member it went to.
    Whispered(Result<MemberId, CoreError>),
    /// Present members plus this node.
    Members(Vec<MemberInfo>),
    /// Status flags.
    Status(Status),
    /// Presence removed.
    Left,
    /// For each record handed in, in order: stored (or held already), or why not.
    Admitted(Vec<Result<(), String>>),
}

/// What the core asks its driver to do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send this encoded frame on the connection.
    Transmit {
        /// Where.
        conn: ConnId,
        /// A whole frame, length prefix included (shared by every neighbour a flood
        /// goes to).
        frame: Arc<Vec<u8>>,
    },
    /// Dial an address; the Hello carries `nonce`.
    Dial {
        /// Where.
        addr: SocketAddr,
        /// The member expected there, if any.
        expected: Option<MemberId>,
        /// Why.
        purpose: Purpose,
        /// Our tie-break nonce for this connection.
        nonce: u64,
    },
    /// Close the connection (the event saying why was emitted).
    Close {
        /// Which.
        conn: ConnId,
    },
    /// Report to the front end.
    Event(Event),
    /// Answer a command.
    Reply(RequestId, Reply),
    /// Chat records or scripts' records (any type but peergroup's own) were committed:
    /// the store's highest arrival number now (followers of the store look).
    ChatStored(i64),
    /// Where members were seen changed: the known-peers file's new text.
    KnownPeers(String),
    /// This node's membership has new certificates (a credential for it arrived, or
    /// the creator renewed its own): save it, and present them from now on.
    Membership(Box<Membership>),
    /// Ask `hop`'s relay for a circuit to `target`, then run TLS to `target` inside it
    /// (its Hello carries `nonce`).
    DialRelayed {
        /// The relay and its address.
        hop: relay::Hop,
        /// The member on the far side.
        target: MemberId,
        /// Why.
        purpose: Purpose,
        /// Our tie-break nonce.
        nonce: u64,
    },
    /// Take the circuit `token` a relay offered: dial it at `addr` expecting `relay`,
    /// then accept TLS inside it.
    AcceptRelayed {
        /// The relay.
        relay: MemberId,
        /// Where to dial it.
        addr: SocketAddr,
        /// The circuit.
        token: [u8; wire::RELAY_TOKEN_BYTES],
    },
    /// Dial `target` at `addr` from this node's listening port, while it dials this
    /// node the same way (TCP simultaneous open), then run TLS as `client` or server.
    Punch {
        /// The member.
        target: MemberId,
        /// Its predicted public address.
        addr: SocketAddr,
        /// Whether this node is the TLS client (it asked for the circuit).
        client: bool,
        /// Our tie-break nonce.
        nonce: u64,
    },
    /// Dial `member` back at `addr` for its reachability check `nonce` (TLS expecting
    /// it, a Hello naming the check), then say how it went on `conn` (with
    /// [`Input::DialedBack`]).
    DialBack {
        /// The neighbour connection the request came on.
        conn: ConnId,
        /// The member that asked.
        member: MemberId,
        /// The IP its request came from, the port it named.
        addr: SocketAddr,
        /// The check.
        nonce: u64,
    },
    /// As a relay: the circuit `token` cannot be offered to its target.
    RelayRefused {
        /// The circuit.
        token: [u8; wire::RELAY_TOKEN_BYTES],
        /// Why.
        refusal: relay::Refusal,
    },
}

#[derive(Debug)]
struct Conn {
    member: MemberId,
    name: String,
    addr: SocketAddr,
    outbound: bool,
    purpose: Purpose,
    tie: Tie,
    sync_key: SyncKey,
    flow: Flow,
    last_used: Instant,
    sync_budget: flow::SyncBudget,
    via: Via,
    /// How it is shown (`via`, or `lan` / `mapped` for a direct one: see
    /// [`Core::shown_via`]).
    shown: Via,
    /// Where the relay saw the peer (relayed connections only).
    observed: Option<IpAddr>,
    /// When a relayed connection replaced by a direct one closes.
    retire_at: Option<Instant>,
    /// Records it sent whose signatures failed (see [`BAD_SIGNATURES_TOLERATED`]).
    bad_signatures: u32,
}

/// The node's state machine over a record store `S`.
#[derive(Debug)]
pub struct Core<S: RecordStore> {
    group: Uuid,
    me: MemberId,
    my_name: String,
    identity: Identity,
    membership: Membership,
    store: S,
    items: ItemSet,
    admission: Admission,
    held: Held<ConnId>,
    quotas: Quotas,
    /// Records a quota pushed out, to delete from the store at the next commit.
    evicted: Vec<Uuid>,
    /// When the known-peers file was last asked for, and whether it changed since.
    known_written: Option<Instant>,
    known_dirty: bool,
    /// Records not kept that moved a quota's cutoff, to forward (not store) with the
    /// next commit, and where each came from.
    cutoffs: Vec<(Vec<u8>, Option<ConnId>)>,
    /// The record at each quota cutoff, handed to every new neighbour: a node that
    /// never saw it would keep what lies beyond it.
    cutoff_records: BTreeMap<quota::BucketKey, Vec<u8>>,
    roster: Roster,
    mesh: Mesh,
    conns: BTreeMap<ConnId, Conn>,
    whispers: Whispers<RequestId>,
    out: VecDeque<Output>,
    status: Status,
    /// Whether to say that no member can be reached (see [`lonely`]).
    lonely: lonely::Lonely,
    ready_sent: bool,
    presence_version: u64,
    /// The relays the last presence named.
    published_relays: Vec<MemberId>,
    /// Whether a member dialled this node directly from a global IPv4 address, and from
    /// a global IPv6 address off its own links (so it is reachable from the internet in
    /// that family).
    dialled_in: (bool, bool),
    /// When the listener last turned a connection away (a reachability check's
    /// failure then says nothing of the address).
    last_accept_failure: Option<Instant>,
    /// Relay offers taken, per relay and asker.
    offers: relay::Offers,
    /// When a hole punch with each member was last tried (one a minute each) and,
    /// for punches this node started, whether the answer is awaited.
    punches: HashMap<MemberId, (Instant, bool)>,
    /// What the node advertises without a mapping, and how it learnt it.
    base_advertised: Vec<Advertised>,
    /// Reachability checks this node asked for, and what they found.
    checks: reach::Checks,
    /// Reachability checks this node runs for its neighbours.
    dial_backs: reach::Helper,
    check_reach: bool,
    record_events: bool,
    /// The candidates as the checks judge them: what presence advertises, whether the
    /// node is reachable.
    judged: reach::Judged,
    /// The gateway's port mapping, when there is one.
    mapped: Option<(SocketAddr, &'static str)>,
    /// Addresses found on the LAN (mDNS), newest first, at most [`LAN_FOUND`], each
    /// with whether a member answered there (kept when new ones push the rest out).
    lan_found: VecDeque<(SocketAddr, bool)>,
    /// When an admin next looks for credentials to renew.
    next_renewal_check: Instant,
    last_presence: Instant,
    last_purge: Instant,
    /// Creation time of the last chat message this node published, unix ms: each next
    /// one is created later, so a member's messages keep the order they were sent in
    /// (history sorts by creation time; `/edit` means the latest) within a millisecond.
    last_chat_ms: i64,
    stopping: bool,
    auth_window: (Instant, u32),
    /// Records admitted from peers but not yet committed: one commit for every frame
    /// that arrived together (group commit), then one flood.
    batch: Vec<(Put, Option<ConnId>)>,
    /// Record frames taken in but not yet admitted, in arrival order: admitted at the
    /// next flush (or before any other input), so the signatures of every frame one
    /// connection sent meanwhile are checked as one batch.
    inbox: Vec<Inbound>,
    /// Bytes of the records in `inbox`.
    inbox_bytes: usize,
    rng: Rng,
    stats: Arc<Stats>,
    advertised: Vec<String>,
    max_neighbours: usize,
    discover: bool,
    threads: usize,
}

/// Records with bad signatures a connection may send before it is closed. Honest
/// members forward only what they verified, by the same rules, so one is already a
/// sign of a hostile or broken peer; a few are let pass so that a member whose store
/// holds a damaged record (it would send it at every sync) stays connected, refused
/// only that record. What they cost is bounded all the same: once past this, the
/// rest of what the connection sent is dropped unchecked.
pub const BAD_SIGNATURES_TOLERATED: u32 = 4;

/// Most bytes of record frames taken in before they are admitted without waiting for
/// the flush (the driver takes at most [`crate::node::MAX_EVENTS_PER_COMMIT`] frames
/// between commits; this bounds what a driver that flushes seldom holds).
pub const INBOX_BYTES: usize = 8 * 1024 * 1024;

/// A frame of records taken in, waiting for the next flush.
#[derive(Debug)]
struct Inbound {
    from: ConnId,
    via_sync: bool,
    records: Vec<(Record, Vec<u8>)>,
}

impl<S: RecordStore> Core<S> {
    /// Starts a core over `store`: loads what the store knows, publishes this member's
    /// membership, the initial messages and presence.
    pub fn new(cfg: Config, mut store: S, now: Now) -> Result<Core<S>, CoreError> {
        let m = &cfg.membership;
        let me = cfg.identity.member_id();
        let lifetimes = Lifetimes::from_secs(m.group.message_lifetime_secs, m.group.presence_lifetime_secs);
        let admission = Admission::new(m.group.id, m.root.clone(), lifetimes, (me, m.membership.clone()));
        let stored = |e: S::Error| CoreError::Store(e.to_string());
        let mut items = ItemSet::new();
        // Windows at least as long as a message lives: the records alive at once lie in
        // two of them at most.
        let mut limits = cfg.quota;
        limits.window_ms = limits.window_ms.max(lifetimes.message_ms);
        let mut quotas = Quotas::with_limits(limits);
        let mut over = Vec::new();
        // Kept for load_known: a property change stored offline is checked against it.
        let summaries = store.summaries().map_err(stored)?;
        for s in &summaries {
            items.insert(Item {
                id: *s.id.as_bytes(),
                version: s.version,
                digest: s.digest,
            });
            if counted(&s.rtype) {
                let c = quotas.admit(s.creator, s.created_ms, s.id, s.bytes);
                over.extend(c.evicted);
                if !c.kept {
                    over.push(s.id);
                }
            }
        }
        // A store written under other figures may hold more than the quotas allow.
        if !over.is_empty() {
            for id in &over {
                items.remove(id.as_bytes());
            }
            store.delete(&over).map_err(stored)?;
        }
        let mut core = Core {
            group: m.group.id,
            me,
            my_name: cfg.identity.friendly_name().to_string(),
            membership: cfg.membership.clone(),
            identity: cfg.identity,
            store,
            items,
            admission,
            held: Held::default(),
            quotas,
            evicted: Vec::new(),
            known_written: None,
            known_dirty: false,
            cutoffs: Vec::new(),
            cutoff_records: BTreeMap::new(),
            roster: Roster::default(),
            mesh: Mesh::new(cfg.peers, cfg.known),
            conns: BTreeMap::new(),
            whispers: Whispers::default(),
            out: VecDeque::new(),
            status: Status::default(),
            lonely: lonely::Lonely::new(now.instant),
            ready_sent: false,
            presence_version: 0,
            published_relays: Vec::new(),
            dialled_in: (false, false),
            last_accept_failure: None,
            offers: relay::Offers::default(),
            punches: HashMap::new(),
            base_advertised: cfg
                .advertised
                .iter()
                .map(|a| Advertised {
                    address: a.clone(),
                    how: if cfg.advertise_given { "advertise" } else { "listen" },
                    checked: false,
                })
                .collect(),
            checks: reach::Checks::default(),
            dial_backs: reach::Helper::default(),
            check_reach: cfg.check_reach,
            record_events: cfg.record_events,
            judged: reach::Judged {
                advertised: Vec::new(),
                dropped: Vec::new(),
                reachable_v4: false,
                reachable_v6: false,
            },
            mapped: None,
            lan_found: VecDeque::new(),
            next_renewal_check: now.instant,
            last_presence: now.instant,
            last_purge: now.instant,
            last_chat_ms: i64::MIN,
            stopping: false,
            auth_window: (now.instant, 0),
            batch: Vec::new(),
            inbox: Vec::new(),
            inbox_bytes: 0,
            rng: Rng::new(cfg.seed),
            stats: Arc::new(Stats::default()),
            advertised: cfg.advertised,
            max_neighbours: cfg.max_neighbours.max(1),
            discover: cfg.discover,
            threads: cfg.threads.max(1),
        };
        core.judged = core.checks.judge(&core.candidates(), crate::membership::MAX_ADDRESSES);
        let expired = core.purge(now);
        core.load_known(&summaries, now)?;
        drop(summaries);
        // After the members are known: the events name their creators.
        core.tell_expired(expired);
        core.publish_membership(now)?;
        for post in &cfg.initial_messages {
            core.publish_chat(post, now)?;
        }
        core.publish_presence(false, now)?;
        core.set_status(|s| s.listening = true);
        Ok(core)
    }

    // ---- the driver's side -----------------------------------------------------------

    /// The next thing to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Takes one input. Records admitted from frames wait for [`Core::flush`].
    pub fn handle(&mut self, now: Now, input: Input) {
        // Anything but more records sees the store as the peer will: commit first.
        if !matches!(input, Input::Frame(_, Message::Records { .. }) | Input::Queued(..)) {
            self.flush(now);
        }
        match input {
            Input::Up(up) => self.on_up(*up, now),
            Input::Frame(id, msg) => self.on_frame(id, msg, now),
            Input::Down(id, reason) => self.on_down(id, reason, now),
            Input::Silent(id, quiet) => self.close(id, ConnReason::Silent(quiet), now),
            Input::AcceptFailed { addr, reason } => self.on_accept_failed(addr, reason, now),
            Input::DialFailed {
                addr,
                purpose,
                expected,
                reason,
            } => self.on_dial_failed(addr, purpose, expected, reason, now),
            Input::Renewed(m) => self.adopt_membership(*m, now),
            Input::RelayRequest { token, from, target } => self.on_relay_request(token, from, target),
            Input::Mapped(mapped) => self.on_mapped(mapped, now),
            Input::PunchFailed { target, addr, reason } => self.emit(Event::Connection {
                kind: ConnKind::Direct,
                change: ConnChange::Failed,
                member: Some(target),
                address: addr.to_string(),
                reason: Some(ConnReason::Transport(reason)),
                via: Some(Via::Punched),
            }),
            Input::Found(addrs) => lan_found(&mut self.lan_found, addrs),
            Input::DialedBack {
                conn,
                nonce,
                addr,
                result,
            } => self.on_dialed_back(conn, nonce, addr, result),
            Input::DialedIn { member, nonce, source } => {
                let own = self.own_ips();
                if let Some(v) = self.checks.witnessed(nonce, member, source.ip(), &own, now.instant) {
                    self.on_verdict(v, now);
                }
            }
            Input::RelayFailed {
                relay,
                addr,
                target,
                purpose,
                reason,
            } => self.on_relay_failed(relay, addr, target, purpose, reason),
            Input::Queued(id, bytes, written) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.flow.report(bytes, written, now.instant);
                    self.serve(id);
                }
            }
            Input::Command(req, cmd) => self.on_command(req, cmd, now),
        }
    }

    /// Periodic work: commits, dials, flow checks, idle direct connections, presence
    /// refresh, purging expired records.
    pub fn handle_timeout(&mut self, now: Now) {
        self.flush(now);
        if self.stopping {
            return;
        }
        self.maintain(now);
        self.lonely.neighbours(self.neighbour_count(), now.instant);
        if let Some(line) = self.lonely.due(now.instant) {
            self.emit(Event::Error(line));
        }
        let mut actions = Vec::new();
        for (id, c) in &mut self.conns {
            actions.push((*id, c.flow.check(now.instant)));
        }
        for (id, action) in actions {
            match action {
                FlowAction::Close => self.close(id, ConnReason::NotReading, now),
                FlowAction::Resync => {
                    // Floods skipped while it lagged may have moved quota cutoffs.
                    self.send_cutoffs(id);
                    self.start_sync(id);
                }
                FlowAction::None => {}
            }
        }
        let idle: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.purpose == Purpose::Direct && now.instant.duration_since(c.last_used) > DIRECT_IDLE)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.close(id, ConnReason::Idle, now);
        }
        let replaced: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.retire_at.is_some_and(|t| now.instant >= t))
            .map(|(id, _)| *id)
            .collect();
        for id in replaced {
            self.close(id, ConnReason::Replaced, now);
        }
        if now.instant >= self.next_renewal_check {
            self.renew_due(now);
        }
        // At a third of the presence lifetime in force (a property change may set it).
        let presence_ms = u64::try_from(self.admission.lifetimes_at(now.unix_ms()).presence_ms).unwrap_or(u64::MAX);
        let refresh = Duration::from_millis(presence_ms.max(3_000) / 3);
        // Sooner when the relays it names changed, so members behind NAT stay
        // reachable; at most every few seconds, so a flapping neighbour costs little.
        // The first relays at once (a member behind NAT is unreachable until then).
        let relays_moved = relay::relays_stale(&self.published_relays, &self.relay_ids(), self.reachable_v4())
            && (self.published_relays.is_empty() || now.instant.duration_since(self.last_presence) >= RELAYS_REPUBLISH);
        if (relays_moved || now.instant.duration_since(self.last_presence) >= refresh)
            && let Err(e) = self.publish_presence(false, now)
        {
            self.emit(Event::Error(format!("cannot refresh presence: {e}")));
        }
        if now.instant.duration_since(self.last_purge) >= PURGE_EVERY {
            self.last_purge = now.instant;
            let expired = self.purge(now);
            self.tell_expired(expired);
        }
        if self.known_dirty {
            self.known_changed(now.instant);
        }
        if self.check_reach {
            self.ask_checks(now);
        }
        self.dial_backs.expire(now.instant);
        if self.checks.expire(now.instant) {
            self.rejudge(now);
        }
        let dropped = self.held.expire(now.instant);
        if dropped > 0 {
            tracing::info!("dropped {dropped} records whose signer's membership did not come in time");
        }
    }

    /// Commits the admitted records in one transaction, then floods each to every
    /// neighbour but the one it came from.
    pub fn flush(&mut self, now: Now) {
        self.admit_inbox(now);
        if !self.evicted.is_empty() {
            let evicted = std::mem::take(&mut self.evicted);
            if let Err(e) = self.store.delete(&evicted) {
                self.emit(Event::Error(format!("cannot delete records over a quota: {e}")));
            }
        }
        for (body, from) in std::mem::take(&mut self.cutoffs) {
            self.flood(vec![body], from);
        }
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
        let mut sources: Vec<Option<ConnId>> = batch.iter().map(|(_, f)| *f).collect();
        sources.dedup();
        if sources.len() == 1 {
            self.after_commit(puts, sources[0], now);
            return;
        }
        // Records from several neighbours: each goes everywhere but where it came from.
        let mut seen = HashSet::new();
        for source in sources.into_iter().filter(|s| seen.insert(*s)) {
            let part: Vec<Put> = batch
                .iter()
                .filter(|(_, f)| *f == source)
                .map(|(p, _)| p.clone())
                .collect();
            self.after_commit(part, source, now);
        }
    }

    /// Status flags.
    pub fn status(&self) -> Status {
        self.status.clone()
    }

    /// Every member known and its newest verified certificate.
    pub fn known_certs(&self) -> impl Iterator<Item = (&MemberId, &Cert)> {
        self.admission.certs()
    }

    /// This node's membership, with the certificates it presents now.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// This node's member id.
    pub fn member_id(&self) -> MemberId {
        self.me
    }

    /// The sync index: summaries of every record held.
    pub fn items(&self) -> &ItemSet {
        &self.items
    }

    /// The record store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Addresses this node advertises.
    pub fn advertised(&self) -> &[String] {
        &self.advertised
    }

    /// Neighbour connections open.
    pub fn neighbour_count(&self) -> usize {
        self.conns.values().filter(|c| c.purpose == Purpose::Neighbour).count()
    }

    /// The members this node has a neighbour connection to, one entry per connection.
    pub fn neighbours(&self) -> Vec<MemberId> {
        self.conns
            .values()
            .filter(|c| c.purpose == Purpose::Neighbour)
            .map(|c| c.member)
            .collect()
    }

    /// Records waiting for a membership.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Whether a quota refused (or pushed out) the record `id`.
    pub fn quota_refused(&self, id: &Uuid) -> bool {
        self.quotas.is_refused(id)
    }

    /// The first record beyond `creator`'s quota in the window of `created_ms`.
    pub fn quota_cutoff(&self, creator: MemberId, created_ms: i64) -> Option<(i64, Uuid)> {
        self.quotas.cutoff(creator, created_ms)
    }

    /// What `creator` has counted against its quota in the window of `created_ms`:
    /// (records, bytes).
    pub fn quota_usage(&self, creator: MemberId, created_ms: i64) -> (usize, u64) {
        self.quotas.usage(creator, created_ms)
    }

    /// Bytes of records waiting for a membership.
    pub fn held_bytes(&self) -> usize {
        self.held.bytes()
    }

    /// The most bytes queued to one connection (as last reported and queued since),
    /// and the most items owed to one.
    pub fn queue_peaks(&self) -> (usize, usize) {
        self.conns
            .values()
            .fold((0, 0), |(q, o), c| (q.max(c.flow.queued), o.max(c.flow.owed.len())))
    }

    /// Direct connections open, in all and most from one member.
    pub fn direct_counts(&self) -> (usize, usize) {
        let mut per: BTreeMap<MemberId, usize> = BTreeMap::new();
        for c in self.conns.values().filter(|c| c.purpose == Purpose::Direct) {
            *per.entry(c.member).or_default() += 1;
        }
        (per.values().sum(), per.values().copied().max().unwrap_or(0))
    }

    /// Whether the node is leaving.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    // ---- outputs ---------------------------------------------------------------------

    fn emit(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    /// Tells of the newest property change.
    fn emit_properties(&mut self) {
        let (properties, by, at_ms) = match self.admission.properties().newest() {
            Some((p, by, at)) => (p.clone(), Some(by), Some(at)),
            None => (properties::Properties::of_group(&self.membership.group), None, None),
        };
        let by_name = by.map(|b| self.admission.names().display(&b));
        self.emit(Event::Property {
            properties,
            by,
            by_name,
            at_ms,
        });
    }

    /// The group's properties in force now: the newest change's, else those it was
    /// created with.
    pub fn properties(&self) -> properties::Properties {
        self.admission.properties().newest().map_or_else(
            || properties::Properties::of_group(&self.membership.group),
            |(p, _, _)| p.clone(),
        )
    }

    fn transmit(&mut self, conn: ConnId, msg: &Message) {
        self.transmit_frame(conn, Arc::new(msg.encode()));
    }

    fn transmit_frame(&mut self, conn: ConnId, frame: Arc<Vec<u8>>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.flow.queue(frame.len());
            self.out.push_back(Output::Transmit { conn, frame });
        }
    }

    fn set_status(&mut self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.clone();
        f(&mut s);
        s.neighbours = self.neighbour_count();
        s.connected = s.neighbours > 0;
        s.reachable = self.reachable();
        s.addresses = self.judged.advertised.clone();
        if s != self.status {
            self.status = s;
            self.emit(Event::Status(self.status.clone()));
        }
        if self.status.connected && self.status.synchronized && !self.ready_sent {
            self.ready_sent = true;
            self.emit(Event::Ready);
        }
    }

    /// The records of `rtype` among `summaries` (every record held at start), read by
    /// id in id order, as [`RecordStore::of_type`] gives them. The store has no index
    /// on type: a scan by type reads every chat body again, five times per start
    /// (3/4 of starting with 100,000 records), while these types are a few per member.
    fn stored_of_type(&self, summaries: &[Summary], rtype: &Uuid) -> Result<Vec<Record>, CoreError> {
        let mut ids: Vec<Uuid> = summaries.iter().filter(|s| s.rtype == *rtype).map(|s| s.id).collect();
        ids.sort_unstable();
        let bodies = self.store.bodies(&ids).map_err(|e| CoreError::Store(e.to_string()))?;
        Ok(bodies.iter().filter_map(|b| Record::decode(b).ok()).collect())
    }

    /// Loads verified memberships and live presence from the store at start.
    fn load_known(&mut self, summaries: &[Summary], now: Now) -> Result<(), CoreError> {
        let t = now.unix_ms();
        let stored = |e: S::Error| CoreError::Store(e.to_string());
        for r in self.stored_of_type(summaries, &MEMBERSHIP_TYPE)? {
            if let Ok(p) = self.admission.verify_membership_record(&r, t) {
                self.admission.learn(r.creator, p.cert.clone());
                self.admission.note_issuer(&p.cert, &p.issuers);
            }
        }
        let mut mine = None;
        for r in self.stored_of_type(summaries, &CREDENTIAL_TYPE)? {
            if let Ok(c) = self.admission.verify_credential_record(&r, t) {
                let member = c.membership.member_id;
                self.admission.learn(member, c.membership.clone());
                self.admission.note_issuer(&c.membership, &c.chain);
                self.admission.apply_role(&c);
                if c.role() == Role::Member {
                    self.admission.void_certified_by(&member);
                }
                if member == self.me {
                    mine = Some(c);
                }
            }
        }
        for r in self.stored_of_type(summaries, &REVOCATION_TYPE)? {
            let Some(rev) = self.admission.revoke(&r) else { continue };
            self.admission.void_certified_by(&rev.subject);
            // Stored by group-admin while the node was stopped, or applied before a
            // crash: what it does not keep goes now.
            // From the summaries read at start (one read of the store, not one per
            // revocation), less what is gone since.
            let doomed: Vec<(Uuid, i64)> = doomed_among(&rev, summaries)
                .into_iter()
                .filter(|(id, _)| self.items.get(id.as_bytes()).is_some())
                .collect();
            if !doomed.is_empty() {
                let ids: Vec<Uuid> = doomed.iter().map(|(id, _)| *id).collect();
                for (id, created_ms) in &doomed {
                    self.quotas.remove(rev.subject, *created_ms, *id);
                    self.items.remove(id.as_bytes());
                }
                self.store.delete(&ids).map_err(stored)?;
            }
            // Revoked while it was stopping, or before: it does not go online again.
            if rev.subject == self.me {
                return Err(CoreError::Revoked(crate::chat::revoked_message(
                    &rev.by,
                    &self.admission.names().display(&rev.by),
                    &self.membership.group.name,
                    rev.at_ms,
                    &rev.reason,
                )));
            }
        }
        // After the revocations and demotions, which take their admins' changes out of
        // force.
        let mut changes = false;
        for r in self.stored_of_type(summaries, &PROPERTIES_TYPE)? {
            if self.admission.verify_properties_record(&r).is_ok() {
                self.admission.set_properties(&r);
                changes = true;
            }
        }
        self.admission.prune_properties();
        if changes {
            // Stored while the node was stopped (group-admin set), or before a crash:
            // what the changes refuse goes now.
            let doomed: Vec<(MemberId, i64, Uuid)> = self.outliving(summaries);
            if !doomed.is_empty() {
                for (creator, created_ms, id) in &doomed {
                    self.quotas.remove(*creator, *created_ms, *id);
                    self.items.remove(id.as_bytes());
                }
                let ids: Vec<Uuid> = doomed.iter().map(|d| d.2).collect();
                self.store.delete(&ids).map_err(stored)?;
            }
        }
        // Saved when it came, unless the node stopped first.
        if let Some(c) = mine.filter(|_| !self.membership.creator) {
            self.adopt_membership(credential::adopt(&self.membership, &c), now);
        }
        let mut learnt = false;
        for r in self.stored_of_type(summaries, &PRESENCE_TYPE)? {
            let revoked = self.admission.revocations().of(&r.creator).is_some();
            if r.creator != self.me && !r.deleted && r.expires_ms > t && !revoked {
                learnt |= self.mesh.note_addresses(r.creator, &r.presence_addresses());
                // Told like any other arrival: a member whose presence outlived our last
                // run is listed from the start, and the front end must hear of it (its
                // fresh presence, with the same addresses, changes nothing later).
                if let Some(change) = self.roster.apply(&r, t) {
                    self.emit(Event::Member {
                        change,
                        member: r.creator,
                        name: self.admission.names().display(&r.creator),
                    });
                }
            }
            if r.creator == self.me {
                self.presence_version = self.presence_version.max(r.version);
            }
        }
        if learnt {
            self.known_changed(now.instant);
        }
        Ok(())
    }

    // ---- publishing ------------------------------------------------------------------

    fn sign_and_store(&mut self, mut r: Record, now: Now) -> Result<Uuid, CoreError> {
        r.sign(&self.group, &self.identity.key)?;
        self.store_own(r, now)
    }

    /// Stores and floods a record this node signed.
    fn store_own(&mut self, r: Record, now: Now) -> Result<Uuid, CoreError> {
        // What peers would refuse on sight is not kept here either (a version beyond
        // the ceiling, above all): this node must hold what the others hold.
        admission::check_form(&r).map_err(|e| CoreError::Change(e.to_string()))?;
        let body = r.encode();
        let counts = counted(&r.rtype);
        if counts {
            let c = self.quotas.admit(r.creator, r.created_ms, r.id, body.len());
            for e in c.evicted {
                self.evict(e, &mut Vec::new());
            }
            if !c.kept {
                return Err(CoreError::OverQuota);
            }
        }
        let item = Item {
            id: *r.id.as_bytes(),
            version: r.version,
            digest: r.digest(),
        };
        let (id, creator, created_ms) = (r.id, r.creator, r.created_ms);
        let put = Put {
            body,
            record: r,
            via_sync: false,
            received_ns: now.unix_ns,
        };
        if let Err(e) = self.store.put_batch(std::slice::from_ref(&put)) {
            // Not stored: it counts for nothing.
            if counts {
                self.quotas.remove(creator, created_ms, id);
            }
            return Err(CoreError::Store(e.to_string()));
        }
        self.items.insert(item);
        self.after_commit(vec![put], None, now);
        Ok(id)
    }

    /// A nonce for a new record from the core's seeded randomness (so a simulation
    /// replays); the record's id follows from it.
    fn new_nonce(&mut self) -> [u8; 16] {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        nonce[8..].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        nonce
    }

    fn publish_chat(&mut self, post: &Post, now: Now) -> Result<Uuid, CoreError> {
        if post.text.len() > record::MAX_CHAT_BYTES {
            return Err(CoreError::TooLong(post.text.len()));
        }
        // Never longer than the group's lifetime in force, whatever was asked.
        let group = self.admission.lifetimes_at(now.unix_ms()).message_ms;
        let lifetime = post.lifetime_ms.map_or(group, |l| l.max(1).min(group));
        let created_ms = now.unix_ms().max(self.last_chat_ms.saturating_add(1));
        let mut r = Record::new(CHAT_TYPE, self.me, created_ms, lifetime);
        if post.action {
            r.attributes.push((record::ACTION_ATTR.into(), AttrValue::Int(1)));
        }
        r.set_nonce(self.new_nonce());
        r.data = post.text.as_bytes().to_vec();
        let id = self.sign_and_store(r, now)?;
        self.last_chat_ms = created_ms;
        Ok(id)
    }

    /// A new version of chat message `id` with `text`, or its deletion (`None`): only
    /// of a live message that is this member's own, or any as an admin (the conflict
    /// rule peers judge by).
    fn change_chat(&mut self, id: Uuid, text: Option<String>, now: Now) -> Result<Uuid, CoreError> {
        let old = match self.store.get(&id) {
            Ok(Some(r)) if r.rtype == CHAT_TYPE && !r.deleted && r.expires_ms > now.unix_ms() => r,
            Ok(_) => return Err(CoreError::NoMessage(id)),
            Err(e) => return Err(CoreError::Store(e.to_string())),
        };
        let admin = self.admission.cert(&self.me).is_some_and(|c| role_of(c) == Role::Admin);
        let signer = crate::records::Signer {
            group: &self.group,
            key: &self.identity.key,
            me: self.me,
            admin,
            now_ms: now.unix_ms(),
            max_life_ms: self.admission.lifetimes_at(now.unix_ms()).message_ms,
        };
        let changed = match text {
            Some(text) if text.len() > record::MAX_CHAT_BYTES => return Err(CoreError::TooLong(text.len())),
            Some(text) => signer.update(
                &old,
                crate::records::Change {
                    data: Some(text.into_bytes()),
                    ..Default::default()
                },
            ),
            None => signer.delete(&old),
        };
        // Signed by the signer already.
        self.store_own(changed.map_err(|e| CoreError::Change(e.to_string()))?, now)
    }

    fn publish_membership(&mut self, now: Now) -> Result<(), CoreError> {
        let id = record::per_member_id(&MEMBERSHIP_TYPE, &self.me);
        let m = &self.membership;
        let version = admission::membership_version(&m.membership);
        if self.items.get(id.as_bytes()).is_some_and(|i| i.version >= version) {
            return Ok(());
        }
        let mut r = Record::new(MEMBERSHIP_TYPE, self.me, now.unix_ms(), 0);
        r.version = version;
        r.expires_ms = m.membership.not_after.unix_timestamp().saturating_mul(1000);
        r.data = admission::encode_chain(&m.membership, &m.chain);
        self.sign_and_store(r, now)?;
        Ok(())
    }

    /// Takes newer certificates for this node (a credential for it, or the creator's
    /// own renewal): they sign its records and its handshakes from now on, the group
    /// gets its new membership record, and the driver saves them. Older ones change
    /// nothing.
    fn adopt_membership(&mut self, m: Membership, now: Now) {
        if !admission::outranks(&m.membership, &self.membership.membership) || m.membership.member_id != self.me {
            return;
        }
        tracing::info!(
            "adopting a membership certificate valid until {}",
            clock::format_rfc3339(m.membership.not_after)
        );
        self.admission.learn(self.me, m.membership.clone());
        self.membership = m;
        if let Err(e) = self.publish_membership(now) {
            self.emit(Event::Error(format!("cannot publish the renewed membership: {e}")));
        }
        self.out
            .push_back(Output::Membership(Box::new(self.membership.clone())));
    }

    /// An admin renews the certificates of members that end within a tenth of the
    /// member lifetime (and have not ended: one that has needs `group-admin renew`),
    /// publishing a credential record for each. A renewal its own issuing
    /// certificate would not extend is not made.
    fn renew_due(&mut self, now: Now) {
        let lifetime = Duration::from_secs(self.membership.group.member_lifetime_secs.max(1));
        self.next_renewal_check = now.instant + (lifetime / 20).clamp(Duration::from_secs(1), RENEWAL_CHECK_EVERY);
        if self.membership.role != Role::Admin || self.membership.issuing.is_none() {
            return;
        }
        let (t_ms, t) = (now.unix_ms(), clock::from_unix(now.unix_ms().div_euclid(1000)));
        let due: Vec<Cert> = self
            .admission
            .certs()
            .filter(|(m, c)| **m != self.me && admission::valid_at(c, t_ms) && credential::due(c, lifetime, t))
            // The creator renews its own, with the root key.
            .filter(|(_, c)| !c.is_signed_by(&self.membership.root))
            .map(|(_, c)| c.clone())
            .collect();
        let due: Vec<Cert> = due
            .into_iter()
            .filter(|c| credential::renews_on_its_own(c, self.issuer_of(c).as_ref(), lifetime))
            .collect();
        for old in due {
            let issued = credential::issue(
                &self.identity.key,
                &self.membership,
                &old,
                lifetime,
                t,
                self.admission
                    .revocations()
                    .demoted_keeps(&old.member_id)
                    .unwrap_or_default(),
            )
            .and_then(|c| {
                Ok((
                    credential::record(&self.identity.key, self.me, &self.group, &c, t_ms)?,
                    c,
                ))
            });
            match issued {
                Ok((r, c)) => {
                    let name = self.admission.names().display(&old.member_id);
                    match self.sign_and_store(r, now) {
                        Ok(_) => {
                            self.emit(credential_event(&c.membership, self.me, name));
                            self.admission.learn(old.member_id, c.membership);
                        }
                        Err(e) => self.emit(Event::Error(format!("cannot publish a renewal for {name}: {e}"))),
                    }
                }
                Err(e) => tracing::info!("cannot renew {}: {e}", old.member_id),
            }
        }
    }

    /// The certificate that issued `cert`, from the chain in its member's membership or
    /// credential record held here.
    fn issuer_of(&self, cert: &Cert) -> Option<Cert> {
        [MEMBERSHIP_TYPE, CREDENTIAL_TYPE]
            .iter()
            .filter_map(|t| {
                self.store
                    .get(&record::per_member_id(t, &cert.member_id))
                    .ok()
                    .flatten()
            })
            .filter_map(|r| admission::decode_chain(&r.data))
            .filter(|certs| certs.first().is_some_and(|leaf| leaf.der == cert.der))
            .find_map(|certs| certs.into_iter().skip(1).find(|c| cert.is_signed_by(c)))
    }

    fn publish_presence(&mut self, leaving: bool, now: Now) -> Result<(), CoreError> {
        let t = now.unix_ms();
        let lifetime = self.admission.lifetimes_at(t).presence_ms;
        // Versions follow the clock so a restarted node's presence is always newer.
        self.presence_version = (self.presence_version + 1).max(t as u64);
        let mut r = Record::new(PRESENCE_TYPE, self.me, t, lifetime);
        r.version = self.presence_version;
        // A version is at most its modification time (its ceiling): two publications
        // in one millisecond date the second a millisecond on.
        r.modified_ms = r.modified_ms.max(i64::try_from(r.version).unwrap_or(i64::MAX));
        r.deleted = leaving;
        r.attributes.push(("name".into(), AttrValue::Str(self.my_name.clone())));
        r.attributes
            .push(("addresses".into(), AttrValue::Str(self.advertised.join(","))));
        // Which of them the gateway maps, so members dialling it can say so.
        if let Some((mapped, _)) = self.mapped.filter(|(a, _)| self.advertised.contains(&a.to_string())) {
            r.attributes.push(("mapped".into(), AttrValue::Str(mapped.to_string())));
        }
        self.published_relays = self.relay_ids();
        if !self.published_relays.is_empty() {
            let named: Vec<String> = self.published_relays.iter().map(MemberId::to_string).collect();
            r.attributes.push(("relays".into(), AttrValue::Str(named.join(","))));
        }
        self.last_presence = now.instant;
        self.sign_and_store(r, now)?;
        Ok(())
    }

    /// The gateway mapped a public address to this node (or lost it): advertise it
    /// first, and tell members at once.
    fn on_mapped(&mut self, mapped: Option<(SocketAddr, &'static str)>, now: Now) {
        if mapped == self.mapped {
            return;
        }
        // A member dialled in through a mapping now lost is reachable no longer (as far
        // as it knows): it names relays again.
        if mapped.is_none() {
            self.dialled_in.0 = false;
        }
        let gone = self.mapped.map(|(a, _)| a);
        self.mapped = mapped;
        // Check the new candidates with every neighbour; what was seen of the old
        // mapping no longer leads here.
        self.checks.ask_again(gone);
        self.rejudge(now);
    }

    /// Judges the candidates by the checks: what presence advertises (a changed list is
    /// published at once) and whether the node is reachable.
    fn rejudge(&mut self, now: Now) {
        let judged = self.checks.judge(&self.candidates(), crate::membership::MAX_ADDRESSES);
        for a in judged.dropped.iter().filter(|a| !self.judged.dropped.contains(a)) {
            tracing::warn!(
                "members could not dial this node at {a}: no longer advertised (a firewall, or a wrong --advertise?)"
            );
        }
        let addresses: Vec<String> = judged.advertised.iter().map(|a| a.address.clone()).collect();
        let moved = addresses != self.advertised;
        self.judged = judged;
        self.advertised = addresses;
        self.set_status(|_| {});
        if moved
            && !self.stopping
            && let Err(e) = self.publish_presence(false, now)
        {
            self.emit(Event::Error(format!("cannot publish presence: {e}")));
        }
    }

    /// Whether members on the internet can dial this node, as far as it knows.
    fn reachable(&self) -> bool {
        self.reachable_v4() || self.dialled_in.1 || self.judged.reachable_v6
    }

    /// Whether members on the IPv4 internet can dial this node: only then it needs no
    /// relays (members with IPv4 only could not dial an IPv6 address).
    fn reachable_v4(&self) -> bool {
        self.dialled_in.0 || self.judged.reachable_v4
    }

    /// This node's own addresses (what it could advertise).
    fn own_ips(&self) -> Vec<IpAddr> {
        self.candidates()
            .iter()
            .filter_map(|a| a.address.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .collect()
    }

    /// Asks each direct neighbour for the reachability checks due with it: one per
    /// port this node may be dialled on.
    fn ask_checks(&mut self, now: Now) {
        let mut ports: Vec<u16> = Vec::new();
        for c in self.candidates() {
            let port = c.address.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
            if let Some(p) = port.filter(|p| !ports.contains(p)) {
                ports.push(p);
            }
        }
        let neighbours: Vec<(ConnId, MemberId)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.purpose == Purpose::Neighbour && c.via == Via::Direct)
            .map(|(id, c)| (*id, c.member))
            .collect();
        for (id, member) in neighbours {
            let rng = &mut self.rng;
            for (nonce, port) in self.checks.due(member, &ports, now.instant, || rng.next_u64()) {
                self.transmit_frame(id, Arc::new(Message::DialBack { nonce, port }.encode()));
            }
        }
    }

    /// A neighbour asks to be dialled back on `port` at the address its connection
    /// comes from: within the limits, dial; over them, say it was refused; far over
    /// them, say nothing.
    fn on_dial_back(&mut self, id: ConnId, nonce: u64, port: u16, now: Now) {
        let Some(c) = self.conns.get(&id) else { return };
        let (member, addr) = (c.member, SocketAddr::new(c.addr.ip().to_canonical(), port));
        if port == 0 || c.via != Via::Direct {
            return;
        }
        match self.dial_backs.admit(member, now.instant) {
            reach::Answer::Dial => self.out.push_back(Output::DialBack {
                conn: id,
                member,
                addr,
                nonce,
            }),
            reach::Answer::Refuse => {
                tracing::debug!("refused a reachability check for {} at {addr}: over the limits", c.name);
                let outcome = DialOutcome::Refused;
                self.transmit_frame(id, Arc::new(Message::DialBackResult { nonce, outcome, addr }.encode()));
            }
            reach::Answer::Ignore => {}
        }
    }

    /// A dial-back finished: tell the member how it went.
    fn on_dialed_back(&mut self, id: ConnId, nonce: u64, addr: SocketAddr, result: Result<(), String>) {
        self.dial_backs.done();
        let outcome = match result {
            Ok(()) => DialOutcome::Works,
            Err(why) => {
                tracing::info!("reachability check at {addr} failed: {why}");
                DialOutcome::Failed
            }
        };
        self.transmit_frame(id, Arc::new(Message::DialBackResult { nonce, outcome, addr }.encode()));
    }

    /// A check settled: count it, and judge the candidates again.
    fn on_verdict(&mut self, v: reach::Verdict, now: Now) {
        let name = self.admission.names().display(&v.by);
        if v.works {
            tracing::info!("{name} dialled this node back at {}", v.addr);
        } else {
            tracing::info!("{name} could not dial this node back at {}", v.addr);
        }
        self.rejudge(now);
    }

    /// What this node could advertise, and how each was learnt: the mapping first.
    fn candidates(&self) -> Vec<Advertised> {
        let mapped = self.mapped.map(|(addr, how)| Advertised {
            address: addr.to_string(),
            how,
            checked: false,
        });
        mapped
            .into_iter()
            .chain(self.base_advertised.iter().cloned())
            .take(crate::membership::MAX_ADDRESSES)
            .collect()
    }

    /// The relays this node names in its presence: neighbours it reached by dialling
    /// them (so others can likely dial them too), at most [`relay::MAX_RELAYS`]; none
    /// once a member has dialled this node directly (it is reachable).
    fn relay_ids(&self) -> Vec<MemberId> {
        if self.reachable_v4() {
            return Vec::new();
        }
        let mut ids: Vec<MemberId> = self
            .conns
            .values()
            .filter(|c| c.purpose == Purpose::Neighbour && c.outbound && c.via == Via::Direct)
            .map(|c| c.member)
            .collect();
        ids.sort();
        ids.dedup();
        ids.truncate(relay::MAX_RELAYS);
        ids
    }

    // ---- commands --------------------------------------------------------------------

    fn on_command(&mut self, req: RequestId, cmd: Command, now: Now) {
        let reply = match cmd {
            Command::Admit(bodies) => Reply::Admitted(self.admit_local(bodies, now)),
            Command::Publish(post) => Reply::Published(self.publish_chat(&post, now)),
            Command::Edit { id, text } => Reply::Published(self.change_chat(id, Some(text), now)),
            Command::Delete(id) => Reply::Published(self.change_chat(id, None, now)),
            Command::Whisper { to, text } => match self.whisper(req, &to, text, now) {
                Some(done) => Reply::Whispered(done),
                None => return,
            },
            Command::Members => {
                let mut members = self.roster.members(self.me, self.admission.names());
                for m in &mut members {
                    m.role = self.admission.cert(&m.member).map_or(Role::Member, role_of);
                    // Its neighbour connection if any, else a whisper connection (a
                    // relayed one last).
                    m.via = self
                        .conns
                        .values()
                        .filter(|c| c.member == m.member && !m.is_self)
                        .min_by_key(|c| (c.purpose != Purpose::Neighbour, c.via == Via::Relayed))
                        .map(|c| c.shown);
                }
                Reply::Members(members)
            }
            Command::Status => Reply::Status(self.status.clone()),
            Command::Leave => {
                if self.known_dirty {
                    self.known_dirty = false;
                    self.out.push_back(Output::KnownPeers(self.mesh.known().render()));
                }
                if let Err(e) = self.publish_presence(true, now) {
                    self.emit(Event::Error(format!("cannot remove presence: {e}")));
                }
                self.stopping = true;
                Reply::Left
            }
        };
        self.out.push_back(Output::Reply(req, reply));
    }

    /// Routes a whisper; `None` when it waits for a direct connection (the reply
    /// comes when that is up or has failed).
    fn whisper(&mut self, req: RequestId, who: &str, text: String, now: Now) -> Option<Result<MemberId, CoreError>> {
        if text.len() > wire::MAX_WHISPER_BYTES {
            return Some(Err(CoreError::TooLong(text.len())));
        }
        let present = self.roster.iter().map(|(m, _)| *m);
        let target = match self.admission.names().resolve(who, present) {
            Ok(t) => t,
            Err(e) => return Some(Err(e.into())),
        };
        // A relayed connection only when there is no other (one being replaced drains).
        let open = self
            .conns
            .iter()
            .filter(|(_, c)| c.member == target)
            .min_by_key(|(_, c)| c.via == Via::Relayed)
            .map(|(id, _)| *id);
        let (addresses, relays) = self
            .roster
            .get(&target)
            .map(|p| (p.addresses.clone(), p.relays.clone()))
            .unwrap_or_default();
        let hops = relay::hops(self.me, target, &relays, |r| self.address_of(r));
        let own = &self.advertised;
        match self.whispers.route(target, open, (&addresses, own), &hops, req, text) {
            (Route::Send(conn), Some((_, text))) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_used = now.instant;
                }
                self.transmit(conn, &Message::Whisper { text });
                Some(Ok(target))
            }
            (Route::Try(way), _) => {
                self.try_way(way, target);
                None
            }
            (Route::Wait, _) => None,
            (_, _) => Some(Err(CoreError::Unreachable {
                member: target,
                reason: "it advertises no address and names no relay".into(),
            })),
        }
    }

    /// Where to dial a relay: the address a connection we dialled reached it at, else
    /// the first its presence advertises.
    fn address_of(&self, member: &MemberId) -> Option<SocketAddr> {
        let dialled = self
            .conns
            .values()
            .find(|c| c.member == *member && c.outbound && c.via == Via::Direct)
            .map(|c| c.addr);
        dialled.or_else(|| self.roster.get(member)?.addresses.iter().find_map(|a| a.parse().ok()))
    }

    /// Starts one way of reaching `target` for whispers.
    fn try_way(&mut self, way: Way, target: MemberId) {
        match way {
            Way::Dial(addr) => self.dial(addr, Some(target), Purpose::Direct),
            Way::Relay(hop) => {
                let nonce = self.rng.next_u64();
                self.out.push_back(Output::DialRelayed {
                    hop,
                    target,
                    purpose: Purpose::Direct,
                    nonce,
                });
            }
        }
    }

    /// A way of reaching `target` for whispers failed: try the next, or fail the
    /// whispers waiting with every reason.
    fn whisper_way_failed(&mut self, target: MemberId, way: &Way, how: &str, reason: &str) {
        match self.whispers.failed(&target, way, how, reason) {
            Some(Next::Try(way)) => self.try_way(way, target),
            Some(Next::GiveUp(waiting, reasons)) => {
                for (req, _) in waiting {
                    let err = CoreError::Unreachable {
                        member: target,
                        reason: reasons.clone(),
                    };
                    self.out.push_back(Output::Reply(req, Reply::Whispered(Err(err))));
                }
            }
            None => {}
        }
    }

    /// As a relay: offers the circuit `token` to `target` over a neighbour connection,
    /// or refuses it at once.
    fn on_relay_request(&mut self, token: [u8; wire::RELAY_TOKEN_BYTES], from: MemberId, target: MemberId) {
        // TLS checks chains, not revocations: a revoked member is no one's to relay.
        let revoked = |m: &MemberId| self.admission.revocations().of(m).is_some();
        if revoked(&from) || revoked(&target) {
            let refusal = relay::Refusal::Revoked;
            return self.out.push_back(Output::RelayRefused { token, refusal });
        }
        let to = self
            .conns
            .iter()
            .find(|(_, c)| c.member == target && c.purpose == Purpose::Neighbour)
            .map(|(id, _)| *id);
        match to {
            Some(conn) if !self.stopping => self.transmit(conn, &Message::RelayOffer { token, from }),
            _ => self.out.push_back(Output::RelayRefused {
                token,
                refusal: relay::Refusal::NotConnected,
            }),
        }
    }

    /// A relay offers a circuit: take it (dial the relay back where this node reached
    /// it) when it is a relay this node uses, a neighbour it dialled, for a member known
    /// and not revoked, within the offer budgets. Any other member's offer would make
    /// this node dial an address of that member's choosing.
    fn on_relay_offer(&mut self, id: ConnId, token: [u8; wire::RELAY_TOKEN_BYTES], from: MemberId, now: Now) {
        let Some(c) = self.conns.get(&id) else { return };
        let (relay, addr) = (c.member, c.addr);
        let why = if !(c.purpose == Purpose::Neighbour && c.outbound && c.via == Via::Direct) {
            Some("not a relay this node dialled")
        } else if from == self.me || from == relay || self.admission.cert(&from).is_none() {
            Some("for an unknown member")
        } else if self.admission.revocations().of(&from).is_some() {
            Some("for a revoked member")
        } else if !self.offers.allow(relay, from, now.instant) {
            Some("over the offer budget")
        } else {
            None
        };
        match why {
            Some(why) => tracing::debug!("ignored a relay offer from {relay}: {why}"),
            None => self.out.push_back(Output::AcceptRelayed { relay, addr, token }),
        }
    }

    /// Where to try a direct connection to the peer of relayed connection `c`: the
    /// address the relay saw it at (a global one only: a relay cannot aim this node's
    /// dials into a LAN), with the port its presence advertises.
    fn punch_target(&self, c: &Conn) -> Option<SocketAddr> {
        let ip = c.observed.filter(|ip| relay::is_global(*ip))?;
        let port = self
            .roster
            .get(&c.member)?
            .addresses
            .iter()
            .find_map(|a| a.parse::<SocketAddr>().ok())?
            .port();
        Some(SocketAddr::new(ip, port))
    }

    /// Whether a punch with `member` may start now: one a minute each.
    fn may_punch(&self, member: &MemberId, now: Now) -> bool {
        self.punches
            .get(member)
            .is_none_or(|(at, _)| now.instant.duration_since(*at) >= relay::PUNCH_EVERY)
    }

    /// A relayed direct connection this node asked for came up: ask the other end to
    /// punch a direct one with it.
    fn start_punch(&mut self, id: ConnId, now: Now) {
        let Some(c) = self.conns.get(&id) else { return };
        if self.punch_target(c).is_none() || !self.may_punch(&c.member, now) {
            return;
        }
        self.punches.insert(c.member, (now.instant, true));
        self.transmit(id, &Message::Punch);
    }

    /// A Punch on a relayed direct connection: the other end answers it and dials at
    /// once; the end that asked dials when the answer arrives. Anywhere else, or too
    /// often, it is ignored.
    fn on_punch(&mut self, id: ConnId, now: Now) {
        let Some(c) = self.conns.get(&id) else { return };
        if c.via != Via::Relayed || c.purpose != Purpose::Direct {
            return;
        }
        let (member, outbound) = (c.member, c.outbound);
        let Some(addr) = self.punch_target(c) else { return };
        if outbound {
            match self.punches.get_mut(&member) {
                Some((at, awaited)) if *awaited && now.instant.duration_since(*at) < PUNCH_ANSWER => *awaited = false,
                _ => return,
            }
        } else {
            if !self.may_punch(&member, now) {
                return;
            }
            self.punches.insert(member, (now.instant, false));
            self.transmit(id, &Message::Punch);
        }
        let nonce = self.rng.next_u64();
        self.out.push_back(Output::Punch {
            target: member,
            addr,
            client: outbound,
            nonce,
        });
    }

    /// A direct connection replaces the relayed ones to the same member: whispers go
    /// the direct way from now on, and the relayed ones close after
    /// [`RELAYED_GRACE`], so what the other end sent on them before it switched still
    /// arrives.
    fn replace_relayed(&mut self, direct: &ConnUp, now: Now) {
        for (id, c) in self.conns.iter_mut() {
            if *id != direct.id && c.member == direct.member && c.via == Via::Relayed && c.retire_at.is_none() {
                c.retire_at = Some(now.instant + RELAYED_GRACE);
            }
        }
    }

    // ---- connections -----------------------------------------------------------------

    fn dial(&mut self, addr: SocketAddr, expected: Option<MemberId>, purpose: Purpose) {
        if purpose == Purpose::Neighbour && !self.mesh.start_dial(addr) {
            return;
        }
        let nonce = self.rng.next_u64();
        self.out.push_back(Output::Dial {
            addr,
            expected,
            purpose,
            nonce,
        });
    }

    fn on_accept_failed(&mut self, addr: SocketAddr, reason: String, now: Now) {
        self.last_accept_failure = Some(now.instant);
        // Anyone can knock: report at most a few per second, not a flood.
        if now.instant.duration_since(self.auth_window.0) > Duration::from_secs(1) {
            self.auth_window = (now.instant, 0);
        }
        self.auth_window.1 += 1;
        if self.auth_window.1 <= AUTH_EVENTS_PER_SECOND {
            self.emit(Event::Connection {
                kind: ConnKind::Neighbour,
                change: ConnChange::Failed,
                member: None,
                address: addr.to_string(),
                reason: Some(ConnReason::AuthFailed(reason)),
                via: None,
            });
        }
    }

    fn on_dial_failed(
        &mut self,
        addr: SocketAddr,
        purpose: Purpose,
        expected: Option<MemberId>,
        reason: ConnReason,
        now: Now,
    ) {
        let wrong = purpose == Purpose::Neighbour && matches!(reason, ConnReason::WrongMember(_));
        if wrong && expected.is_some() && self.mesh.forget_peer(addr, expected) {
            // `--peer ID@ADDR` names someone who is not there: a mistake in the command
            // line, not a member to retry.
            self.emit(Event::Error(format!(
                "--peer {}@{addr}: {reason}; no longer dialling it as that member",
                expected.map(|m| m.to_string()).unwrap_or_default()
            )));
        } else if purpose == Purpose::Neighbour {
            self.mesh.note_failure(addr, now.instant, &mut self.rng);
            self.lonely.failed(addr, reason.to_string());
        }
        self.emit(Event::Connection {
            kind: ConnKind::from(purpose),
            change: ConnChange::Failed,
            member: expected,
            address: addr.to_string(),
            reason: Some(reason.clone()),
            via: Some(Via::Direct),
        });
        if purpose == Purpose::Direct
            && let Some(target) = expected
        {
            self.whisper_way_failed(
                target,
                &Way::Dial(addr),
                &format!("direct to {addr}"),
                &reason.to_string(),
            );
        }
    }

    fn on_relay_failed(
        &mut self,
        relay: MemberId,
        addr: SocketAddr,
        target: MemberId,
        purpose: Purpose,
        reason: String,
    ) {
        let name = self.admission.names().display(&relay);
        self.emit(Event::Connection {
            kind: ConnKind::from(purpose),
            change: ConnChange::Failed,
            member: Some(target),
            address: addr.to_string(),
            reason: Some(ConnReason::Transport(format!("through {name}'s relay: {reason}"))),
            via: Some(Via::Relayed),
        });
        if purpose == Purpose::Direct {
            let way = Way::Relay(relay::Hop { relay, addr });
            self.whisper_way_failed(target, &way, &format!("through {name}'s relay"), &reason);
        }
    }

    fn on_up(&mut self, up: ConnUp, now: Now) {
        // Dial-backs end at the Hello, where the listener reports them; one claimed
        // inside a relayed or punched connection is nothing this node asked for.
        if up.purpose == Purpose::DialBack {
            self.out.push_back(Output::Close { conn: up.id });
            return;
        }
        if up.member == self.me || self.stopping {
            // Dialled ourselves through one of our own addresses (or leaving).
            if up.member == self.me && up.outbound && up.via == Via::Direct {
                self.mesh.note_self(up.addr, now.instant);
            }
            self.out.push_back(Output::Close { conn: up.id });
            return;
        }
        // A member revoked, or certified by a revoked admin after its revocation.
        let void = !self.admission.revocations().allows_chain(&up.cert, &up.chain);
        if self.admission.revocations().of(&up.member).is_some() || void {
            if up.outbound && up.via == Via::Direct {
                self.mesh.note_failure(up.addr, now.instant, &mut self.rng);
            }
            // Completes the handshake only to tell it why it is refused.
            let id = record::per_member_id(&REVOCATION_TYPE, &up.member);
            if let Ok(Some(r)) = self.store.get(&id) {
                let frame = Message::Records {
                    sync: false,
                    bodies: vec![r.encode()],
                }
                .encode();
                self.out.push_back(Output::Transmit {
                    conn: up.id,
                    frame: Arc::new(frame),
                });
            }
            self.emit(Event::Connection {
                kind: ConnKind::from(up.purpose),
                change: ConnChange::Failed,
                member: Some(up.member),
                address: up.addr.to_string(),
                reason: Some(ConnReason::Revoked),
                via: Some(up.via),
            });
            self.out.push_back(Output::Close { conn: up.id });
            return;
        }
        // Where the member is, as a dial proved; a relayed connection's address is the
        // relay's.
        if up.via == Via::Direct {
            self.mesh.note_up(up.addr, up.member, up.outbound);
        }
        // The peer's chain was verified in the handshake: keep its certificate, and
        // admit records that were waiting for it.
        if self.admission.cert(&up.member).is_none() {
            self.admission.learn(up.member, up.cert.clone());
            self.admission.note_issuer(&up.cert, &up.chain);
            let mut accepted = Vec::new();
            self.release_held(up.member, now, &mut accepted);
            self.batch.extend(accepted.into_iter().map(|p| (p, None)));
        }
        // A circuit carries whispers only: a neighbour through it would count against
        // the neighbours this node dials, and run sync through a relay's byte limit.
        if up.purpose == Purpose::Neighbour && up.via != Via::Direct {
            self.emit(Event::Connection {
                kind: ConnKind::Neighbour,
                change: ConnChange::Failed,
                member: Some(up.member),
                address: up.addr.to_string(),
                reason: Some(ConnReason::OnlyWhispers),
                via: Some(up.via),
            });
            self.out.push_back(Output::Close { conn: up.id });
            return;
        }
        if up.purpose == Purpose::Neighbour && !self.settle_neighbour(&up, now) {
            self.out.push_back(Output::Close { conn: up.id });
            return;
        }
        // A punched connection replaces a relayed one (and punches are one a minute per
        // member): the caps, which count the relayed one, would refuse it at one end
        // while the other end moved to it.
        if up.purpose == Purpose::Direct && !up.outbound && up.via != Via::Punched && !self.admits_direct(&up) {
            self.out.push_back(Output::Close { conn: up.id });
            return;
        }
        self.register(up, now);
    }

    /// Whether an incoming direct connection stays under the caps, in all and from
    /// its member.
    fn admits_direct(&mut self, up: &ConnUp) -> bool {
        let direct = self.conns.values().filter(|c| c.purpose == Purpose::Direct);
        let (total, theirs) = direct.fold((0, 0), |(t, m), c| (t + 1, m + usize::from(c.member == up.member)));
        let cap = if total >= MAX_DIRECT {
            MAX_DIRECT
        } else if theirs >= MAX_DIRECT_PER_MEMBER {
            MAX_DIRECT_PER_MEMBER
        } else {
            return true;
        };
        self.emit(Event::Connection {
            kind: ConnKind::Direct,
            change: ConnChange::Failed,
            member: Some(up.member),
            address: up.addr.to_string(),
            reason: Some(ConnReason::DirectCapacity(cap)),
            via: Some(up.via),
        });
        false
    }

    /// Whether a new neighbour connection stays: the duplicate rule against an open
    /// one to the same member (closing the loser), and the cap on incoming ones.
    fn settle_neighbour(&mut self, up: &ConnUp, now: Now) -> bool {
        let existing = self
            .conns
            .iter()
            .find(|(_, c)| c.member == up.member && c.purpose == Purpose::Neighbour)
            .map(|(id, c)| (*id, c.tie));
        if let Some((old_id, old_tie)) = existing {
            return match mesh::settle_duplicate(old_tie, up.tie) {
                Keep::New => {
                    self.close(old_id, ConnReason::Replaced, now);
                    true
                }
                Keep::Old => false,
            };
        }
        if !up.outbound && self.neighbour_count() >= self.max_neighbours {
            self.emit(Event::Connection {
                kind: ConnKind::Neighbour,
                change: ConnChange::Failed,
                member: Some(up.member),
                address: up.addr.to_string(),
                reason: Some(ConnReason::AtCapacity(self.max_neighbours)),
                via: Some(up.via),
            });
            return false;
        }
        true
    }

    /// How a connection reached its peer, as events and `/who` show it. A direct one is
    /// `lan` when dialled at an address only mDNS found, and `mapped` when it went
    /// through a gateway's port mapping: dialled at the address the peer's presence
    /// names as mapped, or dialled in from the internet while this node has a mapping
    /// and no global address of its own (nothing else could reach it from there).
    fn shown_via(&self, up: &ConnUp) -> Via {
        if up.via != Via::Direct {
            return up.via;
        }
        if up.outbound {
            let presence = self.roster.get(&up.member);
            let advertised = presence.is_some_and(|p| p.addresses.iter().any(|a| a.parse() == Ok(up.addr)));
            if presence.is_some_and(|p| p.mapped == Some(up.addr)) {
                return Via::Mapped;
            }
            if !advertised && self.lan_found.iter().any(|(a, _)| *a == up.addr) {
                return Via::Lan;
            }
            return Via::Direct;
        }
        // Mappings are IPv4: an IPv4 peer, when this node has no global IPv4 address.
        let ip = up.addr.ip().to_canonical();
        let own_global = self.base_advertised.iter().any(|a| {
            a.address
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.is_ipv4() && relay::is_global(a.ip()))
        });
        if self.mapped.is_some() && !own_global && ip.is_ipv4() && relay::is_global(ip) {
            return Via::Mapped;
        }
        Via::Direct
    }

    /// Takes an accepted connection in: events, first sync, waiting whispers.
    fn register(&mut self, up: ConnUp, now: Now) {
        // Dialled from the internet: some advertised address works from outside (a
        // member on the same LAN proves nothing of the kind).
        // A neighbour dial only: a whisper's connection may be a hole punch's SYN that
        // reached the listener, which proves nothing of the kind.
        // Over IPv6, a member on one of this node's own links reaches a global address
        // past the router's firewall: that proves nothing either.
        let neighbour = up.purpose == Purpose::Neighbour;
        let ip = up.addr.ip().to_canonical();
        if !up.outbound
            && neighbour
            && up.via == Via::Direct
            && relay::is_global(ip)
            && !reach::on_own_link(ip, &self.own_ips())
        {
            let before = self.dialled_in;
            if ip.is_ipv4() {
                self.dialled_in.0 = true;
            } else {
                self.dialled_in.1 = true;
            }
            if before != self.dialled_in {
                self.set_status(|_| {});
            }
        }
        let name = self.admission.names().display(&up.member);
        let had_neighbour = self
            .conns
            .values()
            .any(|c| c.member == up.member && c.purpose == Purpose::Neighbour);
        let shown = self.shown_via(&up);
        self.conns.insert(
            up.id,
            Conn {
                member: up.member,
                name: name.clone(),
                addr: up.addr,
                outbound: up.outbound,
                purpose: up.purpose,
                tie: up.tie,
                sync_key: up.sync_key,
                flow: Flow::new(now.instant),
                last_used: now.instant,
                sync_budget: flow::SyncBudget::new(now.instant),
                via: up.via,
                shown,
                observed: up.observed,
                retire_at: None,
                bad_signatures: 0,
            },
        );
        // A member answered at an address mDNS found: it is kept.
        if up.outbound
            && let Some(found) = self.lan_found.iter_mut().find(|(a, _)| *a == up.addr)
        {
            found.1 = true;
        }
        self.emit(Event::Connection {
            kind: ConnKind::from(up.purpose),
            change: ConnChange::Up,
            member: Some(up.member),
            address: up.addr.to_string(),
            reason: None,
            via: Some(shown),
        });
        if up.purpose == Purpose::Neighbour {
            if !had_neighbour {
                self.emit(Event::Member {
                    change: MemberChange::Connected,
                    member: up.member,
                    name,
                });
            }
            self.set_status(|_| {});
            self.send_cutoffs(up.id);
            if up.outbound {
                self.start_sync(up.id);
            }
        }
        for (req, text) in self.whispers.take(&up.member) {
            self.transmit(up.id, &Message::Whisper { text });
            self.out.push_back(Output::Reply(req, Reply::Whispered(Ok(up.member))));
        }
        match up.via {
            Via::Relayed if up.outbound => self.start_punch(up.id, now),
            // Punched, or the peer's punch reached the listener: direct either way.
            _ if up.purpose == Purpose::Direct => self.replace_relayed(&up, now),
            _ => {}
        }
    }

    fn close(&mut self, id: ConnId, reason: ConnReason, now: Now) {
        if let Some(c) = self.conns.remove(&id) {
            self.out.push_back(Output::Close { conn: id });
            self.after_down(c, reason, now);
        }
    }

    fn on_down(&mut self, id: ConnId, reason: ConnReason, now: Now) {
        if let Some(c) = self.conns.remove(&id) {
            // A relayed connection's address is the relay's, not the peer's.
            if c.outbound && c.via == Via::Direct {
                self.mesh.note_failure(c.addr, now.instant, &mut self.rng);
            }
            self.after_down(c, reason, now);
        }
    }

    fn after_down(&mut self, c: Conn, reason: ConnReason, now: Now) {
        self.emit(Event::Connection {
            kind: ConnKind::from(c.purpose),
            change: ConnChange::Down,
            member: Some(c.member),
            address: c.addr.to_string(),
            reason: Some(reason),
            via: Some(c.via),
        });
        if c.purpose == Purpose::Neighbour
            && !self
                .conns
                .values()
                .any(|o| o.member == c.member && o.purpose == Purpose::Neighbour)
        {
            self.mesh.note_gone(c.member, now.instant);
            self.emit(Event::Member {
                change: MemberChange::Disconnected,
                member: c.member,
                name: c.name,
            });
        }
        self.set_status(|_| {});
    }

    /// Dials more neighbours when below the target.
    fn maintain(&mut self, now: Now) {
        self.mesh.tidy(now.instant);
        let target = TARGET_NEIGHBOURS.min(self.max_neighbours);
        let have = self.neighbour_count() + self.mesh.dialing();
        if have >= target {
            return;
        }
        let connected: HashSet<MemberId> = self
            .conns
            .values()
            .filter(|c| c.purpose == Purpose::Neighbour)
            .map(|c| c.member)
            .collect();
        // A relayed connection's address is the relay's, which stays worth dialling.
        let connected_addrs: HashSet<SocketAddr> = self
            .conns
            .values()
            .filter(|c| c.via == Via::Direct)
            .map(|c| c.addr)
            .collect();
        // Where mDNS found members on the LAN, then the invitation's addresses.
        let bootstrap: Vec<String> = self
            .lan_found
            .iter()
            .map(|(a, _)| a.to_string())
            .chain(self.membership.bootstrap.iter().cloned())
            .collect();
        let view = View {
            me: self.me,
            own: &self.advertised,
            connected: &connected,
            connected_addrs: &connected_addrs,
            present: self.roster.iter().map(|(m, p)| (*m, p.addresses.as_slice())).collect(),
            bootstrap: &bootstrap,
            wanted: target - have,
            discover: self.discover,
        };
        let candidates = self.mesh.candidates(&view, now.instant, &mut self.rng);
        for (addr, member) in candidates {
            self.dial(addr, member, Purpose::Neighbour);
        }
    }

    /// Purges expired records; returns those of scripts' types, for
    /// [`Core::tell_expired`].
    fn purge(&mut self, now: Now) -> Vec<Summary> {
        let t = now.unix_ms();
        let mut scripts = Vec::new();
        match self.store.purge_expired(t) {
            Ok(gone) => {
                for s in gone {
                    let creator = s.creator;
                    self.items.remove(s.id.as_bytes());
                    if self.record_events && !crate::records::is_reserved(&s.rtype) {
                        scripts.push(s);
                    }
                    if counted(&s.rtype) {
                        self.quotas.remove(creator, s.created_ms, s.id);
                    }
                    if s.rtype == PRESENCE_TYPE && self.roster.remove(&creator).is_some() {
                        self.emit(Event::Member {
                            change: MemberChange::Left,
                            member: creator,
                            name: self.admission.names().display(&creator),
                        });
                    }
                }
            }
            Err(e) => self.emit(Event::Error(format!("cannot purge expired records: {e}"))),
        }
        for member in self.roster.expire(t) {
            self.emit(Event::Member {
                change: MemberChange::Left,
                member,
                name: self.admission.names().display(&member),
            });
        }
        scripts
    }

    /// Tells the front end of scripts' records that expired, at most
    /// [`MAX_EXPIRED_EVENTS`] per purge: a member can make many expire at one moment,
    /// and the front end's event queue must keep room for whispers and member changes.
    fn tell_expired(&mut self, gone: Vec<Summary>) {
        let over = gone.len().saturating_sub(MAX_EXPIRED_EVENTS);
        for s in gone.into_iter().take(MAX_EXPIRED_EVENTS) {
            self.emit(Event::Expired {
                id: s.id,
                rtype: s.rtype,
                creator: s.creator,
                name: self.admission.names().display(&s.creator),
                created_ms: s.created_ms,
                expires_ms: s.expires_ms,
            });
        }
        if over > 0 {
            tracing::warn!("{over} more scripts' records expired at this purge than are told as events");
        }
    }

    // ---- frames ----------------------------------------------------------------------

    fn on_frame(&mut self, id: ConnId, msg: Message, now: Now) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        conn.last_used = now.instant;
        let (purpose, member) = (conn.purpose, conn.member);
        match msg {
            Message::Whisper { text } => {
                let name = self.admission.names().display(&member);
                self.emit(Event::Whisper {
                    from: member,
                    name,
                    text,
                    recv_ns: now.unix_ns,
                });
            }
            // Readers drop pings; nothing to do should one get here.
            Message::Ping => {}
            Message::Punch => self.on_punch(id, now),
            _ if purpose == Purpose::Direct => self.close(id, ConnReason::OnlyWhispers, now),
            Message::Hello { .. } => self.close(id, ConnReason::UnexpectedHello, now),
            Message::Records { sync, bodies } => self.on_records(id, bodies, sync, now),
            Message::Want { ids } => self.owe(id, ids, Vec::new(), now),
            Message::SyncRanges { from_initiator, ranges } => self.on_sync_ranges(id, from_initiator, &ranges, now),
            Message::SyncEnd => {
                // After every body owed before it: the Ack tells the peer it has them.
                self.owe(id, Vec::new(), vec![Arc::new(Message::SyncEndAck.encode())], now);
                self.set_status(|s| s.synchronized = true);
            }
            Message::SyncEndAck => self.finish_sync(id),
            Message::RelayOffer { token, from } => self.on_relay_offer(id, token, from, now),
            Message::DialBack { nonce, port } => self.on_dial_back(id, nonce, port, now),
            Message::DialBackResult { nonce, outcome, addr } => {
                let own = self.own_ips();
                let refusing = self.last_accept_failure;
                let answer = (outcome, addr);
                if let Some(v) = self.checks.answered(nonce, member, answer, &own, refusing, now.instant) {
                    self.on_verdict(v, now);
                }
            }
        }
    }

    /// Our sync session with `id` is complete: we hold the union of both sets.
    fn finish_sync(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.flow.syncing = false;
        }
        self.set_status(|s| s.synchronized = true);
    }

    fn start_sync(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            let first = session::initiate(&self.items, &c.sync_key);
            c.flow.syncing = true;
            self.transmit(id, &first);
        }
    }

    fn on_sync_ranges(&mut self, id: ConnId, from_initiator: bool, bytes: &[u8], now: Now) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        // A reply when no session of ours is under way is nobody's answer; sessions a
        // peer opens are rate-limited, each message costing a pass over the records.
        if !from_initiator && !c.flow.syncing {
            return;
        }
        if from_initiator && !c.sync_budget.take(now.instant) {
            return self.close(id, ConnReason::SyncFlood, now);
        }
        let key = c.sync_key;
        let step = match session::on_ranges(&self.items, &key, from_initiator, bytes) {
            Ok(s) => s,
            Err(e) => return self.close(id, ConnReason::BadSync(e), now),
        };
        // Memberships first: the records that need them are then never held.
        let (memberships, rest): (Vec<Uuid>, Vec<Uuid>) =
            step.send.into_iter().partition(|u| self.admission.is_membership_id(u));
        // Records a quota refused are not fetched again from whoever keeps offering them.
        let quotas = &self.quotas;
        let mut frames: Vec<Arc<Vec<u8>>> = step
            .want
            .into_iter()
            .filter_map(|w| match w {
                Message::Want { ids } => {
                    let ids: Vec<Uuid> = ids.into_iter().filter(|id| !quotas.is_refused(id)).collect();
                    (!ids.is_empty()).then(|| Arc::new(Message::Want { ids }.encode()))
                }
                other => Some(Arc::new(other.encode())),
            })
            .collect();
        frames.extend(step.reply.as_ref().map(|r| Arc::new(r.encode())));
        self.owe(id, memberships.into_iter().chain(rest).collect(), frames, now);
        if step.finished {
            self.finish_sync(id);
        }
    }

    /// Owes `conn` the bodies of `ids` (duplicates dropped), then `frames`, in order,
    /// and serves what the budget allows.
    fn owe(&mut self, id: ConnId, ids: Vec<Uuid>, frames: Vec<Arc<Vec<u8>>>, now: Now) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let refused = c.flow.owed.bodies(ids);
        if refused > 0 {
            tracing::info!(
                "{refused} record ids asked by {} not queued: over the owed cap",
                c.member
            );
        }
        for f in frames {
            if !c.flow.owed.frame(f) {
                return self.close(id, ConnReason::NotReading, now);
            }
        }
        self.serve(id);
    }

    /// Sends what is owed to `id` while its queue is under budget: bodies read from the
    /// store one at a time into frames of bounded size, and the frames owed after them.
    fn serve(&mut self, id: ConnId) {
        let mut frame: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        loop {
            let Some(c) = self.conns.get_mut(&id) else { return };
            let full = !frame.is_empty()
                && (size >= RECORDS_FRAME_BUDGET
                    || frame.len() >= wire::MAX_RECORDS_PER_FRAME
                    || !c.flow.owed.next_is_body()
                    || c.flow.queued + size >= flow::SERVE_BYTES);
            if full {
                let bodies = std::mem::take(&mut frame);
                size = 0;
                self.transmit(id, &Message::Records { sync: true, bodies });
                continue;
            }
            if c.flow.owed.next_is_body() && c.flow.queued >= flow::SERVE_BYTES {
                return;
            }
            match c.flow.owed.pop() {
                Some(OwedItem::Body(u)) => match self.store.bodies(std::slice::from_ref(&u)) {
                    Ok(mut b) => {
                        if let Some(body) = b.pop() {
                            size += body.len() + 4;
                            frame.push(body);
                        }
                    }
                    Err(e) => return self.emit(Event::Error(format!("cannot read the store: {e}"))),
                },
                Some(OwedItem::Frame(f)) => self.transmit_frame(id, f),
                None => return,
            }
        }
    }

    /// Connections owed something the budget held back: the driver asks to hear as
    /// soon as their queues drain.
    pub fn owing(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| !c.flow.owed.is_empty())
            .map(|(id, _)| *id)
    }

    /// Takes in a frame of records: decoded now, admitted at the next flush with every
    /// other frame that arrived meanwhile (see [`Core::admit_inbox`]).
    fn on_records(&mut self, from: ConnId, bodies: Vec<Vec<u8>>, via_sync: bool, now: Now) {
        let mut records = Vec::with_capacity(bodies.len());
        for body in bodies {
            match Record::decode(&body) {
                Ok(r) => records.push((r, body)),
                Err(e) => {
                    // What came before it is admitted before the connection goes.
                    self.admit_inbox(now);
                    return self.close(from, ConnReason::MalformedRecord(e), now);
                }
            }
        }
        self.inbox_bytes += records.iter().map(|(_, b)| b.len()).sum::<usize>();
        self.inbox.push(Inbound {
            from,
            via_sync,
            records,
        });
        if self.inbox_bytes > INBOX_BYTES {
            self.admit_inbox(now);
        }
    }

    /// Admits the frames taken in since the last flush, in arrival order. Signatures
    /// are checked first, one batch per connection over all its frames (a connection
    /// whose signatures fail pays for the search through its own batch alone), each
    /// record once however many neighbours sent it: a later copy is a duplicate by
    /// the time it is admitted, or is checked alone if the first copy was refused.
    fn admit_inbox(&mut self, now: Now) {
        if self.inbox.is_empty() {
            return;
        }
        let inbox = std::mem::take(&mut self.inbox);
        self.inbox_bytes = 0;
        // Keyed by the whole encoding: copies alike in every byte are judged alike, so
        // an altered copy sent first cannot take an honest copy's place in the batch.
        let mut first_copies: HashSet<&[u8]> = HashSet::new();
        let mut by_conn: HashMap<ConnId, Vec<(usize, usize)>> = HashMap::new();
        for (f, frame) in inbox.iter().enumerate() {
            for (i, (_, body)) in frame.records.iter().enumerate() {
                if first_copies.insert(body.as_slice()) {
                    by_conn.entry(frame.from).or_default().push((f, i));
                }
            }
        }
        let mut verified: Vec<Vec<Option<bool>>> = inbox.iter().map(|f| vec![None; f.records.len()]).collect();
        for positions in by_conn.values() {
            let records: Vec<&Record> = positions.iter().map(|&(f, i)| &inbox[f].records[i].0).collect();
            let items = &self.items;
            let results = self
                .admission
                .verify_batch(&records, |id| items.get(id.as_bytes()), self.threads);
            for (&(f, i), ok) in positions.iter().zip(results) {
                verified[f][i] = ok;
            }
        }
        drop(first_copies);
        for (frame, verified) in inbox.into_iter().zip(verified) {
            let from = frame.from;
            let mut accepted = Vec::new();
            for ((r, body), signature_ok) in frame.records.into_iter().zip(verified) {
                // Closed meanwhile (cut off by a revocation, or for bad signatures):
                // the rest of what it sent is dropped, as if it had arrived later.
                if !self.conns.contains_key(&from) {
                    break;
                }
                // A bad signature counts whatever else is wrong with the record (an
                // expired one is refused before its signature is looked at, but its
                // check in the batch was paid for).
                if signature_ok == Some(false) {
                    self.charge_bad_signature(from, now);
                    continue;
                }
                self.admit(r, body, frame.via_sync, Some(from), signature_ok, now, &mut accepted);
            }
            self.batch.extend(accepted.into_iter().map(|p| (p, Some(from))));
        }
    }

    /// Counts a record with a bad signature against the connection that sent it, and
    /// closes it past [`BAD_SIGNATURES_TOLERATED`].
    fn charge_bad_signature(&mut self, conn: ConnId, now: Now) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.bad_signatures += 1;
        if c.bad_signatures > BAD_SIGNATURES_TOLERATED {
            self.close(conn, ConnReason::BadSignatures, now);
        }
    }

    /// Decides whether a received record is stored (see [`admission`]); accepted
    /// records go into `accepted` (and the sync index) for one batched commit.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        r: Record,
        body: Vec<u8>,
        via_sync: bool,
        from: Option<ConnId>,
        signature_ok: Option<bool>,
        now: Now,
        accepted: &mut Vec<Put>,
    ) {
        let held = self.items.get(r.id.as_bytes());
        let proof = match self.admission.judge(&r, held, now.unix_ms(), signature_ok) {
            Verdict::Duplicate => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Verdict::Hold(member) => {
                self.held.hold(member, HeldRecord { body, via_sync, from }, now.instant);
                return;
            }
            Verdict::Reject(why) => {
                tracing::info!("rejected record {} from {}: {why}", r.id, r.creator);
                if why == Rejection::BadSignature
                    && let Some(conn) = from
                {
                    self.charge_bad_signature(conn, now);
                }
                return;
            }
            Verdict::Accept(proof) => proof,
        };
        if held.is_some_and(|e| e.version == r.version) && !self.wins_conflict(&r, accepted) {
            return;
        }
        if counted(&r.rtype) && !self.count_against_quota(&r, &body, from, accepted) {
            return;
        }
        self.items.insert(Item {
            id: *r.id.as_bytes(),
            version: r.version,
            digest: r.digest(),
        });
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let (issuer, is_credential) = (r.creator, r.rtype == CREDENTIAL_TYPE);
        let revocation = (r.rtype == REVOCATION_TYPE).then(|| r.clone());
        // A credential: its role in force everywhere, its certificates adopted by the
        // member it is for (the creator renews its own with the root key instead).
        let credential = proof.as_ref().and_then(|p| p.credential.as_ref());
        if let Some(c) = credential {
            self.admission.apply_role(c);
            if c.role() == Role::Member {
                for m in self.admission.void_certified_by(&c.membership.member_id) {
                    self.cut_off(m, None, now);
                }
                if self.admission.prune_properties() {
                    self.emit_properties();
                }
            }
        }
        let mine = credential
            .filter(|c| c.membership.member_id == self.me && !self.membership.creator)
            .cloned();
        // A change that shortens a lifetime refuses records others may hold: those
        // are looked for (only then, as the scan reads the whole store).
        let shortens = r.rtype == PROPERTIES_TYPE
            && properties::Properties::of_record(&r).is_ok_and(|p| {
                let (before, after) = (self.admission.lifetimes_at(r.created_ms), p.lifetimes());
                after.message_ms < before.message_ms || after.presence_ms < before.presence_ms
            });
        if r.rtype == PROPERTIES_TYPE && self.admission.set_properties(&r) {
            self.emit_properties();
        }
        accepted.push(Put {
            record: r,
            body,
            via_sync,
            received_ns: now.unix_ns,
        });
        if shortens {
            self.drop_outliving(accepted);
        }
        if let Some(r) = revocation {
            self.apply_revocation(&r, now, accepted);
            if self.admission.prune_properties() {
                self.emit_properties();
            }
        }
        let Some(proof) = proof else { return };
        // A membership record proves its creator's certificate, a credential its
        // subject's.
        let Proof { cert, issuers, .. } = *proof;
        let member = cert.member_id;
        if is_credential {
            let name = self.admission.names().display(&member);
            self.emit(credential_event(&cert, issuer, name.clone()));
            // A member list change when the role is not the one known.
            let before = self
                .admission
                .cert(&member)
                .filter(|known| admission::outranks(&cert, known))
                .map(role_of);
            let after = role_of(&cert);
            if before.is_some_and(|r| r != after) {
                self.emit(Event::Member {
                    change: MemberChange::Role(after),
                    member,
                    name,
                });
            }
        }
        self.admission.learn(member, cert.clone());
        // Who certified it, for a later revocation or demotion of that admin.
        self.admission.note_issuer(&cert, &issuers);
        self.release_held(member, now, accepted);
        if let Some(c) = mine {
            self.adopt_membership(credential::adopt(&self.membership, &c), now);
        }
    }

    /// Judges records handed in by this machine's user as a peer's would be (no
    /// shortcut: the node's rules decide), stores and floods those accepted, and says
    /// for each what became of it.
    fn admit_local(&mut self, bodies: Vec<Vec<u8>>, now: Now) -> Vec<Result<(), String>> {
        let mut results = Vec::with_capacity(bodies.len());
        let mut accepted = Vec::new();
        for body in bodies {
            let r = match Record::decode(&body) {
                Ok(r) => r,
                Err(e) => {
                    results.push(Err(e.to_string()));
                    continue;
                }
            };
            let held = self.items.get(r.id.as_bytes());
            let verdict = match self.admission.judge(&r, held, now.unix_ms(), None) {
                Verdict::Duplicate => Ok(()),
                Verdict::Accept(_) => {
                    Err("not stored: another copy of it wins, or it is over its creator's quota".to_string())
                }
                Verdict::Hold(m) => Err(format!("the membership of {m} is not known here")),
                Verdict::Reject(why) => Err(why.to_string()),
            };
            let copy = (r.id, r.version, r.digest());
            self.admit(r, body, false, None, None, now, &mut accepted);
            let stored = self
                .items
                .get(copy.0.as_bytes())
                .is_some_and(|i| i.version == copy.1 && i.digest == copy.2);
            results.push(if stored { Ok(()) } else { verdict });
        }
        self.batch.extend(accepted.into_iter().map(|p| (p, None)));
        self.flush(now);
        results
    }

    /// Counts an admitted record against its creator's quota (see [`quota`]); false
    /// when it is beyond it. Records it pushes out are evicted.
    /// A new version of a record counts in the same bucket under the same key as the
    /// one it replaces: its id binds its creator and creation time.
    fn count_against_quota(&mut self, r: &Record, body: &[u8], from: Option<ConnId>, accepted: &mut Vec<Put>) -> bool {
        let c = self.quotas.admit(r.creator, r.created_ms, r.id, body.len());
        if c.lowered {
            // The cutoff is the smallest record popped: this one if refused, else the
            // last one evicted.
            let cutoff = if c.kept {
                c.evicted.last().and_then(|e| {
                    accepted
                        .iter()
                        .find(|p| p.record.id == *e)
                        .map(|p| p.body.clone())
                        .or_else(|| self.store.bodies(std::slice::from_ref(e)).ok()?.pop())
                })
            } else {
                Some(body.to_vec())
            };
            // Forwarded even when it was evicted before its first flood: a node that
            // never saw it would keep what lies beyond it.
            if let Some(cutoff) = cutoff {
                self.note_cutoff(self.quotas.bucket_key(r.creator, r.created_ms), cutoff.clone());
                self.cutoffs.push((cutoff, from));
            }
        }
        for e in c.evicted {
            self.evict(e, accepted);
        }
        if !c.kept {
            tracing::info!("record {} of {} is over its creator's quota", r.id, r.creator);
        }
        c.kept
    }

    /// Hands `conn` the record at every quota cutoff known here.
    fn send_cutoffs(&mut self, conn: ConnId) {
        if self.cutoff_records.is_empty() {
            return;
        }
        let bodies = self.cutoff_records.values().cloned().collect();
        for frame in pack(bodies) {
            self.transmit(
                conn,
                &Message::Records {
                    sync: true,
                    bodies: frame,
                },
            );
        }
    }

    /// Remembers the record at a bucket's cutoff, within [`quota::MAX_CUTOFF_RECORDS`].
    fn note_cutoff(&mut self, bucket: quota::BucketKey, body: Vec<u8>) {
        self.cutoff_records.insert(bucket, body);
        while self.cutoff_records.len() > quota::MAX_CUTOFF_RECORDS {
            // The oldest window goes first.
            let Some(oldest) = self.cutoff_records.keys().min_by_key(|(_, w)| *w).copied() else {
                break;
            };
            self.cutoff_records.remove(&oldest);
        }
    }

    /// Drops a record a quota pushed out: from the sync index, from what waits to be
    /// committed, and (at the next commit) from the store.
    fn evict(&mut self, id: Uuid, accepted: &mut Vec<Put>) {
        self.items.remove(id.as_bytes());
        accepted.retain(|p| p.record.id != id);
        self.batch.retain(|(p, _)| p.record.id != id);
        self.evicted.push(id);
    }

    /// Puts an accepted revocation in force: what it does not keep of its subject's is
    /// deleted, the subject is listed no more, and its connections are closed after it
    /// is sent the revocation (so its own node can say who revoked it).
    fn apply_revocation(&mut self, r: &Record, now: Now, accepted: &mut Vec<Put>) {
        let Some(rev) = self.admission.revoke(r) else { return };
        let subject = rev.subject;
        let keeps = |p: &Put| {
            p.record.creator != subject
                || p.record.rtype == REVOCATION_TYPE
                || rev.keeps(&Item {
                    id: *p.record.id.as_bytes(),
                    version: p.record.version,
                    digest: p.record.digest(),
                })
        };
        // What waits to be committed, from this frame or earlier ones, goes too.
        let pending: Vec<(Uuid, i64)> = accepted
            .iter()
            .chain(self.batch.iter().map(|(p, _)| p))
            .filter(|p| !keeps(p))
            .map(|p| (p.record.id, p.record.created_ms))
            .collect();
        for (id, created_ms) in self.doomed_by(&rev).into_iter().chain(pending) {
            self.quotas.remove(subject, created_ms, id);
            self.evict(id, accepted);
        }
        let frame = Arc::new(
            Message::Records {
                sync: false,
                bodies: vec![r.encode()],
            }
            .encode(),
        );
        self.cut_off(subject, Some(frame), now);
        for m in self.admission.void_certified_by(&subject) {
            self.cut_off(m, None, now);
        }
        self.emit(Event::Member {
            change: MemberChange::Revoked,
            member: subject,
            name: self.admission.names().display(&subject),
        });
        self.emit(Event::Revoked {
            member: subject,
            name: self.admission.names().display(&subject),
            by: rev.by,
            by_name: self.admission.names().display(&rev.by),
            reason: rev.reason,
            at_ms: rev.at_ms,
        });
    }

    /// Drops the records, stored or waiting, that live longer than the lifetimes in
    /// force at their creation: accepted before a property change that shortened them
    /// was known here, and refused by every node that knew it.
    fn drop_outliving(&mut self, accepted: &mut Vec<Put>) {
        let stored = match self.store.summaries() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot read the store to apply a property change: {e}");
                Vec::new()
            }
        };
        let a = &self.admission;
        let outlives = |rtype: &Uuid, created_ms: i64, expires_ms: i64| {
            admission::outlives(rtype, created_ms, expires_ms, &a.lifetimes_at(created_ms))
        };
        let doomed: Vec<(MemberId, i64, Uuid)> = self
            .outliving(&stored)
            .into_iter()
            .chain(
                accepted
                    .iter()
                    .chain(self.batch.iter().map(|(p, _)| p))
                    .map(|p| &p.record)
                    .filter(|r| outlives(&r.rtype, r.created_ms, r.expires_ms))
                    .map(|r| (r.creator, r.created_ms, r.id)),
            )
            .collect();
        for (creator, created_ms, id) in doomed {
            self.quotas.remove(creator, created_ms, id);
            self.evict(id, accepted);
        }
    }

    /// Of `stored`, the records that live longer than the lifetimes in force at their
    /// creation: creator, creation time, id.
    fn outliving(&self, stored: &[crate::store::Summary]) -> Vec<(MemberId, i64, Uuid)> {
        let a = &self.admission;
        stored
            .iter()
            .filter(|s| admission::outlives(&s.rtype, s.created_ms, s.expires_ms, &a.lifetimes_at(s.created_ms)))
            .map(|s| (s.creator, s.created_ms, s.id))
            .collect()
    }

    /// The stored records `rev` does not keep of its subject's (never revocations:
    /// those are judged on their own), with their creation times.
    fn doomed_by(&self, rev: &revocation::Revocation) -> Vec<(Uuid, i64)> {
        match self.store.summaries() {
            Ok(s) => doomed_among(rev, &s),
            Err(e) => {
                tracing::warn!("cannot read the store to apply a revocation: {e}");
                Vec::new()
            }
        }
    }

    /// Stops listing `member` and closes its connections, sending `frame` on each first
    /// (its revocation, so its node learns why).
    fn cut_off(&mut self, member: MemberId, frame: Option<Arc<Vec<u8>>>, now: Now) {
        if self.roster.remove(&member).is_some() {
            self.emit(Event::Member {
                change: MemberChange::Left,
                member,
                name: self.admission.names().display(&member),
            });
        }
        let theirs: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.member == member)
            .map(|(id, _)| *id)
            .collect();
        for id in theirs {
            if let Some(f) = &frame {
                self.transmit_frame(id, f.clone());
            }
            self.close(id, ConnReason::Revoked, now);
        }
    }

    /// Two copies of one version: the conflict rule picks, the same on every peer.
    fn wins_conflict(&self, r: &Record, accepted: &[Put]) -> bool {
        self.held_copy(&r.id, accepted)
            .is_none_or(|ours| record::compare(r, &ours) == std::cmp::Ordering::Greater)
    }

    /// The copy of `id` this node holds: the newest one waiting to be committed, else
    /// the stored one.
    fn held_copy(&self, id: &Uuid, accepted: &[Put]) -> Option<Record> {
        accepted
            .iter()
            .rev()
            .find(|p| p.record.id == *id)
            .map(|p| p.record.clone())
            .or_else(|| self.store.get(id).ok().flatten())
    }

    /// Admits the records that waited for `member`'s membership, now known.
    fn release_held(&mut self, member: MemberId, now: Now, accepted: &mut Vec<Put>) {
        for p in self.held.release(&member) {
            if let Ok(r) = Record::decode(&p.body) {
                self.admit(r, p.body, p.via_sync, p.from, None, now, accepted);
            }
        }
    }

    /// After records are durable: flood them, update presence, tell front ends.
    fn after_commit(&mut self, accepted: Vec<Put>, from: Option<ConnId>, now: Now) {
        let mut chat = false;
        for p in &accepted {
            if p.record.rtype == PRESENCE_TYPE {
                self.apply_presence(&p.record, now);
            }
            chat |= p.record.rtype == CHAT_TYPE || !crate::records::is_reserved(&p.record.rtype);
        }
        let bodies: Vec<Vec<u8>> = accepted.into_iter().map(|p| p.body).collect();
        self.flood(bodies, from);
        if chat {
            self.out.push_back(Output::ChatStored(self.store.last_seq()));
        }
    }

    /// Sends record bodies to every neighbour but `from` that is not lagging.
    fn flood(&mut self, bodies: Vec<Vec<u8>>, from: Option<ConnId>) {
        let frames: Vec<Arc<Vec<u8>>> = pack(bodies)
            .into_iter()
            .map(|b| Arc::new(Message::Records { sync: false, bodies: b }.encode()))
            .collect();
        let targets: Vec<ConnId> = self
            .conns
            .iter_mut()
            .filter(|(id, c)| Some(**id) != from && c.purpose == Purpose::Neighbour)
            // Never drop: a lagging neighbour is caught up by sync later.
            .filter_map(|(id, c)| c.flow.admits_flood().then_some(*id))
            .collect();
        for id in targets {
            for f in &frames {
                self.transmit_frame(id, f.clone());
            }
        }
    }

    /// Where members were seen changed: the known-peers file is rewritten now, or (when
    /// it was rewritten less than [`KNOWN_PEERS_EVERY`] ago) at the first tick after,
    /// so a member alternating its addresses cannot make every node fsync a file per
    /// presence record.
    fn known_changed(&mut self, now: Instant) {
        if self
            .known_written
            .is_none_or(|at| now.duration_since(at) >= KNOWN_PEERS_EVERY)
        {
            self.known_written = Some(now);
            self.known_dirty = false;
            self.out.push_back(Output::KnownPeers(self.mesh.known().render()));
        } else {
            self.known_dirty = true;
        }
    }

    fn apply_presence(&mut self, r: &Record, now: Now) {
        if r.creator == self.me {
            return;
        }
        if !r.deleted && r.expires_ms > now.unix_ms() && self.mesh.note_addresses(r.creator, &r.presence_addresses()) {
            self.known_changed(now.instant);
        }
        let Some(change) = self.roster.apply(r, now.unix_ms()) else {
            return;
        };
        let name = self.admission.names().display(&r.creator);
        for c in self.conns.values_mut().filter(|c| c.member == r.creator) {
            c.name = name.clone();
        }
        self.emit(Event::Member {
            change,
            member: r.creator,
            name,
        });
    }
}

/// Whether records of this type count against their creator's quota: all but the one
/// presence and one membership record each member has, and admin records (one per
/// member and type).
fn counted(rtype: &Uuid) -> bool {
    !record::is_keyed_type(rtype)
}

/// The role a membership certificate grants.
fn role_of(cert: &Cert) -> Role {
    match cert.claim {
        Claim::Membership { role, .. } => role,
        _ => Role::Member,
    }
}

/// The event telling of a credential `by` issued: `cert` for the member named `name`.
fn credential_event(cert: &Cert, by: MemberId, name: String) -> Event {
    let role = role_of(cert);
    Event::Credential {
        member: cert.member_id,
        name,
        role,
        until_ms: cert.not_after.unix_timestamp().saturating_mul(1000),
        by,
    }
}

/// Groups bodies into Records frames under the size budget.
fn pack(bodies: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for b in bodies {
        if !cur.is_empty() && (size + b.len() > RECORDS_FRAME_BUDGET || cur.len() >= wire::MAX_RECORDS_PER_FRAME) {
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

/// The records among `summaries` that revocation `rev` does not keep (its subject's,
/// other than revocations), with their creation times.
fn doomed_among(rev: &revocation::Revocation, summaries: &[Summary]) -> Vec<(Uuid, i64)> {
    summaries
        .iter()
        .filter(|s| {
            s.creator == rev.subject
                && s.rtype != REVOCATION_TYPE
                && !rev.keeps(&Item {
                    id: *s.id.as_bytes(),
                    version: s.version,
                    digest: s.digest,
                })
        })
        .map(|s| (s.id, s.created_ms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{LinkParams, SIM_EPOCH_SECS, Sim};

    /// Regression (a member restarted after a peer that stopped without deleting its
    /// presence never heard it joined): a live presence loaded from the store at start
    /// is told to the front end as a member joining. It is read by id, without a scan
    /// of the store by type (which reads every chat body: slow starts with big stores).
    #[test]
    fn a_member_present_in_the_store_at_start_is_told_as_joined() {
        let sim = Sim::new(3, 2, 1, LinkParams::default()).unwrap();
        let now = Now {
            instant: std::time::Instant::now(),
            unix_ns: SIM_EPOCH_SECS * 1_000_000_000,
        };
        let bob = &sim.nodes[1];
        let mut presence = Record::new(PRESENCE_TYPE, bob.id, now.unix_ms(), 300_000);
        presence.version = now.unix_ms() as u64;
        presence
            .attributes
            .push(("addresses".into(), AttrValue::Str("10.1.0.2:7400".into())));
        presence.sign(&bob.group_id(), &bob.key()).unwrap();
        let mut inner = MemStore::new();
        inner
            .put_batch(&[Put::new(presence, false, 0)])
            .unwrap_or_else(|e| match e {});
        let store = test_support::TestStore::new(inner);
        let reads = store.reads.clone();
        let mut core = Core::new(sim.nodes[0].config(1), store, now).unwrap();
        let joined = std::iter::from_fn(|| core.poll_output()).any(|o| {
            matches!(o, Output::Event(Event::Member { change: MemberChange::Joined, member, .. }) if member == bob.id)
        });
        assert!(joined, "bob's stored presence was not told");
        assert_eq!(reads.get(), (1, 0), "(summaries read, scans by type) at start");
    }

    /// Durable before forwarded, when the disk says no: a message whose commit fails is
    /// refused to its sender, not flooded, and not counted as held.
    #[test]
    fn a_record_whose_commit_fails_is_neither_flooded_nor_held() {
        let sim = Sim::new(3, 2, 1, LinkParams::default()).unwrap();
        let now = Now {
            instant: Instant::now(),
            unix_ns: SIM_EPOCH_SECS * 1_000_000_000,
        };
        let store = test_support::TestStore::new(MemStore::new());
        let fail = store.fail.clone();
        let mut core = sim.core_over(0, store, now).unwrap();
        let peer = &sim.nodes[1];
        let up = ConnUp {
            id: 9,
            member: peer.id,
            cert: peer.membership_cert().clone(),
            chain: Vec::new(),
            addr: peer.addr,
            outbound: false,
            purpose: Purpose::Neighbour,
            tie: (1, 1),
            sync_key: SyncKey::new([1; 16]),
            via: crate::core::Via::Direct,
            observed: None,
        };
        core.handle(now, Input::Up(Box::new(up)));
        while core.poll_output().is_some() {}
        let held = core.items().len();
        let counted = core.quota_usage(core.member_id(), now.unix_ms());
        fail.set(true);
        core.handle(now, Input::Command(7, Command::Publish("lost?".into())));
        let outputs: Vec<Output> = std::iter::from_fn(|| core.poll_output()).collect();
        assert!(
            !outputs.iter().any(|o| matches!(o, Output::Transmit { .. })),
            "flooded before it was durable: {outputs:?}"
        );
        assert!(
            outputs
                .iter()
                .any(|o| matches!(o, Output::Reply(7, Reply::Published(Err(CoreError::Store(_)))))),
            "the sender is not told: {outputs:?}"
        );
        assert_eq!(
            core.items().len(),
            held,
            "the sync index claims a record the store lacks"
        );
        assert_eq!(
            core.quota_usage(core.member_id(), now.unix_ms()),
            counted,
            "the quota counts a record the store lacks"
        );
        fail.set(false);
        core.handle(now, Input::Command(8, Command::Publish("kept".into())));
        let outputs: Vec<Output> = std::iter::from_fn(|| core.poll_output()).collect();
        assert!(outputs.iter().any(|o| matches!(o, Output::Transmit { conn: 9, .. })));
        assert_eq!(core.items().len(), held + 1);
    }
}
