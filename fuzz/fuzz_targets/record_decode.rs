//! A record from a peer, through what the node does before storing it: strict decoding,
//! the signature digest, and then, for a membership record, decoding its certificate
//! chain (`node::decode_chain`), checking it against the fixture group's root at a
//! fixed clock and the record's signature under it; for any other record, the signature
//! check by its modifier's certificate (bob's when the modifier is unknown, so that
//! path runs on every input) and the content checks of chat and presence.
//!
//! Beyond "no panic", it checks that decoding is exact: re-encoding gives the same
//! bytes, since the signature covers a re-encoding.

#![no_main]

use std::hint::black_box;
use std::net::SocketAddr;

use common::node;
use common::pki;
use common::record::{self, Record};
use libfuzzer_sys::fuzz_target;
use peergroup_fuzz::fixture;

fuzz_target!(init: { fixture(); }, |data: &[u8]| {
    let record = match Record::decode(data) {
        Ok(record) => record,
        Err(e) => return drop(e.to_string()),
    };
    assert_eq!(record.encode(), data, "decoding is not exact");
    let fixture = fixture();
    let group = fixture.group();
    black_box(record.digest());
    if record.rtype == record::MEMBERSHIP_TYPE {
        black_box(record::per_member_id(&record::MEMBERSHIP_TYPE, &record.creator));
        let Some(certs) = node::decode_chain(&record.data) else { return };
        let Some((leaf, chain)) = certs.split_first() else { return };
        let root = &fixture.invitation.root;
        match pki::verify_chain_links(root, chain, leaf, group, fixture.now()) {
            Ok(_) => {
                black_box(record.verify_signature(&group, leaf));
            }
            Err(e) => drop(e.to_string()),
        }
    } else {
        let signer = fixture
            .signers
            .iter()
            .find(|(member, _)| *member == record.modifier)
            .map_or(&fixture.invitation.membership, |(_, cert)| cert);
        black_box(record.verify_signature(&group, signer));
        if record.rtype == record::CHAT_TYPE {
            black_box(std::str::from_utf8(&record.data).is_ok());
        } else if record.rtype == record::PRESENCE_TYPE {
            black_box(record.attr_str("name"));
            for a in record.attr_str("addresses").unwrap_or_default().split(',') {
                black_box(a.parse::<SocketAddr>().is_ok());
            }
        }
    }
});
