//! Property changes: judged alone, by an admin, and the lifetimes a record is judged by
//! are those in force at its creation, in any order of arrival.

use super::admission::Rejection;
use super::properties::Properties;
use super::test_support::*;
use super::*;
use crate::credential::tests::{DAY, Fixture, Held, fixture};

const HOUR_MS: i64 = 3_600_000;

fn ms(t: time::OffsetDateTime) -> i64 {
    t.unix_timestamp() * 1000
}

/// The properties of the fixture's group with messages living `message_secs`.
fn with_message_lifetime(f: &Fixture, message_secs: u64) -> Properties {
    let mut p = Properties::of_group(&f.creator.m.group);
    p.message_lifetime_secs = message_secs;
    p
}

/// `by`'s signed change to `p`, taking effect at `at_ms`.
fn change(by: &Held, p: &Properties, at_ms: i64) -> Record {
    let root_end = by.m.root.not_after.unix_timestamp() * 1000;
    p.record(
        &by.key,
        &by.m.group.id,
        (&by.m.membership, &by.m.chain),
        at_ms,
        root_end,
    )
    .unwrap()
}

/// A chat message by `by` created at `created_ms`, living `life_ms`.
fn chat(by: &Held, created_ms: i64, life_ms: i64) -> Record {
    let mut r = Record::new(CHAT_TYPE, by.m.membership.member_id, created_ms, life_ms);
    r.data = b"hello".to_vec();
    r.sign(&by.m.group.id, &by.key).unwrap();
    r
}

fn admission_of(f: &Fixture) -> Admission {
    let m = &f.creator.m;
    let lifetimes = Lifetimes::from_secs(m.group.message_lifetime_secs, m.group.presence_lifetime_secs);
    let mut a = Admission::new(
        m.group.id,
        m.root.clone(),
        lifetimes,
        (m.membership.member_id, m.membership.clone()),
    );
    for h in [&f.admin, &f.member] {
        a.learn(h.m.membership.member_id, h.m.membership.clone());
    }
    a
}

fn rejection(a: &Admission, r: &Record, now_ms: i64) -> Option<Rejection> {
    match a.judge(r, None, now_ms, None) {
        Verdict::Reject(why) => Some(why),
        _ => None,
    }
}

#[test]
fn a_record_is_judged_by_the_lifetimes_in_force_when_it_was_created() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let t1 = ms(f.t0) + 10 * 24 * HOUR_MS;
    let now = t1 + 2 * HOUR_MS;
    // Messages live 1 day from t1 on (7 days before).
    let shorter = change(&f.admin, &with_message_lifetime(&f, 86_400), t1);
    let before = chat(&f.member, t1 - HOUR_MS, 3 * 24 * HOUR_MS);
    let after = chat(&f.member, t1 + HOUR_MS, 3 * 24 * HOUR_MS);
    let fitting = chat(&f.member, t1 + HOUR_MS, 20 * HOUR_MS);
    // Learnt first or last, the change judges the same records the same way.
    for change_first in [true, false] {
        let mut a = admission_of(&f);
        if change_first {
            assert!(matches!(a.judge(&shorter, None, now, None), Verdict::Accept(None)));
            assert!(a.set_properties(&shorter));
        }
        assert!(matches!(a.judge(&before, None, now, None), Verdict::Accept(None)));
        assert!(matches!(a.judge(&fitting, None, now, None), Verdict::Accept(None)));
        let after_verdict = rejection(&a, &after, now);
        if change_first {
            assert_eq!(after_verdict, Some(Rejection::OutlivesGroupLimit));
            assert_eq!(
                a.lifetimes_at(now).message_ms,
                86_400_000,
                "new records follow the change"
            );
        } else {
            // Not known yet: accepted now, refused once known (the next sync offers
            // it again only to nodes that lack it; every node that knows the change
            // refuses it).
            assert_eq!(after_verdict, None);
            assert!(a.set_properties(&shorter));
            assert_eq!(rejection(&a, &after, now), Some(Rejection::OutlivesGroupLimit));
            assert!(matches!(a.judge(&before, None, now, None), Verdict::Accept(None)));
        }
    }
}

#[test]
fn a_node_that_stored_a_record_before_learning_of_a_shorter_lifetime_drops_it() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let t1 = ms(f.t0) + 10 * 24 * HOUR_MS;
    let now = at_ms(t1 + 2 * HOUR_MS);
    let mut core = core_of(&f.creator, now);
    core.handle(now, up(1, &f.member));
    core.handle(now, up(2, &f.admin));
    drain(&mut core);
    let long = chat(&f.member, t1 + HOUR_MS, 3 * 24 * HOUR_MS);
    let short = chat(&f.member, t1 + HOUR_MS, 20 * HOUR_MS);
    let old = chat(&f.member, t1 - HOUR_MS, 3 * 24 * HOUR_MS);
    let ms_of = membership_record(&f.member, t1);
    core.handle(now, Input::Frame(1, records(&[&ms_of, &long, &short, &old])));
    core.flush(now);
    let held = |core: &Core<MemStore>, r: &Record| {
        core.store()
            .of_type(&CHAT_TYPE)
            .unwrap_or_else(|e| match e {})
            .iter()
            .any(|s| s.id == r.id)
    };
    assert!(held(&core, &long) && held(&core, &short) && held(&core, &old));
    let shorter = change(&f.admin, &with_message_lifetime(&f, 86_400), t1);
    core.handle(now, Input::Frame(2, records(&[&shorter])));
    core.flush(now);
    assert!(!held(&core, &long), "it outlives the lifetime in force at its creation");
    assert!(held(&core, &short) && held(&core, &old));
}

#[test]
fn property_changes_by_members_forged_short_lived_or_out_of_range_are_refused() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let t1 = ms(f.t0) + 24 * HOUR_MS;
    let a = admission_of(&f);
    let p = with_message_lifetime(&f, 86_400);
    assert!(matches!(
        a.judge(&change(&f.admin, &p, t1), None, t1, None),
        Verdict::Accept(None)
    ));
    assert!(matches!(
        a.judge(&change(&f.creator, &p, t1), None, t1, None),
        Verdict::Accept(None)
    ));
    assert_eq!(
        rejection(&a, &change(&f.member, &p, t1), t1),
        Some(Rejection::NotAnAdmin)
    );
    let mut tampered = change(&f.admin, &p, t1);
    tampered.attributes[0].1 = crate::record::AttrValue::Str("Enemies".into());
    assert_eq!(rejection(&a, &tampered, t1), Some(Rejection::BadSignature));
    let mut short = change(&f.admin, &p, t1);
    short.expires_ms = t1 + DAY.as_millis() as i64;
    short.sign(&f.admin.m.group.id, &f.admin.key).unwrap();
    assert!(matches!(rejection(&a, &short, t1), Some(Rejection::BadProperties(_))));
    let mut bad = change(&f.admin, &p, t1);
    let presence = bad
        .attributes
        .iter_mut()
        .find(|(n, _)| n == "presence_lifetime")
        .unwrap();
    presence.1 = crate::record::AttrValue::Int(1);
    bad.sign(&f.admin.m.group.id, &f.admin.key).unwrap();
    assert!(matches!(rejection(&a, &bad, t1), Some(Rejection::BadProperties(_))));
    // Under another moment's id: a change cannot replace another.
    let mut moved = change(&f.admin, &p, t1);
    moved.created_ms += 1;
    moved.sign(&f.admin.m.group.id, &f.admin.key).unwrap();
    assert_eq!(rejection(&a, &moved, t1), Some(Rejection::UnboundId));
    // Signed before its admin's membership began.
    let early = change(&f.admin, &p, ms(f.t0) - 10 * 24 * HOUR_MS);
    assert!(matches!(rejection(&a, &early, t1), Some(Rejection::ChainInvalid(_))));
}

#[test]
fn a_demoted_or_revoked_admin_changes_nothing_more_however_its_change_is_dated() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let t1 = ms(f.t0) + 24 * HOUR_MS;
    let kept = change(&f.admin, &with_message_lifetime(&f, 86_400), t1);
    let backdated = change(&f.admin, &with_message_lifetime(&f, 60), t1 - HOUR_MS);
    let mut a = admission_of(&f);
    let demotion = credential::assign_role(
        &f.creator.key,
        &f.creator.m,
        &f.admin.m.membership,
        crate::pki::Role::Member,
        30 * DAY,
        clock::from_unix(t1 / 1000 + 7200),
        vec![revocation::record_key(&kept)],
    )
    .unwrap();
    a.apply_role(&demotion);
    let now = t1 + 3 * HOUR_MS;
    assert!(matches!(a.judge(&kept, None, now, None), Verdict::Accept(None)));
    assert_eq!(rejection(&a, &backdated, now), Some(Rejection::Revoked));
}

#[test]
fn a_node_tells_of_a_change_stores_it_and_keeps_it_across_a_restart() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let t1 = ms(f.t0) + 24 * HOUR_MS;
    let now = at_ms(t1 + 1000);
    let mut core = core_of(&f.member, now);
    core.handle(now, up(1, &f.admin));
    drain(&mut core);
    let mut p = with_message_lifetime(&f, 86_400);
    p.comment = "weekly sync".into();
    let r = change(&f.admin, &p, t1);
    core.handle(now, Input::Frame(1, records(&[&r])));
    core.flush(now);
    let told = drain(&mut core).into_iter().find_map(|o| match o {
        Output::Event(Event::Property { properties, by, .. }) => Some((properties, by)),
        _ => None,
    });
    assert_eq!(told, Some((p.clone(), Some(f.admin.m.membership.member_id))));
    assert_eq!(core.properties(), p);
    // Told once: the same change again is a duplicate.
    core.handle(now, Input::Frame(1, records(&[&r])));
    core.flush(now);
    assert!(
        !drain(&mut core)
            .iter()
            .any(|o| matches!(o, Output::Event(Event::Property { .. })))
    );
    // A node started over the same store has it in force at once.
    let again = Core::new(config_of(&f.member), core.store().clone(), now).unwrap();
    assert_eq!(again.properties(), p);
}

/// Red-team finding: an admin whose certificate had ended could still sign a change
/// dated inside its old validity, and every node took it.
#[test]
fn a_change_by_an_admin_whose_membership_ended_or_who_is_a_member_now_is_not_taken() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let end_ms = ms(f.admin.m.membership.not_after);
    let dated = change(&f.admin, &with_message_lifetime(&f, 60), end_ms - HOUR_MS);
    let a = admission_of(&f);
    assert!(
        matches!(a.judge(&dated, None, end_ms + HOUR_MS, None), Verdict::Hold(m) if m == f.admin.m.membership.member_id)
    );
    // Invited again as a member (a later certificate, no demotion record).
    let now_ms = ms(f.t0) + 20 * 24 * HOUR_MS;
    let member_again = credential::assign_role(
        &f.creator.key,
        &f.creator.m,
        &f.admin.m.membership,
        crate::pki::Role::Member,
        30 * DAY,
        clock::from_unix(now_ms / 1000 - 3600),
        Vec::new(),
    )
    .unwrap();
    let mut a = admission_of(&f);
    a.learn(f.admin.m.membership.member_id, member_again.membership.clone());
    let backdated = change(&f.admin, &with_message_lifetime(&f, 60), now_ms - 2 * 24 * HOUR_MS);
    assert_eq!(rejection(&a, &backdated, now_ms), Some(Rejection::NotAnAdmin));
}

/// Red-team finding: a revocation left its admin's change in force until a restart,
/// and a restart over a store holding both put it in force again.
#[test]
fn a_revocation_takes_its_admins_change_out_of_force_now_and_after_a_restart() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let t1 = ms(f.t0) + 24 * HOUR_MS;
    let now = at_ms(t1 + 1000);
    let mut core = core_of(&f.member, now);
    core.handle(now, up(1, &f.creator));
    drain(&mut core);
    let admin_ms = membership_record(&f.admin, t1);
    let p = with_message_lifetime(&f, 60);
    let c = change(&f.admin, &p, t1);
    core.handle(now, Input::Frame(1, records(&[&admin_ms, &c])));
    core.flush(now);
    assert_eq!(core.properties(), p);
    let rev = revocation_of(&f.creator, &f.admin, Vec::new(), t1 + 500);
    core.handle(now, Input::Frame(1, records(&[&rev])));
    core.flush(now);
    let base = Properties::of_group(&f.member.m.group);
    assert_eq!(core.properties(), base, "out of force at once");
    let told = drain(&mut core)
        .into_iter()
        .any(|o| matches!(o, Output::Event(Event::Property { .. })));
    assert!(told, "members are told the properties changed back");
    // A store that holds the change and the revocation (stored offline, say).
    let mut store = MemStore::new();
    let puts: Vec<crate::store::Put> = [&admin_ms, &c, &rev]
        .iter()
        .map(|r| crate::store::Put::new((*r).clone(), false, 0))
        .collect();
    store.put_batch(&puts).unwrap_or_else(|e| match e {});
    let again = Core::new(config_of(&f.member), store, now).unwrap();
    assert_eq!(again.properties(), base);
}

/// Red-team finding: a node put a change dated a few minutes ahead in force for its own
/// records at once, and every node that judged them by the change in force at their
/// creation refused them.
#[test]
fn a_change_dated_ahead_governs_new_records_only_from_its_time() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let t1 = ms(f.t0) + 24 * HOUR_MS;
    let now = at_ms(t1);
    let mut core = core_of(&f.member, now);
    core.handle(now, up(1, &f.admin));
    drain(&mut core);
    let ahead = change(&f.admin, &with_message_lifetime(&f, 30 * 86_400), t1 + 4 * 60_000);
    core.handle(now, Input::Frame(1, records(&[&ahead])));
    core.flush(now);
    core.handle(now, Input::Command(7, Command::Publish("early".into())));
    core.flush(now);
    let mine = core.store().of_type(&CHAT_TYPE).unwrap_or_else(|e| match e {});
    let r = mine.iter().find(|r| r.data == b"early").expect("published");
    let a = admission_of(&f);
    assert!(!admission::outlives(
        &r.rtype,
        r.created_ms,
        r.expires_ms,
        &a.lifetimes_at(r.created_ms)
    ));
}

/// Red-team finding: a change stored while the node was stopped never dropped what it
/// refuses.
#[test]
fn a_change_found_in_the_store_at_start_drops_what_it_refuses() {
    let f = fixture(clock::from_unix(1_800_000_000));
    let t1 = ms(f.t0) + 10 * 24 * HOUR_MS;
    let now = at_ms(t1 + 2 * HOUR_MS);
    let long = chat(&f.member, t1 + HOUR_MS, 3 * 24 * HOUR_MS);
    let shorter = change(&f.admin, &with_message_lifetime(&f, 86_400), t1);
    let mut store = MemStore::new();
    let puts: Vec<crate::store::Put> = [&membership_record(&f.member, t1), &long, &shorter]
        .iter()
        .map(|r| crate::store::Put::new((*r).clone(), false, 0))
        .collect();
    store.put_batch(&puts).unwrap_or_else(|e| match e {});
    let core = Core::new(config_of(&f.creator), store, now).unwrap();
    assert!(core.store().get(&long.id).unwrap_or_else(|e| match e {}).is_none());
}
