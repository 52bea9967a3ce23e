//! The group's properties (PeerGroupSetProperties): its name, classifier, comment and
//! the lifetimes of messages and presence, changed by an admin's property record.
//!
//! Each change is a record of its own, kept as long as the root: a record's lifetime
//! is judged by the properties in force at its `created` time, so a node that learns
//! of a change late judges every record as one that learnt it early, and a node that
//! joins later judges old records as their creators' nodes did. Before the first
//! change, the properties the group was created with (in every membership) are in
//! force.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::clock;
use crate::member::MemberId;
use crate::membership::{self, GroupInfo, MembershipError};
use crate::pki;
use crate::record::{AttrValue, PROPERTIES_TYPE, Record, RecordError};

use super::admission::{Lifetimes, encode_chain};

/// The longest comment, in characters.
pub const MAX_COMMENT: usize = 1024;
/// The shortest presence lifetime: members refresh at a third of it.
pub const MIN_PRESENCE: Duration = Duration::from_secs(3);

const NAME_ATTR: &str = "name";
const CLASSIFIER_ATTR: &str = "classifier";
const COMMENT_ATTR: &str = "comment";
const MESSAGE_ATTR: &str = "message_lifetime";
const PRESENCE_ATTR: &str = "presence_lifetime";

/// Errors about properties.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PropertyError {
    /// A name or classifier that is not printable or too long.
    #[error("{0}")]
    Text(String),
    /// A comment that is too long or holds control characters.
    #[error("the comment is not 0-{MAX_COMMENT} printable characters on one line")]
    Comment,
    /// A lifetime out of range.
    #[error("the {what} {value} is out of range: use {range}")]
    Lifetime {
        /// Which lifetime.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        range: &'static str,
    },
    /// A record that does not carry every property.
    #[error("a property record without its {0}")]
    Missing(&'static str),
    /// Signing failed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The group's properties at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Properties {
    /// Friendly name.
    pub name: String,
    /// Classifier.
    pub classifier: String,
    /// Free text.
    pub comment: String,
    /// How long chat messages (and other records) live, in seconds.
    pub message_lifetime_secs: u64,
    /// How long a presence record lives, in seconds.
    pub presence_lifetime_secs: u64,
}

impl Properties {
    /// The properties a group was created with (every membership holds them).
    pub fn of_group(g: &GroupInfo) -> Properties {
        Properties {
            name: g.name.clone(),
            classifier: g.classifier.clone(),
            comment: String::new(),
            message_lifetime_secs: g.message_lifetime_secs,
            presence_lifetime_secs: g.presence_lifetime_secs,
        }
    }

    /// The lifetimes they allow.
    pub fn lifetimes(&self) -> Lifetimes {
        Lifetimes::from_secs(self.message_lifetime_secs, self.presence_lifetime_secs)
    }

    /// Checks every field, as `group-create` checks them (they may come from a peer).
    pub fn check(&self) -> Result<(), PropertyError> {
        let text = |e: MembershipError| PropertyError::Text(e.to_string());
        membership::check_group_text("group name", &self.name, false).map_err(text)?;
        membership::check_group_text("classifier", &self.classifier, true).map_err(text)?;
        let c = &self.comment;
        if c.chars().count() > MAX_COMMENT || c.chars().any(char::is_control) {
            return Err(PropertyError::Comment);
        }
        let out_of_range = |what, secs: u64, range| PropertyError::Lifetime {
            what,
            value: clock::format_duration(Duration::from_secs(secs)),
            range,
        };
        let message = self.message_lifetime_secs;
        if message == 0 || message > clock::MAX_DURATION.as_secs() {
            return Err(out_of_range(
                "message lifetime",
                message,
                "1s up to the longest duration",
            ));
        }
        let presence = self.presence_lifetime_secs;
        if presence < MIN_PRESENCE.as_secs() || presence >= pki::ROOT_LIFETIME.as_secs() {
            return Err(out_of_range(
                "presence lifetime",
                presence,
                "3s or more, below the root's 100 years",
            ));
        }
        Ok(())
    }

    /// Reads a property record's attributes (unchecked: see [`Properties::check`]).
    pub fn of_record(r: &Record) -> Result<Properties, PropertyError> {
        let text = |n: &'static str| r.attr_str(n).map(str::to_string).ok_or(PropertyError::Missing(n));
        let secs = |n: &'static str| {
            r.attributes
                .iter()
                .find_map(|(k, v)| match v {
                    AttrValue::Int(i) if k == n => u64::try_from(*i).ok(),
                    _ => None,
                })
                .ok_or(PropertyError::Missing(n))
        };
        Ok(Properties {
            name: text(NAME_ATTR)?,
            classifier: text(CLASSIFIER_ATTR)?,
            comment: text(COMMENT_ATTR)?,
            message_lifetime_secs: secs(MESSAGE_ATTR)?,
            presence_lifetime_secs: secs(PRESENCE_ATTR)?,
        })
    }

    /// The signed property record putting these properties in force from `now_ms`, by
    /// the admin whose membership certificate and issuers are `chain` (carried in its
    /// data, so any node checks it alone, years later), lasting until `until_ms` (the
    /// root's end).
    pub fn record(
        &self,
        key: &rcgen::KeyPair,
        group: &uuid::Uuid,
        chain: (&pki::Cert, &[pki::Cert]),
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Record, PropertyError> {
        self.check()?;
        let to_int = |s: u64| AttrValue::Int(i64::try_from(s).unwrap_or(i64::MAX));
        let mut r = Record::new(
            PROPERTIES_TYPE,
            chain.0.member_id,
            now_ms,
            until_ms.saturating_sub(now_ms),
        );
        r.attributes = vec![
            (NAME_ATTR.into(), AttrValue::Str(self.name.clone())),
            (CLASSIFIER_ATTR.into(), AttrValue::Str(self.classifier.clone())),
            (COMMENT_ATTR.into(), AttrValue::Str(self.comment.clone())),
            (MESSAGE_ATTR.into(), to_int(self.message_lifetime_secs)),
            (PRESENCE_ATTR.into(), to_int(self.presence_lifetime_secs)),
        ];
        r.data = encode_chain(chain.0, chain.1);
        r.sign(group, key)?;
        Ok(r)
    }
}

/// One change in force: its properties, and what the conflict rule compares of its
/// record (two admins' changes at the same millisecond share an id).
#[derive(Debug, Clone)]
struct Change {
    properties: Properties,
    by: MemberId,
    record: Record,
}

/// The property changes known, by the time they take effect.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    changes: BTreeMap<i64, Change>,
}

impl Timeline {
    /// Puts an accepted property record's change in place; true if it is now the
    /// newest (the properties in force from now on changed).
    pub fn insert(&mut self, r: &Record, properties: Properties) -> bool {
        let at = r.created_ms;
        if let Some(held) = self.changes.get(&at)
            && crate::record::compare(r, &held.record).is_le()
        {
            return false;
        }
        let mut record = r.clone();
        // The chain is not needed to compare copies.
        record.data.clear();
        self.changes.insert(
            at,
            Change {
                properties,
                by: r.creator,
                record,
            },
        );
        self.changes.last_key_value().is_some_and(|(k, _)| *k == at)
    }

    /// Keeps the changes whose record `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&Record) -> bool) {
        self.changes.retain(|_, c| keep(&c.record));
    }

    /// The properties in force at `t_ms`, if any change had taken effect by then.
    pub fn at(&self, t_ms: i64) -> Option<&Properties> {
        self.changes.range(..=t_ms).next_back().map(|(_, c)| &c.properties)
    }

    /// The newest change: its properties, who made it and when (unix ms).
    pub fn newest(&self) -> Option<(&Properties, MemberId, i64)> {
        self.changes.last_key_value().map(|(at, c)| (&c.properties, c.by, *at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(message_secs: u64) -> Properties {
        Properties {
            name: "Friends".into(),
            classifier: String::new(),
            comment: String::new(),
            message_lifetime_secs: message_secs,
            presence_lifetime_secs: 300,
        }
    }

    fn rec(created_ms: i64, modifier: u8, message_secs: u64) -> (Record, Properties) {
        let by: MemberId = format!("{:040x}", modifier).parse().unwrap();
        let mut r = Record::new(PROPERTIES_TYPE, by, created_ms, 1000);
        r.signature = vec![modifier];
        (r, props(message_secs))
    }

    #[test]
    fn the_change_in_force_at_a_time_is_the_last_one_before_it_in_any_order_of_arrival() {
        let changes = [rec(1_000, 1, 60), rec(5_000, 1, 120), rec(3_000, 2, 90)];
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2]] {
            let mut t = Timeline::default();
            for i in order {
                t.insert(&changes[i].0, changes[i].1.clone());
            }
            assert_eq!(t.at(999), None);
            assert_eq!(t.at(1_000).unwrap().message_lifetime_secs, 60);
            assert_eq!(t.at(4_999).unwrap().message_lifetime_secs, 90);
            assert_eq!(t.at(9_000).unwrap().message_lifetime_secs, 120);
            assert_eq!(t.newest().unwrap().2, 5_000);
        }
    }

    #[test]
    fn two_changes_at_one_moment_settle_by_the_conflict_rule_whatever_came_first() {
        let (low, high) = (rec(1_000, 1, 60), rec(1_000, 2, 90));
        for (first, second) in [(&low, &high), (&high, &low)] {
            let mut t = Timeline::default();
            t.insert(&first.0, first.1.clone());
            t.insert(&second.0, second.1.clone());
            assert_eq!(t.at(1_000).unwrap().message_lifetime_secs, 90);
        }
        let mut t = Timeline::default();
        assert!(t.insert(&low.0, low.1.clone()), "the first change is the newest");
        assert!(!t.insert(&low.0, low.1.clone()), "the same copy again changes nothing");
        let (older, _) = rec(500, 3, 10);
        assert!(!t.insert(&older, props(10)), "an older change is not the newest");
    }

    #[test]
    fn properties_out_of_range_are_refused_with_what_is_wrong() {
        assert!(props(60).check().is_ok());
        assert!(matches!(
            props(0).check(),
            Err(PropertyError::Lifetime {
                what: "message lifetime",
                ..
            })
        ));
        let mut p = props(60);
        p.presence_lifetime_secs = 2;
        assert!(matches!(
            p.check(),
            Err(PropertyError::Lifetime {
                what: "presence lifetime",
                ..
            })
        ));
        let mut p = props(60);
        p.comment = "a\nb".into();
        assert_eq!(p.check(), Err(PropertyError::Comment));
        let mut p = props(60);
        p.name = " padded".into();
        assert!(matches!(p.check(), Err(PropertyError::Text(_))));
    }
}
