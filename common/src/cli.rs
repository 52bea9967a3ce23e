//! What every binary shares: the `--home` flag, `-` for stdin/stdout, refusing to
//! clobber files, and one way to report errors (`tool: message`, then `hint: ...`,
//! exit 1; usage errors exit 2 through clap; a closed stdout pipe exits quietly).

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::backup::MAX_EXPORT_BYTES;
use crate::group::GroupError;
use crate::home::{self, Home, HomeError};
use crate::identity::IdentityError;
use crate::invitation::InvitationError;
use crate::membership::MembershipError;
use crate::xml::MAX_DOCUMENT_BYTES;

/// What `TOOL --generate KIND` prints.
pub const GENERATED: [&str; 4] = ["man", "bash", "zsh", "fish"];

/// Parses the command line into `A`, except `TOOL --generate KIND` (the only
/// arguments), which prints the tool's man page (`man`) or its completions for a shell
/// (`bash`, `zsh`, `fish`) from the same definitions and exits: `scripts/install` uses
/// it.
pub fn parse<A: clap::Parser>() -> A {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let [_, flag, kind] = args.as_slice()
        && flag == "--generate"
    {
        let mut out = Vec::new();
        let code = match generate(A::command(), &kind.to_string_lossy(), &mut out) {
            Ok(()) => match io::stdout().lock().write_all(&out) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("cannot write to stdout: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("{e}");
                2
            }
        };
        std::process::exit(code);
    }
    A::parse()
}

/// Exits with clap's usage error (exit 2) saying `message` unless `holds`: for a flag
/// that goes with a plain flag, since a flag alone (SetTrue) is always "present" to
/// clap's `requires`.
pub fn require<A: clap::CommandFactory>(holds: bool, message: &str) {
    if !holds {
        A::command()
            .error(clap::error::ErrorKind::MissingRequiredArgument, message)
            .exit();
    }
}

/// Writes `cmd`'s man page (`man`) or its completions for a shell (`bash`, `zsh`,
/// `fish`) to `out`.
pub fn generate(cmd: clap::Command, kind: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let name = cmd.get_name().to_string();
    let mut cmd = cmd.bin_name(&name);
    let shell = match kind {
        "man" => return man_page(cmd, out).map_err(|e| format!("cannot render the man page: {e}")),
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        other => {
            return Err(format!(
                "{name}: cannot generate {other:?}: give one of {}",
                GENERATED.join(", ")
            ));
        }
    };
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// `cmd`'s man page; a tool with subcommands (`group-record add`, ...) gets a section
/// for each, with its synopsis and options, in the same page.
fn man_page(cmd: clap::Command, out: &mut Vec<u8>) -> io::Result<()> {
    let name = cmd.get_name().to_string();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .cloned()
        .collect();
    let man = clap_mangen::Man::new(cmd.clone());
    if subs.is_empty() {
        return man.render(out);
    }
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    man.render_subcommands_section(out)?;
    for sub in subs {
        let full = format!("{name} {}", sub.get_name());
        let page = clap_mangen::Man::new(sub.bin_name(&full));
        let mut section = Vec::new();
        page.render_synopsis_section(&mut section)?;
        page.render_description_section(&mut section)?;
        page.render_options_section(&mut section)?;
        // Its sections become subsections of one section named for it.
        writeln!(out, ".SH \"{}\"", full.to_uppercase())?;
        out.extend(String::from_utf8_lossy(&section).replace("\n.SH ", "\n.SS ").as_bytes());
    }
    if cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some() {
        man.render_extra_section(out)?;
    }
    man.render_version_section(out)
}

/// The `--home` option every tool takes.
#[derive(Debug, Clone, clap::Args)]
pub struct HomeArgs {
    /// Home directory [default: $PEERGROUP_HOME, else $XDG_DATA_HOME/peergroup, else ~/.local/share/peergroup]
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
}

impl HomeArgs {
    /// Resolves the home directory.
    pub fn home(&self) -> Result<Home, HomeError> {
        Home::resolve(self.home.as_deref())
    }
}

/// The options naming one membership: `--home`, `--identity NAME`, `--group GROUP`.
#[derive(Debug, Clone, clap::Args)]
pub struct MembershipArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Local identity
    #[arg(long, value_name = "NAME")]
    pub identity: String,
    /// Group: friendly name, id, or unique id prefix
    #[arg(long, value_name = "GROUP")]
    pub group: String,
}

/// Parses a duration argument (`30s`, `10m`, `2h`, `15d`) for clap.
pub fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::clock::parse_duration(text).map_err(|e| e.to_string())
}

/// Parses a moment argument for clap: an RFC 3339 time, or a duration meaning that long
/// ago (`2h`: two hours before now). Unix ms.
pub fn parse_time_arg(text: &str) -> Result<i64, String> {
    let t = match crate::clock::parse_rfc3339(text) {
        Ok(t) => t,
        Err(e) => match crate::clock::parse_duration(text) {
            Ok(ago) => crate::clock::now_precise() - ago,
            Err(_) => return Err(format!("{e}; or give a duration meaning that long ago (30m, 2h, 7d)")),
        },
    };
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| "out of range".to_string())
}

/// Reads a whole input document: a file, or stdin for `-` or no argument. Returns the
/// name to use in messages and the bytes (at most one byte over the document cap, so
/// the parser reports the size without reading an endless stream).
pub fn read_input(arg: Option<&str>, what: &str) -> anyhow::Result<(String, Vec<u8>)> {
    read_input_capped(arg, what, MAX_DOCUMENT_BYTES)
}

/// The passphrase options of the tools that seal or open an export.
#[derive(Debug, Clone, clap::Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of FILE (- for stdin)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: String,
}

/// The options of the tools that seal an export.
#[derive(Debug, Clone, clap::Args)]
pub struct SealArgs {
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// scrypt work factor (log2 N, 1-20) [default: 18, 256 MiB]; values below 15 make the passphrase cheap to guess from the file and are for tests only
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=20))]
    pub work_factor: Option<u8>,
}

impl SealArgs {
    /// The work factor asked for, said on stderr when it is weak.
    pub fn work_factor(&self, tool: &str) -> Option<u8> {
        warn_weak_work_factor(tool, self.work_factor);
        self.work_factor
    }
}

/// Says on stderr that a work factor below [`crate::backup::WEAK_WORK_FACTOR`] makes a
/// sealed file's passphrase cheap to guess.
pub fn warn_weak_work_factor(tool: &str, work_factor: Option<u8>) {
    if let Some(n) = work_factor.filter(|n| *n < crate::backup::WEAK_WORK_FACTOR) {
        note(
            tool,
            &format!(
                "warning: --work-factor {n} makes the passphrase cheap to guess from the file: use it for tests only"
            ),
        );
    }
}

impl PassphraseArgs {
    /// Reads the passphrase; `input` is where the export itself comes from (stdin for
    /// `-` or none), which cannot be stdin too.
    pub fn read(&self, input: Option<&str>) -> anyhow::Result<crate::backup::Passphrase> {
        if self.passphrase_file == "-" && matches!(input, None | Some("-")) {
            anyhow::bail!("the passphrase and the export cannot both come from stdin: give the export as a file");
        }
        Ok(crate::backup::read_passphrase(&self.passphrase_file)?)
    }
}

/// Reads a whole export (see [`read_input`]), up to [`MAX_EXPORT_BYTES`].
pub fn read_export(arg: Option<&str>) -> anyhow::Result<(String, Vec<u8>)> {
    let (name, bytes) = read_input_capped(arg, "export", MAX_EXPORT_BYTES)?;
    if bytes.len() > MAX_EXPORT_BYTES {
        anyhow::bail!("{name} is larger than {MAX_EXPORT_BYTES} bytes: not an export this tool made");
    }
    Ok((name, bytes))
}

/// [`read_input`] with a cap of `cap` bytes.
pub fn read_input_capped(arg: Option<&str>, what: &str, cap: usize) -> anyhow::Result<(String, Vec<u8>)> {
    let limit = (cap + 1) as u64;
    let mut bytes = Vec::new();
    match arg {
        None | Some("-") => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                anyhow::bail!("no {what} given: pass a file, or pipe one into stdin");
            }
            stdin
                .lock()
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(|e| anyhow::anyhow!("cannot read {what} from stdin: {e}"))?;
            Ok(("<stdin>".to_string(), bytes))
        }
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open {what} {path}: {e}"))?;
            file.take(limit)
                .read_to_end(&mut bytes)
                .map_err(|e| anyhow::anyhow!("cannot read {what} {path}: {e}"))?;
            Ok((path.to_string(), bytes))
        }
    }
}

/// Writes `data` to stdout (`None` or `-`), or to a new file that must not exist yet
/// (written under a temporary name, then moved into place).
pub fn write_output(arg: Option<&Path>, data: &[u8]) -> anyhow::Result<()> {
    write_output_as(arg, data, false)
}

/// [`write_output`] for a secret (a sealed export): a file is created 0600.
pub fn write_secret_output(arg: Option<&Path>, data: &[u8]) -> anyhow::Result<()> {
    write_output_as(arg, data, true)
}

fn write_output_as(arg: Option<&Path>, data: &[u8], secret: bool) -> anyhow::Result<()> {
    match arg {
        None => write_stdout(data),
        Some(p) if p == Path::new("-") => write_stdout(data),
        Some(path) => {
            if path.exists() {
                anyhow::bail!(
                    "{} already exists; not overwriting it (remove it or choose another name)",
                    path.display()
                );
            }
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = dir.join(format!(
                ".{}.tmp-{}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
                std::process::id()
            ));
            home::write_new_file(&tmp, data, secret).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                anyhow::anyhow!(e)
            })?;
            // hard_link fails if the target appeared meanwhile: never clobber.
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            linked.map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))
        }
    }
}

/// Writes to stdout and flushes.
pub fn write_stdout(data: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(data)?;
    out.flush()?;
    Ok(())
}

/// Writes a diagnostic line to stderr.
pub fn note(tool: &str, message: &str) {
    let _ = writeln!(io::stderr(), "{tool}: {message}");
}

/// Runs a tool's body and turns its result into an exit code, printing an error as
/// `tool: message: cause` on one line plus a `hint:` line where the user can act.
pub fn run(tool: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.chain().map(|c| c.to_string()).collect::<Vec<_>>();
            // Skip causes already spelled out by the message before them.
            let mut line = String::new();
            for m in message {
                if !line.contains(&m) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&m);
                }
            }
            let line = line.replace('\n', " ");
            let mut err = io::stderr().lock();
            let _ = writeln!(err, "{tool}: {line}");
            if let Some(hint) = hint(&e) {
                let _ = writeln!(err, "hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The first hint any error in the chain offers.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    for cause in e.chain() {
        if let Some(h) = cause.downcast_ref::<InvitationError>().and_then(hint_invitation) {
            return Some(h);
        }
        if let Some(h) = cause.downcast_ref::<GroupError>().and_then(hint_group) {
            return Some(h);
        }
        if let Some(h) = cause.downcast_ref::<IdentityError>().and_then(hint_identity) {
            return Some(h);
        }
        if let Some(h) = cause.downcast_ref::<MembershipError>().and_then(hint_membership) {
            return Some(h);
        }
        if let Some(h) = cause.downcast_ref::<HomeError>().and_then(hint_home) {
            return Some(h);
        }
    }
    None
}

fn hint_invitation(e: &InvitationError) -> Option<String> {
    match e {
        InvitationError::Membership(m) => hint_membership(m),
        InvitationError::Home(h) => hint_home(h),
        InvitationError::Group(g) => hint_group(g),
        other => other.hint().map(str::to_string),
    }
}

fn hint_group(e: &GroupError) -> Option<String> {
    match e {
        GroupError::NameTaken { .. } => Some("choose another friendly name".into()),
        GroupError::Home(h) => hint_home(h),
        GroupError::Identity(i) => hint_identity(i),
        GroupError::Membership(m) => hint_membership(m),
        _ => None,
    }
}

fn hint_identity(e: &IdentityError) -> Option<String> {
    match e {
        IdentityError::Unknown(name) => Some(format!(
            "create it with: identity-export {name} (identity-export --list shows what exists)"
        )),
        IdentityError::Home(h) => hint_home(h),
        IdentityError::Xml(_) | IdentityError::BadField { .. } => {
            Some("pass the file identity-export printed, unchanged".into())
        }
        _ => None,
    }
}

fn hint_membership(e: &MembershipError) -> Option<String> {
    match e {
        MembershipError::Ambiguous { .. } => Some("name the group by its id or a unique id prefix".into()),
        MembershipError::UnknownGroup { .. } => {
            Some("create a group with group-create, or join one with group-join".into())
        }
        MembershipError::Home(h) => hint_home(h),
        _ => None,
    }
}

fn hint_home(e: &HomeError) -> Option<String> {
    match e {
        HomeError::Io { source, path, .. } if source.kind() == io::ErrorKind::PermissionDenied => Some(format!(
            "make {} writable, or choose another home with --home",
            path.display()
        )),
        HomeError::Io { source, .. } if source.raw_os_error() == Some(30) => {
            Some("the filesystem is read-only: choose another home with --home".into())
        }
        _ => None,
    }
}

/// Sets up diagnostics on stderr (`PEERGROUP_LOG` filters, e.g. `debug`); colours only
/// on a terminal and never with `NO_COLOR`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEERGROUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let ansi = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(ansi)
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn man_pages_and_completions_come_from_the_definitions() {
        #[derive(Debug, clap::Parser)]
        #[command(name = "tool-x", about = "Does x")]
        struct X {
            /// The widget to frob
            #[arg(long)]
            widget: String,
        }
        use clap::CommandFactory;
        let page = |kind: &str| {
            let mut out = Vec::new();
            super::generate(X::command(), kind, &mut out).map(|()| String::from_utf8(out).unwrap())
        };
        let man = page("man").unwrap();
        assert!(
            man.contains(".TH tool-x 1") && man.contains("widget") && man.contains("Does x"),
            "{man}"
        );
        assert!(page("bash").unwrap().contains("complete -F _tool__x"));
        assert!(page("zsh").unwrap().contains("#compdef tool-x"));
        assert!(page("fish").unwrap().contains("complete -c tool-x"));
        assert_eq!(
            page("powershell").unwrap_err(),
            "tool-x: cannot generate \"powershell\": give one of man, bash, zsh, fish"
        );
    }
}
