//! group-join: verify an invitation and join its group, offline.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::backup;
use common::cli::{self, HomeArgs};
use common::clock;
use common::identity::Identity;
use common::invitation::{self, Invitation};
use common::membership;
use common::node::join;
use common::password::PasswordInvitation;
use common::secrecy::ExposeSecret;

/// Verify INVITATION and join its group as NAME; print the group id. A password
/// invitation (from invite-create --password-file) needs --password-file and the issuing
/// admin's group-chat running: its node checks the password and issues the membership.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  group-join --identity bob bob.invite\n  group-join --inspect bob.invite\n  cat bob.invite | group-join --identity bob --listen 0.0.0.0:7401 -\n  group-join --identity carol --password-file pw.txt friends.invite"
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
    /// With --inspect: one JSON object (the fields, then status valid or invalid and
    /// why; exit 1 when invalid)
    #[arg(long)]
    json: bool,
    /// Address to accept peers on, IP:PORT [default: 0.0.0.0 and a free port chosen now]
    #[arg(long, value_name = "IP:PORT", conflicts_with = "inspect")]
    listen: Option<String>,
    /// For a password invitation: the password is the first line of FILE (- for stdin)
    #[arg(long, value_name = "FILE", conflicts_with = "inspect")]
    password_file: Option<String>,
    /// The invitation file; - or nothing for stdin
    invitation: Option<String>,
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::require::<Args>(!args.json || args.inspect, "--json goes with --inspect");
    cli::run("group-join", || run(args))
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.home()?;
    if args.password_file.as_deref() == Some("-") && matches!(args.invitation.as_deref(), None | Some("-")) {
        anyhow::bail!("the password and the invitation cannot both come from stdin: give the invitation as a file");
    }
    let (source, bytes) = cli::read_input(args.invitation.as_deref(), "invitation")?;
    let inv = if PasswordInvitation::is_one(&bytes) {
        let pinv = PasswordInvitation::parse(&source, &bytes)?;
        if args.json {
            let mut v = pinv.describe_json();
            let checked = pinv.verify(clock::now());
            v["status"] = serde_json::json!(if checked.is_ok() { "valid" } else { "invalid" });
            if let Err(e) = &checked {
                v["error"] = serde_json::json!(e.to_string());
            }
            cli::write_stdout(format!("{v}\n").as_bytes())?;
            return Ok(checked?);
        }
        if args.inspect {
            cli::write_stdout(pinv.describe().as_bytes())?;
            pinv.verify(clock::now())?;
            return cli::write_stdout(b"status: valid\n");
        }
        let Some(file) = &args.password_file else {
            anyhow::bail!("{source} is a password invitation: give its password with --password-file FILE");
        };
        pinv.verify(clock::now())?;
        let identity = Identity::load(&home, args.identity.as_deref().unwrap_or_default())?;
        invitation::not_joined(&home, &identity, &pinv.body.group)?;
        // Everything that can fail here is checked before the admin spends a use.
        membership::choose_listen(args.listen.as_deref())?;
        let password = backup::read_passphrase(file)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let xml = runtime
            .block_on(join::request(&pinv, &identity, password.expose_secret()))
            .with_context(|| format!("cannot join {:?} with {source}", pinv.body.group.name))?;
        let issued = format!("the invitation {} issued", pinv.body.issuer_name);
        let inv = Invitation::parse(&issued, xml.as_bytes())?;
        if inv.body.group.id != pinv.body.group.id || inv.root.der != pinv.root.der {
            anyhow::bail!("{issued} is for another group than {source}: not joining");
        }
        inv
    } else {
        if args.password_file.is_some() {
            anyhow::bail!(
                "{source} is an invitation for one identity, not a password invitation: leave out --password-file"
            );
        }
        Invitation::parse(&source, &bytes)?
    };
    if args.inspect && args.json {
        let mut v = inv.describe_json();
        let checked = inv
            .verify(clock::now())
            .map_err(anyhow::Error::from)
            .and_then(|()| match &args.identity {
                Some(name) => Ok(inv.check_for(&Identity::load(&home, name)?)?),
                None => Ok(()),
            });
        v["status"] = serde_json::json!(if checked.is_ok() { "valid" } else { "invalid" });
        if let Err(e) = &checked {
            v["error"] = serde_json::json!(format!("{e:#}"));
        }
        cli::write_stdout(format!("{v}\n").as_bytes())?;
        return checked;
    }
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
