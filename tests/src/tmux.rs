//! A person at a terminal, played through tmux: a session of its own (its own server
//! socket, so nothing else a user runs is touched) running one command in a pane of a
//! given size; keys sent as typed (`send-keys`), the screen read back (`capture-pane`).
//! Needs tmux (`scripts/test` installs it); [`Tmux::available`] says why not.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A tmux server with one session, killed when dropped.
#[derive(Debug)]
pub struct Tmux {
    socket: String,
}

/// `s` quoted for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Tmux {
    /// Why tmux cannot be used here, if it cannot.
    pub fn available() -> Result<(), String> {
        match Command::new("tmux").arg("-V").output() {
            Ok(o) if o.status.success() => Ok(()),
            _ => Err("tmux is not installed (scripts/test installs it)".into()),
        }
    }

    /// Starts `cmd` (program, arguments and environment) in a `cols` x `rows` pane; when
    /// it ends the pane shows `EXIT <status>` and the terminal's settings (`stty -a`),
    /// and stays.
    pub fn start(cmd: &Command, (cols, rows): (u16, u16)) -> Tmux {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let socket = format!("pgtest-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        // env(1) takes its -u options before the assignments.
        let mut line = String::from("env");
        for (k, _) in cmd.get_envs().filter(|(_, v)| v.is_none()) {
            line.push_str(&format!(" -u {}", k.to_string_lossy()));
        }
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                line.push_str(&format!(" {}={}", k.to_string_lossy(), quote(&v.to_string_lossy())));
            }
        }
        line.push_str(&format!(" {}", quote(&cmd.get_program().to_string_lossy())));
        for a in cmd.get_args() {
            line.push_str(&format!(" {}", quote(&a.to_string_lossy())));
        }
        line.push_str("; echo EXIT $?; stty -a; sleep 600");
        let t = Tmux { socket };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        t.run(&["new-session", "-d", "-x", &cols, "-y", &rows, &line]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends keys as tmux names them (`Enter`, `Left`, `Tab`, `C-d`, or text).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Sends `text` as it is (bytes a paste would bring, control characters included).
    pub fn paste(&self, text: &str) {
        self.run(&["send-keys", "-t", "0", "-l", text]);
    }

    /// What the screen shows, with the 200 lines scrolled off above it, lines without
    /// their trailing blanks.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-S", "-200", "-t", "0"])
    }

    /// What the screen shows, with its colour escapes.
    pub fn screen_with_colours(&self) -> String {
        self.run(&["capture-pane", "-p", "-e", "-t", "0"])
    }

    /// Resizes the window.
    pub fn resize(&self, cols: u16, rows: u16) {
        self.run(&[
            "resize-window",
            "-t",
            "0",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
    }

    /// Asserts that the program left the terminal as a shell needs it (after `EXIT`):
    /// canonical input and echo on, not the raw mode of a line editor.
    #[track_caller]
    pub fn assert_terminal_restored(&self) {
        let screen = self.wait("the terminal settings", Duration::from_secs(5), |s| {
            s.contains("icanon")
        });
        assert!(
            !screen.contains("-icanon") && !screen.contains("-echo "),
            "the terminal was left raw:\n{screen}"
        );
    }

    /// Waits until the screen satisfies `pred`, within `limit`; the screen.
    #[track_caller]
    pub fn wait(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < limit,
                "no {what} within {limit:?}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}
