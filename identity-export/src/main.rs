//! identity-export: print an identity's public XML, creating the identity on first use.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use common::cli::{self, HomeArgs};
use common::identity::{self, Identity};
use common::pki::KeyType;

/// Print NAME's identity XML (its certificate) on stdout; create NAME on first use.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  identity-export alice > alice.xml\n  identity-export --key rsa2048 --friendly-name 'Bob B.' bob > bob.xml\n  identity-export --list"
)]
struct Args {
    #[command(flatten)]
    home: HomeArgs,
    /// Key type when creating the identity: ed25519, p256, rsa2048, rsa3072 [default: ed25519]
    #[arg(long, value_name = "TYPE")]
    key: Option<KeyType>,
    /// Friendly name carried in the certificate when creating [default: NAME]
    #[arg(long, value_name = "TEXT")]
    friendly_name: Option<String>,
    /// List local identities (name, member id, key type, friendly name; tab-separated)
    #[arg(long, conflicts_with_all = ["name", "key", "friendly_name"])]
    list: bool,
    /// Local name of the identity (a label on this machine only)
    #[arg(required_unless_present = "list")]
    name: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::run("identity-export", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.home()?;
    if args.list {
        let mut out = String::new();
        for id in identity::list(&home)? {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                id.name, id.member_id, id.key_type, id.friendly_name
            ));
        }
        return cli::write_stdout(out.as_bytes());
    }
    let name = args.name.unwrap_or_default();
    let key_type = args.key.unwrap_or(KeyType::Ed25519);
    let (id, created) = Identity::load_or_create(&home, &name, key_type, args.friendly_name.as_deref())
        .with_context(|| format!("cannot use identity {name:?} in {}", home.path().display()))?;
    if created {
        cli::note(
            "identity-export",
            &format!(
                "created identity {name} ({}), member id {}",
                id.cert.key_type,
                id.member_id()
            ),
        );
    } else {
        if let Some(k) = args.key.filter(|k| *k != id.cert.key_type) {
            bail!(
                "identity {name:?} already exists with a {} key; --key {k} applies only when creating one",
                id.cert.key_type
            );
        }
        if let Some(f) = args.friendly_name.filter(|f| f != id.friendly_name()) {
            bail!(
                "identity {name:?} already exists with friendly name {:?}; --friendly-name {f:?} applies only when creating one",
                id.friendly_name()
            );
        }
    }
    cli::write_stdout(id.public().to_xml().as_bytes())
}
