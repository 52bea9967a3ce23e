//! identity-import: bring back an identity that `identity-export --secret` sealed.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::backup;
use common::cli::{self, HomeArgs, PassphraseArgs};

/// Install the identity sealed in FILE (made by identity-export --secret) in this home,
/// under the name it had or --name. Refused if the name is taken or this home holds
/// that identity already. Prints one line: name, member id.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  identity-import --passphrase-file pass.txt alice.age\n  identity-import --passphrase-file - --name alice-laptop alice.age"
)]
struct Args {
    #[command(flatten)]
    home: HomeArgs,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Local name to give it [default: the name it had]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The sealed identity (- or none for stdin)
    file: Option<String>,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::run("identity-import", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.home()?;
    let passphrase = args.passphrase.read(args.file.as_deref())?;
    let (source, bytes) = cli::read_export(args.file.as_deref())?;
    let id = backup::import_identity(&home, &source, &bytes, &passphrase, args.name.as_deref())
        .with_context(|| format!("cannot import {source}"))?;
    cli::note(
        "identity-import",
        &format!(
            "imported identity {} ({}), member id {}",
            id.name,
            common::names::sanitize(id.friendly_name()),
            id.member_id()
        ),
    );
    cli::write_stdout(format!("{}\t{}\n", id.name, id.member_id()).as_bytes())
}
