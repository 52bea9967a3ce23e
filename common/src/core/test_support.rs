//! What the core's hand-driven tests of credentials and revocation share: a core for a
//! member of the credential fixture, its outputs, a member connecting, and records
//! made as that member's node would make them.

use std::time::Instant;

use time::OffsetDateTime;

use super::*;
use crate::credential::tests::Held;

/// A memory store for tests: every write fails while `fail` is set (a full disk), and
/// its reads of the whole store are counted in `reads`: (summaries, scans by type). A
/// node's start reads every summary once and scans nothing (a scan by type reads every
/// chat body: slow starts with big stores).
pub struct TestStore {
    /// The records.
    pub inner: MemStore,
    /// Whether writes fail.
    pub fail: std::rc::Rc<std::cell::Cell<bool>>,
    /// (summaries read, scans by type) so far.
    pub reads: std::rc::Rc<std::cell::Cell<(usize, usize)>>,
}

impl TestStore {
    /// `inner`, its writes working, its reads counted from zero.
    pub fn new(inner: MemStore) -> TestStore {
        TestStore {
            inner,
            fail: std::rc::Rc::default(),
            reads: std::rc::Rc::default(),
        }
    }
}

impl RecordStore for TestStore {
    type Error = String;
    fn put_batch(&mut self, batch: &[Put]) -> Result<(), String> {
        if self.fail.get() {
            return Err("disk full".into());
        }
        self.inner.put_batch(batch).map_err(|e| match e {})
    }
    fn get(&self, id: &Uuid) -> Result<Option<Record>, String> {
        self.inner.get(id).map_err(|e| match e {})
    }
    fn bodies(&self, ids: &[Uuid]) -> Result<Vec<Vec<u8>>, String> {
        self.inner.bodies(ids).map_err(|e| match e {})
    }
    fn summaries(&self) -> Result<Vec<Summary>, String> {
        let (s, t) = self.reads.get();
        self.reads.set((s + 1, t));
        self.inner.summaries().map_err(|e| match e {})
    }
    fn of_type(&self, rtype: &Uuid) -> Result<Vec<Record>, String> {
        let (s, t) = self.reads.get();
        self.reads.set((s, t + 1));
        self.inner.of_type(rtype).map_err(|e| match e {})
    }
    fn purge_expired(&mut self, now_ms: i64) -> Result<Vec<Summary>, String> {
        self.inner.purge_expired(now_ms).map_err(|e| match e {})
    }
    fn delete(&mut self, ids: &[Uuid]) -> Result<(), String> {
        self.inner.delete(ids).map_err(|e| match e {})
    }
    fn last_seq(&self) -> i64 {
        self.inner.last_seq()
    }
}

/// The core's time at `t`.
pub fn at(t: OffsetDateTime) -> Now {
    Now {
        instant: Instant::now(),
        unix_ns: t.unix_timestamp() * 1_000_000_000,
    }
}

/// The core's time at `ms` (unix ms).
pub fn at_ms(ms: i64) -> Now {
    Now {
        instant: Instant::now(),
        unix_ns: ms * 1_000_000,
    }
}

/// `h`'s node over an empty store, started at `now`.
pub fn core_of(h: &Held, now: Now) -> Core<MemStore> {
    Core::new(config_of(h), MemStore::new(), now).unwrap()
}

/// The configuration of `h`'s node.
pub fn config_of(h: &Held) -> Config {
    Config {
        identity: h.identity(),
        membership: h.m.clone(),
        advertised: vec!["127.0.0.1:7400".into()],
        advertise_given: false,
        peers: Vec::new(),
        max_neighbours: 8,
        discover: false,
        known: KnownPeers::default(),
        initial_messages: Vec::new(),
        seed: 1,
        threads: 1,
        quota: QuotaLimits::default(),
        check_reach: true,
        record_events: true,
    }
}

/// Everything the core has to say.
pub fn drain(core: &mut Core<MemStore>) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

/// `h` connecting as connection `id`, with the chain it presents.
pub fn up(id: ConnId, h: &Held) -> Input {
    up_with(id, h, Link::default())
}

/// How a connection in a test came about.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Where the peer is.
    pub addr: SocketAddr,
    /// Whether this node dialled.
    pub outbound: bool,
    /// Why.
    pub purpose: Purpose,
    /// Directly or through a relay.
    pub via: Via,
    /// Where the relay saw the peer.
    pub observed: Option<std::net::IpAddr>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            addr: "127.0.0.2:7400".parse().unwrap(),
            outbound: false,
            purpose: Purpose::Neighbour,
            via: Via::Direct,
            observed: None,
        }
    }
}

/// `h` connecting as connection `id` as `link` says.
pub fn up_with(id: ConnId, h: &Held, link: Link) -> Input {
    Input::Up(Box::new(ConnUp {
        id,
        member: h.m.membership.member_id,
        cert: h.m.membership.clone(),
        chain: h.m.chain.clone(),
        addr: link.addr,
        outbound: link.outbound,
        purpose: link.purpose,
        tie: (id, 1),
        sync_key: crate::sync::SyncKey::new([id as u8; 16]),
        via: link.via,
        observed: link.observed,
    }))
}

/// `h`'s membership record, as its node publishes it.
pub fn membership_record(h: &Held, now_ms: i64) -> Record {
    let mut r = Record::new(MEMBERSHIP_TYPE, h.m.membership.member_id, now_ms, 0);
    r.version = admission::membership_version(&h.m.membership);
    r.expires_ms = h.m.membership.not_after.unix_timestamp() * 1000;
    r.data = admission::encode_chain(&h.m.membership, &h.m.chain);
    r.sign(&h.m.group.id, &h.key).unwrap();
    r
}

/// A Records frame of `rs`.
pub fn records(rs: &[&Record]) -> Message {
    Message::Records {
        sync: false,
        bodies: rs.iter().map(|r| r.encode()).collect(),
    }
}

/// `by`'s signed revocation of `subject`, keeping `keep`.
pub fn revocation_of(by: &Held, subject: &Held, keep: Vec<revocation::Key>, now_ms: i64) -> Record {
    let mut r = Record::about(
        REVOCATION_TYPE,
        by.m.membership.member_id,
        subject.m.membership.member_id,
        now_ms,
        by.m.root.not_after.unix_timestamp() * 1000 - now_ms,
    );
    r.attributes
        .push((revocation::REASON_ATTR.into(), AttrValue::Str("laptop stolen".into())));
    r.data = revocation::encode_keys(keep);
    r.sign(&by.m.group.id, &by.key).unwrap();
    r
}
