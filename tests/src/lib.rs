//! Helpers for peergroup's end-to-end tests: run the built binaries as a user would, in
//! throwaway homes, and report the command, stdout and stderr when a check fails.
//!
//! The binaries come from the workspace's target directory (`scripts/test` builds them
//! with `cargo build --locked --bins` first); a missing binary fails the test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Folder of the built binaries: `$PEERGROUP_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`,
/// else `target/debug` in the workspace.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PEERGROUP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("debug")
}

/// Path of a built binary; panics with what to do when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --locked --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// A file under `tests/testdata/`.
pub fn testdata(rel: &str) -> PathBuf {
    workspace().join("tests/testdata").join(rel)
}

/// What one command did.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl Output {
    fn report(&self) -> String {
        format!(
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success\n{}", self.report());
        self
    }

    /// Asserts exit code 1 with a one-line error containing `needle` (and at most a
    /// `hint:` line after it), and nothing on stdout.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Self {
        assert_eq!(self.code, 1, "expected exit code 1\n{}", self.report());
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(!lines.is_empty(), "no error message\n{}", self.report());
        assert!(
            lines[0].contains(needle),
            "error does not mention {needle:?}\n{}",
            self.report()
        );
        assert!(
            lines.len() == 1 || (lines.len() == 2 && lines[1].starts_with("hint: ")),
            "error is not one line (plus a hint)\n{}",
            self.report()
        );
        assert!(
            self.stdout.is_empty(),
            "a failure printed data on stdout\n{}",
            self.report()
        );
        self
    }

    /// Asserts the stderr has a hint line containing `needle`.
    #[track_caller]
    pub fn hints(self, needle: &str) -> Self {
        assert!(
            self.stderr
                .lines()
                .any(|l| l.starts_with("hint: ") && l.contains(needle)),
            "no hint mentioning {needle:?}\n{}",
            self.report()
        );
        self
    }
}

/// A throwaway home directory and a way to run tools in it.
#[derive(Debug)]
pub struct Home {
    dir: tempfile::TempDir,
    fake_now: Option<String>,
}

impl Default for Home {
    fn default() -> Self {
        Home::new()
    }
}

impl Home {
    /// An empty home.
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
            fake_now: None,
        }
    }

    /// A copy of the fixture home in `tests/testdata/home`.
    pub fn fixture() -> Home {
        let home = Home::new();
        copy_dir(&testdata("home"), home.path());
        home
    }

    /// Runs the tools as if the clock said `now` (RFC 3339).
    pub fn at(mut self, now: &str) -> Home {
        self.fake_now = Some(now.to_string());
        self
    }

    /// The home's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `tool args...` with this home and no stdin.
    pub fn run(&self, tool: &str, args: &[&str]) -> Output {
        self.run_with(tool, args, None)
    }

    /// Runs `tool args...` with this home, feeding `stdin` if given.
    pub fn run_with(&self, tool: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(bin(tool));
        cmd.args(args)
            .env("PEERGROUP_HOME", self.path())
            .env_remove("PEERGROUP_FAKE_NOW");
        if let Some(now) = &self.fake_now {
            cmd.env("PEERGROUP_FAKE_NOW", now);
        }
        run_command(cmd, stdin)
    }

    /// Paths of every entry under `rel` whose name starts with `.new-` (staging leftovers).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        walk(self.path())
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".new-")))
            .collect()
    }

    /// Group ids `identity` holds a membership of.
    pub fn groups_of(&self, identity: &str) -> Vec<String> {
        let dir = self.path().join("identities").join(identity).join("groups");
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// Runs a command, feeding stdin (closed when `None`), and captures everything.
pub fn run_command(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    let command = format!("{:?}", cmd);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    if let Some(data) = stdin {
        // A tool may refuse before reading; a broken pipe here is its answer, not ours.
        let _ = input.write_all(data);
    }
    drop(input);
    let out = child.wait_with_output().expect("wait");
    Output {
        command,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every path under `dir`, depth first.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let path = entry.path();
            out.push(path.clone());
            if path.is_dir() {
                out.extend(walk(&path));
            }
        }
    }
    out
}

/// Whether this process runs as root (some checks differ, e.g. permission tests).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Finds a program on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Skips a test that cannot run here, or fails it under `CI=true`, where every test must run.
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot run under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}
