//! What the in-process multi-node tests share: a group of members in one home, and
//! nodes of it started on 127.0.0.1.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use common::clock;
use common::group::{self, GroupSpec};
use common::home::Home;
use common::identity::Identity;
use common::invitation::{self, Invitation, InviteSpec};
use common::membership;
use common::node::{self, Event, Handle, NodeConfig, PeerSpec};
use common::pki::{KeyType, Role};
use common::record::{CHAT_TYPE, Record};
use common::store::{Durability, Put, STORE_FILE, Store};
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

pub const GROUP: &str = "T";
pub const WAIT: Duration = Duration::from_secs(20);

/// A group of `n` members (m0 created it) in one home.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub home: Home,
    pub n: usize,
}

pub fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::resolve(Some(dir.path())).unwrap();
    let creator = Identity::create(&home, "m0", KeyType::Ed25519, "m0").unwrap();
    let spec = GroupSpec {
        name: GROUP.into(),
        classifier: String::new(),
        listen: "127.0.0.1:0".parse().unwrap(),
        message_lifetime: Duration::from_secs(7 * 86_400),
        member_lifetime: Duration::from_secs(365 * 86_400),
        presence_lifetime: common::membership::DEFAULT_PRESENCE_LIFETIME,
    };
    let m = group::create(&home, &creator, &spec).unwrap();
    for i in 1..n {
        let name = format!("m{i}");
        let id = Identity::create(&home, &name, KeyType::Ed25519, &name).unwrap();
        let spec = InviteSpec {
            role: Role::Member,
            valid_for: None,
            expires: Duration::from_secs(3600),
            addresses: vec![],
        };
        let inv = Invitation::create(&creator, &m, &id.public(), &spec).unwrap();
        invitation::join(&home, &id, &inv, "127.0.0.1:0".parse().unwrap()).unwrap();
    }
    Fixture { _dir: dir, home, n }
}

pub struct Running {
    pub handle: Handle,
    pub events: Receiver<Event>,
    pub task: JoinHandle<()>,
    pub addr: SocketAddr,
}

impl Fixture {
    pub fn identity(&self, i: usize) -> Identity {
        Identity::load(&self.home, &format!("m{i}")).unwrap()
    }

    pub fn store_path(&self, i: usize) -> std::path::PathBuf {
        membership::find(&self.home, &format!("m{i}"), GROUP)
            .unwrap()
            .dir
            .join(STORE_FILE)
    }

    pub async fn start(&self, i: usize, peers: &[SocketAddr]) -> Running {
        self.start_with(i, peers, vec![]).await
    }

    /// Starts member i advertising `advertise` instead of where it listens.
    pub async fn start_with(&self, i: usize, peers: &[SocketAddr], advertise: Vec<String>) -> Running {
        self.start_at(i, "127.0.0.1:0", peers, advertise).await
    }

    /// Starts member i listening on `listen`, advertising `advertise` (where it
    /// listens when empty).
    pub async fn start_at(&self, i: usize, listen: &str, peers: &[SocketAddr], advertise: Vec<String>) -> Running {
        let cfg = NodeConfig {
            identity: self.identity(i),
            membership: membership::find(&self.home, &format!("m{i}"), GROUP).unwrap(),
            listen: listen.parse().unwrap(),
            advertise,
            peers: peers.iter().map(|a| PeerSpec { member: None, addr: *a }).collect(),
            max_neighbours: 8,
            durability: Durability::Normal,
            initial_messages: vec![],
            discover: false,
            port_mapping: false,
            mdns: false,
            check_reach: true,
            record_events: false,
        };
        let (handle, events, task) = node::start(cfg).await.unwrap();
        let addr = handle.addresses[0]
            .parse()
            .unwrap_or_else(|_| "127.0.0.1:1".parse().unwrap());
        Running {
            handle,
            events,
            task,
            addr,
        }
    }

    /// Chat records in member i's store.
    pub fn chats(&self, i: usize) -> Vec<Record> {
        let store = Store::open_read_only(&self.store_path(i)).unwrap();
        store
            .after(&CHAT_TYPE, 0, 1_000_000)
            .unwrap()
            .into_iter()
            .map(|r| r.record)
            .collect()
    }

    /// Signed chat records by member `by`, `count` of them, not yet stored anywhere.
    pub fn make_chats(&self, by: usize, count: usize, lifetime_ms: i64) -> Vec<Record> {
        let id = self.identity(by);
        let group = membership::find(&self.home, &format!("m{by}"), GROUP).unwrap().group.id;
        let creator = id.member_id();
        let now = clock::now().unix_timestamp() * 1000;
        (0..count)
            .map(|k| {
                let mut r = Record::new(CHAT_TYPE, creator, now, lifetime_ms);
                r.data = format!("m{by} says {k}").into_bytes();
                r.sign(&group, &id.key).unwrap();
                r
            })
            .collect()
    }

    /// Writes records straight into member i's store (before its node runs).
    pub fn seed(&self, i: usize, records: &[Record]) {
        let mut store = Store::open(&self.store_path(i), Durability::Normal).unwrap();
        let puts: Vec<Put> = records.iter().map(|r| Put::new(r.clone(), false, 0)).collect();
        store.put_batch(&puts).unwrap();
    }
}

impl Running {
    pub async fn ready(&mut self) {
        tokio::time::timeout(WAIT, async {
            while let Some(e) = self.events.recv().await {
                if e == Event::Ready {
                    return;
                }
            }
            panic!("node stopped before ready");
        })
        .await
        .expect("node did not become ready");
    }

    pub async fn stop(self) {
        self.handle.leave().await.unwrap();
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

/// Waits until `check` holds, polling.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
