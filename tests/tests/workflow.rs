//! The offline workflow through the real binaries: identities, groups, invitations and
//! joins, in one home or two, through files and pipes, with every key type.

use std::time::Duration;

use peergroup_tests::{Home, Output};

fn membership_json(home: &Home, identity: &str, group: &str) -> serde_json::Value {
    let path = home
        .path()
        .join(format!("identities/{identity}/groups/{group}/membership.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn invite(inviter_home: &Home, inviter: &str, group: &str, identity_xml: &str, extra: &[&str]) -> String {
    let mut args = vec!["--identity", inviter, "--group", group];
    args.extend_from_slice(extra);
    args.push("-");
    inviter_home
        .run_with("invite-create", &args, Some(identity_xml.as_bytes()))
        .ok()
        .stdout
}

fn join(home: &Home, identity: &str, invitation: &str) -> Output {
    home.run_with(
        "group-join",
        &["--identity", identity, "--listen", "127.0.0.1:0", "-"],
        Some(invitation.as_bytes()),
    )
    .ok()
}

#[test]
fn the_readme_pipeline_works_in_one_fresh_home() {
    let home = Home::new();
    let dir = home.path();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let alice = home.run("identity-export", &["alice"]).ok();
    assert!(
        alice.stderr.contains("created identity alice (ed25519), member id "),
        "{}",
        alice.stderr
    );
    std::fs::write(p("alice.xml"), &alice.stdout).unwrap();
    let group = home
        .run("group-create", &["--identity", "alice", "Friends"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(uuid_like(&group), "group-create printed {group:?}");
    let bob = home.run("identity-export", &["bob"]).ok();
    std::fs::write(p("bob.xml"), &bob.stdout).unwrap();
    let inv = home
        .run(
            "invite-create",
            &["--identity", "alice", "--group", "Friends", &p("bob.xml")],
        )
        .ok();
    std::fs::write(p("bob.invite"), &inv.stdout).unwrap();
    let joined = home.run("group-join", &["--identity", "bob", &p("bob.invite")]).ok();
    assert_eq!(joined.stdout.trim(), group);
    let m = membership_json(&home, "bob", &group);
    assert_eq!(m["role"], "member");
    assert_eq!(m["group"]["name"], "Friends");
    assert!(
        !m["bootstrap"].as_array().unwrap().is_empty(),
        "the invitation carried no address: {m}"
    );
    // A second export of an existing identity prints the same XML and says nothing.
    let again = home.run("identity-export", &["alice"]).ok();
    assert_eq!(again.stdout, alice.stdout);
    assert!(again.stderr.is_empty(), "{}", again.stderr);
}

#[test]
fn two_machines_exchange_files_through_pipes_only() {
    let alice_home = Home::new();
    let bob_home = Home::new();
    alice_home.run("identity-export", &["alice"]).ok();
    let group = alice_home
        .run(
            "group-create",
            &["--identity", "alice", "--listen", "127.0.0.1:7400", "Friends"],
        )
        .ok()
        .stdout;
    let bob_xml = bob_home.run("identity-export", &["bob"]).ok().stdout;
    let invitation = invite(
        &alice_home,
        "alice",
        "Friends",
        &bob_xml,
        &["--address", "192.0.2.1:7400"],
    );
    let joined = join(&bob_home, "bob", &invitation);
    assert_eq!(joined.stdout, group);
    let m = membership_json(&bob_home, "bob", group.trim());
    assert_eq!(m["bootstrap"], serde_json::json!(["192.0.2.1:7400", "127.0.0.1:7400"]));
    assert_eq!(m["listen"], "127.0.0.1:0");
    // Nothing of alice's secrets travelled.
    assert!(!bob_home.path().join("identities/alice").exists());
    assert!(
        !bob_home
            .path()
            .join(format!("identities/bob/groups/{}/root-key.pem", group.trim()))
            .exists()
    );
}

#[test]
fn every_key_type_works_in_one_group_along_a_creator_admin_member_chain() {
    let home = Home::new();
    let mut xml = std::collections::HashMap::new();
    for (name, key) in [
        ("alice", "ed25519"),
        ("bob", "p256"),
        ("carol", "rsa2048"),
        ("dave", "rsa3072"),
    ] {
        let out = home.run("identity-export", &["--key", key, name]).ok();
        assert!(
            out.stdout.contains(&format!("<key-type>{key}</key-type>")),
            "{}",
            out.stdout
        );
        xml.insert(name, out.stdout);
    }
    let group = home
        .run("group-create", &["--identity", "alice", "Mixed"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let bob_inv = invite(&home, "alice", "Mixed", &xml["bob"], &["--role", "admin"]);
    join(&home, "bob", &bob_inv);
    // bob, an admin invited by the creator, now invites carol and dave.
    join(&home, "carol", &invite(&home, "bob", "Mixed", &xml["carol"], &[]));
    join(
        &home,
        "dave",
        &invite(&home, "bob", &group[..6], &xml["dave"], &["--role", "admin"]),
    );
    let carol = membership_json(&home, "carol", &group);
    assert_eq!(carol["role"], "member");
    assert_eq!(
        carol["chain"].as_array().unwrap().len(),
        2,
        "root -> alice -> bob -> carol"
    );
    assert_eq!(membership_json(&home, "dave", &group)["role"], "admin");
    // dave (rsa3072), an admin two issuing links down, invites erin (ed25519).
    let erin = home.run("identity-export", &["erin"]).ok().stdout;
    join(&home, "erin", &invite(&home, "dave", "Mixed", &erin, &[]));
    assert_eq!(
        membership_json(&home, "erin", &group)["chain"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn an_rsa_creator_makes_an_rsa_group_that_admits_other_key_types() {
    let home = Home::new();
    home.run("identity-export", &["--key", "rsa2048", "win"]).ok();
    let group = home
        .run("group-create", &["--identity", "win", "Windows-style"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let bob = home.run("identity-export", &["bob"]).ok().stdout;
    join(&home, "bob", &invite(&home, "win", "Windows-style", &bob, &[]));
    assert_eq!(membership_json(&home, "bob", &group)["group"]["name"], "Windows-style");
}

#[test]
fn admin_chains_stop_at_six_issuing_links() {
    let home = Home::new();
    home.run("identity-export", &["a1"]).ok();
    home.run("group-create", &["--identity", "a1", "Deep"]).ok();
    for i in 2..=6 {
        let xml = home.run("identity-export", &[&format!("a{i}")]).ok().stdout;
        join(
            &home,
            &format!("a{i}"),
            &invite(&home, &format!("a{}", i - 1), "Deep", &xml, &["--role", "admin"]),
        );
    }
    let a7 = home.run("identity-export", &["a7"]).ok().stdout;
    home.run_with(
        "invite-create",
        &["--identity", "a6", "--group", "Deep", "--role", "admin", "-"],
        Some(a7.as_bytes()),
    )
    .fails_with("would be issuing link 7 of the chain; at most 6 are allowed");
    // A member below the sixth link is fine: TLS allows six intermediates.
    join(&home, "a7", &invite(&home, "a6", "Deep", &a7, &[]));
}

#[test]
fn inspect_prints_the_invitation_and_joins_nothing() {
    let home = Home::new();
    home.run("identity-export", &["--friendly-name", "Alice A.", "alice"])
        .ok();
    home.run(
        "group-create",
        &[
            "--identity",
            "alice",
            "--classifier",
            "chess club",
            "--message-lifetime",
            "30d",
            "Friends",
        ],
    )
    .ok();
    let bob = home.run("identity-export", &["bob"]).ok().stdout;
    home.run("identity-export", &["carol"]).ok();
    let inv = invite(
        &home,
        "alice",
        "Friends",
        &bob,
        &["--role", "admin", "--valid-for", "90d", "--expires", "2d"],
    );
    let out = home
        .run_with("group-join", &["--inspect", "-"], Some(inv.as_bytes()))
        .ok();
    for needle in [
        "group: Friends (",
        "classifier: chess club",
        "issuer: Alice A. (",
        "subject: bob (",
        "role: admin",
        "valid-from: ",
        "valid-until: ",
        "expires: ",
        "message-lifetime: 30d",
        "presence-lifetime: 5m",
        "address: ",
        "status: valid",
    ] {
        assert!(
            out.stdout.contains(needle),
            "--inspect lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    assert!(home.groups_of("bob").is_empty(), "--inspect joined");
    let wrong = home.run_with(
        "group-join",
        &["--inspect", "--identity", "carol", "-"],
        Some(inv.as_bytes()),
    );
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(wrong.stderr.contains("invitation is for \"bob\""), "{}", wrong.stderr);
    // Issue 13: the same as one JSON object for scripts, invalid ones exit 1.
    let json = home
        .run_with("group-join", &["--inspect", "--json", "-"], Some(inv.as_bytes()))
        .ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["group"], "Friends");
    assert_eq!(v["classifier"], "chess club");
    assert_eq!(v["role"], "admin");
    assert_eq!(v["message_lifetime"], 30 * 86_400);
    assert_eq!(v["status"], "valid");
    assert!(v["addresses"].as_array().is_some_and(|a| !a.is_empty()), "{v}");
    let wrong = home.run_with(
        "group-join",
        &["--inspect", "--json", "--identity", "carol", "-"],
        Some(inv.as_bytes()),
    );
    assert_eq!(wrong.code, 1, "{wrong:?}");
    let v: serde_json::Value = serde_json::from_str(&wrong.stdout).unwrap();
    assert_eq!(v["status"], "invalid");
    assert!(
        v["error"].as_str().unwrap().contains("invitation is for \"bob\""),
        "{v}"
    );
    assert_eq!(
        home.run("group-join", &["--json", "-"]).code,
        2,
        "--json without --inspect"
    );
}

#[test]
fn list_shows_every_local_identity() {
    let home = Home::new();
    home.run("identity-export", &["alice"]).ok();
    home.run(
        "identity-export",
        &["--key", "p256", "--friendly-name", "Bob B.", "bob"],
    )
    .ok();
    let json = home.run("identity-export", &["--list", "--json"]).ok().stdout;
    let objects: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 2, "{json}");
    assert_eq!(
        (objects[1]["name"].as_str(), objects[1]["key_type"].as_str()),
        (Some("bob"), Some("p256"))
    );
    assert_eq!(objects[1]["friendly_name"], "Bob B.");
    assert_eq!(
        home.run("identity-export", &["--json", "alice"]).code,
        2,
        "--json without --list"
    );
    let list = home.run("identity-export", &["--list"]).ok().stdout;
    let rows: Vec<Vec<&str>> = list.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(rows[0][0], "alice");
    assert_eq!(rows[1][0], "bob");
    assert_eq!(rows[1][2], "p256");
    assert_eq!(rows[1][3], "Bob B.");
    assert_eq!(rows[0][1].len(), 40);
}

#[test]
fn an_invitation_used_after_its_expiry_is_refused_with_dates() {
    let home = Home::new();
    home.run("identity-export", &["alice"]).ok();
    home.run("group-create", &["--identity", "alice", "Friends"]).ok();
    let bob = home.run("identity-export", &["bob"]).ok().stdout;
    let inv = invite(&home, "alice", "Friends", &bob, &["--expires", "1h"]);
    let later = Home::new().at("2100-01-01T00:00:00Z");
    peergroup_tests::copy_dir(home.path(), later.path());
    let out = later
        .run_with("group-join", &["--identity", "bob", "-"], Some(inv.as_bytes()))
        .fails_with("invitation expired on ")
        .hints("new invitation");
    // The fake clock never takes effect silently (a variable left in a shell).
    assert!(
        out.stderr
            .starts_with("warning: PEERGROUP_FAKE_NOW is set: the clock starts at 2100-01-01T00:00:00Z"),
        "{}",
        out.stderr
    );
    let normal = home.run("identity-export", &["alice"]).ok();
    assert!(!normal.stderr.contains("PEERGROUP_FAKE_NOW"), "{}", normal.stderr);
}

#[test]
fn keys_are_private_and_tools_finish_in_milliseconds_once_keys_exist() {
    let home = Home::new();
    home.run("identity-export", &["--key", "rsa3072", "alice"]).ok();
    home.run("group-create", &["--identity", "alice", "Timing"]).ok();
    let bob_xml = home.run("identity-export", &["--key", "rsa3072", "bob"]).ok().stdout;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.path().join("identities/alice/key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let group_dir = home.path().join("identities/alice/groups");
    let gid = std::fs::read_dir(&group_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let root_key = group_dir.join(gid).join("root-key.pem");
    assert_eq!(std::fs::metadata(root_key).unwrap().permissions().mode() & 0o777, 0o600);
    // With RSA-3072 keys already made, no step may generate one again.
    let export = home.run("identity-export", &["alice"]).ok();
    let inv = home
        .run_with(
            "invite-create",
            &["--identity", "alice", "--group", "Timing", "-"],
            Some(bob_xml.as_bytes()),
        )
        .ok();
    let inspect = home
        .run_with("group-join", &["--inspect", "-"], Some(inv.stdout.as_bytes()))
        .ok();
    let joined = home
        .run_with("group-join", &["--identity", "bob", "-"], Some(inv.stdout.as_bytes()))
        .ok();
    let limit = Duration::from_millis(500);
    for (name, out) in [
        ("identity-export", &export),
        ("invite-create", &inv),
        ("group-join --inspect", &inspect),
        ("group-join", &joined),
    ] {
        eprintln!("{name}: {:?}", out.elapsed);
        assert!(
            out.elapsed < limit,
            "{name} took {:?} with existing RSA-3072 keys",
            out.elapsed
        );
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}
