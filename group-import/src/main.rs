//! group-import: bring back a membership that `group-export` sealed, every record
//! checked as if a peer had sent it.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::backup;
use common::cli::{self, HomeArgs, PassphraseArgs};
use common::identity::Identity;

/// Install the membership sealed in FILE (made by group-export) for identity NAME,
/// which must be the identity it belongs to (identity-import it first). Every record
/// is checked by the node's rules; what fails them (expired, say) is left out. Refused
/// if NAME is a member of that group already. Prints one line: group name, group id,
/// records kept, records left out.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  identity-import --passphrase-file pass.txt alice.age\n  group-import --identity alice --passphrase-file pass.txt friends.age"
)]
struct Args {
    #[command(flatten)]
    home: HomeArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// The identity the membership belongs to
    #[arg(long, value_name = "NAME")]
    identity: String,
    /// The sealed membership (- or none for stdin)
    file: Option<String>,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::run("group-import", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.home()?;
    let identity = Identity::load(&home, &args.identity)?;
    let passphrase = args.passphrase.read(args.file.as_deref())?;
    let (source, bytes) = cli::read_export(args.file.as_deref())?;
    let done = backup::import_group(&home, &identity, &source, &bytes, &passphrase)
        .with_context(|| format!("cannot import {source}"))?;
    let m = &done.membership;
    cli::note(
        "group-import",
        &format!(
            "imported {} of {} ({}): {} records kept, {} left out (expired, or refused by the group's rules); run group-chat --identity {} --group {:?} to go online",
            m.identity, m.group.name, m.group.id, done.kept, done.refused, m.identity, m.group.name
        ),
    );
    cli::write_stdout(format!("{}\t{}\t{}\t{}\n", m.group.name, m.group.id, done.kept, done.refused).as_bytes())
}
