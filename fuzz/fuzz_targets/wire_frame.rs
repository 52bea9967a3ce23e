//! A peer's byte stream after the TLS handshake, as a connection's reader and the node
//! take it: frames (length checked before allocation), message decoding, and for
//! `SyncRanges` the range decoding and one reconciliation round against a fixed set and
//! an empty one.
//! A bad frame ends the stream, as it closes the connection.
//!
//! Beyond "no panic", it checks that decoding is exact (re-encoding gives the same
//! bytes) and that our own sync replies are valid messages.

#![no_main]

use std::hint::black_box;
use std::net::SocketAddr;

use common::record::Record;
use common::sync::{self, ItemSet, SyncKey};
use common::wire::{self, Message};
use libfuzzer_sys::fuzz_target;
use peergroup_fuzz::{block_on, fixture};

fuzz_target!(init: { fixture(); }, |data: &[u8]| {
    let fixture = fixture();
    let mut stream = data;
    while let Ok(Some(payload)) = block_on(wire::read_frame(&mut stream)) {
        let message = match Message::decode(&payload) {
            Ok(message) => message,
            Err(e) => return drop(e.to_string()),
        };
        assert_eq!(&message.encode()[4..], &payload[..], "decoding is not exact");
        match message {
            Message::Hello { addresses, .. } => {
                for a in addresses {
                    black_box(a.parse::<SocketAddr>().is_ok());
                }
            }
            Message::Records { bodies, .. } => {
                for body in bodies {
                    if let Err(e) = Record::decode(&body) {
                        return drop(e.to_string());
                    }
                }
            }
            Message::SyncRanges { ranges, .. } => {
                let ranges = match sync::decode_ranges(&ranges) {
                    Ok(ranges) => ranges,
                    Err(e) => return drop(e.to_string()),
                };
                // Against a fixed set, and an empty one (a member that just joined).
                for items in [&fixture.items, &ItemSet::new()] {
                    let outcome = match sync::reconcile(items, &ranges, &SyncKey::new([1; 16])) {
                        Ok(outcome) => outcome,
                        Err(e) => return drop(e.to_string()),
                    };
                    let reply = sync::encode_ranges(&outcome.reply);
                    if let Err(e) = sync::decode_ranges(&reply) {
                        panic!("our sync reply does not decode: {e}");
                    }
                }
            }
            // The rest carry nothing more to decode.
            _ => {}
        }
    }
});
