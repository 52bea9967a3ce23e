//! The deterministic driver of the core: many nodes in one process, on simulated links
//! and simulated time, with seeded delay, jitter, connection loss, partitions and
//! restarts. The nodes are the same [`Core`] the tokio driver runs, over an in-memory
//! store, with real certificates, real Ed25519 signatures and the real record and
//! frame encodings. A scenario is a function of its seed: the topology, every delay,
//! every loss, the crashes and the messages; a failing seed replays the same run (up
//! to certificate serial numbers, which rcgen draws at random).

use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::clock;
use crate::core::known::KnownPeers;
use crate::core::mesh::PeerSpec;
use crate::core::rng::Rng;
use crate::core::{self, Command, ConnId, ConnReason, ConnUp, Core, Input, MemStore, Now, Output, TICK};
use crate::identity::Identity;
use crate::member::MemberId;
use crate::membership::{GroupInfo, Membership};
use crate::pki::{self, Cert, CertSpec, Claim, PkiError, Role};
use crate::sync::Item;
use crate::wire::{Message, Purpose};

mod hostile;
pub use hostile::Budgets;

/// Where the simulation's wall clock starts (unix seconds; 2027-01-15), so record and
/// certificate times, and so record ids, are the same in every run of a seed.
pub const SIM_EPOCH_SECS: i64 = 1_800_000_000;

/// The network's behaviour.
#[derive(Debug, Clone)]
pub struct LinkParams {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay, uniform in `0..jitter`, per frame (frames on one connection stay
    /// in order, as on TCP; frames on different connections overtake each other).
    pub jitter: Duration,
    /// Chance that a frame's connection breaks instead of delivering it (a lossy link
    /// as TCP shows it: the connection times out or resets), in parts per million.
    pub loss_ppm: u32,
    /// Chance that a dial fails, in parts per million.
    pub dial_loss_ppm: u32,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(20),
            loss_ppm: 0,
            dial_loss_ppm: 0,
        }
    }
}

/// One member of the simulated group: its credentials and its running core.
#[derive(Debug)]
pub struct SimNode {
    /// Member id.
    pub id: MemberId,
    /// Address it listens on in the simulation.
    pub addr: SocketAddr,
    key_pkcs8: Vec<u8>,
    identity_cert: Cert,
    membership: Membership,
    peers: Vec<PeerSpec>,
    /// The core, while the node is up.
    pub core: Option<Core<MemStore>>,
    /// The store, kept across a crash (it is durable).
    stored: Option<MemStore>,
    boots: u64,
    /// The quota figures its core uses.
    pub quota: core::QuotaLimits,
}

impl SimNode {
    /// The group's id.
    pub fn group_id(&self) -> Uuid {
        self.membership.group.id
    }

    /// The member's signing key.
    pub fn key(&self) -> rcgen::KeyPair {
        rcgen::KeyPair::try_from(self.key_pkcs8.as_slice()).expect("the key was made here")
    }

    /// The group's root certificate.
    pub fn root(&self) -> &Cert {
        &self.membership.root
    }

    /// The member's membership certificate.
    pub fn membership_cert(&self) -> &Cert {
        &self.membership.membership
    }

    pub(crate) fn config(&self, seed: u64) -> core::Config {
        core::Config {
            identity: Identity {
                name: self.membership.identity.clone(),
                key: self.key(),
                cert: self.identity_cert.clone(),
            },
            membership: self.membership.clone(),
            advertised: vec![self.addr.to_string()],
            advertise_given: false,
            peers: self.peers.clone(),
            max_neighbours: core::DEFAULT_MAX_NEIGHBOURS,
            discover: false,
            known: KnownPeers::default(),
            initial_messages: Vec::new(),
            seed,
            threads: 1,
            quota: self.quota,
            // The simulation has no listeners to dial back.
            check_reach: false,
            record_events: false,
        }
    }
}

/// What happens at a moment of simulated time.
#[derive(Debug)]
enum Happening {
    Deliver {
        node: usize,
        conn: ConnId,
        msg: Message,
        bytes: usize,
    },
    Up {
        node: usize,
        up: Box<ConnUp>,
    },
    DialFailed {
        node: usize,
        boot: u64,
        addr: SocketAddr,
        purpose: Purpose,
        expected: Option<MemberId>,
    },
    Down {
        node: usize,
        conn: ConnId,
    },
    Tick {
        node: usize,
        boot: u64,
    },
    Publish {
        node: usize,
        text: String,
    },
    Attack {
        node: usize,
        round: u64,
    },
}

impl Happening {
    /// The node it happens to.
    fn node(&self) -> usize {
        match self {
            Happening::Deliver { node, .. }
            | Happening::Up { node, .. }
            | Happening::DialFailed { node, .. }
            | Happening::Down { node, .. }
            | Happening::Tick { node, .. }
            | Happening::Publish { node, .. }
            | Happening::Attack { node, .. } => *node,
        }
    }
}

/// One end of a simulated connection.
#[derive(Debug, Clone, Copy)]
struct End {
    node: usize,
    boot: u64,
    peer: ConnId,
    alive: bool,
    /// When the last frame sent from this end arrives (frames stay in order).
    last_arrival: Duration,
    /// Bytes sent from this end not yet delivered: what a socket's queue would hold,
    /// reported to the core as `Input::Queued` at every tick.
    in_flight: usize,
    /// Bytes sent from this end and delivered so far.
    delivered: u64,
}

/// A scheduled happening, earliest first (then in scheduling order).
#[derive(Debug)]
struct Scheduled {
    at: Duration,
    seq: u64,
    what: Happening,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A simulated group.
#[derive(Debug)]
pub struct Sim {
    /// The seed everything follows from.
    pub seed: u64,
    /// The members.
    pub nodes: Vec<SimNode>,
    /// The network.
    pub links: LinkParams,
    rng: Rng,
    start: Instant,
    epoch_ns: i64,
    now: Duration,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    /// Connection ends, in id order (visited in a fixed order, so a seed replays).
    ends: BTreeMap<ConnId, End>,
    next_conn: ConnId,
    /// Side of each node while partitioned (None: one network).
    partition: Option<Vec<bool>>,
    /// Frames delivered so far.
    pub frames: u64,
    /// The member that turned hostile, if one did: its holdings are not compared.
    pub hostile: Option<usize>,
    /// The most any honest node held against its budgets, sampled at every tick.
    pub budgets: Budgets,
    /// Connections broken by loss so far.
    pub broken: u64,
    /// A digest of every happening's time and node, in order: equal for two runs only
    /// if they happened alike.
    pub trace: u64,
    /// What each node received and spent so far.
    pub load: Load,
    /// How the record being watched spread, if one is (see [`Sim::watch`]).
    pub spread: Option<Spread>,
    /// Time spent watching it during the current happening (not the node's).
    watching: Duration,
}

/// What each node received and spent, for the scale benchmark (`simbench`).
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// Frame bytes delivered to each node (with the framing the driver counts).
    pub bytes_in: Vec<u64>,
    /// Time each node's core spent on its inputs and outputs, on this process's clock
    /// (with the decoding of each frame it sends, which stands for its receiver's
    /// reader; not the watching of a record).
    pub busy: Vec<Duration>,
}

/// How one record spread through the group.
#[derive(Debug, Clone)]
pub struct Spread {
    /// The record watched.
    pub id: Uuid,
    /// For each node, the hops its first copy took (`Some(0)` at the origin).
    pub hops: Vec<Option<u32>>,
    /// For each node, when its first copy arrived (simulated time).
    pub reached: Vec<Option<Duration>>,
    /// Copies delivered to each node (the first and every duplicate).
    pub copies: Vec<u32>,
    /// Bytes of the frames that carried it, over all nodes (its share of each frame).
    pub bytes: u64,
    /// Time nodes spent on the frames that carried it, over all nodes.
    pub busy: Duration,
}

impl Spread {
    /// Whether every node has it.
    pub fn complete(&self) -> bool {
        self.hops.iter().all(Option::is_some)
    }
}

/// A deterministic Ed25519 key from the simulation's randomness.
fn seeded_key(rng: &mut Rng) -> Result<(rcgen::KeyPair, Vec<u8>), PkiError> {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
    }
    let crypto = |e: String| PkiError::Crypto(e);
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| crypto(e.to_string()))?;
    let pkcs8 = pair.to_pkcs8().map_err(|e| crypto(e.to_string()))?.as_ref().to_vec();
    let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).map_err(|e| crypto(e.to_string()))?;
    Ok((key, pkcs8))
}

/// A node's address: public ones (11.1.0.0/16, outside every private and reserved
/// range), as on the internet, where every node can dial every other and a node
/// dialled by others knows it needs no relay. Nothing is sent to them: the network is
/// simulated.
fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(11, 1, (i / 250) as u8, (i % 250 + 1) as u8),
        7400,
    ))
}

/// Credentials of `n` members of a fresh group (the first is its admin).
fn credentials(n: usize, rng: &mut Rng) -> Result<Vec<SimNode>, PkiError> {
    let (root_key, _) = seeded_key(rng)?;
    // Fixed times, so a seed replays: the simulation's clock starts at SIM_EPOCH_SECS.
    let now = clock::from_unix(SIM_EPOCH_SECS);
    let start = clock::from_unix(SIM_EPOCH_SECS - 86_400);
    let until = clock::add(now, Duration::from_secs(30 * 86_400));
    let group = GroupInfo {
        id: Uuid::from_u64_pair(rng.next_u64(), rng.next_u64()),
        name: "sim".into(),
        classifier: String::new(),
        message_lifetime_secs: 7 * 86_400,
        member_lifetime_secs: 30 * 86_400,
        presence_lifetime_secs: 300,
    };
    let spec = |cn: String, claim: Claim| CertSpec {
        common_name: cn,
        claim,
        not_before: start,
        not_after: until,
    };
    let root_der = pki::self_signed(&spec("sim root".into(), Claim::Root { group: group.id }), &root_key)?;
    let root = Cert::parse(&root_der, "the root")?;
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let (key, key_pkcs8) = seeded_key(rng)?;
        let name = format!("m{i}");
        let identity_cert = Cert::parse(
            &pki::self_signed(&spec(name.clone(), Claim::Identity), &key)?,
            "identity",
        )?;
        let id = identity_cert.member_id;
        let role = if i == 0 { Role::Admin } else { Role::Member };
        let claim = Claim::Membership {
            group: group.id,
            member: id,
            role,
        };
        let der = pki::issue(&spec(name.clone(), claim), &pki::spki_of(&key), &root.der, &root_key)?;
        let membership = Membership {
            identity: name,
            group: group.clone(),
            role,
            root: root.clone(),
            membership: Cert::parse(&der, "membership")?,
            issuing: None,
            chain: Vec::new(),
            listen: sim_addr(i),
            bootstrap: Vec::new(),
            joined: now,
            creator: i == 0,
            dir: std::path::PathBuf::from("/nonexistent"),
        };
        nodes.push(SimNode {
            id,
            addr: sim_addr(i),
            key_pkcs8,
            identity_cert,
            membership,
            peers: Vec::new(),
            core: None,
            stored: Some(MemStore::new()),
            boots: 0,
            quota: core::QuotaLimits::default(),
        });
    }
    Ok(nodes)
}

impl Sim {
    /// A group of `n` members, each told to dial `degree` others chosen at random (a
    /// sparse random mesh; a ring underneath keeps it connected), all started.
    pub fn new(seed: u64, n: usize, degree: usize, links: LinkParams) -> Result<Sim, PkiError> {
        Sim::with_quota(seed, n, degree, links, core::QuotaLimits::default())
    }

    /// [`Sim::new`] with every node under the quota figures `quota`.
    pub fn with_quota(
        seed: u64,
        n: usize,
        degree: usize,
        links: LinkParams,
        quota: core::QuotaLimits,
    ) -> Result<Sim, PkiError> {
        let mut rng = Rng::new(seed);
        let mut nodes = credentials(n, &mut rng)?;
        for node in &mut nodes {
            node.quota = quota;
        }
        for i in 0..n {
            let mut picks = vec![(i + 1) % n];
            while picks.len() < degree.min(n.saturating_sub(1)) {
                let j = rng.below(n as u64) as usize;
                if j != i && !picks.contains(&j) {
                    picks.push(j);
                }
            }
            nodes[i].peers = picks
                .into_iter()
                .filter(|j| *j != i)
                .map(|j| PeerSpec {
                    member: Some(nodes[j].id),
                    addr: nodes[j].addr,
                })
                .collect();
        }
        let mut sim = Sim {
            seed,
            nodes,
            links,
            rng,
            start: Instant::now(),
            epoch_ns: SIM_EPOCH_SECS * 1_000_000_000,
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            ends: BTreeMap::new(),
            next_conn: 1,
            partition: None,
            frames: 0,
            hostile: None,
            budgets: Budgets::default(),
            broken: 0,
            trace: 0,
            load: Load {
                bytes_in: vec![0; n],
                busy: vec![Duration::ZERO; n],
            },
            spread: None,
            watching: Duration::ZERO,
        };
        for i in 0..n {
            sim.boot(i);
        }
        Ok(sim)
    }

    fn clock(&self) -> Now {
        Now {
            instant: self.start + self.now,
            unix_ns: self.epoch_ns + self.now.as_nanos() as i64,
        }
    }

    fn schedule(&mut self, after: Duration, what: Happening) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now + after,
            seq: self.seq,
            what,
        });
    }

    fn one_way(&mut self) -> Duration {
        let jitter = self.links.jitter.as_micros() as u64;
        self.links.delay + Duration::from_micros(self.rng.below(jitter.max(1)))
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.below(1_000_000) < u64::from(ppm)
    }

    /// Starts (or restarts) node `i` over its stored records.
    pub fn boot(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(store) = node.stored.take() else { return };
        node.boots += 1;
        let cfg = node.config(self.seed ^ ((i as u64) << 20) ^ node.boots);
        let boot = node.boots;
        let now = self.clock();
        self.nodes[i].core = Some(Core::new(cfg, store, now).expect("a simulated node starts"));
        let first = Duration::from_micros(self.rng.below(TICK.as_micros() as u64));
        self.schedule(first, Happening::Tick { node: i, boot });
        self.carry_out(i);
    }

    /// A new core for node `i` over an empty store, outside the simulated network (for
    /// tests that drive one core by hand).
    pub fn fresh_core(&self, i: usize, now: Now) -> Core<MemStore> {
        self.core_over(i, MemStore::new(), now).expect("a core starts")
    }

    /// A new core for node `i` over `store`, outside the simulated network.
    pub fn core_over<S: crate::core::RecordStore>(
        &self,
        i: usize,
        store: S,
        now: Now,
    ) -> Result<Core<S>, core::CoreError> {
        Core::new(self.nodes[i].config(self.seed), store, now)
    }

    /// Crashes node `i`: its connections break, its store survives.
    pub fn crash(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.take() else { return };
        let ids: Vec<ConnId> = self
            .ends
            .iter()
            .filter(|(_, e)| e.node == i && e.alive)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.break_conn(id);
        }
        // What was committed survives; the core's uncommitted batch does not.
        self.nodes[i].stored = Some(core.store().clone());
    }

    /// Splits the nodes in two (by `side`); connections across break, dials across fail.
    pub fn split(&mut self, side: Vec<bool>) {
        let across: Vec<ConnId> = self
            .ends
            .iter()
            .filter(|(_, e)| e.alive && side[e.node] != self.ends.get(&e.peer).map_or(side[e.node], |p| side[p.node]))
            .map(|(id, _)| *id)
            .collect();
        for id in across {
            self.break_conn(id);
        }
        self.partition = Some(side);
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    /// Node `i` publishes a chat message `after` from now.
    pub fn publish(&mut self, i: usize, after: Duration, text: String) {
        self.schedule(after, Happening::Publish { node: i, text });
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.partition.as_ref().is_none_or(|side| side[a] == side[b])
    }

    /// Breaks a connection at both ends (each end hears of it after a one-way delay).
    fn break_conn(&mut self, id: ConnId) {
        let Some(end) = self.ends.get_mut(&id) else { return };
        if !end.alive {
            return;
        }
        end.alive = false;
        let (node, peer) = (end.node, end.peer);
        let peer_node = self.ends.get_mut(&peer).map(|p| {
            p.alive = false;
            p.node
        });
        let d = self.one_way();
        self.schedule(d, Happening::Down { node, conn: id });
        if let Some(pn) = peer_node {
            let d = self.one_way();
            self.schedule(d, Happening::Down { node: pn, conn: peer });
        }
    }

    /// Runs until `until` (simulated time since the start).
    pub fn run_until(&mut self, until: Duration) {
        while let Some(next) = self.queue.peek() {
            if next.at > until {
                break;
            }
            let Some(s) = self.queue.pop() else { break };
            self.now = s.at;
            self.trace = self.trace.rotate_left(7) ^ (s.at.as_nanos() as u64) ^ ((s.what.node() as u64) << 48);
            self.happen(s.what);
        }
        self.now = until;
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// Watches record `id`, which node `origin` holds already, spread from there.
    pub fn watch(&mut self, id: Uuid, origin: usize) {
        let n = self.nodes.len();
        let mut spread = Spread {
            id,
            hops: vec![None; n],
            reached: vec![None; n],
            copies: vec![0; n],
            bytes: 0,
            busy: Duration::ZERO,
        };
        spread.hops[origin] = Some(0);
        spread.reached[origin] = Some(self.now);
        self.spread = Some(spread);
    }

    /// Notes a delivery to `node` of a frame from `sender` for the watched record; the
    /// bytes it carried for it if it did.
    fn note_spread(&mut self, node: usize, sender: usize, msg: &Message, frame_bytes: usize) -> Option<u64> {
        let spread = self.spread.as_mut()?;
        let Message::Records { bodies, .. } = msg else {
            return None;
        };
        let body = bodies
            .iter()
            .find(|b| crate::record::Record::decode(b).is_ok_and(|r| r.id == spread.id))?;
        // Its share of the frame: its body, and the framing in proportion.
        let total: usize = bodies.iter().map(Vec::len).sum::<usize>().max(1);
        let share = (frame_bytes as u64 * body.len() as u64) / total as u64;
        spread.copies[node] += 1;
        spread.bytes += share;
        if spread.hops[node].is_none()
            && let Some(h) = spread.hops[sender]
        {
            spread.hops[node] = Some(h + 1);
            spread.reached[node] = Some(self.now);
        }
        Some(share)
    }

    fn happen(&mut self, what: Happening) {
        let started = Instant::now();
        let node = what.node();
        self.watching = Duration::ZERO;
        let watched = self.happen_timed(what);
        let spent = started.elapsed().saturating_sub(self.watching);
        if let Some(b) = self.load.busy.get_mut(node) {
            *b += spent;
        }
        if watched && let Some(s) = self.spread.as_mut() {
            s.busy += spent;
        }
    }

    /// Carries out one happening; whether it delivered the watched record.
    fn happen_timed(&mut self, what: Happening) -> bool {
        let now = self.clock();
        let mut watched = false;
        let (node, input) = match what {
            Happening::Tick { node, boot } => {
                let queued: Vec<(ConnId, usize, u64)> = self
                    .ends
                    .iter()
                    .filter(|(_, e)| e.alive && e.node == node && e.boot == boot)
                    .map(|(id, e)| (*id, e.in_flight, e.delivered))
                    .collect();
                let n = &mut self.nodes[node];
                let Some(core) = n.core.as_mut().filter(|_| n.boots == boot) else {
                    return false;
                };
                for (id, bytes, delivered) in queued {
                    core.handle(now, Input::Queued(id, bytes, delivered));
                }
                core.handle_timeout(now);
                if self.hostile != Some(node) {
                    self.budgets.sample(core);
                }
                self.schedule(TICK, Happening::Tick { node, boot });
                self.carry_out(node);
                return false;
            }
            Happening::Deliver { node, conn, msg, bytes } => {
                let Some(peer) = self.ends.get(&conn).filter(|e| e.alive).map(|e| e.peer) else {
                    return false;
                };
                let mut from = None;
                if let Some(sender) = self.ends.get_mut(&peer) {
                    sender.in_flight = sender.in_flight.saturating_sub(bytes);
                    sender.delivered += bytes as u64;
                    from = Some(sender.node);
                }
                self.frames += 1;
                if let Some(b) = self.load.bytes_in.get_mut(node) {
                    *b += bytes as u64;
                }
                if let Some(sender) = from
                    && self.spread.is_some()
                {
                    let t = Instant::now();
                    watched = self.note_spread(node, sender, &msg, bytes).is_some();
                    self.watching = t.elapsed();
                }
                (node, Input::Frame(conn, msg))
            }
            Happening::Up { node, up } => {
                if !self
                    .ends
                    .get(&up.id)
                    .is_some_and(|e| e.alive && e.boot == self.nodes[node].boots)
                {
                    return false;
                }
                (node, Input::Up(up))
            }
            Happening::DialFailed {
                node,
                boot,
                addr,
                purpose,
                expected,
            } => {
                if self.nodes[node].boots != boot {
                    return false;
                }
                let reason = ConnReason::Transport("connect: unreachable".into());
                (
                    node,
                    Input::DialFailed {
                        addr,
                        purpose,
                        expected,
                        reason,
                    },
                )
            }
            Happening::Down { node, conn } => {
                let closed = ConnReason::Transport("closed by peer".into());
                (node, Input::Down(conn, closed))
            }
            Happening::Publish { node, text } => (node, Input::Command(0, Command::Publish(text.into()))),
            Happening::Attack { node, round } => {
                self.attack_round(node, round);
                return false;
            }
        };
        let Some(core) = self.nodes[node].core.as_mut() else {
            return false;
        };
        core.handle(now, input);
        core.flush(now);
        self.carry_out(node);
        watched
    }

    /// Carries out node `i`'s outputs on the simulated network.
    fn carry_out(&mut self, i: usize) {
        loop {
            let Some(out) = self.nodes[i].core.as_mut().and_then(|c| c.poll_output()) else {
                return;
            };
            match out {
                Output::Transmit { conn, frame } => self.transmit(conn, &frame),
                Output::Dial {
                    addr,
                    expected,
                    purpose,
                    nonce,
                } => self.dial(i, addr, expected, purpose, nonce),
                Output::Close { conn } => self.break_conn(conn),
                // Every simulated node can dial every other: nothing is relayed.
                Output::Event(_)
                | Output::Reply(..)
                | Output::ChatStored(_)
                | Output::KnownPeers(_)
                | Output::Membership(_)
                | Output::DialRelayed { .. }
                | Output::AcceptRelayed { .. }
                | Output::RelayRefused { .. }
                | Output::Punch { .. }
                | Output::DialBack { .. } => {}
            }
        }
    }

    fn transmit(&mut self, conn: ConnId, frame: &Arc<Vec<u8>>) {
        let Some(end) = self.ends.get(&conn).copied().filter(|e| e.alive) else {
            return;
        };
        if self.chance(self.links.loss_ppm) {
            self.broken += 1;
            return self.break_conn(conn);
        }
        // The real encoding crosses the link: what arrives is decoded from the bytes,
        // and a frame that does not decode ends the connection, as a reader does.
        let Ok(msg) = Message::decode(&frame[4..]) else {
            return self.break_conn(conn);
        };
        let arrival = (self.now + self.one_way()).max(end.last_arrival);
        // What a queued frame costs, as the driver counts it.
        let cost = frame.len() + crate::core::flow::FRAME_OVERHEAD;
        if let Some(e) = self.ends.get_mut(&conn) {
            e.last_arrival = arrival;
            e.in_flight += cost;
        }
        let Some(peer) = self.ends.get(&end.peer).copied() else {
            return;
        };
        self.seq += 1;
        self.queue.push(Scheduled {
            at: arrival,
            seq: self.seq,
            what: Happening::Deliver {
                node: peer.node,
                conn: end.peer,
                msg,
                bytes: cost,
            },
        });
    }

    fn dial(&mut self, i: usize, addr: SocketAddr, expected: Option<MemberId>, purpose: Purpose, nonce: u64) {
        let target = self.nodes.iter().position(|n| n.addr == addr);
        let ok = target.filter(|&t| {
            self.nodes[t].core.is_some() && self.reachable(i, t) && expected.is_none_or(|m| m == self.nodes[t].id)
        });
        let failed = ok.is_none() || self.chance(self.links.dial_loss_ppm);
        let rtt = self.one_way() + self.one_way();
        let Some(t) = ok.filter(|_| !failed) else {
            let boot = self.nodes[i].boots;
            return self.schedule(
                rtt,
                Happening::DialFailed {
                    node: i,
                    boot,
                    addr,
                    purpose,
                    expected,
                },
            );
        };
        let (a, b) = (self.next_conn, self.next_conn + 1);
        self.next_conn += 2;
        let end = |node: usize, boot: u64, peer: ConnId| End {
            node,
            boot,
            peer,
            alive: true,
            last_arrival: Duration::ZERO,
            in_flight: 0,
            delivered: 0,
        };
        self.ends.insert(a, end(i, self.nodes[i].boots, b));
        self.ends.insert(b, end(t, self.nodes[t].boots, a));
        let tie = (nonce, self.rng.next_u64());
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        key[8..].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        let sync_key = crate::sync::SyncKey::new(key);
        let up = |id, peer: &SimNode, outbound| {
            Box::new(ConnUp {
                id,
                member: peer.id,
                cert: peer.membership.membership.clone(),
                chain: peer.membership.chain.clone(),
                addr: peer.addr,
                outbound,
                purpose,
                tie,
                sync_key,
                via: crate::core::Via::Direct,
                observed: None,
            })
        };
        let (up_i, up_t) = (up(a, &self.nodes[t], true), up(b, &self.nodes[i], false));
        self.schedule(rtt, Happening::Up { node: i, up: up_i });
        self.schedule(rtt, Happening::Up { node: t, up: up_t });
    }

    /// The sync index of every running node.
    pub fn holdings(&self) -> Vec<(usize, Vec<Item>)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.core.as_ref().map(|c| (i, c.items().iter().collect())))
            .collect()
    }

    /// Whether every running node (but a hostile one) holds exactly the same records.
    pub fn converged(&self) -> bool {
        let all: Vec<_> = self
            .holdings()
            .into_iter()
            .filter(|(i, _)| Some(*i) != self.hostile)
            .collect();
        all.windows(2).all(|w| w[0].1 == w[1].1)
    }

    /// How many running nodes hold each distinct record set (for failure messages).
    pub fn divergence(&self) -> BTreeMap<usize, usize> {
        let mut sizes = BTreeMap::new();
        for (_, items) in self.holdings() {
            *sizes.entry(items.len()).or_insert(0) += 1;
        }
        sizes
    }
}
