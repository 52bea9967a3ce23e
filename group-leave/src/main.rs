//! group-leave: an identity leaves a group, its membership and record store removed.

use std::process::ExitCode;

use clap::Parser;
use common::cli::{self, MembershipArgs};
use common::listing;

/// Remove NAME's membership of GROUP and its record store from this home. Refused while
/// group-chat runs for it, and for the group's creator (who holds its root key) unless
/// --force.
#[derive(Debug, Parser)]
#[command(version, after_help = "Example:\n  group-leave --identity bob --group Friends")]
struct Args {
    #[command(flatten)]
    target: MembershipArgs,
    /// Leave even as the creator: its root key goes, and nobody can renew the group's certificates again
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::run("group-leave", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.target.home.home()?;
    let m = listing::leave(&home, &args.target.identity, &args.target.group, args.force)?;
    cli::note(
        "group-leave",
        &format!(
            "{} left {} ({}): its membership and record store are removed from this home",
            args.target.identity, m.group.name, m.group.id
        ),
    );
    Ok(())
}
