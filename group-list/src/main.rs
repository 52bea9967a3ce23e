//! group-list: the groups this home's identities belong to.

use std::process::ExitCode;

use clap::Parser;
use common::cli::{self, HomeArgs};
use common::listing;

/// List the groups of IDENTITY (or of every identity here): one line each, tab-separated
/// (identity, group, group id, role, valid until, members known, where it listens), or
/// with --json one object per line.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  group-list\n  group-list --identity alice --json | jq -r .group"
)]
struct Args {
    #[command(flatten)]
    home: HomeArgs,
    /// Only this local identity's groups
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    /// One JSON object per line: identity, group, id, role, valid_until, members, listen, creator
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::run("group-list", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.home()?;
    let rows = listing::rows(&home, args.identity.as_deref())?;
    let mut out = String::new();
    for row in &rows {
        out.push_str(&if args.json { row.to_json() } else { row.to_line() });
        out.push('\n');
    }
    cli::write_stdout(out.as_bytes())
}
