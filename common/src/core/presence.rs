//! Presence: who is online, from their signed presence records. What a presence
//! record says of its signer's name is not shown: names come from certificates
//! (`crate::names`).

use std::collections::HashMap;

use super::event::{MemberChange, MemberInfo};
use crate::member::MemberId;
use crate::names::Directory;
use crate::pki::Role;
use crate::record::Record;

/// What a live presence record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Advertised addresses (unchecked text from its signer).
    pub addresses: Vec<String>,
    /// Members it names as relays (neighbours that relay for it).
    pub relays: Vec<MemberId>,
    /// Which of its addresses a gateway's port mapping forwards to it.
    pub mapped: Option<std::net::SocketAddr>,
    /// When it expires, unix ms.
    pub expires_ms: i64,
}

impl Presence {
    /// What a presence record says.
    pub fn of(r: &Record) -> Presence {
        Presence {
            addresses: r.presence_addresses(),
            relays: super::relay::parse_relays(r.attr_str("relays").unwrap_or("")),
            mapped: r.attr_str("mapped").and_then(|a| a.parse().ok()),
            expires_ms: r.expires_ms,
        }
    }
}

/// The present members other than this node.
#[derive(Debug, Default)]
pub struct Roster {
    present: HashMap<MemberId, Presence>,
}

impl Roster {
    /// Applies a stored presence record of another member; returns the member-list
    /// change it makes.
    pub fn apply(&mut self, r: &Record, now_ms: i64) -> Option<MemberChange> {
        if r.deleted || r.expires_ms <= now_ms {
            return self.present.remove(&r.creator).map(|_| MemberChange::Left);
        }
        let new = Presence::of(r);
        let change = match self.present.get(&r.creator) {
            None => Some(MemberChange::Joined),
            Some(old) if old.addresses != new.addresses => Some(MemberChange::Updated),
            Some(_) => None,
        };
        self.present.insert(r.creator, new);
        change
    }

    /// Removes members whose presence expired by `now_ms`; returns them in order.
    pub fn expire(&mut self, now_ms: i64) -> Vec<MemberId> {
        let mut gone: Vec<MemberId> = self
            .present
            .iter()
            .filter(|(_, p)| p.expires_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        gone.sort();
        for id in &gone {
            self.present.remove(id);
        }
        gone
    }

    /// Removes one member (its presence record was purged).
    pub fn remove(&mut self, member: &MemberId) -> Option<Presence> {
        self.present.remove(member)
    }

    /// A member's presence.
    pub fn get(&self, member: &MemberId) -> Option<&Presence> {
        self.present.get(member)
    }

    /// Every present member.
    pub fn iter(&self) -> impl Iterator<Item = (&MemberId, &Presence)> {
        self.present.iter()
    }

    /// The member list with names from `names`: this node first, then the others by
    /// name.
    pub fn members(&self, me: MemberId, names: &Directory) -> Vec<MemberInfo> {
        let mut others: Vec<MemberInfo> = self
            .present
            .keys()
            .map(|id| MemberInfo {
                member: *id,
                name: names.display(id),
                is_self: false,
                role: Role::Member,
                via: None,
            })
            .collect();
        others.sort_by(|a, b| (&a.name, &a.member).cmp(&(&b.name, &b.member)));
        let mut out = vec![MemberInfo {
            member: me,
            name: names.display(&me),
            is_self: true,
            role: Role::Member,
            via: None,
        }];
        out.extend(others);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AttrValue, PRESENCE_TYPE};

    fn id(c: char) -> MemberId {
        MemberId::repeat(c)
    }

    fn presence(member: MemberId, name: &str, addrs: &str, expires_ms: i64) -> Record {
        let mut r = Record::new(PRESENCE_TYPE, member, 0, expires_ms);
        r.attributes.push(("name".into(), AttrValue::Str(name.into())));
        r.attributes.push(("addresses".into(), AttrValue::Str(addrs.into())));
        r
    }

    #[test]
    fn joins_updates_leaves_and_expiry() {
        let mut roster = Roster::default();
        let a = presence(id('a'), "alice", "192.0.2.1:1", 1000);
        assert_eq!(roster.apply(&a, 0), Some(MemberChange::Joined));
        assert_eq!(roster.apply(&a, 0), None, "a refresh changes nothing");
        let moved = presence(id('a'), "alice", "192.0.2.1:2", 2000);
        assert_eq!(roster.apply(&moved, 0), Some(MemberChange::Updated));
        let mut gone = moved.clone();
        gone.deleted = true;
        assert_eq!(roster.apply(&gone, 0), Some(MemberChange::Left));
        assert_eq!(roster.apply(&gone, 0), None, "leaving twice is one change");
        roster.apply(&presence(id('b'), "bob", "", 500), 0);
        roster.apply(&presence(id('c'), "carol", "", 5000), 0);
        assert!(roster.expire(499).is_empty());
        assert_eq!(roster.expire(500), vec![id('b')]);
        assert!(roster.get(&id('c')).is_some());
        assert_eq!(
            roster.apply(&presence(id('d'), "dave", "", 10), 10),
            None,
            "an expired record is not a join"
        );
    }

    #[test]
    fn the_member_list_shows_certificate_names_not_what_presence_says() {
        let mut roster = Roster::default();
        let mut names = Directory::new();
        names.learn(id('f'), "me");
        names.learn(id('a'), "alice");
        names.learn(id('e'), "mallory");
        roster.apply(&presence(id('a'), "alice", "", 1000), 0);
        roster.apply(&presence(id('e'), "alice", "", 1000), 0);
        let list = roster.members(id('f'), &names);
        assert!(list[0].is_self);
        assert_eq!(
            list.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["me", "alice", "mallory"]
        );
    }
}
