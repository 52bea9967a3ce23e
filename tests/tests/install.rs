//! `scripts/install PREFIX` (issue 13): the tools, a man page each and completions for
//! bash, zsh and fish, all generated from the tools' own definitions.

use std::path::Path;
use std::process::Command;

use peergroup_tests::{bin_dir, run_command, workspace};

const TOOLS: [&str; 12] = [
    "identity-export",
    "identity-import",
    "group-create",
    "invite-create",
    "group-join",
    "group-chat",
    "group-admin",
    "group-record",
    "group-list",
    "group-leave",
    "group-export",
    "group-import",
];

/// What the installed bash completion of `tool` offers for the word `word` after it.
fn bash_completes(prefix: &Path, tool: &str, word: &str) -> String {
    let script = format!(
        "source {} && f=$(complete -p {tool} | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p') && \
         COMP_WORDS=({tool} {word}) COMP_CWORD=1 COMP_LINE='{tool} {word}' COMP_POINT={point} && \
         $f {tool} {word} {tool} && echo \"${{COMPREPLY[@]}}\"",
        prefix
            .join(format!("share/bash-completion/completions/{tool}"))
            .display(),
        point = tool.len() + 1 + word.len(),
    );
    let out = run_command(command(Path::new("bash"), &["-c", &script]), None);
    assert_eq!(out.code, 0, "{tool}: {}", out.stderr);
    out.stdout.trim().to_string()
}

fn command(program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// One install (the debug binaries are large: each install copies about 2 GB), into a
/// relative PREFIX from another folder than the repository's (red-team finding: it was
/// taken from the repository).
#[test]
fn install_puts_tools_man_pages_and_completions_under_the_prefix() {
    let here = tempfile::tempdir().unwrap();
    let mut cmd = command(&workspace().join("scripts/install"), &["inst"]);
    cmd.current_dir(here.path()).env("BIN_DIR", bin_dir());
    let out = run_command(cmd, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("installed 12 tools"), "{}", out.stderr);
    assert!(!workspace().join("inst").exists());
    assert!(
        !walk(here.path())
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".installing")),
        "no temporary file left"
    );
    let prefix = here.path().join("inst");
    let p = prefix.as_path();
    for t in TOOLS {
        let tool = p.join("bin").join(t);
        let version = run_command(command(&tool, &["--version"]), None);
        assert!(version.stdout.starts_with(&format!("{t} ")), "{t}: {}", version.stdout);
        let man = std::fs::read_to_string(p.join(format!("share/man/man1/{t}.1"))).unwrap();
        assert!(
            man.starts_with(".ie") || man.contains(&format!(".TH {t} 1")),
            "{t}: {man}"
        );
        assert!(man.contains("\\-\\-home"), "{t}'s page names its flags");
        let zsh = std::fs::read_to_string(p.join(format!("share/zsh/site-functions/_{t}"))).unwrap();
        assert!(zsh.starts_with(&format!("#compdef {t}")), "{t}");
        let fish = std::fs::read_to_string(p.join(format!("share/fish/vendor_completions.d/{t}.fish"))).unwrap();
        assert!(fish.contains(&format!("complete -c {t}")), "{t}");
        // bash loads it and completes the tool's flags.
        let completed = bash_completes(p, t, "--hel");
        assert_eq!(completed, "--help", "{t}");
    }
    assert_eq!(bash_completes(p, "group-chat", "--message-l"), "--message-lifetime");
    assert_eq!(bash_completes(p, "group-record", "sea"), "search");
    // The subcommands of a tool that has them are in its page.
    let man = std::fs::read_to_string(p.join("share/man/man1/group-record.1")).unwrap();
    assert!(man.contains("search"), "{man}");
}

/// Red-team finding: a PREFIX that could take only part of it got that part.
#[test]
fn a_prefix_that_cannot_take_all_of_it_gets_nothing() {
    let prefix = tempfile::tempdir().unwrap();
    // A file where a folder must go (root may write anywhere: permissions would not do).
    std::fs::create_dir_all(prefix.path().join("share/man")).unwrap();
    std::fs::write(prefix.path().join("share/man/man1"), "in the way").unwrap();
    let mut cmd = command(&workspace().join("scripts/install"), &[]);
    cmd.arg(prefix.path()).env("BIN_DIR", bin_dir());
    let out = run_command(cmd, None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cannot write to"), "{}", out.stderr);
    assert!(!prefix.path().join("bin/group-chat").exists(), "nothing installed");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn generate_refuses_what_it_does_not_know() {
    let out = run_command(
        command(&bin_dir().join("group-chat"), &["--generate", "powershell"]),
        None,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("give one of man, bash, zsh, fish"),
        "{}",
        out.stderr
    );
}
