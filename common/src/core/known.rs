//! Where this member has seen the others: the addresses from their signed presence
//! records. After a restart they are dialled when nothing better is known, so a member
//! finds the group again even when nobody's presence is live any more and the
//! invitation named only members who are gone (the creator who left for good, say).
//! The driver keeps it in a small file beside the store ([`KNOWN_PEERS_FILE`]); it is a
//! cache: a missing or damaged file is read as far as it makes sense.

use crate::member::MemberId;
use crate::membership::{self, MAX_ADDRESSES};

/// File name inside the membership directory.
pub const KNOWN_PEERS_FILE: &str = "known-peers";
/// Most members remembered; the least recently changed are forgotten first.
pub const MAX_KNOWN: usize = 64;

/// Members' last known addresses, most recently learnt first.
#[derive(Debug, Default, Clone)]
pub struct KnownPeers {
    entries: Vec<(MemberId, Vec<String>)>,
}

impl KnownPeers {
    /// Reads the file's text: one line per member, `MEMBER_ID ADDR,ADDR,...`.
    pub fn parse(text: &str) -> KnownPeers {
        let mut known = KnownPeers::default();
        // Noted last line first, so the file's order (most recent first) is kept.
        let lines: Vec<&str> = text.lines().take(MAX_KNOWN).collect();
        for (member, addrs) in lines.iter().rev().filter_map(|l| l.split_once(' ')) {
            if let Ok(member) = member.parse::<MemberId>() {
                known.note(member, &addrs.split(',').map(str::to_string).collect::<Vec<_>>());
            }
        }
        known
    }

    /// The file's text.
    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|(m, a)| format!("{m} {}\n", a.join(",")))
            .collect()
    }

    /// Remembers `member` at `addrs`; true if that changed what is remembered (the
    /// same addresses again change nothing, so a steady group never writes).
    pub fn note(&mut self, member: MemberId, addrs: &[String]) -> bool {
        let valid = membership::merge_addresses(addrs.iter().take(MAX_ADDRESSES));
        if valid.is_empty() || self.entries.iter().any(|(m, a)| *m == member && *a == valid) {
            return false;
        }
        self.entries.retain(|(m, _)| *m != member);
        self.entries.insert(0, (member, valid));
        self.entries.truncate(MAX_KNOWN);
        true
    }

    /// Every (member id, address) remembered, most recently learnt first.
    pub fn addresses(&self) -> impl Iterator<Item = (MemberId, &String)> {
        self.entries
            .iter()
            .flat_map(|(m, addrs)| addrs.iter().map(move |a| (*m, a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> MemberId {
        MemberId::repeat(c)
    }

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn learnt_addresses_survive_a_restart_and_only_changes_count() {
        let mut k = KnownPeers::parse("");
        assert_eq!(k.addresses().count(), 0, "no file is an empty cache");
        assert!(k.note(id('a'), &addrs(&["192.0.2.1:7400"])));
        assert!(
            !k.note(id('a'), &addrs(&["192.0.2.1:7400"])),
            "the same again is no change"
        );
        assert!(k.note(id('b'), &addrs(&["192.0.2.2:7400", "not an address"])));
        assert!(!k.note(id('b'), &addrs(&["junk"])), "nothing valid, nothing noted");
        let again = KnownPeers::parse(&k.render());
        let got: Vec<(MemberId, &String)> = again.addresses().collect();
        assert_eq!(
            got,
            vec![
                (id('b'), &"192.0.2.2:7400".to_string()),
                (id('a'), &"192.0.2.1:7400".to_string())
            ]
        );
    }

    #[test]
    fn a_damaged_file_is_read_as_far_as_it_makes_sense_and_the_cache_is_bounded() {
        let text = format!("garbage\n{} 192.0.2.1:1\nshort 192.0.2.9:9\n{}\n", id('a'), id('b'));
        let mut k = KnownPeers::parse(&text);
        assert_eq!(k.addresses().count(), 1);
        for i in 0..(MAX_KNOWN + 10) {
            let m: MemberId = format!("{i:040x}").parse().unwrap();
            k.note(m, &addrs(&[&format!("192.0.2.3:{}", 1000 + i)]));
        }
        assert_eq!(k.addresses().count(), MAX_KNOWN);
        assert!(
            k.addresses().all(|(m, _)| m != id('a')),
            "the oldest is forgotten first"
        );
    }
}
