//! identity-export: print an identity's public XML, creating the identity on first use.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use common::backup;
use common::cli::{self, HomeArgs};
use common::identity::{self, Identity};
use common::pki::KeyType;

/// Print NAME's identity XML (its certificate) on stdout; create NAME on first use. With
/// --secret, print the whole identity, private key included, sealed with a passphrase
/// (age, scrypt) for identity-import on another machine.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  identity-export alice > alice.xml\n  identity-export --key rsa2048 --friendly-name 'Bob B.' bob > bob.xml\n  identity-export --list\n  identity-export --secret --passphrase-file pass.txt alice > alice.age"
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
    /// With --list: one JSON object per identity (name, member_id, key_type, friendly_name)
    #[arg(long)]
    json: bool,
    /// Export the whole identity, private key included, sealed with the passphrase
    /// from --passphrase-file (the identity must exist)
    #[arg(long, requires = "passphrase_file", conflicts_with_all = ["list", "key", "friendly_name"])]
    secret: bool,
    /// With --secret: read the passphrase from the first line of FILE (- for stdin)
    #[arg(long, value_name = "FILE", requires = "secret")]
    passphrase_file: Option<String>,
    /// With --secret: scrypt work factor (log2 N, 1-20) [default: 18, 256 MiB]; values below 15 make the passphrase cheap to guess from the file and are for tests only
    #[arg(long, value_name = "N", requires = "secret", value_parser = clap::value_parser!(u8).range(1..=20))]
    work_factor: Option<u8>,
    /// Local name of the identity (a label on this machine only)
    #[arg(required_unless_present = "list")]
    name: Option<String>,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::require::<Args>(!args.json || args.list, "--json goes with --list");
    cli::run("identity-export", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.home()?;
    if args.list {
        let mut out = String::new();
        for id in identity::list(&home)? {
            if args.json {
                out.push_str(&id.to_json());
                out.push('\n');
                continue;
            }
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\n",
                id.name, id.member_id, id.key_type, id.friendly_name
            ));
        }
        return cli::write_stdout(out.as_bytes());
    }
    let name = args.name.unwrap_or_default();
    if let Some(source) = args.passphrase_file.filter(|_| args.secret) {
        let passphrase = backup::read_passphrase(&source)?;
        cli::warn_weak_work_factor("identity-export", args.work_factor);
        let id = Identity::load(&home, &name)?;
        let sealed = backup::export_identity(&id, &passphrase, args.work_factor)?;
        cli::write_stdout(sealed.as_bytes())?;
        cli::note(
            "identity-export",
            &format!("exported identity {name} with its private key, sealed: keep the file and the passphrase apart"),
        );
        return Ok(());
    }
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
