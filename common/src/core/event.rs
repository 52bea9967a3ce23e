//! What the core reports to front ends: status, member list changes, connection
//! changes with a typed reason, whispers. Text is made once, at the edge (`chat`).

use std::fmt;
use std::time::Duration;

use crate::member::MemberId;
use crate::pki::Role;
use crate::record::RecordError;
use crate::sync::SyncError;
use crate::wire::Purpose;

/// An address this node advertises, and how it was learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// `IP:PORT`.
    pub address: String,
    /// `listen` (where it listens, or its interfaces' addresses), `advertise` (given
    /// with `--advertise`), `upnp` / `nat-pmp` (a port mapping on the gateway), or
    /// `observed` (members dialled this node back there, though it did not know it
    /// had the address: a forwarded port).
    pub how: &'static str,
    /// A member dialled this node back there (a reachability check) in the last half
    /// hour.
    pub checked: bool,
}

/// Status flags, as `group-chat` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// Accepting connections.
    pub listening: bool,
    /// Has at least one neighbour.
    pub connected: bool,
    /// Finished a first sync with a neighbour.
    pub synchronized: bool,
    /// Neighbour count.
    pub neighbours: usize,
    /// Members on the internet can dial this node: one did, or a reachability check
    /// succeeded at a global address.
    pub reachable: bool,
    /// What presence advertises, in order.
    pub addresses: Vec<Advertised>,
}

/// A present member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member id.
    pub member: MemberId,
    /// Friendly name.
    pub name: String,
    /// Whether it is this node.
    pub is_self: bool,
    /// Its role, from the newest certificate known for it.
    pub role: Role,
    /// How this node is connected to it: its neighbour connection's way, else a
    /// whisper connection's; `None` when not connected (records reach it through
    /// other members).
    pub via: Option<Via>,
}

/// Member list changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// A neighbour connection to it came up.
    Connected,
    /// The last neighbour connection to it went down.
    Disconnected,
    /// Its presence appeared.
    Joined,
    /// Its presence was removed or expired.
    Left,
    /// Its presence changed (name or addresses).
    Updated,
    /// A credential gave it another role.
    Role(Role),
    /// It was revoked.
    Revoked,
}

/// Connection kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A mesh neighbour.
    Neighbour,
    /// A direct (whisper) connection.
    Direct,
}

impl From<Purpose> for ConnKind {
    fn from(p: Purpose) -> ConnKind {
        match p {
            Purpose::Neighbour => ConnKind::Neighbour,
            // A dial-back is over at its Hello; should one reach the core (through a
            // relay or a punch, where the Hello's purpose is the peer's word), it is
            // refused as the short direct connection it is.
            Purpose::Direct | Purpose::DialBack => ConnKind::Direct,
        }
    }
}

/// How a connection reached its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// Over TCP between the two members' own addresses.
    #[default]
    Direct,
    /// Through a third member's relay, with the two members' own TLS inside.
    Relayed,
    /// Dialled at an address found on the LAN by mDNS.
    Lan,
    /// A direct connection through two NATs, both ends dialling at once (hole
    /// punching), replacing a relayed one.
    Punched,
    /// A direct connection through a gateway's port mapping (UPnP, NAT-PMP).
    Mapped,
}

impl Via {
    /// Its name in events.
    pub fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Relayed => "relayed",
            Via::Lan => "lan",
            Via::Punched => "punched",
            Via::Mapped => "mapped",
        }
    }
}

/// Connection changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnChange {
    /// Up.
    Up,
    /// Down.
    Down,
    /// A dial failed.
    Failed,
}

/// Why a connection went down or a dial failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnReason {
    /// Two connections joined the same pair of members; this one lost the tie.
    Replaced,
    /// An incoming neighbour was refused: the node has its cap of neighbours.
    AtCapacity(usize),
    /// An incoming direct connection was refused: the node has its cap of direct
    /// connections, in all or from that member.
    DirectCapacity(usize),
    /// The peer read nothing while its queue grew past the stall limit.
    NotReading,
    /// Nothing arrived for this long (a partition, a crashed host).
    Silent(Duration),
    /// A direct connection went unused.
    Idle,
    /// A direct connection carried something other than whispers.
    OnlyWhispers,
    /// A Hello after the handshake.
    UnexpectedHello,
    /// A sync message that does not decode or reconcile.
    BadSync(SyncError),
    /// Sync messages faster than any session needs.
    SyncFlood,
    /// A record that does not decode.
    MalformedRecord(RecordError),
    /// Records whose signatures do not verify, more than a few (honest members forward
    /// only records they verified).
    BadSignatures,
    /// The dialled address answered as another member than the one named.
    WrongMember(String),
    /// The peer failed authentication (incoming connections).
    AuthFailed(String),
    /// The peer's membership was revoked (it was sent the revocation first).
    Revoked,
    /// What the transport said: closed by the peer, a bad frame, a refused connect.
    Transport(String),
}

impl fmt::Display for ConnReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnReason::Replaced => f.write_str("replaced by a newer connection"),
            ConnReason::AtCapacity(n) => write!(f, "refused: already {n} neighbours"),
            ConnReason::DirectCapacity(n) => write!(f, "refused: already {n} direct connections"),
            ConnReason::NotReading => f.write_str("the peer is not reading"),
            ConnReason::Silent(d) => write!(f, "nothing heard for {} s", d.as_secs()),
            ConnReason::Idle => f.write_str("idle"),
            ConnReason::OnlyWhispers => f.write_str("only whispers are allowed on a direct connection"),
            ConnReason::UnexpectedHello => f.write_str("unexpected hello"),
            ConnReason::BadSync(e) => write!(f, "bad sync message: {e}"),
            ConnReason::SyncFlood => f.write_str("too many sync messages"),
            ConnReason::MalformedRecord(e) => write!(f, "malformed record: {e}"),
            ConnReason::BadSignatures => f.write_str("records whose signatures do not verify"),
            ConnReason::WrongMember(t) | ConnReason::Transport(t) => f.write_str(t),
            ConnReason::AuthFailed(t) => write!(f, "authentication failed: {t}"),
            ConnReason::Revoked => f.write_str("its membership was revoked"),
        }
    }
}

/// What the node reports. Chat messages are not events: front ends follow the store,
/// so a slow reader never holds the node back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Has a neighbour and finished its first sync (once).
    Ready,
    /// Status changed.
    Status(Status),
    /// A member list change.
    Member {
        /// What changed.
        change: MemberChange,
        /// Member id.
        member: MemberId,
        /// Friendly name.
        name: String,
    },
    /// A connection change.
    Connection {
        /// Which kind.
        kind: ConnKind,
        /// What happened.
        change: ConnChange,
        /// The member, when known.
        member: Option<MemberId>,
        /// The remote address.
        address: String,
        /// Why (down, failed).
        reason: Option<ConnReason>,
        /// How it reached the peer, when that is known.
        via: Option<Via>,
    },
    /// A whisper arrived.
    Whisper {
        /// Sender member id.
        from: MemberId,
        /// Sender friendly name.
        name: String,
        /// The text.
        text: String,
        /// Unix ns of arrival.
        recv_ns: i64,
    },
    /// A credential was issued: a member's certificate renewed or its role changed.
    Credential {
        /// The member it is for.
        member: MemberId,
        /// Its certificate name.
        name: String,
        /// Its role from now on.
        role: Role,
        /// When the new certificate ends, unix ms.
        until_ms: i64,
        /// The admin who issued it.
        by: MemberId,
    },
    /// A member's membership was revoked (this node's own included: the front end
    /// then stops).
    Revoked {
        /// The member cut off.
        member: MemberId,
        /// Its certificate name.
        name: String,
        /// The admin who revoked it.
        by: MemberId,
        /// That admin's name.
        by_name: String,
        /// Why, as the admin wrote it (unchecked text: sanitize before showing).
        reason: String,
        /// When the admin says it revoked, unix ms.
        at_ms: i64,
    },
    /// The group's properties changed (a newer property change came in force).
    Property {
        /// The properties from now on (name, classifier and comment are unchecked
        /// text within their limits: sanitize before showing).
        properties: crate::core::properties::Properties,
        /// The admin who changed them (`None`: back to the group's creation values, the
        /// changes having been taken out of force by a revocation or demotion).
        by: Option<MemberId>,
        /// That admin's name.
        by_name: Option<String>,
        /// When the change takes effect, unix ms.
        at_ms: Option<i64>,
    },
    /// A scripts' record (a type not peergroup's own) reached its expiry and was
    /// purged from the store.
    Expired {
        /// The record.
        id: uuid::Uuid,
        /// Its type.
        rtype: uuid::Uuid,
        /// Its creator.
        creator: MemberId,
        /// The creator's name.
        name: String,
        /// When it was created, unix ms.
        created_ms: i64,
        /// When it expired, unix ms.
        expires_ms: i64,
    },
    /// Something went wrong that the user should see.
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Front ends and tests read these texts; they are the same as before reasons
    /// became an enum.
    #[test]
    fn reasons_read_as_before() {
        assert_eq!(ConnReason::Replaced.to_string(), "replaced by a newer connection");
        assert_eq!(
            ConnReason::Silent(Duration::from_secs(5)).to_string(),
            "nothing heard for 5 s"
        );
        assert_eq!(ConnReason::AtCapacity(8).to_string(), "refused: already 8 neighbours");
        assert_eq!(
            ConnReason::AuthFailed("TLS: x".into()).to_string(),
            "authentication failed: TLS: x"
        );
    }
}
