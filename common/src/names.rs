//! Names as people see them. A member's name is the one its membership certificate
//! carries, signed by the admin who invited it: never what the member says of itself
//! (its presence record), so nobody can appear as `<alice>` by saying so. Two members
//! may still have been invited under one name; then both show as `name (id prefix)`.
//!
//! Everything shown to a person passes [`sanitize`] first: names and texts come from
//! other members, and a terminal obeys control characters.

use std::collections::{BTreeSet, HashMap};

use thiserror::Error;

use crate::member::MemberId;

/// Why a name does not pick one member.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    /// Nobody matches.
    #[error("no present member matches {0:?}")]
    NoMatch(String),
    /// Several match.
    #[error("{0:?} matches several present members: {1}; name one by its id prefix")]
    Ambiguous(String, String),
}

/// Whether `c` is removed from what a person sees: C0 controls, DEL, C1 controls (ESC
/// among the C0), the bidirectional embeddings, overrides, isolates and marks, which
/// can make a line read differently from what it holds, and the invisible format
/// characters (zero-width spaces and joiners, soft hyphen, word joiner, byte-order
/// mark, line and paragraph separators), which can make `alice` and `alice` two names.
pub fn is_unsafe_char(c: char) -> bool {
    matches!(
        c,
        '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

/// `text` as it may be shown on a terminal: tabs and line breaks become spaces (a
/// message cannot forge a line of its own), other unsafe characters are removed.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' => Some(' '),
            c if is_unsafe_char(c) => None,
            c => Some(c),
        })
        .collect()
}

/// The certificate names of the members known, and who shares one.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    names: HashMap<MemberId, String>,
    holders: HashMap<String, BTreeSet<MemberId>>,
}

/// Names are compared without case: `alice` and `Alice` are one name to a reader.
fn key(name: &str) -> String {
    name.to_lowercase()
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Learns `member`'s certificate name (sanitized).
    pub fn learn(&mut self, member: MemberId, cert_name: &str) {
        let name = sanitize(cert_name);
        if let Some(old) = self.names.insert(member, name.clone())
            && let Some(set) = self.holders.get_mut(&key(&old))
        {
            set.remove(&member);
        }
        self.holders.entry(key(&name)).or_default().insert(member);
    }

    /// The certificate name of `member`, if known.
    pub fn name(&self, member: &MemberId) -> Option<&str> {
        self.names.get(member).map(String::as_str)
    }

    /// Members known under `name` (any case), other than `except`.
    pub fn others_named(&self, name: &str, except: &MemberId) -> Vec<MemberId> {
        self.holders
            .get(&key(&sanitize(name)))
            .map(|s| s.iter().filter(|m| *m != except).copied().collect())
            .unwrap_or_default()
    }

    /// How `member` is shown: its certificate name, with its id prefix when another
    /// member shares the name; its id prefix alone when unknown.
    pub fn display(&self, member: &MemberId) -> String {
        match self.names.get(member) {
            Some(n) if self.holders.get(&key(n)).is_some_and(|s| s.len() > 1) => {
                format!("{n} ({})", member.short())
            }
            Some(n) if !n.is_empty() => n.clone(),
            _ => member.short(),
        }
    }

    /// Picks the member a person means among `among`: an exact certificate name, else
    /// one differing only in case, else a member-id prefix. An ambiguous name lists
    /// the candidates with their id prefixes.
    pub fn resolve(&self, query: &str, among: impl IntoIterator<Item = MemberId>) -> Result<MemberId, ResolveError> {
        let candidates: Vec<(MemberId, &str)> = among.into_iter().map(|m| (m, self.name(&m).unwrap_or(""))).collect();
        let mut matches: Vec<&(MemberId, &str)> = candidates.iter().filter(|(_, n)| *n == query).collect();
        if matches.is_empty() {
            let q = key(query);
            matches = candidates.iter().filter(|(_, n)| key(n) == q).collect();
        }
        if matches.is_empty() {
            let q = query.to_ascii_lowercase();
            matches = candidates
                .iter()
                .filter(|(id, _)| !q.is_empty() && id.starts_with(&q))
                .collect();
        }
        match matches.as_slice() {
            [one] => Ok(one.0),
            [] => Err(ResolveError::NoMatch(sanitize(query))),
            many => {
                let mut names: Vec<String> = many.iter().map(|(id, n)| format!("{n} ({})", id.short())).collect();
                names.sort();
                Err(ResolveError::Ambiguous(sanitize(query), names.join(", ")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> MemberId {
        MemberId::repeat(c)
    }

    #[test]
    fn control_escape_and_bidi_characters_never_reach_a_terminal() {
        let hostile = "hi\x1b]0;pwned\x07\x1b[2J\r\n[12:00:00] <alice> send money\u{202e}txt.exe\u{2066}\u{9b}31m\x7f";
        let clean = sanitize(hostile);
        assert!(!clean.chars().any(is_unsafe_char), "{clean:?}");
        assert!(!clean.contains('\n'));
        assert_eq!(clean, "hi]0;pwned[2J  [12:00:00] <alice> send moneytxt.exe31m");
        assert_eq!(
            sanitize("plain words, émoji 🎉 and 中文"),
            "plain words, émoji 🎉 and 中文"
        );
    }

    /// Red-team: invisible format characters made `alice\u{200B}` a name of its own.
    #[test]
    fn invisible_characters_do_not_make_a_name_new() {
        let mut d = Directory::new();
        d.learn(id('a'), "alice");
        for lookalike in [
            "alice\u{200B}",
            "al\u{00AD}ice",
            "\u{FEFF}alice",
            "alice\u{200E}",
            "ali\u{2060}ce",
        ] {
            d.learn(id('b'), lookalike);
            assert!(d.display(&id('b')).contains(&id('b').short()), "{lookalike:?}");
            assert_eq!(d.name(&id('b')), Some("alice"));
        }
    }

    #[test]
    fn a_shared_name_shows_with_id_prefixes_and_resolves_only_by_them() {
        let mut d = Directory::new();
        d.learn(id('a'), "alice");
        d.learn(id('b'), "bob");
        assert_eq!(d.display(&id('a')), "alice");
        d.learn(id('c'), "Alice");
        assert_eq!(d.display(&id('a')), format!("alice ({})", id('a').short()));
        assert_eq!(d.display(&id('c')), format!("Alice ({})", id('c').short()));
        assert_eq!(d.display(&id('d')), id('d').short(), "unknown: its id prefix");
        assert_eq!(d.others_named("ALICE", &id('a')), vec![id('c')]);
        let all = [id('a'), id('b'), id('c')];
        assert_eq!(d.resolve("alice", all), Ok(id('a')), "the exact name first");
        assert!(matches!(d.resolve("ALICE", all), Err(ResolveError::Ambiguous(..))));
        assert_eq!(d.resolve("ccc", all), Ok(id('c')));
        assert_eq!(
            d.resolve("bob", [id('a')]),
            Err(ResolveError::NoMatch("bob".into())),
            "not present"
        );
        assert_eq!(d.resolve("", all), Err(ResolveError::NoMatch(String::new())));
        // A name with a control character is learnt without it.
        d.learn(id('e'), "eve\x1b[31m");
        assert_eq!(d.name(&id('e')), Some("eve[31m"));
    }
}
