//! The chat at a terminal: line editing and input history (rustyline), completion of
//! commands and member names, and lines printed above the prompt while the person
//! types, never through what is being typed. Used only when stdin and stdout are
//! terminals; pipes keep plain line-by-line reading and writing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustyline::completion::Completer;
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter, Helper};

use crate::member::MemberId;
use crate::names::sanitize;
use crate::node::{Event, MemberChange};

/// The commands a person can type, with what each does (the `/help` text).
pub const COMMANDS: &[(&str, &str)] = &[
    ("/help", "this list"),
    ("/who", "present members, their roles and how each is reached"),
    ("/msg", "MEMBER TEXT: whisper to one member (name or member-id prefix)"),
    ("/me", "TEXT: say what you do (shown as * you TEXT)"),
    (
        "/edit",
        "[^N|ID] TEXT: replace the text of your last message (^2: the one before; ID: a message id)",
    ),
    (
        "/delete",
        "[^N|ID]: delete your last message (^2: the one before; ID: a message id)",
    ),
    ("/history", "[N]: the last N stored messages (default 20)"),
    ("/quit", "leave (also Ctrl-D or Ctrl-C)"),
];

/// Most lines of input history kept for the session.
const HISTORY_LINES: usize = 1000;

/// The prompt.
pub const PROMPT: &str = "> ";

/// Completions of `line` at `pos`: a command name while the first word is being typed,
/// a member name as `/msg`'s first argument; where the replaced word starts, and the
/// candidates (a unique one ends with a space).
pub fn complete(line: &str, pos: usize, names: &[String]) -> (usize, Vec<String>) {
    let Some(before) = line.get(..pos) else {
        return (pos, Vec::new());
    };
    if before.starts_with('/') && !before.contains(' ') {
        let mut found: Vec<String> = COMMANDS
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| c.starts_with(before))
            .map(str::to_string)
            .collect();
        if let [one] = found.as_mut_slice() {
            one.push(' ');
        }
        return (0, found);
    }
    if let Some(arg) = before.strip_prefix("/msg ")
        && !arg.contains(' ')
    {
        let start = pos - arg.len();
        let lower = arg.to_lowercase();
        let mut found: Vec<String> = names
            .iter()
            .filter(|n| !n.contains(' ') && n.to_lowercase().starts_with(&lower))
            .cloned()
            .collect();
        found.sort();
        found.dedup();
        if let [one] = found.as_mut_slice() {
            one.push(' ');
        }
        return (start, found);
    }
    (pos, Vec::new())
}

/// Member names to complete, kept current by the front end.
#[derive(Debug, Clone, Default)]
pub struct Names(Arc<Mutex<Vec<String>>>);

impl Names {
    /// Replaces the names (sanitized: they come from certificates).
    pub fn set(&self, names: impl IntoIterator<Item = String>) {
        let clean = names.into_iter().map(|n| sanitize(&n)).collect();
        if let Ok(mut held) = self.0.lock() {
            *held = clean;
        }
    }

    fn get(&self) -> Vec<String> {
        self.0.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

/// rustyline's helper: completion only.
struct ChatHelper {
    names: Names,
}

impl Completer for ChatHelper {
    type Candidate = String;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(complete(line, pos, &self.names.get()))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Highlighter for ChatHelper {}

impl Validator for ChatHelper {}

impl Helper for ChatHelper {}

/// What the person did at the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typed {
    /// A line (without its newline).
    Line(String),
    /// Ctrl-D on an empty line, or Ctrl-C: leave.
    Leave,
}

/// The line editor, and a printer for lines from elsewhere.
pub struct Terminal {
    editor: Editor<ChatHelper, DefaultHistory>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Terminal")
    }
}

/// Prints whole lines above the prompt, from any thread.
pub type Printer = Box<dyn ExternalPrinter + Send>;

impl Terminal {
    /// An editor completing commands and `names`, and its printer.
    pub fn new(names: Names) -> rustyline::Result<(Terminal, Printer)> {
        let config = Config::builder()
            .auto_add_history(true)
            .max_history_size(HISTORY_LINES)?
            .history_ignore_dups(true)?
            .completion_type(CompletionType::List)
            .build();
        let mut editor = Editor::with_config(config)?;
        editor.set_helper(Some(ChatHelper { names }));
        let printer = editor.create_external_printer()?;
        Ok((Terminal { editor }, Box::new(printer)))
    }

    /// Waits for the next line; [`Typed::Leave`] on Ctrl-D or Ctrl-C, or when the
    /// terminal is gone.
    pub fn read(&mut self) -> Typed {
        match self.editor.readline(PROMPT) {
            Ok(line) => Typed::Line(line),
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => Typed::Leave,
            Err(e) => {
                tracing::warn!("the terminal failed: {e}");
                Typed::Leave
            }
        }
    }
}

/// The terminal's settings before the editor changed them, put back at exit: the
/// editor leaves raw mode only when a read returns, and the node may stop while one
/// waits (`/quit` typed, SIGTERM, revocation).
#[derive(Debug)]
pub struct Saved(Option<rustix::termios::Termios>);

impl Saved {
    /// Reads stdin's terminal settings now.
    pub fn now() -> Saved {
        Saved(rustix::termios::tcgetattr(std::io::stdin()).ok())
    }

    /// Puts them back, and turns bracketed paste off again.
    pub fn restore(&self) {
        use std::io::Write;
        if let Some(t) = &self.0 {
            let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, t);
        }
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?2004l").and_then(|()| out.flush());
    }
}

/// Longest line printed above the prompt: the printer holds what it cannot show yet
/// (while a search or a completion list is up), so a flood of long lines stays small.
pub const MAX_LINE_CHARS: usize = 4000;

/// `line` as the printer takes it: at most [`MAX_LINE_CHARS`] characters (the rest
/// said to be cut), ending with a line break.
pub fn printable(line: String) -> String {
    let mut line = match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((at, _)) => format!("{} [cut]", &line[..at]),
        None => line,
    };
    if !line.ends_with('\n') {
        line.push('\n');
    }
    line
}

/// The `/help` text, one line per command.
pub fn help_lines() -> Vec<String> {
    let mut lines = vec!["* commands (a line without / is a chat message; // sends one starting with /):".to_string()];
    lines.extend(COMMANDS.iter().map(|(c, what)| format!("*   {c} {what}")));
    lines.push("* Tab completes commands and member names; Up and Down recall earlier lines".into());
    lines
}

/// Whether a person at a terminal sees `e` as a line of its own: connection changes,
/// status lines and a member's connections coming and going are churn, shown only
/// with `-v` ([`Churn`] says what matters of them).
pub fn shown(e: &Event, verbose: bool) -> bool {
    verbose
        || !matches!(
            e,
            Event::Connection { .. }
                | Event::Status(_)
                | Event::Member {
                    change: MemberChange::Connected | MemberChange::Disconnected | MemberChange::Updated,
                    ..
                }
        )
}

/// How long a lost connection or being alone must last before a line says so: a
/// connection replaced by a newer one, or redialled, comes back within it.
pub const GRACE: Duration = Duration::from_secs(3);

/// What matters of the churn a terminal hides: a neighbour connection lost for good
/// (not replaced within [`GRACE`]), and the node left with no neighbour, and back.
#[derive(Debug, Default)]
pub struct Churn {
    lost: HashMap<MemberId, (String, Instant)>,
    alone_since: Option<Instant>,
    told_alone: bool,
    connected_once: bool,
}

impl Churn {
    /// Takes an event in; lines to show now.
    pub fn event(&mut self, e: &Event, now: Instant) -> Vec<String> {
        match e {
            Event::Member {
                change: MemberChange::Disconnected,
                member,
                name,
            } => {
                let shown = format!("{} ({})", sanitize(name), member.short());
                self.lost.insert(*member, (shown, now + GRACE));
            }
            Event::Member {
                change: MemberChange::Connected | MemberChange::Left,
                member,
                ..
            } => {
                self.lost.remove(member);
            }
            Event::Status(s) if s.connected => {
                self.connected_once = true;
                self.alone_since = None;
                if std::mem::take(&mut self.told_alone) {
                    return vec![format!("* connected again ({} neighbour(s))", s.neighbours)];
                }
            }
            Event::Status(_) if self.connected_once => {
                self.alone_since.get_or_insert(now);
            }
            _ => {}
        }
        Vec::new()
    }

    /// Lines due by `now`: connections still lost, and being alone, after [`GRACE`].
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        let mut gone: Vec<(String, Instant)> = Vec::new();
        self.lost.retain(|_, (name, at)| {
            if now >= *at {
                gone.push((name.clone(), *at));
                false
            } else {
                true
            }
        });
        gone.sort_by_key(|(_, at)| *at);
        lines.extend(
            gone.into_iter()
                .map(|(name, _)| format!("* lost the connection to {name}")),
        );
        if let Some(since) = self.alone_since
            && !self.told_alone
            && now >= since + GRACE
        {
            self.told_alone = true;
            lines.push("* no member connected now: reconnecting; what you send waits until a member is reached".into());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["bob", "Bea", "carol", "dave smith"].map(String::from).to_vec()
    }

    #[test]
    fn commands_complete_while_the_first_word_is_typed() {
        assert_eq!(complete("/wh", 3, &names()), (0, vec!["/who ".to_string()]));
        assert_eq!(complete("/", 1, &names()).1.len(), COMMANDS.len());
        assert_eq!(complete("/h", 2, &names()).1, ["/help", "/history"]);
        assert_eq!(
            complete("hello /wh", 9, &names()).1,
            Vec::<String>::new(),
            "not a command"
        );
        assert_eq!(complete("/x", 2, &names()).1, Vec::<String>::new());
    }

    #[test]
    fn member_names_complete_as_the_whisper_target_without_case() {
        assert_eq!(
            complete("/msg b", 6, &names()),
            (5, vec!["Bea".to_string(), "bob".to_string()])
        );
        assert_eq!(complete("/msg c", 6, &names()), (5, vec!["carol ".to_string()]));
        assert_eq!(
            complete("/msg carol hi", 13, &names()).1,
            Vec::<String>::new(),
            "the text"
        );
        assert!(
            complete("/msg d", 6, &names()).1.is_empty(),
            "a name with a space cannot be typed"
        );
        assert_eq!(complete("/msg ", 5, &names()).1.len(), 3);
    }

    #[test]
    fn a_position_inside_a_character_completes_nothing() {
        assert_eq!(complete("/é", 2, &names()), (2, Vec::new()));
    }

    fn member(n: u8) -> MemberId {
        MemberId::from_bytes([n; 20])
    }

    fn change(change: MemberChange, n: u8) -> Event {
        Event::Member {
            change,
            member: member(n),
            name: format!("m{n}"),
        }
    }

    fn status(neighbours: usize) -> Event {
        Event::Status(crate::node::Status {
            connected: neighbours > 0,
            neighbours,
            ..Default::default()
        })
    }

    #[test]
    fn churn_is_hidden_unless_verbose() {
        assert!(!shown(&change(MemberChange::Connected, 1), false));
        assert!(!shown(&status(1), false));
        assert!(shown(&change(MemberChange::Joined, 1), false));
        assert!(shown(&Event::Error("x".into()), false));
        assert!(shown(&status(1), true));
    }

    #[test]
    fn a_replaced_connection_says_nothing_and_a_lost_one_says_so_once() {
        let t0 = Instant::now();
        let mut c = Churn::default();
        c.event(&change(MemberChange::Disconnected, 1), t0);
        c.event(&change(MemberChange::Connected, 1), t0 + Duration::from_millis(50));
        assert!(c.due(t0 + GRACE * 2).is_empty(), "replaced");
        c.event(&change(MemberChange::Disconnected, 2), t0);
        assert!(c.due(t0 + GRACE / 2).is_empty());
        let lines = c.due(t0 + GRACE);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("lost the connection to m2"), "{lines:?}");
        assert!(c.due(t0 + GRACE * 3).is_empty(), "once");
        c.event(&change(MemberChange::Disconnected, 3), t0);
        c.event(&change(MemberChange::Left, 3), t0);
        assert!(c.due(t0 + GRACE).is_empty(), "it left: its own line says so");
    }

    #[test]
    fn being_alone_is_said_after_the_grace_and_being_back_at_once() {
        let t0 = Instant::now();
        let mut c = Churn::default();
        c.event(&status(0), t0);
        assert!(c.due(t0 + GRACE).is_empty(), "never connected yet: the node says it");
        c.event(&status(1), t0);
        c.event(&status(0), t0);
        c.event(&status(1), t0 + Duration::from_millis(10));
        assert!(c.due(t0 + GRACE).is_empty(), "a moment without a neighbour");
        c.event(&status(0), t0);
        let lines = c.due(t0 + GRACE);
        assert!(lines[0].contains("no member connected"), "{lines:?}");
        assert!(c.due(t0 + GRACE * 2).is_empty(), "once");
        let back = c.event(&status(2), t0 + GRACE * 3);
        assert_eq!(back, ["* connected again (2 neighbour(s))"]);
    }

    /// Red-team findings: lines printed while the editor was not reading ran together
    /// (the printer adds no line break then), and a flood of long lines held while a
    /// search was up could grow without end.
    #[test]
    fn printed_lines_end_with_a_break_and_are_cut_at_the_limit() {
        assert_eq!(printable("one".into()), "one\n");
        assert_eq!(printable("two\n".into()), "two\n");
        let long = printable("é".repeat(MAX_LINE_CHARS + 10));
        assert_eq!(long.chars().count(), MAX_LINE_CHARS + " [cut]\n".len());
    }

    #[test]
    fn help_names_every_command() {
        let help = help_lines().join("\n");
        for (c, _) in COMMANDS {
            assert!(help.contains(c), "{c}");
        }
    }
}
