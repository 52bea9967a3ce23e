//! Helpers for peergroup's end-to-end tests: run the built binaries as a user would, in
//! throwaway homes, and report the command, stdout and stderr when a check fails.
//!
//! The binaries come from the workspace's target directory (`scripts/test` builds them
//! with `cargo build --locked --bins` first); a missing binary fails the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub mod adversary;
pub mod group;
pub mod honest;
pub mod memory;
pub mod natworld;
pub mod netns;
pub mod relay;
pub mod tmux;

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
        // A run under the fake clock says so first; that line is not part of the error.
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.starts_with("warning: PEERGROUP_FAKE_NOW is set"))
            .collect();
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

    /// From now on runs the tools as if the clock said `now` (RFC 3339), or with the
    /// real clock (`None`).
    pub fn set_now(&mut self, now: Option<&str>) {
        self.fake_now = now.map(str::to_string);
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
        run_command(self.command(tool, args), stdin)
    }

    /// The command `tool args...` with this home (and fake clock, if any), not started.
    pub fn command(&self, tool: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin(tool));
        cmd.args(args)
            .env("PEERGROUP_HOME", self.path())
            .env_remove("PEERGROUP_FAKE_NOW");
        if let Some(now) = &self.fake_now {
            cmd.env("PEERGROUP_FAKE_NOW", now);
        }
        cmd
    }

    /// Runs `tool args...` with no stdin, killing it if it has not finished within
    /// `limit` (then the exit code is -1 and stderr says so).
    pub fn run_bounded(&self, tool: &str, args: &[&str], limit: Duration) -> Output {
        run_command_bounded(self.command(tool, args), limit)
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

/// Runs a command with stdin closed and captures everything, killing it if it has not
/// finished within `limit` (exit code -1, and stderr ends with a line saying so).
pub fn run_command_bounded(mut cmd: Command, limit: Duration) -> Output {
    let command = format!("{:?}", cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            killed = true;
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let stdout = stdout.join().expect("stdout reader");
    let mut stderr = stderr.join().expect("stderr reader");
    if killed {
        stderr.push_str(&format!("[test: killed after {limit:?}]\n"));
    }
    Output {
        command,
        code: if killed { -1 } else { status.code().unwrap_or(-1) },
        stdout,
        stderr,
        elapsed,
    }
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Now, in ns since the Unix epoch.
pub fn unix_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// Now, in ms since the Unix epoch.
pub fn unix_ms() -> i64 {
    unix_ns() / 1_000_000
}

/// A loopback address with a port that was free a moment ago (bound to port 0, then
/// released) and that no other caller in this process has been given.
pub fn free_addr() -> String {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return format!("127.0.0.1:{port}");
        }
    }
}

/// A long-running tool (`group-chat --json`) whose stdout lines and stderr are collected
/// as they come. It is killed when dropped, pass or fail; when the test is failing, the
/// drop prints its command, stdout and stderr.
#[derive(Debug)]
pub struct Peer {
    label: String,
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    exit: Option<i32>,
    /// Dropped to let the stdout reader start (see [`Peer::spawn_unread`]).
    resume: Option<std::sync::mpsc::Sender<()>>,
}

/// How often waits look at the collected output.
const POLL: Duration = Duration::from_millis(20);

impl Peer {
    /// Starts `cmd` with piped stdin, stdout and stderr; `label` names it in messages.
    pub fn spawn(label: &str, cmd: Command) -> Peer {
        Peer::start(label, cmd, None)
    }

    /// Like [`Peer::spawn`], but nothing reads its stdout until [`Peer::resume_stdout`]:
    /// the pipe fills up as behind a stalled reader.
    pub fn spawn_unread(label: &str, cmd: Command) -> Peer {
        let (resume, hold) = std::sync::mpsc::channel();
        let mut peer = Peer::start(label, cmd, Some(hold));
        peer.resume = Some(resume);
        peer
    }

    /// Starts reading stdout of a peer started with [`Peer::spawn_unread`].
    pub fn resume_stdout(&mut self) {
        self.resume = None;
    }

    fn start(label: &str, mut cmd: Command, hold: Option<std::sync::mpsc::Receiver<()>>) -> Peer {
        let command = format!("{:?}", cmd);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let readers = vec![
            {
                let stdout = stdout.clone();
                std::thread::spawn(move || {
                    if let Some(hold) = hold {
                        let _ = hold.recv();
                    }
                    // Only newline-terminated lines count: a process that dies in the
                    // middle of a write leaves a partial line, which a reader must not take
                    // as a message shown.
                    let mut reader = BufReader::new(out);
                    let mut buf = Vec::new();
                    while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                            let line = String::from_utf8_lossy(&buf).into_owned();
                            stdout.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                        }
                        buf.clear();
                    }
                })
            },
            {
                let stderr = stderr.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(err);
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        stderr.lock().unwrap_or_else(|e| e.into_inner()).push_str(&line);
                        line.clear();
                    }
                })
            },
        ];
        Peer {
            label: label.to_string(),
            command,
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            readers,
            exit: None,
            resume: None,
        }
    }

    /// The label given at start.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every stdout line so far, parsed as JSON (a line that is not JSON becomes a
    /// JSON string, which no event check accepts).
    pub fn events(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.clone())))
            .collect()
    }

    /// The events so far whose `event` field is `kind`.
    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["event"] == kind).collect()
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The command, exit code (if it exited), stdout and stderr so far.
    pub fn report(&self) -> String {
        format!(
            "=== {} (pid {}) ===\ncommand: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.child.id(),
            self.command,
            self.exit.map_or("(running)".to_string(), |c| c.to_string()),
            self.lines().iter().map(|l| shorten(l)).collect::<Vec<_>>().join("\n"),
            self.stderr()
        )
    }

    /// Writes `line` and a newline to its stdin.
    #[track_caller]
    pub fn send(&mut self, line: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{}: stdin already closed", self.label));
        let written = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush());
        if let Err(e) = written {
            panic!("{}: cannot write {line:?} to stdin: {e}", self.label);
        }
    }

    /// Closes its stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits until `cond` holds over the events so far and returns them; panics after
    /// `limit`, or as soon as the process has exited without `cond` holding.
    #[track_caller]
    pub fn wait_until(&mut self, what: &str, limit: Duration, cond: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let events = self.events();
            if cond(&events) {
                return events;
            }
            if self.try_exit().is_some() {
                self.join_readers();
                let events = self.events();
                if cond(&events) {
                    return events;
                }
                panic!("{}: exited before {what}", self.label);
            }
            if start.elapsed() > limit {
                panic!("{}: no {what} within {limit:?}", self.label);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for an event for which `pred` holds and returns the first one.
    #[track_caller]
    pub fn wait_for(&mut self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let events = self.wait_until(what, limit, |evs| evs.iter().any(&pred));
        events.into_iter().find(|e| pred(e)).expect("found")
    }

    /// Waits for the process to exit; its exit code (-1 when killed by a signal), or
    /// `None` if it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(code) = self.try_exit() {
                self.join_readers();
                return Some(code);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the process to exit and returns its exit code; panics after `limit`.
    #[track_caller]
    pub fn exits(&mut self, limit: Duration) -> i32 {
        match self.wait_exit(limit) {
            Some(code) => code,
            None => panic!("{}: still running after {limit:?}", self.label),
        }
    }

    /// Kills it with SIGKILL and reaps it, as a crash or power cut would end it.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let code = self.child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
            self.exit = Some(code);
        }
        self.stdin = None;
        self.join_readers();
    }

    /// Sends it a signal by name (`TERM`, `INT`), as `kill -s NAME PID` does.
    #[track_caller]
    pub fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -s {name} {}", self.child.id())])
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "{}: kill -s {name} failed", self.label);
    }

    fn try_exit(&mut self) -> Option<i32> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(status.code().unwrap_or(-1));
        }
        self.exit
    }

    fn join_readers(&mut self) {
        self.resume = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// A line cut to a readable length for reports.
fn shorten(line: &str) -> String {
    const MAX: usize = 400;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}... ({} bytes)", &line[..i], line.len()),
        None => line.to_string(),
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
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
