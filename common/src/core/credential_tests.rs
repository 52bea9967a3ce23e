//! Credentials through a core driven by hand: adopting one's own, and an admin renewing
//! the members that are due.

use super::test_support::*;
use super::*;
use crate::credential::tests::{DAY, Fixture, Held, fixture, invite};
use crate::pki::Role;

fn credentials_in(core: &Core<MemStore>) -> Vec<Record> {
    core.store().of_type(&CREDENTIAL_TYPE).unwrap_or_else(|e| match e {})
}

#[test]
fn a_credential_for_this_node_is_adopted_published_and_handed_to_the_driver() {
    let f: Fixture = fixture(clock::from_unix(1_800_000_000));
    let t = clock::add(f.t0, 20 * DAY);
    let now = at(t);
    let mut core = core_of(&f.member, now);
    core.handle(now, up(1, &f.admin));
    drain(&mut core);
    let c = credential::issue(
        &f.admin.key,
        &f.admin.m,
        &f.member.m.membership,
        30 * DAY,
        t,
        Vec::new(),
    )
    .unwrap();
    let r = credential::record(
        &f.admin.key,
        f.admin.m.membership.member_id,
        &f.admin.m.group.id,
        &c,
        now.unix_ms(),
    )
    .unwrap();
    core.handle(
        now,
        Input::Frame(
            1,
            Message::Records {
                sync: false,
                bodies: vec![r.encode()],
            },
        ),
    );
    core.flush(now);
    let out = drain(&mut core);
    let saved = out.iter().find_map(|o| match o {
        Output::Membership(m) => Some(m),
        _ => None,
    });
    assert_eq!(
        saved.map(|m| &m.membership.der),
        Some(&c.membership.der),
        "the driver saves it"
    );
    assert!(out.iter().any(|o| matches!(o, Output::Event(Event::Credential { .. }))));
    assert_eq!(
        core.membership().membership.der,
        c.membership.der,
        "it signs with it from now on"
    );
    let published = core
        .store()
        .get(&record::per_member_id(&MEMBERSHIP_TYPE, &core.member_id()))
        .unwrap_or_else(|e| match e {})
        .unwrap();
    assert_eq!(published.version, admission::membership_version(&c.membership));
    // The same credential again changes nothing.
    core.handle(
        now,
        Input::Frame(
            1,
            Message::Records {
                sync: false,
                bodies: vec![r.encode()],
            },
        ),
    );
    core.flush(now);
    assert!(!drain(&mut core).iter().any(|o| matches!(o, Output::Membership(_))));
}

#[test]
fn an_admin_renews_the_members_that_are_due_but_not_the_creator_nor_twice() {
    let f = fixture(clock::from_unix(1_800_000_000));
    // A member the admin invited for as long as it could: until the admin's own end.
    let late = invite(&f.admin, "late", Role::Member, f.t0, 60 * DAY);
    // Both end at t0 + 60 days.
    let t = clock::add(f.t0, 58 * DAY);
    let now = at(t);
    // The creator first renews itself (its own certificates end with everyone's).
    let renewed = credential::renew_creator(&f.creator.m, &f.root_key, 90 * DAY, t).unwrap();
    let creator = Held {
        key: rcgen::KeyPair::try_from(f.creator.key.serialize_der().as_slice()).unwrap(),
        m: renewed,
    };
    let mut core = core_of(&creator, now);
    core.handle(now, up(1, &f.admin));
    core.handle(now, up(2, &late));
    drain(&mut core);
    core.handle_timeout(now);
    core.flush(now);
    let out = drain(&mut core);
    let mut renewed_for: Vec<MemberId> = credentials_in(&core).iter().filter_map(Record::subject).collect();
    renewed_for.sort();
    let mut want = vec![f.admin.m.membership.member_id, late.m.membership.member_id];
    want.sort();
    assert_eq!(renewed_for, want);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::Event(Event::Credential { .. })))
            .count(),
        2
    );
    // Flooded to both neighbours.
    assert!(out.iter().any(|o| matches!(o, Output::Transmit { conn: 1, .. })));
    // A minute on, nothing is due any more.
    let later = Now {
        instant: now.instant + RENEWAL_CHECK_EVERY,
        unix_ns: now.unix_ns + 60_000_000_000,
    };
    core.handle_timeout(later);
    assert_eq!(credentials_in(&core).len(), 2);
    assert!(
        !drain(&mut core)
            .iter()
            .any(|o| matches!(o, Output::Event(Event::Credential { .. })))
    );
}

#[test]
fn an_admin_does_not_renew_what_its_own_certificate_would_not_extend() {
    let f = fixture(clock::from_unix(1_800_000_000));
    // Invited until the admin's own end; due two days before it.
    let late = invite(&f.admin, "late", Role::Member, f.t0, 60 * DAY);
    let now = at(clock::add(f.t0, 58 * DAY));
    let mut core = core_of(&f.admin, now);
    core.handle(now, up(1, &late));
    core.handle_timeout(now);
    core.flush(now);
    assert!(credentials_in(&core).is_empty());
}

fn admitted(core: &mut Core<MemStore>, r: &Record) -> Result<(), String> {
    core.handle(
        at_ms(r.modified_ms),
        Input::Command(5, Command::Admit(vec![r.encode()])),
    );
    drain(core)
        .into_iter()
        .find_map(|o| match o {
            Output::Reply(5, Reply::Admitted(mut v)) => v.pop(),
            _ => None,
        })
        .unwrap()
}

/// Roles: an admin made member adopts a member's certificate (no issuing one); what it
/// issued before (kept) stands, what it issues after, however dated, is refused; made
/// admin again, it may issue.
#[test]
fn an_admin_made_member_issues_nothing_more_and_made_admin_again_may() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let t = clock::add(f.t0, DAY);
    let now = at(t);
    let ms = now.unix_ms();
    let mut creator = core_of(&f.creator, now);
    let mut admin = core_of(&f.admin, now);
    let demotion = credential::assign_role(
        &f.creator.key,
        &f.creator.m,
        &f.admin.m.membership,
        Role::Member,
        30 * DAY,
        t,
        vec![revocation::cert_key(
            &f.member.m.membership,
            f.admin.m.issuing.as_ref().unwrap(),
        )],
    )
    .unwrap();
    let record = |c: &admission::Credential, ms| {
        credential::record(
            &f.creator.key,
            f.creator.m.membership.member_id,
            &f.creator.m.group.id,
            c,
            ms,
        )
        .unwrap()
    };
    let demote = record(&demotion, ms);
    assert_eq!(admitted(&mut creator, &demote), Ok(()));
    // The admin's own node takes it: a member now, with no issuing certificate.
    admin.handle(now, up(1, &f.creator));
    drain(&mut admin);
    admin.handle(
        now,
        Input::Frame(
            1,
            Message::Records {
                sync: false,
                bodies: vec![demote.encode()],
            },
        ),
    );
    admin.flush(now);
    let saved = drain(&mut admin).into_iter().find_map(|o| match o {
        Output::Membership(m) => Some(m),
        _ => None,
    });
    let saved = saved.expect("adopted");
    assert_eq!(saved.role, Role::Member);
    assert!(saved.issuing.is_none());
    // What it issued before stands; what it issues after does not.
    assert_eq!(admitted(&mut creator, &membership_record(&f.member, ms)), Ok(()));
    let late = invite(&f.admin, "late", Role::Member, f.t0, 30 * DAY);
    assert!(admitted(&mut creator, &membership_record(&late, ms)).is_err());
    // Made admin again (a minute on), it may.
    let t2 = clock::add(t, std::time::Duration::from_secs(120));
    let promotion = credential::assign_role(
        &f.creator.key,
        &f.creator.m,
        &f.admin.m.membership,
        Role::Admin,
        30 * DAY,
        t2,
        Vec::new(),
    )
    .unwrap();
    assert!(promotion.issuing.is_some());
    let ms2 = t2.unix_timestamp() * 1000;
    assert_eq!(admitted(&mut creator, &record(&promotion, ms2)), Ok(()));
    assert_eq!(admitted(&mut creator, &membership_record(&late, ms2)), Ok(()));
}
