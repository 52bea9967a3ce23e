//! An untrusted invitation file through everything `group-join` (and `--inspect`) does
//! before it writes anything: parse (XML, base64, certificates, the inviter's signature,
//! digests, readable copies), describe, verify at a fixed clock (chain to the root,
//! dates, role, validity) and the check that it is for the joining identity.

#![no_main]

use common::invitation::Invitation;
use libfuzzer_sys::fuzz_target;
use peergroup_fuzz::fixture;

fuzz_target!(init: { fixture(); }, |data: &[u8]| {
    let invitation = match Invitation::parse("fuzz.invite", data) {
        Ok(invitation) => invitation,
        Err(e) => return drop(e.to_string()),
    };
    let fixture = fixture();
    drop(invitation.describe());
    if let Err(e) = invitation.verify(fixture.now()) {
        drop(e.to_string());
    }
    if let Err(e) = invitation.check_for(&fixture.bob) {
        drop(e.to_string());
    }
});
