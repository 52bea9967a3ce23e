//! Regenerates `tests/testdata/`: a fixture home and one file per good or bad input.
//!
//! Run after `cargo build --bins`:
//! `cargo run -p peergroup-tests --example make_testdata -- tests/testdata`
//! Honest cases come from the real binaries (with `PEERGROUP_FAKE_NOW` to place some in
//! the past or future); forged ones are built with the library, signed as an attacker
//! could sign them. The files are committed; tests read them by name.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::clock;
use common::home::Home;
use common::identity::{Identity, PublicIdentity};
use common::invitation::Invitation;
use common::membership;
use common::pki::{self, Cert, CertSpec, Claim, KeyType, Role};

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "tests/testdata".into()));
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(out.join("identity")).unwrap();
    fs::create_dir_all(out.join("invitation")).unwrap();
    let home_dir = out.join("home");
    let g = Gen {
        bin,
        home: home_dir.clone(),
    };

    // The cast: alice creates Friends; mallory is a plain member; bob and carol are
    // invitees; eve runs her own group.
    let alice_xml = g.run(&["identity-export", "alice"], None, None);
    let bob_xml = g.run(&["identity-export", "bob"], None, None);
    let carol_xml = g.run(&["identity-export", "--key", "p256", "carol"], None, None);
    let mallory_xml = g.run(&["identity-export", "mallory"], None, None);
    g.run(&["identity-export", "eve"], None, None);
    let _ = alice_xml;
    g.run(
        &[
            "group-create",
            "--identity",
            "alice",
            "--member-lifetime",
            "36000d",
            "--listen",
            "127.0.0.1:7400",
            "Friends",
        ],
        None,
        None,
    );
    let invite = |who: &[u8], extra: &[&str], now: Option<&str>| {
        let mut args = vec![
            "invite-create",
            "--identity",
            "alice",
            "--group",
            "Friends",
            "--expires",
            "36000d",
        ];
        args.extend_from_slice(extra);
        args.push("-");
        g.run(&args, Some(who), now)
    };
    let mallory_inv = invite(&mallory_xml, &[], None);
    fs::write(out.join("mallory.invite"), &mallory_inv).unwrap();
    g.run(
        &["group-join", "--identity", "mallory", "--listen", "127.0.0.1:7401", "-"],
        Some(&mallory_inv),
        None,
    );
    let valid = invite(&bob_xml, &[], None);
    fs::write(out.join("invitation/valid-bob.invite"), &valid).unwrap();
    fs::write(out.join("invitation/for-carol.invite"), invite(&carol_xml, &[], None)).unwrap();
    fs::write(out.join("identity/valid-bob.xml"), &bob_xml).unwrap();

    // Time-shifted groups: one made in 2020 (its invitation long expired), one made
    // for 2090 (not valid yet).
    let past = "2020-01-01T00:00:00Z";
    let future = "2090-01-01T00:00:00Z";
    for (name, now, lifetime) in [("Old", past, "36000d"), ("Future", future, "3650d")] {
        g.run(
            &[
                "group-create",
                "--identity",
                "alice",
                "--member-lifetime",
                lifetime,
                "--listen",
                "127.0.0.1:7400",
                name,
            ],
            None,
            Some(now),
        );
    }
    let timed = |group: &str, expires: &str, now: &str| {
        g.run(
            &[
                "invite-create",
                "--identity",
                "alice",
                "--group",
                group,
                "--expires",
                expires,
                "-",
            ],
            Some(&bob_xml),
            Some(now),
        )
    };
    fs::write(out.join("invitation/expired.invite"), timed("Old", "15d", past)).unwrap();
    fs::write(
        out.join("invitation/not-yet-valid.invite"),
        timed("Future", "15d", future),
    )
    .unwrap();

    let home = Home::resolve(Some(&home_dir)).unwrap();
    let valid_text = String::from_utf8(valid.clone()).unwrap();
    let inv = Invitation::parse("valid", &valid).unwrap();
    let bob = PublicIdentity::from_xml("bob", &bob_xml).unwrap();

    // Forged: mallory, a plain member, "invites" bob with her membership key.
    let mallory = Identity::load(&home, "mallory").unwrap();
    let mallory_m = membership::find(&home, "mallory", "Friends").unwrap();
    let forged_member = issue_membership(&inv, &bob, &mallory_m.membership, &mallory.key);
    let mut chain = vec![mallory_m.membership.clone()];
    chain.extend(mallory_m.chain.iter().cloned());
    let mut body = inv.body.clone();
    body.issuer_id = mallory.member_id();
    body.issuer_name = "mallory".into();
    let forged = resign(body, inv.root.clone(), forged_member, chain, &mallory.key);
    fs::write(out.join("invitation/non-admin.invite"), forged.to_xml()).unwrap();

    // Forged: eve makes her own root claiming Friends' group id and signs a chain under it.
    let eve = Identity::load(&home, "eve").unwrap();
    let fake_root_key = KeyType::Ed25519.generate().unwrap();
    let now = clock::now();
    let spec = |claim, cn: &str| CertSpec {
        common_name: cn.into(),
        claim,
        not_before: clock::from_unix(now.unix_timestamp() - 60),
        not_after: clock::add(now, std::time::Duration::from_secs(3000 * 86_400)),
    };
    let group = inv.body.group.id;
    let fake_root = Cert::parse(
        &pki::self_signed(&spec(Claim::Root { group }, "Friends root"), &fake_root_key).unwrap(),
        "r",
    )
    .unwrap();
    let eve_issuing = Cert::parse(
        &pki::issue(
            &spec(
                Claim::Issuing {
                    group,
                    member: eve.member_id(),
                },
                "eve",
            ),
            &pki::spki_of(&eve.key),
            &fake_root.der,
            &fake_root_key,
        )
        .unwrap(),
        "i",
    )
    .unwrap();
    let member = issue_membership(&inv, &bob, &eve_issuing, &eve.key);
    let mut body = inv.body.clone();
    body.issuer_id = eve.member_id();
    body.issuer_name = "eve".into();
    // The real root travels in the file, so the chain leads to a different root.
    let forged = resign(body, inv.root.clone(), member, vec![eve_issuing], &eve.key);
    fs::write(out.join("invitation/forged-root.invite"), forged.to_xml()).unwrap();

    // Tampered copies of the valid invitation: any changed signed byte.
    let field_b64 = |text: &str, field: &str| -> (usize, usize) {
        let start = text.find(&format!("<{field}>")).unwrap() + field.len() + 2;
        let end = text[start..].find(&format!("</{field}>")).unwrap() + start;
        (start, end)
    };
    let flip_in = |text: &str, field: &str| -> String {
        // Change one base64 digit in the middle of the field: a different byte.
        let (start, end) = field_b64(text, field);
        let body: Vec<usize> = (start..end)
            .filter(|i| text.as_bytes()[*i].is_ascii_alphanumeric())
            .collect();
        let at = body[body.len() / 2];
        let mut bytes = text.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let w = |name: &str, data: &[u8]| fs::write(out.join("invitation").join(name), data).unwrap();
    w("tampered-body.invite", flip_in(&valid_text, "signed-body").as_bytes());
    w(
        "tampered-signature.invite",
        flip_in(&valid_text, "signature").as_bytes(),
    );
    w(
        "tampered-certificate.invite",
        flip_in(&valid_text, "membership-certificate").as_bytes(),
    );
    w(
        "tampered-group-name.invite",
        valid_text
            .replace("<group-name>Friends</group-name>", "<group-name>Fiends</group-name>")
            .as_bytes(),
    );
    w(
        "tampered-role.invite",
        valid_text
            .replace("<role>member</role>", "<role>admin</role>")
            .as_bytes(),
    );
    let eve_m = {
        g.run(
            &[
                "group-create",
                "--identity",
                "eve",
                "--listen",
                "127.0.0.1:7402",
                "Evil",
            ],
            None,
            None,
        );
        membership::find(&home, "eve", "Evil").unwrap()
    };
    let (rs, re) = field_b64(&valid_text, "root-certificate");
    let eve_root_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&eve_m.root.der)
    };
    w(
        "swapped-root.invite",
        format!("{}{}{}", &valid_text[..rs], eve_root_b64, &valid_text[re..]).as_bytes(),
    );
    write_structural(
        &out.join("invitation"),
        "invite",
        &valid_text,
        "peergroup-invitation",
        "group-name",
        "membership-certificate",
    );
    let bob_text = String::from_utf8(bob_xml.clone()).unwrap();
    write_structural(
        &out.join("identity"),
        "xml",
        &bob_text,
        "peergroup-identity",
        "friendly-name",
        "certificate",
    );
    let wi = |name: &str, data: &str| fs::write(out.join("identity").join(name), data).unwrap();
    wi(
        "changed-friendly-name.xml",
        &bob_text.replace("<friendly-name>bob<", "<friendly-name>alice<"),
    );
    wi(
        "changed-member-id.xml",
        &bob_text.replace(&bob.member_id().to_string(), &"0".repeat(40)),
    );
    let (cs, ce) = field_b64(&bob_text, "certificate");
    let membership_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&mallory_m.membership.der)
    };
    wi(
        "membership-certificate.xml",
        &format!("{}{}{}", &bob_text[..cs], membership_b64, &bob_text[ce..]),
    );
    let foreign_key = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["example.org".to_string()])
        .unwrap()
        .self_signed(&foreign_key)
        .unwrap();
    let foreign_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(foreign.der())
    };
    wi(
        "foreign-certificate.xml",
        &format!("{}{}{}", &bob_text[..cs], foreign_b64, &bob_text[ce..]),
    );

    // Lock files are runtime state, not fixtures.
    for entry in walk(&home_dir) {
        if entry.file_name().is_some_and(|n| n == ".lock") {
            fs::remove_file(entry).unwrap();
        }
    }
    eprintln!("wrote {}", out.display());
}

struct Gen {
    bin: PathBuf,
    home: PathBuf,
}

impl Gen {
    fn run(&self, args: &[&str], stdin: Option<&[u8]>, now: Option<&str>) -> Vec<u8> {
        use std::io::Write;
        let mut cmd = Command::new(self.bin.join(args[0]));
        cmd.args(&args[1..])
            .env("PEERGROUP_HOME", &self.home)
            .env_remove("PEERGROUP_FAKE_NOW");
        if let Some(now) = now {
            cmd.env("PEERGROUP_FAKE_NOW", now);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e} (run cargo build --bins first)"));
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?} failed");
        out.stdout
    }
}

fn issue_membership(inv: &Invitation, who: &PublicIdentity, issuer: &Cert, key: &rcgen::KeyPair) -> Cert {
    let spec = CertSpec {
        common_name: who.friendly_name().into(),
        claim: Claim::Membership {
            group: inv.body.group.id,
            member: who.member_id(),
            role: Role::Member,
        },
        not_before: inv.membership.not_before,
        not_after: inv.membership.not_after,
    };
    Cert::parse(&pki::issue(&spec, &who.cert.spki, &issuer.der, key).unwrap(), "m").unwrap()
}

fn resign(
    mut body: common::invitation::Body,
    root: Cert,
    member: Cert,
    chain: Vec<Cert>,
    key: &rcgen::KeyPair,
) -> Invitation {
    body.root_sha256 = pki::sha256_hex(&root.der);
    body.membership_sha256 = pki::sha256_hex(&member.der);
    body.chain_sha256 = chain.iter().map(|c| pki::sha256_hex(&c.der)).collect();
    Invitation::sign(body, root, member, None, chain, key).unwrap()
}

/// Bad shapes of a document, derived from a good one.
fn write_structural(dir: &Path, ext: &str, good: &str, root: &str, text_field: &str, b64_field: &str) {
    let w = |name: &str, data: &[u8]| fs::write(dir.join(format!("{name}.{ext}")), data).unwrap();
    w("empty", b"");
    w("truncated", &good.as_bytes()[..good.len() / 2]);
    w("not-xml", b"this is a letter, not an XML document\n");
    w("binary", &[0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00, 0x01]);
    w(
        "wrong-root",
        good.replace(&format!("<{root} "), "<something-else ")
            .replace(&format!("</{root}>"), "</something-else>")
            .as_bytes(),
    );
    w(
        "unsupported-version",
        good.replace("version=\"1\">", "version=\"2\">").as_bytes(),
    );
    let line = good.lines().find(|l| l.contains(&format!("<{text_field}>"))).unwrap();
    w(
        "duplicate-element",
        good.replacen(line, &format!("{line}\n{line}"), 1).as_bytes(),
    );
    w(
        "unknown-element",
        good.replacen(line, &format!("{line}\n  <comment>hello</comment>"), 1)
            .as_bytes(),
    );
    w(
        "nested-element",
        good.replacen(line, &line.replace("</", "<b>x</b></"), 1).as_bytes(),
    );
    let doctype = format!("<!DOCTYPE {root} [<!ENTITY lol \"lol\">]>\n");
    w(
        "doctype",
        good.replacen("?>\n", &format!("?>\n{doctype}"), 1).as_bytes(),
    );
    w(
        "entity",
        good.replacen(line, &line.replace("</", "&lol;</"), 1).as_bytes(),
    );
    w(
        "trailing-content",
        format!("{good}<{root} version=\"1\"/>\n").as_bytes(),
    );
    w("trailing-text", format!("{good}and then some\n").as_bytes());
    w(
        "oversized",
        format!("{}<!-- {} -->\n", good, "x".repeat(common::xml::MAX_DOCUMENT_BYTES)).as_bytes(),
    );
    let start = good.find(&format!("<{b64_field}>")).unwrap() + b64_field.len() + 2;
    let end = good[start..].find(&format!("</{b64_field}>")).unwrap() + start;
    w(
        "bad-base64",
        format!("{}\n    @@not*base64@@\n  {}", &good[..start], &good[end..]).as_bytes(),
    );
    w(
        "not-der",
        format!("{}\n    aGVsbG8gd29ybGQ=\n  {}", &good[..start], &good[end..]).as_bytes(),
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
