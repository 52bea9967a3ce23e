//! group-create: create a group with the identity as its first admin.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use common::cli::{self, HomeArgs, parse_duration_arg};
use common::group::{self, GroupSpec};
use common::identity::Identity;
use common::membership;

/// Create a group (root key and certificate, admin credentials, record store); print its id.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  group-create --identity alice Friends\n  group-create --identity alice --listen 192.0.2.7:7400 --message-lifetime 30d Friends"
)]
struct Args {
    #[command(flatten)]
    home: HomeArgs,
    /// Local identity that creates the group and becomes its first admin
    #[arg(long, value_name = "NAME")]
    identity: String,
    /// Free-text classifier of the group
    #[arg(long, value_name = "TEXT", default_value = "")]
    classifier: String,
    /// Address to accept peers on, IP:PORT [default: 0.0.0.0 and a free port chosen now]
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// How long chat messages live
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, default_value = "7d")]
    message_lifetime: Duration,
    /// How long memberships last (the creator's too, and the default for invitations)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, default_value = "365d")]
    member_lifetime: Duration,
    /// How long a member stays listed after it vanishes without leaving (a crash, a
    /// lost network); members refresh their presence at a third of it. At least 3s
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, default_value = "5m")]
    presence_lifetime: Duration,
    /// Friendly name of the group
    friendly_name: String,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::run("group-create", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.home()?;
    let creator = Identity::load(&home, &args.identity)?;
    let spec = GroupSpec {
        name: args.friendly_name.clone(),
        classifier: args.classifier,
        listen: membership::choose_listen(args.listen.as_deref())?,
        message_lifetime: args.message_lifetime,
        member_lifetime: args.member_lifetime,
        presence_lifetime: args.presence_lifetime,
    };
    let m = group::create(&home, &creator, &spec)
        .with_context(|| format!("cannot create group {:?}", args.friendly_name))?;
    cli::note(
        "group-create",
        &format!(
            "created group {} ({}) with {} as admin; listening on {}",
            m.group.name, m.group.id, args.identity, m.listen
        ),
    );
    cli::write_stdout(format!("{}\n", m.group.id).as_bytes())
}
