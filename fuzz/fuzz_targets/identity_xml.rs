//! The identity XML reader, as `invite-create` runs it on an untrusted file: the strict
//! XML reader, base64, the certificate parser, the self-signature and the readable
//! copies. Errors are rendered as the tools print them.

#![no_main]

use common::identity::PublicIdentity;
use libfuzzer_sys::fuzz_target;
// For its allocator, which turns a huge allocation into a crash.
use peergroup_fuzz as _;

fuzz_target!(|data: &[u8]| {
    match PublicIdentity::from_xml("fuzz.xml", data) {
        Ok(identity) => {
            // What identity-export writes, invite-create reads back.
            let xml = identity.to_xml();
            let again = PublicIdentity::from_xml("again.xml", xml.as_bytes())
                .unwrap_or_else(|e| panic!("an accepted identity does not read back: {e}"));
            assert_eq!(again.member_id(), identity.member_id());
        }
        Err(e) => drop(e.to_string()),
    }
});
