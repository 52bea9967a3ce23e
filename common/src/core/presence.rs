//! Presence: who is online, from their signed presence records, and how a name typed
//! by a person resolves to one of them.

use std::collections::HashMap;

use thiserror::Error;

use super::event::{MemberChange, MemberInfo};
use crate::member::MemberId;
use crate::record::Record;

/// What a live presence record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Friendly name.
    pub name: String,
    /// Advertised addresses (unchecked text from its signer).
    pub addresses: Vec<String>,
    /// When it expires, unix ms.
    pub expires_ms: i64,
}

impl Presence {
    /// What a presence record says.
    pub fn of(r: &Record) -> Presence {
        Presence {
            name: r.attr_str("name").unwrap_or("?").to_string(),
            addresses: r.presence_addresses(),
            expires_ms: r.expires_ms,
        }
    }
}

/// Why a name does not pick one present member.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    /// Nobody matches.
    #[error("no present member matches {0:?}")]
    NoMatch(String),
    /// Several match.
    #[error("{0:?} matches several present members: {1}")]
    Ambiguous(String, String),
}

/// The present members other than this node.
#[derive(Debug, Default)]
pub struct Roster {
    present: HashMap<MemberId, Presence>,
}

impl Roster {
    /// Applies a stored presence record of another member; returns the member-list
    /// change it makes, with the name to show.
    pub fn apply(&mut self, r: &Record, now_ms: i64) -> Option<(MemberChange, String)> {
        if r.deleted || r.expires_ms <= now_ms {
            return self.present.remove(&r.creator).map(|p| (MemberChange::Left, p.name));
        }
        let new = Presence::of(r);
        let change = match self.present.get(&r.creator) {
            None => Some(MemberChange::Joined),
            Some(old) if old.name != new.name || old.addresses != new.addresses => Some(MemberChange::Updated),
            Some(_) => None,
        };
        let name = new.name.clone();
        self.present.insert(r.creator, new);
        change.map(|c| (c, name))
    }

    /// Removes members whose presence expired by `now_ms`; returns them with their names.
    pub fn expire(&mut self, now_ms: i64) -> Vec<(MemberId, String)> {
        let gone: Vec<MemberId> = self
            .present
            .iter()
            .filter(|(_, p)| p.expires_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        let mut out: Vec<(MemberId, String)> = gone
            .into_iter()
            .filter_map(|id| self.present.remove(&id).map(|p| (id, p.name)))
            .collect();
        out.sort();
        out
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

    /// The member list: this node first, then the others by name.
    pub fn members(&self, me: MemberId, my_name: &str) -> Vec<MemberInfo> {
        let mut others: Vec<MemberInfo> = self
            .present
            .iter()
            .map(|(id, p)| MemberInfo {
                member: *id,
                name: p.name.clone(),
                is_self: false,
            })
            .collect();
        others.sort_by(|a, b| (&a.name, &a.member).cmp(&(&b.name, &b.member)));
        let mut out = vec![MemberInfo {
            member: me,
            name: my_name.to_string(),
            is_self: true,
        }];
        out.extend(others);
        out
    }

    /// Picks the present member a person means: an exact friendly name, else one
    /// differing only in case, else a member-id prefix.
    pub fn resolve(&self, query: &str) -> Result<MemberId, ResolveError> {
        let present: Vec<(MemberId, &str)> = self.present.iter().map(|(id, p)| (*id, p.name.as_str())).collect();
        let mut matches: Vec<&(MemberId, &str)> = present.iter().filter(|(_, n)| *n == query).collect();
        if matches.is_empty() {
            matches = present.iter().filter(|(_, n)| n.eq_ignore_ascii_case(query)).collect();
        }
        if matches.is_empty() {
            let q = query.to_ascii_lowercase();
            matches = present
                .iter()
                .filter(|(id, _)| !q.is_empty() && id.starts_with(&q))
                .collect();
        }
        match matches.as_slice() {
            [one] => Ok(one.0),
            [] => Err(ResolveError::NoMatch(query.to_string())),
            many => {
                let mut names: Vec<String> = many.iter().map(|(id, n)| format!("{n} ({})", id.short())).collect();
                names.sort();
                Err(ResolveError::Ambiguous(query.to_string(), names.join(", ")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AttrValue, PRESENCE_TYPE};

    fn id(c: char) -> MemberId {
        c.to_string().repeat(40).parse().unwrap()
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
        assert_eq!(roster.apply(&a, 0), Some((MemberChange::Joined, "alice".into())));
        assert_eq!(roster.apply(&a, 0), None, "a refresh changes nothing");
        let moved = presence(id('a'), "alice", "192.0.2.1:2", 2000);
        assert_eq!(roster.apply(&moved, 0), Some((MemberChange::Updated, "alice".into())));
        let mut gone = moved.clone();
        gone.deleted = true;
        assert_eq!(roster.apply(&gone, 0), Some((MemberChange::Left, "alice".into())));
        assert_eq!(roster.apply(&gone, 0), None, "leaving twice is one change");
        roster.apply(&presence(id('b'), "bob", "", 500), 0);
        roster.apply(&presence(id('c'), "carol", "", 5000), 0);
        assert_eq!(roster.expire(499), vec![]);
        assert_eq!(roster.expire(500), vec![(id('b'), "bob".into())]);
        assert!(roster.get(&id('c')).is_some());
        assert_eq!(
            roster.apply(&presence(id('d'), "dave", "", 10), 10),
            None,
            "an expired record is not a join"
        );
    }

    #[test]
    fn names_resolve_exactly_then_by_case_then_by_id_prefix() {
        let mut roster = Roster::default();
        roster.apply(&presence(id('a'), "alice", "", 1000), 0);
        roster.apply(&presence(id('b'), "Alice", "", 1000), 0);
        roster.apply(&presence(id('c'), "carol", "", 1000), 0);
        assert_eq!(roster.resolve("alice"), Ok(id('a')));
        assert_eq!(roster.resolve("Alice"), Ok(id('b')));
        assert!(matches!(roster.resolve("ALICE"), Err(ResolveError::Ambiguous(..))));
        assert_eq!(roster.resolve("CAROL"), Ok(id('c')));
        assert_eq!(roster.resolve("ccc"), Ok(id('c')));
        assert_eq!(roster.resolve("dave"), Err(ResolveError::NoMatch("dave".into())));
        assert_eq!(roster.resolve(""), Err(ResolveError::NoMatch(String::new())));
        let list = roster.members(id('f'), "me");
        assert!(list[0].is_self);
        assert_eq!(
            list.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["me", "Alice", "alice", "carol"]
        );
    }
}
