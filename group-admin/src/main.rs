//! group-admin: an admin's actions on a group, each a record every node checks.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::admin::{self, Delivery};
use common::cli::{self, HomeArgs, parse_duration_arg};
use common::identity::Identity;
use common::pki::Role;
use common::{clock, credential, membership};

/// Act on GROUP as an admin: renew members' credentials, change roles, revoke members.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  group-admin renew --identity alice --group Friends bob\n  group-admin renew --identity alice --group Friends --all\n  group-admin role --identity alice --group Friends bob admin\n  group-admin revoke --identity alice --group Friends bob --reason \"laptop stolen\""
)]
struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Issue fresh membership certificates (PeerGroupIssueCredentials): same key, name
    /// and role, valid for the group's member lifetime (capped at this admin's own).
    /// With group-chat running for this membership they spread at once, else at its
    /// next start. Prints one line per member: name, member id, valid until.
    Renew {
        #[command(flatten)]
        home: HomeArgs,
        /// Local identity of the admin
        #[arg(long, value_name = "NAME")]
        identity: String,
        /// Group: friendly name, id, or unique id prefix
        #[arg(long, value_name = "GROUP")]
        group: String,
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
        home: HomeArgs,
        /// Local identity of the admin
        #[arg(long, value_name = "NAME")]
        identity: String,
        /// Group: friendly name, id, or unique id prefix
        #[arg(long, value_name = "GROUP")]
        group: String,
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
        home: HomeArgs,
        /// Local identity of the admin
        #[arg(long, value_name = "NAME")]
        identity: String,
        /// Group: friendly name, id, or unique id prefix
        #[arg(long, value_name = "GROUP")]
        group: String,
        /// Why (shown to every member, and to the revoked member)
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
        /// The member: its name, member id or a unique id prefix
        member: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::run("group-admin", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.action {
        Action::Renew {
            home,
            identity,
            group,
            all: _,
            valid_for,
            member,
        } => {
            let home = home.home()?;
            let admin = Identity::load(&home, &identity)?;
            let now = clock::now();
            let m = credential::renew_creator_if_due(membership::find(&home, &identity, &group)?, now)?;
            let store = common::store::Store::open_read_only(&m.dir.join(common::store::STORE_FILE))
                .with_context(|| format!("cannot read the store of {}", m.group.name))?;
            let known = admin::known_members(&m, &store)?;
            drop(store);
            let targets = admin::renewal_targets(&m, &known, member.as_deref())?;
            let lifetime = valid_for.unwrap_or(Duration::from_secs(m.group.member_lifetime_secs));
            let (records, skipped) = admin::renew(&admin, &m, &known, &targets, lifetime, now)
                .with_context(|| format!("cannot renew credentials in {}", m.group.name))?;
            for (cert, why) in &skipped {
                cli::note(
                    "group-admin",
                    &format!("not renewing {}: {why}", known.names.display(&cert.member_id)),
                );
            }
            if records.is_empty() {
                anyhow::bail!("nothing renewed in {}", m.group.name);
            }
            let delivery = admin::publish(&m, &records, now.unix_timestamp().saturating_mul(1000))
                .with_context(|| format!("cannot publish the renewals in {}", m.group.name))?;
            let mut out = String::new();
            for r in &records {
                out.push_str(&admin::describe(r, &known.names));
                out.push('\n');
            }
            cli::write_stdout(out.as_bytes())?;
            cli::note(
                "group-admin",
                &match delivery {
                    Delivery::Online => format!(
                        "renewed {} member(s) of {}: handed to the running group-chat, spreading now",
                        records.len(),
                        m.group.name
                    ),
                    Delivery::Stored => format!(
                        "renewed {} member(s) of {}: stored, they spread when group-chat next runs for {identity}",
                        records.len(),
                        m.group.name
                    ),
                },
            );
            Ok(())
        }
        Action::Role {
            home,
            identity,
            group,
            valid_for,
            member,
            role,
        } => {
            let home = home.home()?;
            let admin = Identity::load(&home, &identity)?;
            let now = clock::now();
            let m = credential::renew_creator_if_due(membership::find(&home, &identity, &group)?, now)?;
            let store = common::store::Store::open_read_only(&m.dir.join(common::store::STORE_FILE))
                .with_context(|| format!("cannot read the store of {}", m.group.name))?;
            let known = admin::known_members(&m, &store)?;
            let lifetime = valid_for.unwrap_or(Duration::from_secs(m.group.member_lifetime_secs));
            let record = admin::role_change(&admin, &m, &store, &known, &member, role, lifetime, now)?;
            drop(store);
            let delivery = admin::publish(
                &m,
                std::slice::from_ref(&record),
                now.unix_timestamp().saturating_mul(1000),
            )
            .with_context(|| format!("cannot publish the role change in {}", m.group.name))?;
            let line = admin::describe(&record, &known.names);
            let article = if role == Role::Admin { "an" } else { "a" };
            let (who, rest) = line.split_once('\t').unwrap_or((&line, ""));
            let (id, until) = rest.split_once('\t').unwrap_or((rest, ""));
            cli::write_stdout(format!("{who}\t{id}\t{role}\t{until}\n").as_bytes())?;
            cli::note(
                "group-admin",
                &match delivery {
                    Delivery::Online => format!(
                        "{who} is now {article} {role} of {}: handed to the running group-chat, spreading now",
                        m.group.name
                    ),
                    Delivery::Stored => format!(
                        "{who} is now {article} {role} of {}: stored, it spreads when group-chat next runs for {identity}",
                        m.group.name
                    ),
                },
            );
            Ok(())
        }
        Action::Revoke {
            home,
            identity,
            group,
            reason,
            member,
        } => {
            let home = home.home()?;
            let admin = Identity::load(&home, &identity)?;
            let now = clock::now();
            let m = credential::renew_creator_if_due(membership::find(&home, &identity, &group)?, now)?;
            let now_ms = now.unix_timestamp().saturating_mul(1000);
            let store = common::store::Store::open_read_only(&m.dir.join(common::store::STORE_FILE))
                .with_context(|| format!("cannot read the store of {}", m.group.name))?;
            let known = admin::known_members(&m, &store)?;
            let (record, cert) = admin::revocation(&admin, &m, &store, &known, &member, &reason, now_ms)?;
            drop(store);
            let delivery = admin::publish(&m, std::slice::from_ref(&record), now_ms)
                .with_context(|| format!("cannot publish the revocation in {}", m.group.name))?;
            let kept = record.data.len() / 8;
            let name = known.names.display(&cert.member_id);
            cli::write_stdout(format!("{name}\t{}\t{kept}\n", cert.member_id).as_bytes())?;
            cli::note(
                "group-admin",
                &match delivery {
                    Delivery::Online => format!(
                        "revoked {name} in {}: handed to the running group-chat, spreading now ({kept} of its records and certificates stay valid)",
                        m.group.name
                    ),
                    Delivery::Stored => format!(
                        "revoked {name} in {}: stored, it spreads when group-chat next runs for {identity} ({kept} of its records and certificates stay valid)",
                        m.group.name
                    ),
                },
            );
            Ok(())
        }
    }
}
