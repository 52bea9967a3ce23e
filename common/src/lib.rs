//! peergroup's library: everything the binaries do, testable without a process.
//!
//! # Layout
//! - [`clock`]: "now" (overridable for tests), durations, RFC 3339.
//! - [`xml`]: the strict reader and writer for our flat XML documents.
//! - [`pki`]: key types, member ids, certificate issuing and chain checks.
//! - [`identity`]: local identities and the public identity XML.
//! - [`home`]: the home directory, atomic writes, staging, locks.
//! - [`membership`]: an identity's membership of a group, group lookup, addresses.
//! - [`group`]: creating a group.
//! - [`invitation`]: issuing, parsing, verifying invitations, and joining.
//! - [`store`]: the per-membership SQLite record store.
//! - [`cli`]: what the binaries share: home flag, input/output, error reporting.

pub mod cli;
pub mod clock;
pub mod group;
pub mod home;
pub mod identity;
pub mod invitation;
pub mod membership;
pub mod pki;
pub mod store;
pub mod xml;
