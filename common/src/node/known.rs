//! Where this member has seen the others: the addresses from their signed presence
//! records, kept in a small file beside the store. After a restart they are dialled
//! when nothing better is known, so a member finds the group again even when nobody's
//! presence is live any more and the invitation named only members who are gone (the
//! creator who left for good, say). It is a cache: a missing or damaged file is empty.

use std::path::{Path, PathBuf};

use crate::home;
use crate::membership::{self, MAX_ADDRESSES};

/// File name inside the membership directory.
pub const KNOWN_PEERS_FILE: &str = "known-peers";
/// Most members remembered; the least recently changed are forgotten first.
pub const MAX_KNOWN: usize = 64;

/// Members' last known addresses, most recently learnt first.
#[derive(Debug)]
pub struct KnownPeers {
    path: PathBuf,
    entries: Vec<(String, Vec<String>)>,
}

impl KnownPeers {
    /// Reads `dir/known-peers`: one line per member, `MEMBER_ID ADDR,ADDR,...`.
    pub fn load(dir: &Path) -> KnownPeers {
        let path = dir.join(KNOWN_PEERS_FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut known = KnownPeers {
            path,
            entries: Vec::new(),
        };
        // Noted last line first, so the file's order (most recent first) is kept.
        let lines: Vec<&str> = text.lines().take(MAX_KNOWN).collect();
        for (member, addrs) in lines.iter().rev().filter_map(|l| l.split_once(' ')) {
            let well_formed = member.len() == 40 && member.bytes().all(|b| b.is_ascii_hexdigit());
            if well_formed {
                known.note(member, &addrs.split(',').map(str::to_string).collect::<Vec<_>>());
            }
        }
        known
    }

    /// Remembers `member` at `addrs`; true if that changed what is remembered (the
    /// same addresses again change nothing, so a steady group never writes).
    pub fn note(&mut self, member: &str, addrs: &[String]) -> bool {
        let valid = membership::merge_addresses(addrs.iter().take(MAX_ADDRESSES));
        if valid.is_empty() || self.entries.iter().any(|(m, a)| m == member && *a == valid) {
            return false;
        }
        self.entries.retain(|(m, _)| m != member);
        self.entries.insert(0, (member.to_string(), valid));
        self.entries.truncate(MAX_KNOWN);
        true
    }

    /// Writes the file atomically.
    pub fn save(&self) -> Result<(), home::HomeError> {
        let text: String = self
            .entries
            .iter()
            .map(|(m, a)| format!("{m} {}\n", a.join(",")))
            .collect();
        home::replace_file(&self.path, text.as_bytes())
    }

    /// Every (member id, address) remembered, most recently learnt first.
    pub fn addresses(&self) -> impl Iterator<Item = (&str, &String)> {
        self.entries
            .iter()
            .flat_map(|(m, addrs)| addrs.iter().map(move |a| (m.as_str(), a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn learnt_addresses_survive_a_restart_and_only_changes_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut k = KnownPeers::load(dir.path());
        assert_eq!(k.addresses().count(), 0, "no file is an empty cache");
        assert!(k.note(A, &addrs(&["192.0.2.1:7400"])));
        assert!(!k.note(A, &addrs(&["192.0.2.1:7400"])), "the same again is no change");
        assert!(k.note(B, &addrs(&["192.0.2.2:7400", "not an address"])));
        assert!(!k.note(B, &addrs(&["junk"])), "nothing valid, nothing noted");
        k.save().unwrap();
        let again = KnownPeers::load(dir.path());
        let got: Vec<(&str, &String)> = again.addresses().collect();
        assert_eq!(
            got,
            vec![(B, &"192.0.2.2:7400".to_string()), (A, &"192.0.2.1:7400".to_string())]
        );
    }

    #[test]
    fn a_damaged_file_is_read_as_far_as_it_makes_sense_and_the_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(KNOWN_PEERS_FILE),
            format!("garbage\n{A} 192.0.2.1:1\nshort 192.0.2.9:9\n{B}\n"),
        )
        .unwrap();
        let mut k = KnownPeers::load(dir.path());
        assert_eq!(k.addresses().count(), 1);
        for i in 0..(MAX_KNOWN + 10) {
            k.note(&format!("{i:040x}"), &addrs(&[&format!("192.0.2.3:{}", 1000 + i)]));
        }
        assert_eq!(k.addresses().count(), MAX_KNOWN);
        assert!(k.addresses().all(|(m, _)| m != A), "the oldest is forgotten first");
    }
}
