//! The record database for scripts (Peer Grouping's PeerGroupAddRecord, UpdateRecord,
//! DeleteRecord, GetRecord, EnumRecords and SearchRecords): typed records with typed
//! attributes, published by `group-record` and spread like every record.
//!
//! - A type is a UUID, or a short name standing for UUIDv5(group id, name): no
//!   registration, and two members naming a type alike mean the same type. The types
//!   peergroup itself uses (chat, presence, memberships, ...) are refused.
//! - An attribute is `K=V` (a string), `K:int=V` (an integer) or `K:date=RFC3339`.
//! - A query is space-separated terms joined by AND: `K=V`, `K<V`, `K<=V`, `K>V`,
//!   `K>=V`. Ranges compare integers and dates; `=` compares a string with `*` as a
//!   wildcard (any run of characters), an integer, or a date.
//!
//! Everything here is pure but reading the store; `group-record` is the front end.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};
use thiserror::Error;
use uuid::Uuid;

use crate::clock;
use crate::member::MemberId;
use crate::record::{AttrValue, MAX_ATTRIBUTE_BYTES, MAX_ATTRIBUTES, MAX_DATA_BYTES, Record};
use crate::store::{Store, StoreError};

/// What is wrong with a type, attribute or query a user gave.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordsError {
    /// A type that is neither a UUID nor a short name.
    #[error("bad record type {0:?}: give a UUID or a short name (letters, digits, '.', '_', '-'; at most 64)")]
    BadType(String),
    /// One of peergroup's own types.
    #[error("record type {0} is peergroup's own (chat, presence, memberships, ...): choose another")]
    Reserved(Uuid),
    /// A malformed attribute.
    #[error("bad attribute {0:?}: {1}")]
    BadAttribute(String, String),
    /// A malformed query term.
    #[error("bad query term {0:?}: {1}")]
    BadQuery(String, String),
    /// Data over the limit.
    #[error("data of {0} bytes is over the {MAX_DATA_BYTES}-byte record limit")]
    TooLarge(usize),
    /// Too many attributes.
    #[error("{0} attributes is over the limit of {MAX_ATTRIBUTES}")]
    TooManyAttributes(usize),
    /// A change by someone who is neither the creator nor an admin.
    #[error("record {0} is not yours: only its creator or an admin may change it")]
    NotYours(Uuid),
    /// A change to a record already deleted.
    #[error("record {0} is deleted")]
    Deleted(Uuid),
    /// A record at the highest version it may carry: no member would take another.
    #[error("record {0} has reached its last version: it can only be deleted by an admin")]
    Final(Uuid),
    /// A lifetime over the group's.
    #[error("a record lives at most {0} from its creation (the group's message lifetime)")]
    TooLong(String),
    /// Signing failed.
    #[error("cannot sign the record: {0}")]
    Sign(String),
}

/// What a publication sets: attributes (each replacing one of the same name), data
/// (`None`: kept), and how long from now it lives (`None`: as before, or the group's
/// lifetime for a new record).
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Attributes to set.
    pub attrs: Vec<(String, AttrValue)>,
    /// New data.
    pub data: Option<Vec<u8>>,
    /// Lifetime from now, ms.
    pub lifetime_ms: Option<i64>,
}

/// Who signs, in which group, with which role, at what moment, under which lifetime.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    /// The group id.
    pub group: &'a Uuid,
    /// The member's key.
    pub key: &'a rcgen::KeyPair,
    /// The member.
    pub me: MemberId,
    /// Whether it is an admin.
    pub admin: bool,
    /// Now, unix ms.
    pub now_ms: i64,
    /// The group's message lifetime in force, ms: no record lives longer from its
    /// creation.
    pub max_life_ms: i64,
}

impl Signer<'_> {
    fn sign(&self, mut r: Record) -> Result<Record, RecordsError> {
        r.sign(self.group, self.key)
            .map_err(|e| RecordsError::Sign(e.to_string()))?;
        Ok(r)
    }

    /// Expiry `lifetime_ms` from now, at most the lifetime from `created_ms`.
    fn expiry(&self, created_ms: i64, lifetime_ms: i64) -> Result<i64, RecordsError> {
        let expires = self.now_ms.saturating_add(lifetime_ms.max(1));
        if expires.saturating_sub(created_ms) > self.max_life_ms {
            let most = std::time::Duration::from_millis(u64::try_from(self.max_life_ms).unwrap_or(0));
            return Err(RecordsError::TooLong(clock::format_duration(most)));
        }
        Ok(expires)
    }

    /// A new record of `rtype`.
    pub fn create(&self, rtype: Uuid, change: Change) -> Result<Record, RecordsError> {
        if is_reserved(&rtype) {
            return Err(RecordsError::Reserved(rtype));
        }
        let mut r = Record::new(rtype, self.me, self.now_ms, self.max_life_ms);
        r.expires_ms = self.expiry(self.now_ms, change.lifetime_ms.unwrap_or(self.max_life_ms))?;
        set_attributes(&mut r, change.attrs)?;
        let data = change.data.unwrap_or_default();
        check_data(&data)?;
        r.data = data;
        self.sign(r)
    }

    /// The next version of `old`, with `change`, signed by this member.
    pub fn update(&self, old: &Record, change: Change) -> Result<Record, RecordsError> {
        if old.version >= crate::core::admission::version_ceiling(old) {
            return Err(RecordsError::Final(old.id));
        }
        let mut r = self.next_version(old)?;
        if let Some(life) = change.lifetime_ms {
            r.expires_ms = self.expiry(old.created_ms, life)?;
        }
        set_attributes(&mut r, change.attrs)?;
        if let Some(data) = change.data {
            check_data(&data)?;
            r.data = data;
        }
        self.sign(r)
    }

    /// A deletion marker for `old`: no attributes, no data. An admin's deletion of
    /// another member's record is final: it takes the highest version the record may
    /// carry, and at equal versions a deletion wins (see [`crate::record::compare`]), so
    /// its creator cannot sign it back.
    pub fn delete(&self, old: &Record) -> Result<Record, RecordsError> {
        let ceiling = crate::core::admission::version_ceiling(old);
        let by_admin = old.creator != self.me;
        if !by_admin && old.version >= ceiling {
            return Err(RecordsError::Final(old.id));
        }
        let mut r = self.next_version(old)?;
        if by_admin {
            // At the ceiling already (its creator went there first) the deletion wins
            // at the same version.
            r.version = ceiling;
        }
        r.deleted = true;
        r.attributes.clear();
        r.data.clear();
        self.sign(r)
    }

    fn next_version(&self, old: &Record) -> Result<Record, RecordsError> {
        if !may_change(old, &self.me, self.admin) {
            return Err(RecordsError::NotYours(old.id));
        }
        if old.deleted {
            return Err(RecordsError::Deleted(old.id));
        }
        let mut r = old.clone();
        r.version = old.version.saturating_add(1);
        r.modifier = self.me;
        // Later than the version it replaces, whatever this machine's clock says.
        r.modified_ms = self.now_ms.max(old.modified_ms.saturating_add(1));
        r.signature.clear();
        Ok(r)
    }
}

/// The first 12 bytes every peergroup record type shares.
const RESERVED_PREFIX: [u8; 12] = [0x5c, 0x8f, 0x0c, 0x57, 0x4a, 0x8e, 0x4c, 0x3b, 0x9d, 0x2a, 0x6e, 0x1f];

/// Longest short type name.
pub const MAX_TYPE_NAME: usize = 64;
/// Longest attribute name.
pub const MAX_KEY: usize = 64;

/// Whether `t` is one of peergroup's own record types (or of the range kept for them).
pub fn is_reserved(t: &Uuid) -> bool {
    t.as_bytes()[..12] == RESERVED_PREFIX
}

/// The record type `spec` names in group `group`: a UUID as it is, a short name as
/// UUIDv5(group id, name).
pub fn record_type(group: &Uuid, spec: &str) -> Result<Uuid, RecordsError> {
    let t = if let Ok(u) = Uuid::parse_str(spec) {
        u
    } else if !spec.is_empty()
        && spec.len() <= MAX_TYPE_NAME
        && spec
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Uuid::new_v5(group, spec.as_bytes())
    } else {
        return Err(RecordsError::BadType(spec.to_string()));
    };
    if is_reserved(&t) {
        return Err(RecordsError::Reserved(t));
    }
    Ok(t)
}

fn key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses `K=V`, `K:int=V` or `K:date=RFC3339`.
pub fn parse_attr(spec: &str) -> Result<(String, AttrValue), RecordsError> {
    let bad = |why: &str| RecordsError::BadAttribute(spec.to_string(), why.to_string());
    let (lhs, value) = spec
        .split_once('=')
        .ok_or_else(|| bad("write K=V, K:int=V or K:date=RFC3339"))?;
    let (key, kind) = lhs.split_once(':').unwrap_or((lhs, "str"));
    if !key_ok(key) {
        return Err(bad("the name must be 1 to 64 letters, digits, '.', '_' or '-'"));
    }
    if value.len() > MAX_ATTRIBUTE_BYTES {
        return Err(bad(&format!("the value is over {MAX_ATTRIBUTE_BYTES} bytes")));
    }
    let v = match kind {
        "str" => AttrValue::Str(value.to_string()),
        "int" => AttrValue::Int(value.parse().map_err(|_| bad("not an integer"))?),
        "date" => AttrValue::Date(date_ms(value).ok_or_else(|| bad("not an RFC 3339 date"))?),
        other => return Err(bad(&format!("unknown kind {other:?}: str, int or date"))),
    };
    Ok((key.to_string(), v))
}

/// Unix ms of an RFC 3339 date.
fn date_ms(text: &str) -> Option<i64> {
    let t = clock::parse_rfc3339(text).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Sets `attrs` on `r`: each replaces an attribute of the same name, the rest are added.
pub fn set_attributes(r: &mut Record, attrs: Vec<(String, AttrValue)>) -> Result<(), RecordsError> {
    for (k, v) in attrs {
        match r.attributes.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => r.attributes.push((k, v)),
        }
    }
    if r.attributes.len() > MAX_ATTRIBUTES {
        return Err(RecordsError::TooManyAttributes(r.attributes.len()));
    }
    Ok(())
}

/// Checks data against the record limit.
pub fn check_data(data: &[u8]) -> Result<(), RecordsError> {
    if data.len() > MAX_DATA_BYTES {
        return Err(RecordsError::TooLarge(data.len()));
    }
    Ok(())
}

/// How one query term compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One term: an attribute, a comparison, a value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    key: String,
    op: Op,
    value: String,
}

/// A query: terms joined by AND (no terms: everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    terms: Vec<Term>,
}

impl Query {
    /// Parses space-separated terms.
    pub fn parse(text: &str) -> Result<Query, RecordsError> {
        let mut terms = Vec::new();
        for t in text.split_whitespace() {
            terms.push(Query::term(t)?);
        }
        Ok(Query { terms })
    }

    /// The query `K=V` for each `--attr K=V` given to `list` (typed as given).
    pub fn of_attrs(attrs: &[(String, AttrValue)]) -> Query {
        let terms = attrs
            .iter()
            .map(|(k, v)| Term {
                key: k.clone(),
                op: Op::Eq,
                value: match v {
                    AttrValue::Str(s) => s.clone(),
                    AttrValue::Int(i) => i.to_string(),
                    AttrValue::Date(ms) => rfc3339_ms(*ms),
                },
            })
            .collect();
        Query { terms }
    }

    fn term(t: &str) -> Result<Term, RecordsError> {
        let bad = |why: &str| RecordsError::BadQuery(t.to_string(), why.to_string());
        let at = t
            .find(['=', '<', '>'])
            .ok_or_else(|| bad("write K=V, K<V, K<=V, K>V or K>=V"))?;
        let (key, rest) = t.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else {
            (Op::Eq, &rest[1..])
        };
        if !key_ok(key) {
            return Err(bad(
                "the attribute name must be 1 to 64 letters, digits, '.', '_' or '-'",
            ));
        }
        if op != Op::Eq && value.parse::<i64>().is_err() && date_ms(value).is_none() {
            return Err(bad("a range needs an integer or an RFC 3339 date"));
        }
        Ok(Term {
            key: key.to_string(),
            op,
            value: value.to_string(),
        })
    }

    /// Whether `r` has every attribute the terms name, each comparing as they say.
    pub fn matches(&self, r: &Record) -> bool {
        self.terms.iter().all(|t| {
            r.attributes
                .iter()
                .filter(|(k, _)| *k == t.key)
                .any(|(_, v)| t.holds(v))
        })
    }
}

impl Term {
    fn holds(&self, v: &AttrValue) -> bool {
        let order = match v {
            AttrValue::Str(s) => {
                return self.op == Op::Eq && wildcard(&self.value, s);
            }
            AttrValue::Int(i) => match self.value.parse::<i64>() {
                Ok(want) => i.cmp(&want),
                Err(_) => return false,
            },
            AttrValue::Date(ms) => match date_ms(&self.value) {
                Some(want) => ms.cmp(&want),
                None => return false,
            },
        };
        use std::cmp::Ordering::*;
        match self.op {
            Op::Eq => order == Equal,
            Op::Lt => order == Less,
            Op::Le => order != Greater,
            Op::Gt => order == Greater,
            Op::Ge => order != Less,
        }
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The live records of the store (not deleted, not expired at `now_ms`), of type
/// `rtype` or of every type but peergroup's own, modified at or after `since_ms`, that
/// `query` matches; oldest first.
pub fn find(
    store: &Store,
    rtype: Option<&Uuid>,
    query: &Query,
    since_ms: Option<i64>,
    now_ms: i64,
) -> Result<Vec<Record>, StoreError> {
    let mut out = Vec::new();
    for s in store.summaries()? {
        if is_reserved(&s.rtype) || rtype.is_some_and(|t| *t != s.rtype) {
            continue;
        }
        let Some(r) = store.get(&s.id)? else { continue };
        if r.deleted || r.expires_ms <= now_ms || since_ms.is_some_and(|t| r.modified_ms < t) || !query.matches(&r) {
            continue;
        }
        out.push(r);
    }
    out.sort_by_key(|r| (r.created_ms, r.id));
    Ok(out)
}

fn rfc3339_ms(ms: i64) -> String {
    clock::format_rfc3339(clock::from_unix(ms.div_euclid(1000)))
}

/// A record as JSON: id, type, creator, modifier, version, times, attributes (typed:
/// dates in RFC 3339), data in base64 and, when it is UTF-8, as text.
pub fn to_json(r: &Record) -> Value {
    let mut attrs = Map::new();
    for (k, v) in &r.attributes {
        let v = match v {
            AttrValue::Str(s) => json!(s),
            AttrValue::Int(i) => json!(i),
            AttrValue::Date(ms) => json!(rfc3339_ms(*ms)),
        };
        attrs.insert(k.clone(), v);
    }
    let mut v = json!({
        "id": r.id.to_string(),
        "type": r.rtype.to_string(),
        "creator": r.creator.to_string(),
        "modifier": r.modifier.to_string(),
        "version": r.version,
        "created": rfc3339_ms(r.created_ms),
        "modified": rfc3339_ms(r.modified_ms),
        "expires": rfc3339_ms(r.expires_ms),
        "deleted": r.deleted,
        "attributes": attrs,
        "data": B64.encode(&r.data),
    });
    if let Ok(text) = std::str::from_utf8(&r.data) {
        v["text"] = json!(text);
    }
    v
}

/// A record as one human line: id, version, creator, modified, attributes.
pub fn to_line(r: &Record, creator_name: &str) -> String {
    let attrs: Vec<String> = r
        .attributes
        .iter()
        .map(|(k, v)| match v {
            AttrValue::Str(s) => format!("{k}={s}"),
            AttrValue::Int(i) => format!("{k}:int={i}"),
            AttrValue::Date(ms) => format!("{k}:date={}", rfc3339_ms(*ms)),
        })
        .collect();
    crate::names::sanitize(&format!(
        "{} v{} {} {} {}",
        r.id,
        r.version,
        creator_name,
        rfc3339_ms(r.modified_ms),
        attrs.join(" ")
    ))
    .trim_end()
    .to_string()
}

/// A record for a person: its fields a line each, then its data (as text when it is
/// UTF-8, else base64). Every line is made safe for a terminal: names and values come
/// from other members.
pub fn describe(r: &Record, name: impl Fn(&MemberId) -> String) -> String {
    let v = to_json(r);
    let mut lines = vec![
        format!("id: {}", r.id),
        format!("type: {}", r.rtype),
        format!("creator: {} ({})", name(&r.creator), r.creator),
        format!("modifier: {} ({})", name(&r.modifier), r.modifier),
        format!("version: {}", r.version),
        format!("created: {}", rfc3339_ms(r.created_ms)),
        format!("modified: {}", rfc3339_ms(r.modified_ms)),
        format!("expires: {}", rfc3339_ms(r.expires_ms)),
    ];
    for (k, val) in &r.attributes {
        let shown = match val {
            AttrValue::Str(s) => s.clone(),
            AttrValue::Int(i) => i.to_string(),
            AttrValue::Date(ms) => rfc3339_ms(*ms),
        };
        lines.push(format!("attr: {k}={shown}"));
    }
    match v["text"].as_str() {
        Some(text) => lines.push(format!("data: {text}")),
        None => lines.push(format!("data (base64): {}", v["data"].as_str().unwrap_or(""))),
    }
    let mut out = String::new();
    for l in lines {
        out.push_str(&crate::names::sanitize(&l));
        out.push('\n');
    }
    out
}

/// Whether `who` (with `admin` as its role) may change `r`: its creator, or an admin.
pub fn may_change(r: &Record, who: &MemberId, admin: bool) -> bool {
    r.creator == *who || admin
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::CHAT_TYPE;

    const GROUP: Uuid = Uuid::from_u128(0x1234);

    fn rec(attrs: &[&str]) -> Record {
        let mut r = Record::new(Uuid::from_u128(9), MemberId::from_bytes([1; 20]), 1_000, 1_000);
        set_attributes(&mut r, attrs.iter().map(|a| parse_attr(a).unwrap()).collect()).unwrap();
        r
    }

    #[test]
    fn types_are_uuids_or_names_and_ours_are_refused() {
        let build = record_type(&GROUP, "build").unwrap();
        assert_eq!(build, Uuid::new_v5(&GROUP, b"build"));
        assert_eq!(
            record_type(&GROUP, "build").unwrap(),
            build,
            "the same name, the same type"
        );
        assert_ne!(record_type(&Uuid::from_u128(1), "build").unwrap(), build, "per group");
        let u = "6f1e2d3c-0000-4000-8000-000000000001";
        assert_eq!(record_type(&GROUP, u).unwrap().to_string(), u);
        assert_eq!(
            record_type(&GROUP, &CHAT_TYPE.to_string()),
            Err(RecordsError::Reserved(CHAT_TYPE))
        );
        for bad in ["", "has space", "ünï", &"x".repeat(65), "a/b"] {
            assert!(
                matches!(record_type(&GROUP, bad), Err(RecordsError::BadType(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn attributes_are_typed_as_written_and_malformed_ones_refused() {
        assert_eq!(
            parse_attr("os=linux").unwrap(),
            ("os".into(), AttrValue::Str("linux".into()))
        );
        assert_eq!(parse_attr("n:int=-42").unwrap(), ("n".into(), AttrValue::Int(-42)));
        assert_eq!(
            parse_attr("at:date=2026-11-30T12:00:00Z").unwrap(),
            ("at".into(), AttrValue::Date(1_796_040_000_000))
        );
        assert_eq!(parse_attr("empty=").unwrap().1, AttrValue::Str(String::new()));
        for bad in [
            "noequals",
            "=v",
            "n:int=x",
            "at:date=yesterday",
            "k:float=1",
            "bad key=1",
        ] {
            assert!(matches!(parse_attr(bad), Err(RecordsError::BadAttribute(..))), "{bad}");
        }
    }

    #[test]
    fn setting_an_attribute_replaces_one_of_the_same_name() {
        let mut r = rec(&["a=1", "b=2"]);
        set_attributes(&mut r, vec![parse_attr("a=3").unwrap(), parse_attr("c=4").unwrap()]).unwrap();
        assert_eq!(r.attributes.len(), 3);
        assert_eq!(r.attributes[0].1, AttrValue::Str("3".into()));
        let many: Vec<(String, AttrValue)> = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), AttrValue::Int(0)))
            .collect();
        assert_eq!(
            set_attributes(&mut rec(&[]), many),
            Err(RecordsError::TooManyAttributes(MAX_ATTRIBUTES + 1))
        );
    }

    #[test]
    fn queries_compare_equality_ranges_and_wildcards() {
        let r = rec(&["os=debian-12", "build:int=42", "at:date=2026-11-30T12:00:00Z"]);
        let yes = |q: &str| Query::parse(q).unwrap().matches(&r);
        assert!(yes(""));
        assert!(yes("os=debian-12"));
        assert!(yes("os=deb*") && yes("os=*12") && yes("os=*ian*") && yes("os=*"));
        assert!(!yes("os=ubuntu*") && !yes("os=debian"));
        assert!(yes("build=42") && yes("build>41") && yes("build>=42") && yes("build<=42") && !yes("build<42"));
        assert!(yes("at>2026-11-30T00:00:00Z") && !yes("at<2026-11-30T12:00:00Z") && yes("at<=2026-11-30T12:00:00Z"));
        assert!(yes("os=deb* build>=40 at>2026-01-01T00:00:00Z"), "terms AND together");
        assert!(!yes("os=deb* build>50"));
        assert!(!yes("missing=x"), "an attribute it lacks");
        assert!(!yes("os>1"), "a range on a string never holds");
        for bad in ["os", "=x", "build>x", "bad key=1"] {
            assert!(matches!(Query::parse(bad), Err(RecordsError::BadQuery(..))), "{bad}");
        }
    }

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(wildcard("a*c", "abc") && wildcard("a*c", "ac") && !wildcard("a*c", "ab"));
        assert!(wildcard("*a*a*", "banana") && !wildcard("*x*", "banana"));
        assert!(!wildcard("ab*ba", "aba"), "the two ends may not overlap");
    }

    #[test]
    fn json_gives_typed_attributes_and_the_data() {
        let mut r = rec(&["n:int=7", "at:date=2026-11-30T12:00:00Z", "os=x"]);
        r.data = b"ok".to_vec();
        let v = to_json(&r);
        assert_eq!(v["attributes"]["n"], 7);
        assert_eq!(v["attributes"]["at"], "2026-11-30T12:00:00Z");
        assert_eq!(v["attributes"]["os"], "x");
        assert_eq!(v["data"], "b2s=");
        assert_eq!(v["text"], "ok");
        assert_eq!(v["version"], 1);
    }

    /// Red-team finding: `get` printed attribute names and values as they came, so a
    /// member's record could forge lines or send escape sequences to the reader.
    #[test]
    fn a_described_record_cannot_forge_lines_or_escape() {
        let mut r = rec(&[]);
        r.attributes.push((
            "k\nmodifier: x\x1b[2J".into(),
            AttrValue::Str("v\nid: forged\x1b]0;pwn\x07".into()),
        ));
        r.data = b"text\x1b[31m\nmore".to_vec();
        let out = describe(&r, |_| "bo\nb\x1b".into());
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
        assert_eq!(out.lines().count(), 10, "{out}");
    }

    #[test]
    fn only_the_creator_or_an_admin_may_change_a_record() {
        let r = rec(&[]);
        assert!(may_change(&r, &r.creator, false));
        let other = MemberId::from_bytes([2; 20]);
        assert!(!may_change(&r, &other, false));
        assert!(may_change(&r, &other, true));
    }
}
