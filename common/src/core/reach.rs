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
//!   Hello names the request), and only from where such a dial could come
//!   ([`credible`]): a global address is proved only by a dial from a global address of
//!   the same family outside the asker's own IPv6 /64s, since the address in an answer
//!   is the member's word and the dial may have come by another way (over the LAN).
//!   It is reachable (and names no relays) once [`FAILS_TO_DROP`] different members
//!   proved a global address of the family: one hostile member that reaches it some
//!   other way (through a punched hole) cannot end its relays.
//! - A failure counts only when [`FAILS_TO_DROP`] different members report it and
//!   fewer succeeded: one hostile neighbour cannot make it drop an address. Failures
//!   reported while its listener refused connections (a stranger holding the handshake
//!   slots) do not count.
//! - An address the asker did not know it had (its public address behind a forwarded
//!   port) is advertised only when [`FAILS_TO_DROP`] different members saw it work, on
//!   a port it listens on.
//! - Verdicts last [`FORGET`]; each neighbour is asked again after [`RECHECK`], and at
//!   once when the candidates change (a new mapping; the old mapping's verdicts go).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
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

/// What to do with a member's request for a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Dial it back (then [`Helper::done`]).
    Dial,
    /// Say it was refused: over the limits.
    Refuse,
    /// Say nothing: the member asked more than twice its budget this minute, and each
    /// answer would cost this node a frame and a log line.
    Ignore,
}

/// The dialling side: the limits on checks run for others.
#[derive(Debug, Default)]
pub struct Helper {
    per_member: HashMap<MemberId, PerMinute>,
    all: Option<PerMinute>,
    dialling: usize,
}

impl Helper {
    /// Whether to dial `member` back now; [`Answer::Dial`] must be followed by
    /// [`Helper::done`].
    pub fn admit(&mut self, member: MemberId, now: Instant) -> Answer {
        // A member's window counts its tries, refused or not, so asking faster only
        // wastes its own budget; the common window counts only what passed its own, so
        // one member cannot spend the others'.
        let window = self.per_member.entry(member).or_insert_with(|| PerMinute::new(now));
        let theirs = window.allow(DIAL_BACKS_PER_MEMBER, now);
        if !window.allow_count(2 * DIAL_BACKS_PER_MEMBER) {
            return Answer::Ignore;
        }
        if !theirs || self.dialling >= MAX_DIALLING {
            return Answer::Refuse;
        }
        let all = self.all.get_or_insert_with(|| PerMinute::new(now));
        if !all.allow(DIAL_BACKS_PER_MINUTE, now) {
            return Answer::Refuse;
        }
        self.dialling += 1;
        Answer::Dial
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
    /// The dial-back's Hello arrived (from `member`, with this nonce), from where.
    witnessed: Option<IpAddr>,
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
    /// Whether [`FAILS_TO_DROP`] members proved a global IPv4 address of this node.
    pub reachable_v4: bool,
    /// The same for IPv6.
    pub reachable_v6: bool,
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
                    witnessed: None,
                    answer: None,
                },
            );
            out.push((n, port));
        }
        out
    }

    /// The dial-back `nonce` arrived from `from` (TLS proved who) at `source`; `own`
    /// are this node's addresses. A verdict when it settles a check.
    pub fn witnessed(
        &mut self,
        nonce: u64,
        from: MemberId,
        source: IpAddr,
        own: &[IpAddr],
        now: Instant,
    ) -> Option<Verdict> {
        let p = self.pending.get_mut(&nonce).filter(|p| p.member == from)?;
        p.witnessed = Some(source.to_canonical());
        self.settle(nonce, own, now)
    }

    /// Member `from` answered check `nonce`; `own` are this node's addresses, and
    /// `refusing_since` when its listener last refused a connection. `None` when it
    /// settles nothing (an unknown check, another member's, a refusal, a success not
    /// seen yet, a failure while the listener was refusing).
    pub fn answered(
        &mut self,
        nonce: u64,
        from: MemberId,
        (outcome, addr): (DialOutcome, SocketAddr),
        own: &[IpAddr],
        refusing_since: Option<Instant>,
        now: Instant,
    ) -> Option<Verdict> {
        let p = self.pending.get_mut(&nonce).filter(|p| p.member == from)?;
        // Only the IP is the member's to say: the port is the one asked. A dial that
        // failed while this node's listener turned connections away says nothing of
        // the address.
        let refusing = refusing_since.is_some_and(|t| t >= p.sent);
        let failed = outcome == DialOutcome::Failed && p.witnessed.is_none();
        if addr.port() != p.port || outcome == DialOutcome::Refused || (failed && refusing) {
            self.pending.remove(&nonce);
            return None;
        }
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        p.answer = Some((outcome, addr));
        self.settle(nonce, own, now)
    }

    /// A check with both its answer and (for a success) its dial-back settles.
    fn settle(&mut self, nonce: u64, own: &[IpAddr], now: Instant) -> Option<Verdict> {
        let p = self.pending.get(&nonce)?;
        let (outcome, addr) = p.answer?;
        // Seen arriving from where such a dial could come, it works whatever the
        // member says; said to work but not seen (yet), it waits for the dial-back or
        // its time; seen from elsewhere (the LAN, for a public address), it proves
        // nothing.
        let works = p.witnessed.is_some_and(|source| credible(source, addr.ip(), own));
        if !works && outcome == DialOutcome::Works {
            if p.witnessed.is_some() {
                self.pending.remove(&nonce);
            }
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

    /// The candidates changed (a mapping came or went): ask every neighbour again, and
    /// forget what was seen of `gone` (an old mapping, which no longer leads here).
    pub fn ask_again(&mut self, gone: Option<SocketAddr>) {
        self.asked.clear();
        if let Some(gone) = gone {
            self.seen.remove(&gone);
        }
    }

    /// What to advertise of `candidates` (at most `max`): each one unless
    /// [`FAILS_TO_DROP`] members failed to dial it and fewer succeeded, then global
    /// addresses on a candidate's port the node did not know it had that as many
    /// members saw work; checked ones first (so the cap never cuts what works), in
    /// order otherwise. Reachable per family from what is advertised.
    pub fn judge(&self, candidates: &[Advertised], max: usize) -> Judged {
        let mut advertised = Vec::new();
        let mut dropped = Vec::new();
        let parsed: Vec<Option<SocketAddr>> = candidates.iter().map(|c| c.address.parse().ok()).collect();
        for (c, addr) in candidates.iter().zip(&parsed) {
            let seen = addr.and_then(|a| self.seen.get(&a));
            let (works, fails) = seen.map_or((0, 0), |s| (s.works.len(), s.fails.len()));
            if fails >= FAILS_TO_DROP && works < fails {
                dropped.push(c.address.clone());
                continue;
            }
            let checked = Advertised {
                checked: works > 0,
                ..c.clone()
            };
            advertised.push((checked, works));
        }
        let ports: Vec<u16> = parsed.iter().flatten().map(SocketAddr::port).collect();
        let mut observed: Vec<(&SocketAddr, &Seen)> = self
            .seen
            .iter()
            .filter(|(a, s)| {
                s.works.len() >= FAILS_TO_DROP
                    && is_global(a.ip())
                    && ports.contains(&a.port())
                    && !parsed.contains(&Some(**a))
            })
            .collect();
        // Most confirmed first, then a stable order.
        observed.sort_by(|x, y| y.1.works.len().cmp(&x.1.works.len()).then(x.0.cmp(y.0)));
        for (addr, seen) in observed {
            let a = Advertised {
                address: addr.to_string(),
                how: "observed",
                checked: true,
            };
            advertised.push((a, seen.works.len()));
        }
        advertised.sort_by_key(|(a, _)| !a.checked);
        advertised.truncate(max);
        let proved = |v4: bool| {
            advertised.iter().any(|(a, works)| {
                *works >= FAILS_TO_DROP
                    && a.address
                        .parse::<SocketAddr>()
                        .is_ok_and(|s| s.is_ipv4() == v4 && is_global(s.ip()))
            })
        };
        let (reachable_v4, reachable_v6) = (proved(true), proved(false));
        Judged {
            advertised: advertised.into_iter().map(|(a, _)| a).collect(),
            dropped,
            reachable_v4,
            reachable_v6,
        }
    }
}

/// Whether a dial-back that arrived from `source` can prove that `addr` (this node's,
/// as the member says it dialled) works: any source for an address that is not global
/// (a LAN member proves a LAN address); for a global one, a global source of the same
/// family that is not on one of this node's own IPv6 /64s (`own`), since a neighbour on
/// the same link reaches a global IPv6 address past the router's firewall.
pub fn credible(source: IpAddr, addr: IpAddr, own: &[IpAddr]) -> bool {
    let (source, addr) = (source.to_canonical(), addr.to_canonical());
    if !is_global(addr) {
        return true;
    }
    is_global(source) && source.is_ipv4() == addr.is_ipv4() && !on_own_link(source, own)
}

/// Whether `ip` is an IPv6 address in one of the /64s of `own`.
pub fn on_own_link(ip: IpAddr, own: &[IpAddr]) -> bool {
    match ip.to_canonical() {
        IpAddr::V6(v6) => own.iter().any(|o| match o {
            IpAddr::V6(o) => o.segments()[..4] == v6.segments()[..4],
            IpAddr::V4(_) => false,
        }),
        IpAddr::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MEMBER_ID_BYTES;

    /// A global address outside this node's networks, where honest dial-backs come from.
    const OUTSIDE: &str = "11.0.0.50";

    fn member(n: u8) -> MemberId {
        MemberId::from_bytes([n; MEMBER_ID_BYTES])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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

    /// Asks `by` to check `addr`'s port, then plays its answer, after the dial-back
    /// reached this node from `source` when there is one.
    fn check(
        c: &mut Checks,
        by: MemberId,
        addr: &str,
        outcome: DialOutcome,
        source: Option<&str>,
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
        if let Some(source) = source {
            assert_eq!(c.witnessed(nonce, by, ip(source), &[], now), None, "no answer yet");
        }
        c.answered(nonce, by, (outcome, addr), &[], None, now)
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
        c.ask_again(None);
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
        let public = [cand("11.0.0.2:7400", "listen")];
        // Said to work, never seen: nothing settles; the check ends at its time.
        assert_eq!(
            check(&mut c, member(1), "11.0.0.2:7400", DialOutcome::Works, None, t0),
            None
        );
        c.expire(t0 + ANSWER_WITHIN);
        assert!(!c.judge(&public, 8).advertised[0].checked);
        // Seen, then answered: it works.
        let v = check(
            &mut c,
            member(1),
            "11.0.0.2:7400",
            DialOutcome::Works,
            Some(OUTSIDE),
            t0,
        )
        .unwrap();
        assert!(v.works);
        let judged = c.judge(&public, 8);
        assert!(judged.advertised[0].checked);
        assert!(!judged.reachable_v4, "one member's proof");
        check(
            &mut c,
            member(2),
            "11.0.0.2:7400",
            DialOutcome::Works,
            Some("11.0.0.51"),
            t0,
        )
        .unwrap();
        let judged = c.judge(&public, 8);
        assert!(judged.reachable_v4 && !judged.reachable_v6);
        // Answered first, seen after: the same.
        let mut c = Checks::default();
        let mut n = counter();
        let [(nonce, _)] = c.due(member(1), &[7400], t0, &mut n)[..] else {
            panic!()
        };
        let answer = (DialOutcome::Works, "11.0.0.2:7400".parse().unwrap());
        assert_eq!(c.answered(nonce, member(1), answer, &[], None, t0), None);
        assert_eq!(
            c.witnessed(nonce, member(2), ip(OUTSIDE), &[], t0),
            None,
            "another member's dial-back"
        );
        assert!(c.witnessed(nonce, member(1), ip(OUTSIDE), &[], t0).unwrap().works);
    }

    /// Red-team finding: a hostile member that reached this node over the LAN (or a
    /// punched hole) answered "works" for a broken public mapping, and the node believed
    /// it was reachable and named no relays.
    #[test]
    fn a_public_address_is_proved_only_by_a_dial_from_outside_of_its_family() {
        let own = [ip("192.168.1.5"), ip("2001:470:1::5")];
        assert!(
            credible(ip("192.168.1.9"), ip("192.168.1.5"), &own),
            "a LAN address by a LAN member"
        );
        assert!(
            !credible(ip("192.168.1.9"), ip("11.0.0.2"), &own),
            "a public address by a LAN member"
        );
        assert!(
            !credible(ip("2001:470:9::1"), ip("11.0.0.2"), &own),
            "over the other family"
        );
        assert!(
            !credible(ip("2001:470:1::9"), ip("2001:470:1::5"), &own),
            "from its own /64"
        );
        assert!(credible(ip("2001:470:9::1"), ip("2001:470:1::5"), &own));
        assert!(
            credible(ip("::ffff:11.0.0.50"), ip("11.0.0.2"), &own),
            "an IPv4-mapped source"
        );
        let t0 = Instant::now();
        let mut c = Checks::default();
        let seen_from_lan = check(
            &mut c,
            member(1),
            "11.0.0.2:40000",
            DialOutcome::Works,
            Some("192.168.1.9"),
            t0,
        );
        assert_eq!(seen_from_lan, None);
        assert!(c.pending.is_empty() && c.seen.is_empty());
        // Said to have failed but seen from the LAN: the failure is not believed either.
        let v = check(
            &mut c,
            member(1),
            "11.0.0.2:40000",
            DialOutcome::Failed,
            Some("192.168.1.9"),
            t0,
        )
        .unwrap();
        assert!(!v.works);
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
        let failed = (DialOutcome::Failed, addr);
        assert_eq!(c.answered(nonce, member(2), failed, &[], None, t0), None);
        assert_eq!(c.answered(nonce + 9, member(1), failed, &[], None, t0), None);
        let elsewhere = (DialOutcome::Failed, "11.0.0.2:9".parse().unwrap());
        assert_eq!(c.answered(nonce, member(1), elsewhere, &[], None, t0), None);
        assert!(c.pending.is_empty(), "a wrong port ends the check");
        let [(nonce, _)] = c.due(member(3), &[7400], t0, &mut n)[..] else {
            panic!()
        };
        assert_eq!(
            c.answered(nonce, member(3), (DialOutcome::Refused, addr), &[], None, t0),
            None
        );
        assert!(c.seen.is_empty());
    }

    /// Red-team finding: a stranger holding every handshake slot made honest dial-backs
    /// fail, and two such failures dropped a working address.
    #[test]
    fn failures_while_the_listener_refused_connections_do_not_count() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        let mut n = counter();
        let [(nonce, _)] = c.due(member(1), &[7400], t0, &mut n)[..] else {
            panic!()
        };
        let failed = (DialOutcome::Failed, "11.0.0.2:7400".parse().unwrap());
        let later = t0 + Duration::from_secs(1);
        assert_eq!(c.answered(nonce, member(1), failed, &[], Some(later), later), None);
        assert!(c.seen.is_empty());
        let [(nonce, _)] = c.due(member(2), &[7400], later, &mut n)[..] else {
            panic!()
        };
        assert!(
            c.answered(nonce, member(2), failed, &[], Some(t0), later).is_some(),
            "refusals before the check"
        );
    }

    #[test]
    fn an_address_is_dropped_only_when_two_members_fail_and_fewer_succeed() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        let cands = [cand("11.0.0.2:7400", "upnp"), cand("192.168.1.5:7400", "listen")];
        check(&mut c, member(1), "11.0.0.2:7400", DialOutcome::Failed, None, t0).unwrap();
        assert_eq!(
            c.judge(&cands, 8).advertised.len(),
            2,
            "one member's word is not enough"
        );
        check(&mut c, member(1), "11.0.0.2:7400", DialOutcome::Failed, None, t0).unwrap();
        assert_eq!(c.judge(&cands, 8).advertised.len(), 2, "nor the same member twice");
        check(&mut c, member(2), "11.0.0.2:7400", DialOutcome::Failed, None, t0).unwrap();
        let judged = c.judge(&cands, 8);
        assert_eq!(judged.dropped, ["11.0.0.2:7400"]);
        assert_eq!(judged.advertised, [cand("192.168.1.5:7400", "listen")]);
        assert!(!judged.reachable_v4);
        // One success against two failures: still dropped; a second brings it back.
        check(
            &mut c,
            member(3),
            "11.0.0.2:7400",
            DialOutcome::Works,
            Some(OUTSIDE),
            t0,
        )
        .unwrap();
        assert_eq!(c.judge(&cands, 8).dropped.len(), 1);
        check(
            &mut c,
            member(4),
            "11.0.0.2:7400",
            DialOutcome::Works,
            Some(OUTSIDE),
            t0,
        )
        .unwrap();
        let judged = c.judge(&cands, 8);
        assert!(judged.dropped.is_empty() && judged.reachable_v4);
        assert!(judged.advertised[0].checked && !judged.advertised[1].checked);
        // Verdicts fade.
        assert!(!c.expire(t0 + FORGET - Duration::from_secs(1)));
        assert!(c.expire(t0 + FORGET));
        assert_eq!(c.judge(&cands, 8).advertised, cands);
    }

    #[test]
    fn an_unknown_address_is_advertised_once_two_members_saw_it_work_on_a_port_it_listens_on() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        let cands = [cand("192.168.1.5:7400", "listen")];
        check(
            &mut c,
            member(1),
            "11.0.0.9:7400",
            DialOutcome::Works,
            Some(OUTSIDE),
            t0,
        )
        .unwrap();
        assert_eq!(c.judge(&cands, 8).advertised, cands, "one member's word for the IP");
        check(
            &mut c,
            member(2),
            "11.0.0.9:7400",
            DialOutcome::Works,
            Some(OUTSIDE),
            t0,
        )
        .unwrap();
        let judged = c.judge(&cands, 8);
        assert!(judged.reachable_v4);
        assert_eq!(judged.advertised[0].address, "11.0.0.9:7400", "checked first");
        assert_eq!(judged.advertised[0].how, "observed");
        let only = c.judge(&cands, 1);
        assert_eq!(
            only.advertised[0].address, "11.0.0.9:7400",
            "the cap never cuts what works"
        );
        assert!(only.reachable_v4);
        // A private one is never taken from others' word.
        check(
            &mut c,
            member(1),
            "10.9.9.9:7400",
            DialOutcome::Works,
            Some("10.9.9.1"),
            t0,
        )
        .unwrap();
        check(
            &mut c,
            member(2),
            "10.9.9.9:7400",
            DialOutcome::Works,
            Some("10.9.9.1"),
            t0,
        )
        .unwrap();
        assert_eq!(c.judge(&cands, 8).advertised.len(), 2);
        // Nor one on a port it no longer listens on.
        assert_eq!(c.judge(&[cand("192.168.1.5:7500", "listen")], 8).advertised.len(), 1);
    }

    /// Red-team finding: a mapping lost upstream stayed "observed" and reachable for
    /// half an hour, and the node named no relays.
    #[test]
    fn what_was_seen_of_a_lost_mapping_is_forgotten() {
        let t0 = Instant::now();
        let mut c = Checks::default();
        let mapped = "11.0.0.2:40000";
        let cands = [cand(mapped, "upnp"), cand("192.168.1.5:7400", "listen")];
        for m in 1..=2 {
            check(&mut c, member(m), mapped, DialOutcome::Works, Some(OUTSIDE), t0).unwrap();
        }
        assert!(c.judge(&cands, 8).reachable_v4);
        c.ask_again(Some(mapped.parse().unwrap()));
        let judged = c.judge(&cands[1..], 8);
        assert!(!judged.reachable_v4);
        assert_eq!(judged.advertised, cands[1..]);
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
            Some(OUTSIDE),
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
            assert_eq!(h.admit(member(1), t0), Answer::Dial);
        }
        assert_eq!(h.admit(member(2), t0), Answer::Refuse, "too many at once");
        for _ in 0..MAX_DIALLING {
            h.done();
        }
        assert_eq!(h.admit(member(1), t0), Answer::Refuse, "over the member's minute");
        let mut admitted = 0;
        for i in 3..40 {
            if h.admit(member(i), t0) == Answer::Dial {
                admitted += 1;
                h.done();
            }
        }
        assert_eq!(
            admitted + DIAL_BACKS_PER_MEMBER as usize,
            DIAL_BACKS_PER_MINUTE as usize
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(h.admit(member(1), later), Answer::Dial);
        h.done();
        h.expire(later + Duration::from_secs(61));
        assert!(h.per_member.is_empty());
    }

    /// Red-team finding: each request over the budget cost a reply frame and a log line,
    /// without end.
    #[test]
    fn a_member_asking_far_over_its_budget_gets_no_answer() {
        let t0 = Instant::now();
        let mut h = Helper::default();
        let answers: Vec<Answer> = (0..1000).map(|_| h.admit(member(1), t0)).collect();
        let count = |a: Answer| answers.iter().filter(|x| **x == a).count();
        let budget = DIAL_BACKS_PER_MEMBER as usize;
        assert_eq!(count(Answer::Dial), budget);
        assert_eq!(count(Answer::Refuse), budget);
        assert_eq!(count(Answer::Ignore), 1000 - 2 * budget);
    }
}
