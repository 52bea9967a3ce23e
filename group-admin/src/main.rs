//! group-admin: an admin's actions on a group, each a record every node checks.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::admin::{self, Session};
use common::cli::{self, MembershipArgs, parse_duration_arg};
use common::pki::Role;

/// Act on GROUP as an admin: renew members' credentials, change roles, revoke members,
/// set the group's properties.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  group-admin renew --identity alice --group Friends bob\n  group-admin renew --identity alice --group Friends --all\n  group-admin role --identity alice --group Friends bob admin\n  group-admin revoke --identity alice --group Friends bob --reason \"laptop stolen\"\n  group-admin set --identity alice --group Friends --message-lifetime 30d --comment \"weekly sync\""
)]
struct Args {
    #[command(subcommand)]
    action: Action,
}

/// The admin's session in the membership `t` names.
fn open(t: &MembershipArgs) -> anyhow::Result<Session> {
    let home = t.home.home()?;
    Session::open(&home, &t.identity, &t.group)
        .with_context(|| format!("cannot act as {:?} in {:?}", t.identity, t.group))
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Issue fresh membership certificates (PeerGroupIssueCredentials): same key, name
    /// and role, valid for the group's member lifetime (capped at this admin's own).
    /// With group-chat running for this membership they spread at once, else at its
    /// next start. Prints one line per member: name, member id, valid until.
    Renew {
        #[command(flatten)]
        target: MembershipArgs,
        /// Renew every member known here but this admin and the creator
        #[arg(long, conflicts_with = "member")]
        all: bool,
        /// How long the new certificates last [default: the group's member lifetime]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        valid_for: Option<Duration>,
        /// The member: its name, member id or a unique id prefix
        #[arg(required_unless_present = "all")]
        member: Option<String>,
    },
    /// Give MEMBER the role ROLE (admin or member): fresh certificates with that role
    /// (an admin's with an issuing certificate), which its node adopts, so a member
    /// made admin can invite at once. An admin made member issues nothing more: of
    /// what it issued, what this store holds stays valid, anything else is refused
    /// everywhere. Prints one line: name, member id, role, valid until.
    Role {
        #[command(flatten)]
        target: MembershipArgs,
        /// How long the new certificates last [default: the group's member lifetime]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        valid_for: Option<Duration>,
        /// The member: its name, member id or a unique id prefix
        member: String,
        /// admin or member
        role: Role,
    },
    /// Revoke MEMBER: every node refuses its connections and anything it makes from now
    /// on, closes its connections and stops listing it; its own group-chat exits 1
    /// saying who revoked it. What of it this store holds now stays valid. The creator
    /// cannot be revoked. Prints one line: name, member id, records kept.
    Revoke {
        #[command(flatten)]
        target: MembershipArgs,
        /// Why (shown to every member, and to the revoked member)
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
        /// The member: its name, member id or a unique id prefix
        member: String,
    },
    /// Set the group's properties (PeerGroupSetProperties): each option given replaces
    /// the value in force, from now on, for every member. A record is judged by the
    /// lifetimes in force when it was created. Prints one line: name, classifier,
    /// comment, message lifetime, presence lifetime (tab-separated).
    Set {
        #[command(flatten)]
        target: MembershipArgs,
        /// The group's friendly name (new invitations carry it)
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
        /// The classifier (free text; empty to clear)
        #[arg(long, value_name = "TEXT")]
        classifier: Option<String>,
        /// A comment about the group (one line, up to 1,024 characters; empty to clear)
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// How long chat messages live from now on
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        message_lifetime: Option<Duration>,
        /// How long a presence lasts without a refresh from now on (at least 3s)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        presence_lifetime: Option<Duration>,
    },
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::run("group-admin", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let note = |line: &str| cli::note("group-admin", line);
    match args.action {
        Action::Set {
            target,
            name,
            classifier,
            comment,
            message_lifetime,
            presence_lifetime,
        } => {
            let s = open(&target)?;
            let m = &s.membership;
            let changes = admin::PropertyChanges {
                name,
                classifier,
                comment,
                message_lifetime,
                presence_lifetime,
            };
            // To the millisecond: two changes made within a second are two.
            let at_ms = i64::try_from(common::clock::now_precise().unix_timestamp_nanos() / 1_000_000)?;
            let (record, p) = admin::property_change(&s.identity, m, &s.store, &changes, at_ms)?;
            let done = s.publish(
                std::slice::from_ref(&record),
                &format!("set the properties of {}", m.group.name),
            )?;
            let d = |secs: u64| common::clock::format_duration(Duration::from_secs(secs));
            let line = format!(
                "{}\t{}\t{}\t{}\t{}\n",
                p.name,
                p.classifier,
                p.comment,
                d(p.message_lifetime_secs),
                d(p.presence_lifetime_secs)
            );
            cli::write_stdout(line.as_bytes())?;
            note(&done);
        }
        Action::Renew {
            target,
            all: _,
            valid_for,
            member,
        } => {
            let s = open(&target)?;
            let (m, known) = (&s.membership, &s.known);
            let targets = admin::renewal_targets(m, known, member.as_deref())?;
            let lifetime = valid_for.unwrap_or(Duration::from_secs(m.group.member_lifetime_secs));
            let (records, skipped) = admin::renew(&s.identity, m, known, &targets, lifetime, s.now)?;
            for (cert, why) in &skipped {
                note(&format!("not renewing {}: {why}", known.names.display(&cert.member_id)));
            }
            if records.is_empty() {
                anyhow::bail!("nothing renewed in {}", m.group.name);
            }
            let done = s.publish(
                &records,
                &format!("renewed {} member(s) of {}", records.len(), m.group.name),
            )?;
            let lines: String = records
                .iter()
                .map(|r| admin::describe(r, &known.names) + "\n")
                .collect();
            cli::write_stdout(lines.as_bytes())?;
            note(&done);
        }
        Action::Role {
            target,
            valid_for,
            member,
            role,
        } => {
            let s = open(&target)?;
            let m = &s.membership;
            let lifetime = valid_for.unwrap_or(Duration::from_secs(m.group.member_lifetime_secs));
            let record = admin::role_change(&s.identity, m, &s.store, &s.known, &member, role, lifetime, s.now)?;
            let line = admin::describe(&record, &s.known.names);
            let (who, rest) = line.split_once('\t').unwrap_or((&line, ""));
            let (id, until) = rest.split_once('\t').unwrap_or((rest, ""));
            let article = if role == Role::Admin { "an" } else { "a" };
            let done = s.publish(
                std::slice::from_ref(&record),
                &format!("{who} is now {article} {role} of {}", m.group.name),
            )?;
            cli::write_stdout(format!("{who}\t{id}\t{role}\t{until}\n").as_bytes())?;
            note(&done);
        }
        Action::Revoke { target, reason, member } => {
            let s = open(&target)?;
            let m = &s.membership;
            let (record, cert) = admin::revocation(&s.identity, m, &s.store, &s.known, &member, &reason, s.now_ms())?;
            let kept = record.data.len() / 8;
            let name = s.known.names.display(&cert.member_id);
            let done = s.publish(
                std::slice::from_ref(&record),
                &format!(
                    "revoked {name} in {} ({kept} of its records and certificates stay valid)",
                    m.group.name
                ),
            )?;
            cli::write_stdout(format!("{name}\t{}\t{kept}\n", cert.member_id).as_bytes())?;
            note(&done);
        }
    }
    Ok(())
}
