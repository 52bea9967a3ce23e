//! The reachability check (AutoNAT's idea): a member asks its neighbours to dial it
//! back, and advertises only the addresses that work. The I/O is in `node::conn`; here
//! are the rules.
//!
//! - A request names a port only. The neighbour dials the IP address it sees the
//!   request's connection come from, never an address the asker names, and completes
//!   TLS expecting the asker's member id: no member can aim others' dials at a third
//!   host (at most at its own address, a few times a minute).
//! - A neighbour runs at most [`DIAL_BACKS_PER_MEMBER`] checks a minute for one member,
//!   [`DIAL_BACKS_PER_MINUTE`] in all and [`MAX_DIALLING`] at once; over that it
//!   answers `Refused` without dialling.
//! - The asker believes a success only when it saw the dial-back arrive itself (the
//!   Hello names the request), so a neighbour that lies "it works" cannot make it stop
//!   naming relays. A failure counts only when [`FAILS_TO_DROP`] different members
//!   report it and none succeeded: one hostile neighbour cannot make it drop an
//!   address. An address the asker did not know it had (its public address behind a
//!   forwarded port) is advertised only when [`FAILS_TO_DROP`] different members saw it
//!   work, since the IP address in an answer is that member's word.
//! - Verdicts last [`FORGET`]; each neighbour is asked again after [`RECHECK`], and at
//!   once when the candidates change (a new mapping).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::event::Advertised;
use super::relay::{PerMinute, is_global};
use crate::member::MemberId;
use crate::wire::DialOutcome;

/// Most reachability checks a member runs for one neighbour a minute.
pub const DIAL_BACKS_PER_MEMBER: u32 = 4;
/// Most reachability checks a member runs a minute in all.
pub const DIAL_BACKS_PER_MINUTE: u32 = 16;
/// Most dial-backs a member runs at once.
pub const MAX_DIALLING: usize = 4;
/// Most checks a member has waiting for answers at once.
pub const MAX_PENDING: usize = 4;
/// How long an asker waits for a check's answer (the dial takes at most a handshake's
/// time).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// Soonest a member asks the same neighbour to check the same port again.
pub const RECHECK: Duration = Duration::from_secs(10 * 60);
/// How long a verdict counts.
pub const FORGET: Duration = Duration::from_secs(30 * 60);
/// Different members that must see an address fail (none succeeding) before it is no
/// longer advertised, or see an address the member did not know work before it is.
pub const FAILS_TO_DROP: usize = 2;

/// The dialling side: the limits on checks run for others.
#[derive(Debug, Default)]
pub struct Helper {
    per_member: HashMap<MemberId, PerMinute>,
    all: Option<PerMinute>,
    dialling: usize,
}

impl Helper {
    /// Whether to dial `member` back now; if so, [`Helper::done`] must follow.
    pub fn admit(&mut self, member: MemberId, now: Instant) -> bool {
        if self.dialling >= MAX_DIALLING {
            return false;
        }
        // A member's window counts its tries, refused or not, so asking faster only
        // wastes its own budget; the common window counts only what passed its own, so
        // one member cannot spend the others'.
        let theirs = self
            .per_member
            .entry(member)
            .or_insert_with(|| PerMinute::new(now))
            .allow(DIAL_BACKS_PER_MEMBER, now);
        let admitted = theirs
            && self
                .all
                .get_or_insert_with(|| PerMinute::new(now))
                .allow(DIAL_BACKS_PER_MINUTE, now);
        if admitted {
            self.dialling += 1;
        }
        admitted
    }

    /// A dial-back admitted earlier finished.
    pub fn done(&mut self) {
        self.dialling = self.dialling.saturating_sub(1);
    }

    /// Forgets windows that ended, so members that left cost nothing.
    pub fn expire(&mut self, now: Instant) {
        self.per_member.retain(|_, w| !w.ended(now));
    }
}

/// A check waiting for its answer.
#[derive(Debug, Clone)]
struct Pending {
    member: MemberId,
    port: u16,
    sent: Instant,
    /// The dial-back's Hello arrived (from `member`, with this nonce).
    witnessed: bool,
    /// The member's answer: how it went and where it dialled.
    answer: Option<(DialOutcome, SocketAddr)>,
}

/// What members saw of one address, and when.
#[derive(Debug, Default, Clone)]
struct Seen {
    works: BTreeMap<MemberId, Instant>,
    fails: BTreeMap<MemberId, Instant>,
}

/// A check settled: what it says of which address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The address checked.
    pub addr: SocketAddr,
    /// Who checked it.
    pub by: MemberId,
    /// Whether it works.
    pub works: bool,
}

/// What to advertise after the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// The addresses, in order (candidates first).
    pub advertised: Vec<Advertised>,
    /// Candidates no longer advertised: [`FAILS_TO_DROP`] members could not dial them.
    pub dropped: Vec<String>,
    /// Whether some global address was seen to work.
    pub reachable: bool,
}

/// The asking side: checks in flight and what they found.
#[derive(Debug, Default)]
pub struct Checks {
    pending: HashMap<u64, Pending>,
    asked: HashMap<(MemberId, u16), Instant>,
    seen: HashMap<SocketAddr, Seen>,
}

impl Checks {
    /// The checks to ask neighbour `member` for now: each port not asked of it within
    /// [`RECHECK`], while fewer than [`MAX_PENDING`] wait. `nonce` makes each check's
    /// name.
    pub fn due(
        &mut self,
        member: MemberId,
        ports: &[u16],
        now: Instant,
        mut nonce: impl FnMut() -> u64,
    ) -> Vec<(u64, u16)> {
        let mut out = Vec::new();
        for &port in ports {
            if self.pending.len() >= MAX_PENDING {
                break;
            }
            let recent = self
                .asked
                .get(&(member, port))
                .is_some_and(|t| now.duration_since(*t) < RECHECK);
            if port == 0 || recent {
                continue;
            }
            let n = nonce();
            if self.pending.contains_key(&n) {
                continue;
            }
            self.asked.insert((member, port), now);
            self.pending.insert(
                n,
                Pending {
                    member,
                    port,
                    sent: now,
                    witnessed: false,
                    answer: None,
                },
            );
            out.push((n, port));
        }
        out
    }

    /// The dial-back `nonce` arrived from `from` (TLS proved who): true when it
    /// answers a check asked of that member.
    pub fn witnessed(&mut self, nonce: u64, from: MemberId, now: Instant) -> Option<Verdict> {
        let p = self.pending.get_mut(&nonce).filter(|p| p.member == from)?;
        p.witnessed = true;
        self.settle(nonce, now)
    }

    /// Member `from` answered check `nonce`. `None` when it settles nothing (an unknown
    /// check, another member's, a refusal, or a success not seen yet).
    pub fn answered(
        &mut self,
        nonce: u64,
        from: MemberId,
        outcome: DialOutcome,
        addr: SocketAddr,
        now: Instant,
    ) -> Option<Verdict> {
        let p = self.pending.get_mut(&nonce).filter(|p| p.member == from)?;
        // Only the IP is the member's to say: the port is the one asked.
        if addr.port() != p.port || outcome == DialOutcome::Refused {
            self.pending.remove(&nonce);
            return None;
        }
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        p.answer = Some((outcome, addr));
        self.settle(nonce, now)
    }

    /// A check with both its answer and (for a success) its dial-back settles.
    fn settle(&mut self, nonce: u64, now: Instant) -> Option<Verdict> {
        let p = self.pending.get(&nonce)?;
        let (outcome, addr) = p.answer?;
        // Seen arriving, it works whatever the member says; said to work but not seen
        // (yet), it waits for the dial-back or its time.
        let works = p.witnessed;
        if !works && outcome == DialOutcome::Works {
            return None;
        }
        let by = p.member;
        self.pending.remove(&nonce);
        let seen = self.seen.entry(addr).or_default();
        if works {
            seen.fails.remove(&by);
            seen.works.insert(by, now);
        } else {
            seen.works.remove(&by);
            seen.fails.insert(by, now);
        }
        Some(Verdict { addr, by, works })
    }

    /// Drops checks whose answer did not come in time and verdicts too old to count;
    /// true when a verdict went (the candidates need judging again).
    pub fn expire(&mut self, now: Instant) -> bool {
        self.pending.retain(|_, p| now.duration_since(p.sent) < ANSWER_WITHIN);
        self.asked.retain(|_, t| now.duration_since(*t) < RECHECK);
        let before: usize = self.seen.values().map(|s| s.works.len() + s.fails.len()).sum();
        for seen in self.seen.values_mut() {
            seen.works.retain(|_, t| now.duration_since(*t) < FORGET);
            seen.fails.retain(|_, t| now.duration_since(*t) < FORGET);
        }
        self.seen.retain(|_, s| !s.works.is_empty() || !s.fails.is_empty());
        let after: usize = self.seen.values().map(|s| s.works.len() + s.fails.len()).sum();
        after != before
    }

    /// The candidates changed (a mapping came or went): ask every neighbour again.
    pub fn ask_again(&mut self) {
        self.asked.clear();
    }

    /// What to advertise of `candidates` (in order, at most `max`): each one unless
    /// [`FAILS_TO_DROP`] members failed to dial it and none succeeded, then global
    /// addresses the node did not know it had that as many members saw work.
    pub fn judge(&self, candidates: &[Advertised], max: usize) -> Judged {
        let mut advertised = Vec::new();
        let mut dropped = Vec::new();
        let mut reachable = false;
        let seen_at = |a: &str| a.parse::<SocketAddr>().ok().and_then(|a| self.seen.get(&a));
        for c in candidates {
            let (works, fails) = seen_at(&c.address).map_or((0, 0), |s| (s.works.len(), s.fails.len()));
            if works == 0 && fails >= FAILS_TO_DROP {
                dropped.push(c.address.clone());
                continue;
            }
            let global = c.address.parse::<SocketAddr>().is_ok_and(|a| is_global(a.ip()));
            reachable |= works > 0 && global;
            advertised.push(Advertised {
                checked: works > 0,
                ..c.clone()
            });
        }
        let mut observed: Vec<(&SocketAddr, &Seen)> = self
            .seen
            .iter()
            .filter(|(a, s)| {
                s.works.len() >= FAILS_TO_DROP
                    && is_global(a.ip())
                    && !candidates
                        .iter()
                        .any(|c| c.address.parse::<SocketAddr>().ok() == Some(**a))
            })
            .collect();
        // Most confirmed first, then a stable order.
        observed.sort_by(|x, y| y.1.works.len().cmp(&x.1.works.len()).then(x.0.cmp(y.0)));
        for (addr, _) in observed {
            reachable = true;
            advertised.push(Advertised {
                address: addr.to_string(),
                how: "observed",
                checked: true,
            });
        }
        advertised.truncate(max);
        Judged {
            advertised,
            dropped,
            reachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MEMBER_ID_BYTES;

    fn member(n: u8) -> MemberId {
        MemberId::from_bytes([n; MEMBER_ID_BYTES])
    }

    fn cand(address: &str, how: &'static str) -> Advertised {
        Advertised {
            address: address.into(),
            how,
            checked: false,
        }
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    /// Asks `by` to check `port`, then plays its answer (and, when `arrives`, the
    /// dial-back reaching this node first).
    fn check(
        c: &mut Checks,
        by: MemberId,
        addr: &str,
        outcome: DialOutcome,
        arrives: bool,
        now: Instant,
    ) -> Option<Verdict> {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut next = {
            let base = c.pending.len() as u64 * 1000 + u64::from(by.as_bytes()[0]) * 100_000 + u64::from(addr.port());
            move || base
        };
        c.asked.clear();
        let [(nonce, _)] = c.due(by, &[addr.port()], now, &mut next)[..] else {
            panic!("not asked")
        };
        if arrives {
            assert_eq!(c.witnessed(nonce, by, now), None, "no answer yet");
        }
        c.answered(nonce, by, outcome, addr, now)
    }

    #[test]
    fn each_port_is_asked_once_per_neighbour_until_the_recheck() {
        let mut c = Checks::default();
        let t0 = Instant::now();
        let mut n = counter();
        assert_eq!(
            c.due(member(1), &[7400, 7401, 0], t0, &mut n).len(),
            2,
            "port 0 is never asked"
        );
        assert!(c.due(member(1), &[7400, 7401], t0, &mut n).is_empty());
        assert_eq!(
            c.due(member(2), &[7400], t0, &mut n).len(),
            1,
            "another neighbour is asked"
        );
        c.expire(t0 + ANSWER_WITHIN);
        assert!(c.pending.is_empty(), "unanswered checks are dropped");
        assert!(c.due(member(1), &[7400], t0 + ANSWER_WITHIN, &mut n).is_empty());
        assert_eq!(c.due(member(1), &[7400], t0 + RECHECK, &mut n).len(), 1);
        c.ask_again();
        assert_eq!(
            c.due(member(1), &[7401], t0 + RECHECK, &mut n).len(),
            1,
            "candidates changed"
        );
    }

    #[test]
    fn no_more_than_max_pending_checks_wait() {
        let mut c = Checks::default();
        let mut n = counter();
        let t0 = Instant::now();
        let ports: Vec<u16> = (1..=10).collect();
        assert_eq!(c.due(member(1), &ports, t0, &mut n).len(), MAX_PENDING);
        assert!(c.due(member(2), &ports, t0, &mut n).is_empty());
    }

    #[test]
    fn a_success_counts_only_once_the_dial_back_was_seen() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        // Said to work, never seen: nothing settles; the check ends at its time.
        assert_eq!(
            check(&mut c, member(1), "11.0.0.2:7400", DialOutcome::Works, false, t0),
            None
        );
        c.expire(t0 + ANSWER_WITHIN);
        let judged = c.judge(&[cand("11.0.0.2:7400", "listen")], 8);
        assert!(!judged.reachable && !judged.advertised[0].checked);
        // Seen, then answered: it works.
        let v = check(&mut c, member(1), "11.0.0.2:7400", DialOutcome::Works, true, t0).unwrap();
        assert!(v.works);
        let judged = c.judge(&[cand("11.0.0.2:7400", "listen")], 8);
        assert!(judged.reachable && judged.advertised[0].checked);
        // Answered first, seen after: the same.
        let mut c = Checks::default();
        let mut n = counter();
        let [(nonce, _)] = c.due(member(1), &[7400], t0, &mut n)[..] else {
            panic!()
        };
        let addr = "11.0.0.2:7400".parse().unwrap();
        assert_eq!(c.answered(nonce, member(1), DialOutcome::Works, addr, t0), None);
        assert_eq!(c.witnessed(nonce, member(2), t0), None, "another member's dial-back");
        assert!(c.witnessed(nonce, member(1), t0).unwrap().works);
    }

    #[test]
    fn a_seen_dial_back_works_whatever_the_member_says() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        let v = check(&mut c, member(1), "10.0.0.5:7400", DialOutcome::Failed, true, t0).unwrap();
        assert!(v.works);
    }

    #[test]
    fn answers_from_others_with_other_ports_or_refusals_settle_nothing() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        let mut n = counter();
        let addr: SocketAddr = "11.0.0.2:7400".parse().unwrap();
        let [(nonce, _)] = c.due(member(1), &[7400], t0, &mut n)[..] else {
            panic!()
        };
        assert_eq!(c.answered(nonce, member(2), DialOutcome::Failed, addr, t0), None);
        assert_eq!(c.answered(nonce + 9, member(1), DialOutcome::Failed, addr, t0), None);
        assert_eq!(
            c.answered(nonce, member(1), DialOutcome::Failed, "11.0.0.2:9".parse().unwrap(), t0),
            None
        );
        assert!(c.pending.is_empty(), "a wrong port ends the check");
        let [(nonce, _)] = c.due(member(3), &[7400], t0, &mut n)[..] else {
            panic!()
        };
        assert_eq!(c.answered(nonce, member(3), DialOutcome::Refused, addr, t0), None);
        assert!(c.seen.is_empty());
    }

    #[test]
    fn an_address_is_dropped_only_when_two_members_fail_and_none_succeeds() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        let cands = [cand("11.0.0.2:7400", "upnp"), cand("192.168.1.5:7400", "listen")];
        check(&mut c, member(1), "11.0.0.2:7400", DialOutcome::Failed, false, t0).unwrap();
        assert_eq!(
            c.judge(&cands, 8).advertised.len(),
            2,
            "one member's word is not enough"
        );
        check(&mut c, member(1), "11.0.0.2:7400", DialOutcome::Failed, false, t0).unwrap();
        assert_eq!(c.judge(&cands, 8).advertised.len(), 2, "nor the same member twice");
        check(&mut c, member(2), "11.0.0.2:7400", DialOutcome::Failed, false, t0).unwrap();
        let judged = c.judge(&cands, 8);
        assert_eq!(judged.dropped, ["11.0.0.2:7400"]);
        assert_eq!(judged.advertised, [cand("192.168.1.5:7400", "listen")]);
        assert!(!judged.reachable);
        // One success (seen) brings it back.
        check(&mut c, member(3), "11.0.0.2:7400", DialOutcome::Works, true, t0).unwrap();
        let judged = c.judge(&cands, 8);
        assert!(judged.dropped.is_empty() && judged.reachable);
        assert!(judged.advertised[0].checked && !judged.advertised[1].checked);
        // Verdicts fade.
        assert!(!c.expire(t0 + FORGET - Duration::from_secs(1)));
        assert!(c.expire(t0 + FORGET));
        assert_eq!(c.judge(&cands, 8).advertised, cands);
    }

    #[test]
    fn an_unknown_address_is_advertised_once_two_members_saw_it_work() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        let cands = [cand("192.168.1.5:7400", "listen")];
        check(&mut c, member(1), "11.0.0.9:7400", DialOutcome::Works, true, t0).unwrap();
        assert_eq!(c.judge(&cands, 8).advertised, cands, "one member's word for the IP");
        check(&mut c, member(2), "11.0.0.9:7400", DialOutcome::Works, true, t0).unwrap();
        let judged = c.judge(&cands, 8);
        assert!(judged.reachable);
        assert_eq!(judged.advertised[1].address, "11.0.0.9:7400");
        assert_eq!(judged.advertised[1].how, "observed");
        assert_eq!(c.judge(&cands, 1).advertised, cands, "candidates first within the cap");
        // A private one is never taken from others' word.
        check(&mut c, member(1), "10.9.9.9:7400", DialOutcome::Works, true, t0).unwrap();
        check(&mut c, member(2), "10.9.9.9:7400", DialOutcome::Works, true, t0).unwrap();
        assert_eq!(c.judge(&cands, 8).advertised.len(), 2);
    }

    #[test]
    fn ipv4_mapped_answers_are_the_ipv4_address() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        check(
            &mut c,
            member(1),
            "[::ffff:11.0.0.2]:7400",
            DialOutcome::Works,
            true,
            t0,
        )
        .unwrap();
        assert!(c.judge(&[cand("11.0.0.2:7400", "listen")], 8).advertised[0].checked);
    }

    #[test]
    fn the_helper_limits_checks_per_member_in_all_and_at_once() {
        let t0 = Instant::now();
        let mut h = Helper::default();
        for _ in 0..MAX_DIALLING {
            assert!(h.admit(member(1), t0));
        }
        assert!(!h.admit(member(2), t0), "too many at once");
        for _ in 0..MAX_DIALLING {
            h.done();
        }
        assert!(!h.admit(member(1), t0), "over the member's minute");
        let mut admitted = 0;
        for i in 2..40 {
            if h.admit(member(i), t0) {
                admitted += 1;
                h.done();
            }
        }
        assert_eq!(
            admitted + DIAL_BACKS_PER_MEMBER as usize,
            DIAL_BACKS_PER_MINUTE as usize
        );
        let later = t0 + Duration::from_secs(61);
        assert!(h.admit(member(1), later));
        h.expire(later + Duration::from_secs(61));
        assert!(h.per_member.is_empty());
    }
}
