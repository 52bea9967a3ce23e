//! invite-create: an admin signs an invitation for someone's identity.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use common::backup;
use common::cli::{self, HomeArgs, parse_duration_arg};
use common::identity::{Identity, PublicIdentity};
use common::invitation::{Invitation, InviteSpec};
use common::membership::{self, Membership};
use common::names::{self, Directory};
use common::password::{Grant, PasswordInvitation, PasswordSpec};
use common::pki::Role;
use common::store::{STORE_FILE, Store};
use common::{chat, clock, credential};

/// Issue an invitation to GROUP for the identity in IDENTITY_XML, signed by NAME (an admin).
/// With --password-file, issue a password invitation instead: bound to no identity,
/// usable by whoever knows the password while NAME's group-chat runs (group-join
/// --password-file).
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  invite-create --identity alice --group Friends bob.xml > bob.invite\n  ssh bob identity-export bob | invite-create --identity alice --group Friends --role admin -o bob.invite\n  invite-create --identity alice --group Friends --password-file pw.txt --uses 3 -o friends.invite"
)]
struct Args {
    #[command(flatten)]
    home: HomeArgs,
    /// Local identity of the inviter (must be an admin of GROUP)
    #[arg(long, value_name = "NAME")]
    identity: String,
    /// Group: friendly name, id, or unique id prefix
    #[arg(long, value_name = "GROUP")]
    group: String,
    /// Role to grant: member or admin (not above the inviter's)
    #[arg(long, default_value = "member")]
    role: Role,
    /// How long the invitation can be used to join
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, default_value = "15d")]
    expires: Duration,
    /// How long the membership lasts [default: the group's member lifetime, capped at the inviter's own]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    valid_for: Option<Duration>,
    /// Bootstrap address to put first in the invitation, IP:PORT (repeatable)
    #[arg(long, value_name = "IP:PORT")]
    address: Vec<String>,
    /// Write the invitation to FILE (never overwrites) instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Make a password invitation: the password is the first line of FILE (- for
    /// stdin), at least 8 characters; it never appears in the invitation
    #[arg(long, value_name = "FILE", conflicts_with = "identity_xml")]
    password_file: Option<String>,
    /// With --password-file: how many identities may join with it [default: 1, single use]
    #[arg(long, value_name = "N", requires = "password_file", value_parser = clap::value_parser!(u32).range(1..=1000))]
    uses: Option<u32>,
    /// The invitee's identity XML (from identity-export); - or nothing for stdin
    identity_xml: Option<String>,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::run("invite-create", || run(args))
}

/// Warns when another member known here already has the invitee's name: both would
/// show as `name (id prefix)`, and `/msg name` would have to ask which.
fn warn_if_name_taken(inviter: &Identity, m: &Membership, invitee: &PublicIdentity) {
    let mut names = Directory::new();
    names.learn(inviter.member_id(), inviter.friendly_name());
    let path = m.dir.join(STORE_FILE);
    if path.exists()
        && let Ok(store) = Store::open_read_only(&path)
    {
        chat::learn_names(&store, &mut names);
    }
    let id = invitee.member_id();
    let others = names.others_named(invitee.friendly_name(), &id);
    if let Some(other) = others.first() {
        cli::note(
            "invite-create",
            &format!(
                "warning: {} already has a member named {:?} ({}); both will show as \"name (id prefix)\": \
                 consider asking {} to export an identity under another name",
                m.group.name,
                names::sanitize(invitee.friendly_name()),
                other.short(),
                id.short()
            ),
        );
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.home()?;
    for a in &args.address {
        membership::parse_address(a)?;
    }
    if let Some(file) = &args.password_file {
        return password_invitation(&home, &args, file);
    }
    let (source, bytes) = cli::read_input(args.identity_xml.as_deref(), "identity XML")?;
    let invitee = PublicIdentity::from_xml(&source, &bytes)?;
    let inviter = Identity::load(&home, &args.identity)?;
    // The creator's own certificates cap every invitation: renewed first when due.
    let m = credential::renew_creator_if_due(membership::find(&home, &args.identity, &args.group)?, clock::now())?;
    let spec = InviteSpec {
        role: args.role,
        valid_for: args.valid_for,
        expires: args.expires,
        addresses: args.address,
    };
    warn_if_name_taken(&inviter, &m, &invitee);
    let invitation = Invitation::create(&inviter, &m, &invitee, &spec)
        .with_context(|| format!("cannot invite {} to {}", invitee.friendly_name(), m.group.name))?;
    cli::write_output(args.output.as_deref(), invitation.to_xml().as_bytes())?;
    cli::note(
        "invite-create",
        &format!(
            "invited {} ({}) to {} as {}, valid until {}; the invitation expires {}",
            invitee.friendly_name(),
            invitee.member_id(),
            m.group.name,
            spec.role,
            invitation.body.valid_until,
            invitation.body.expires
        ),
    );
    Ok(())
}

/// `invite-create --password-file`: a password invitation, and the grant NAME's node
/// keeps to answer it.
fn password_invitation(home: &common::home::Home, args: &Args, file: &str) -> anyhow::Result<()> {
    use common::secrecy::ExposeSecret;
    let password = backup::read_passphrase(file)?;
    let inviter = Identity::load(home, &args.identity)?;
    let m = credential::renew_creator_if_due(membership::find(home, &args.identity, &args.group)?, clock::now())?;
    let spec = PasswordSpec {
        role: args.role,
        valid_for: args.valid_for,
        expires: args.expires,
        uses: args.uses.unwrap_or(1),
        addresses: args.address.clone(),
    };
    let (invitation, grant) = PasswordInvitation::create(&inviter, &m, &spec, password.expose_secret())
        .with_context(|| format!("cannot make a password invitation to {}", m.group.name))?;
    grant.save_new(&m.dir)?;
    if let Err(e) = cli::write_output(args.output.as_deref(), invitation.to_xml().as_bytes()) {
        let _ = std::fs::remove_file(Grant::path(&m.dir, &grant.id));
        return Err(e);
    }
    cli::note(
        "invite-create",
        &format!(
            "password invitation {} to {} as {}, {}, expires {}; whoever joins with it needs the password and {}'s group-chat running",
            grant.id,
            m.group.name,
            spec.role,
            if spec.uses == 1 {
                "single use".to_string()
            } else {
                format!("for up to {} identities", spec.uses)
            },
            invitation.body.expires,
            args.identity
        ),
    );
    Ok(())
}
