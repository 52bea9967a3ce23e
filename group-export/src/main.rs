//! group-export: seal a membership with its record store, to back it up or move it.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::backup;
use common::cli::{self, MembershipArgs, SealArgs};
use common::membership;

/// Write NAME's membership of GROUP with its whole record store (and, for the creator,
/// the group's root key) sealed with a passphrase (age, scrypt), on stdout or to
/// --output. Bring it back with group-import, after identity-import of the identity.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  group-export --identity alice --group Friends --passphrase-file pass.txt > friends.age\n  group-export --identity alice --group Friends --passphrase-file pass.txt -o friends.age"
)]
struct Args {
    #[command(flatten)]
    target: MembershipArgs,
    #[command(flatten)]
    seal: SealArgs,
    /// Write to FILE (created 0600; never overwritten) instead of stdout
    #[arg(short, long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::run("group-export", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.target.home.home()?;
    let passphrase = args.seal.passphrase.read(Some("file"))?;
    let m = membership::find(&home, &args.target.identity, &args.target.group)?;
    let (sealed, records) = backup::export_group(&m, &passphrase, args.seal.work_factor("group-export"))
        .with_context(|| format!("cannot export {:?} of {:?}", args.target.identity, m.group.name))?;
    cli::write_secret_output(args.output.as_deref(), sealed.as_bytes())?;
    cli::note(
        "group-export",
        &format!(
            "exported {} of {} ({}) with {records} records{}",
            m.identity,
            m.group.name,
            m.group.id,
            if m.creator { " and the group's root key" } else { "" }
        ),
    );
    Ok(())
}
