//! Writes seed corpora for the fuzz targets, made with common's own encoders:
//! `seeds OUT_DIR HOME_DIR` fills `OUT_DIR/<target>/`, signing as alice and bob of
//! HOME_DIR, a copy of `tests/testdata/home` (issuing an invitation reads the inviter's
//! record store, and SQLite leaves files beside it). scripts/fuzz also copies the XML
//! files of `tests/testdata` there.
//!
//! The build instruments every crate for coverage, and the instrumentation calls into
//! libFuzzer, so this program links libFuzzer like the targets do: it is written as a
//! fuzz target whose initialisation does the work and exits before any fuzzing.

#![no_main]

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::clock;
use common::home::Home;
use common::identity::{Identity, PublicIdentity};
use common::invitation::{Invitation, InviteSpec};
use common::membership;
use common::node;
use common::pki::{self, Cert, CertSpec, Claim, KeyType, Role};
use common::record::{self, AttrValue, Record};
use common::sync::{self, ItemSet, SyncKey};

/// The key of the sync sessions the seeds record.
const KEY: SyncKey = SyncKey::new([1; 16]);
use common::wire::{Message, Purpose};
use libfuzzer_sys::fuzz_target;
use peergroup_fuzz::{FIXTURE_ITEMS, fixture, item_set};

fuzz_target!(init: generate_and_exit(), |_data: &[u8]| {});

fn generate_and_exit() {
    std::process::exit(generate());
}

fn generate() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, home] = args.as_slice() else {
        eprintln!("usage: seeds OUT_DIR HOME_DIR");
        return 2;
    };
    match write_all(Path::new(out), Path::new(home)) {
        Ok(n) => {
            eprintln!("seeds: wrote {n} files under {out}");
            0
        }
        Err(e) => {
            eprintln!("seeds: {e}");
            1
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Out {
    root: PathBuf,
    count: usize,
}

impl Out {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        self.count += 1;
        Ok(())
    }
}

fn write_all(out: &Path, home: &Path) -> Result<usize> {
    let fixture = fixture();
    // Everything is made at the targets' fixed clock, so it verifies there. Nothing else
    // runs yet (libFuzzer's own threads start after initialisation).
    // SAFETY: single-threaded at this point, see above.
    unsafe { std::env::set_var(clock::FAKE_NOW_ENV, clock::format_rfc3339(fixture.now())) };
    let mut out = Out {
        root: out.to_path_buf(),
        count: 0,
    };
    let home = Home::resolve(Some(home))?;
    let bob = Identity::load(&home, "bob")?;
    let alice = Identity::load(&home, "alice")?;
    fixture.invitation.check_for(&bob)?;

    // Identities and invitations with the key types and the admin role the testdata
    // lacks (it is all Ed25519 members).
    let p256 = public_identity(KeyType::P256, "Petra P.")?;
    let rsa = public_identity(KeyType::Rsa2048, "rsa")?;
    for (name, identity) in [("p256.xml", &p256), ("rsa2048.xml", &rsa)] {
        out.write("identity_xml", name, identity.to_xml().as_bytes())?;
    }
    let friends = membership::find(&home, "alice", "Friends")?;
    for (name, invitee, role) in [
        ("admin-p256.invite", &p256, Role::Admin),
        ("member-rsa2048.invite", &rsa, Role::Member),
    ] {
        let spec = InviteSpec {
            role,
            valid_for: None,
            expires: Duration::from_secs(86_400),
            addresses: vec!["192.0.2.7:7400".into(), "[2001:db8::7]:7400".into()],
        };
        let invitation = Invitation::create(&alice, &friends, invitee, &spec)?;
        invitation.verify(fixture.now())?;
        out.write("invitation_xml", name, invitation.to_xml().as_bytes())?;
    }

    // Records as peers send them, signed for the fixture group.
    let group = fixture.group();
    let now_ms = fixture.now_unix * 1000;
    let bob_id = bob.member_id();
    let alice_id = alice.member_id();
    let mut records = Vec::new();
    let mut chat = Record::new(record::CHAT_TYPE, bob_id, now_ms, 3_600_000);
    chat.data = "hello, group ✓".as_bytes().to_vec();
    chat.attributes = vec![
        ("n".into(), AttrValue::Int(-3)),
        ("at".into(), AttrValue::Date(now_ms)),
        ("tag".into(), AttrValue::Str("x".into())),
    ];
    records.push(("chat", chat, &bob));
    let mut admin_chat = Record::new(record::CHAT_TYPE, alice_id, now_ms, 3_600_000);
    admin_chat.data = b"from the creator".to_vec();
    records.push(("chat-alice", admin_chat, &alice));
    let mut presence = Record::new(record::PRESENCE_TYPE, bob_id, now_ms, 300_000);
    presence.id = record::per_member_id(&record::PRESENCE_TYPE, &bob_id);
    presence.version = u64::try_from(now_ms)?;
    presence.attributes = vec![
        ("name".into(), AttrValue::Str("bob".into())),
        ("addresses".into(), AttrValue::Str("192.0.2.2:7401,[::1]:7401".into())),
    ];
    records.push(("presence", presence.clone(), &bob));
    let mut gone = presence;
    gone.version += 1;
    gone.deleted = true;
    gone.attributes.clear();
    records.push(("presence-tombstone", gone, &bob));
    let invitation = &fixture.invitation;
    let mut published = Record::new(record::MEMBERSHIP_TYPE, bob_id, now_ms, 86_400_000);
    published.id = record::per_member_id(&record::MEMBERSHIP_TYPE, &bob_id);
    published.data = node::encode_chain(&invitation.membership, &invitation.chain);
    records.push(("membership", published, &bob));
    let mut bodies = Vec::new();
    for (name, mut r, signer) in records {
        r.sign(&group, &signer.key)?;
        let body = r.encode();
        out.write("record_decode", name, &body)?;
        bodies.push(body);
    }

    // Frames: one per message type, a whole session, and sync rounds against the
    // targets' item set (half of it shared, so every kind of range comes up).
    let mut theirs = ItemSet::new();
    for (i, item) in fixture.items.iter().enumerate() {
        if i % 2 == 0 {
            theirs.insert(item);
        }
    }
    for item in item_set(2, FIXTURE_ITEMS / 2).iter() {
        theirs.insert(item);
    }
    let mut rounds = vec![sync::initiate(&theirs, &KEY)];
    let sides = [&fixture.items, &theirs];
    for step in 0..6 {
        let last = rounds.last().cloned().unwrap_or_default();
        let reply = sync::reconcile(sides[step % 2], &last, &KEY)?.reply;
        if reply.is_empty() {
            break;
        }
        rounds.push(reply);
    }
    let messages = vec![
        (
            "hello",
            Message::Hello {
                version: common::wire::PROTOCOL_VERSION,
                purpose: Purpose::Neighbour,
                addresses: vec!["192.0.2.2:7401".into(), "[2001:db8::2]:7401".into()],
                nonce: 0x0123_4567_89ab_cdef,
            },
        ),
        (
            "records",
            Message::Records {
                sync: false,
                bodies: bodies.clone(),
            },
        ),
        (
            "want",
            Message::Want {
                ids: fixture
                    .items
                    .iter()
                    .take(3)
                    .map(|i| uuid::Uuid::from_bytes(i.id))
                    .collect(),
            },
        ),
        ("sync-end", Message::SyncEnd),
        ("sync-end-ack", Message::SyncEndAck),
        ("ping", Message::Ping),
        (
            "whisper",
            Message::Whisper {
                text: "psst ✓".into()
            },
        ),
        (
            "relay-offer",
            Message::RelayOffer {
                token: [0x5a; common::wire::RELAY_TOKEN_BYTES],
                from: common::member::MemberId::from_bytes([0xa5; common::member::MEMBER_ID_BYTES]),
            },
        ),
    ];
    let mut messages: Vec<(String, Message)> = messages.into_iter().map(|(n, m)| (n.to_string(), m)).collect();
    for (i, ranges) in rounds.iter().enumerate() {
        messages.push((
            format!("sync-{i}"),
            Message::SyncRanges {
                from_initiator: i % 2 == 0,
                ranges: sync::encode_ranges(ranges),
            },
        ));
    }
    let mut session = Vec::new();
    for (name, message) in &messages {
        let frame = message.encode();
        out.write("wire_frame", name, &frame)?;
        session.extend_from_slice(&frame);
    }
    out.write("wire_frame", "session", &session)?;
    Ok(out.count)
}

/// A fresh identity's public half, as identity-export would print it.
fn public_identity(key_type: KeyType, name: &str) -> Result<PublicIdentity> {
    let key = key_type.generate()?;
    let now = clock::now();
    let spec = CertSpec {
        common_name: name.into(),
        claim: Claim::Identity,
        not_before: clock::from_unix(now.unix_timestamp() - 60),
        not_after: clock::add(now, pki::ROOT_LIFETIME),
    };
    let cert = Cert::parse(&pki::self_signed(&spec, &key)?, "a seed identity")?;
    Ok(PublicIdentity { cert })
}
