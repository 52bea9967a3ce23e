//! group-join: verify an invitation and join its group, offline.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::cli::{self, HomeArgs};
use common::clock;
use common::identity::Identity;
use common::invitation::{self, Invitation};
use common::membership;

/// Verify INVITATION and join its group as NAME; print the group id.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  group-join --identity bob bob.invite\n  group-join --inspect bob.invite\n  cat bob.invite | group-join --identity bob --listen 0.0.0.0:7401 -"
)]
struct Args {
    #[command(flatten)]
    home: HomeArgs,
    /// Local identity the invitation was issued for
    #[arg(long, value_name = "NAME", required_unless_present = "inspect")]
    identity: Option<String>,
    /// Print what the invitation says and whether it is valid; join nothing
    #[arg(long)]
    inspect: bool,
    /// Address to accept peers on, IP:PORT [default: 0.0.0.0 and a free port chosen now]
    #[arg(long, value_name = "IP:PORT", conflicts_with = "inspect")]
    listen: Option<String>,
    /// The invitation file; - or nothing for stdin
    invitation: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::run("group-join", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.home()?;
    let (source, bytes) = cli::read_input(args.invitation.as_deref(), "invitation")?;
    let inv = Invitation::parse(&source, &bytes)?;
    if args.inspect {
        cli::write_stdout(inv.describe().as_bytes())?;
        inv.verify(clock::now())?;
        if let Some(name) = &args.identity {
            inv.check_for(&Identity::load(&home, name)?)?;
        }
        return cli::write_stdout(b"status: valid\n");
    }
    let name = args.identity.unwrap_or_default();
    let identity = Identity::load(&home, &name)?;
    let listen = membership::choose_listen(args.listen.as_deref())?;
    let m = invitation::join(&home, &identity, &inv, listen)
        .with_context(|| format!("cannot join group {:?}", inv.body.group.name))?;
    cli::note(
        "group-join",
        &format!(
            "{name} joined {} ({}) as {}, valid until {}; listening on {}",
            m.group.name, m.group.id, m.role, inv.body.valid_until, m.listen
        ),
    );
    cli::write_stdout(format!("{}\n", m.group.id).as_bytes())
}
