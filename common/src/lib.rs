//! peergroup's library: everything the binaries do, testable without a process.
//!
//! # Layout
//! - [`clock`]: "now" (overridable for tests), durations, RFC 3339.
//! - [`xml`]: the strict reader and writer for our flat XML documents.
//! - [`member`]: the member id newtype (one parser, one display).
//! - [`pki`]: key types, certificate issuing and chain checks.
//! - [`identity`]: local identities and the public identity XML.
//! - [`home`]: the home directory, atomic writes, staging, locks.
//! - [`membership`]: an identity's membership of a group, group lookup, addresses.
//! - [`group`]: creating a group.
//! - [`invitation`]: issuing, parsing, verifying invitations, and joining.
//! - [`record`]: records, their encoding, signatures and the conflict rule.
//! - [`records`]: the record database for scripts: typed records, attributes, queries.
//! - [`store`]: the per-membership SQLite record store.
//! - [`wire`]: frames and messages between peers.
//! - [`tls`]: TLS 1.3 configurations and the group's certificate verifier.
//! - [`core`]: the node's rules as a sans-I/O state machine (admission, sync sessions,
//!   mesh, presence, whisper routing, flow control), driven by inputs and the time.
//! - [`node`]: the tokio driver of the core: sockets, TLS, the SQLite store, a handle.
//! - [`sim`]: the deterministic driver of the core: many nodes, simulated links and time.
//! - [`sync`]: range-based set reconciliation over record summaries.
//! - [`chat`]: group-chat's input commands and output lines (human and JSON).
//! - [`follow`]: following the store for display: the cursor, bounded catch-up, history.
//! - [`terminal`]: the chat at a terminal: line editing, completion, printing above the
//!   prompt.
//! - [`cli`]: what the binaries share: home flag, input/output, error reporting.

/// Secrets kept out of debug output and wiped when dropped (passphrases, passwords).
pub use age::secrecy;

pub mod admin;
pub mod backup;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod core;
pub mod credential;
pub mod follow;
pub mod group;
pub mod home;
pub mod identity;
pub mod invitation;
pub mod listing;
pub mod member;
pub mod membership;
pub mod names;
pub mod node;
pub mod password;
pub mod pki;
pub mod record;
pub mod records;
pub mod sim;
pub mod store;
pub mod sync;
pub mod terminal;
pub mod tls;
pub mod verify;
pub mod wire;
pub mod xml;
