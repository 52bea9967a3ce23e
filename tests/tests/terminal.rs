//! The chat at a terminal, as a person uses it (issue 13), played through tmux: typing
//! while messages arrive, line editing, completion, a narrow terminal and a resize,
//! pasted control bytes, Ctrl-D and Ctrl-C, colour and NO_COLOR. The other member is an
//! ordinary `group-chat --json` in a pipe.

use std::time::Duration;

use peergroup_tests::group::*;
use peergroup_tests::tmux::Tmux;
use peergroup_tests::{Peer, skip_or_fail};

const LIMIT: Duration = Duration::from_secs(10);

/// `alice`'s `group-chat` at a terminal of 100 x 30, with `env` set.
fn at_terminal(alice: &Member, env: &[(&str, &str)]) -> Tmux {
    let mut cmd = alice
        .home
        .command("group-chat", &["--identity", alice.name, "--group", GROUP]);
    cmd.env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Tmux::start(&cmd, (100, 30))
}

/// The last line of the screen that is not blank: where the prompt is.
fn prompt_line(screen: &str) -> &str {
    screen.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// alice at a terminal (with `env`) and bob in a pipe, both online and present to
/// each other; `None` (skipped, or a failure under CI=true) without tmux.
fn alice_and_bob(env: &[(&str, &str)]) -> Option<(Vec<Member>, Tmux, Peer)> {
    if let Err(why) = Tmux::available() {
        skip_or_fail(&why);
        return None;
    }
    let g = group(&["alice", "bob"]);
    let mut bob: Peer = g[1].online();
    let term = at_terminal(&g[0], env);
    term.wait("alice ready", LIMIT, |s| s.contains("ready"));
    wait_present(&mut bob, &g[0]);
    Some((g, term, bob))
}

#[test]
fn a_person_types_edits_completes_and_leaves_while_messages_arrive() {
    let Some((g, term, mut bob)) = alice_and_bob(&[]) else {
        return;
    };

    // Half a line typed when bob's message arrives: it is printed above the prompt,
    // and what alice typed stays as it was.
    term.keys(&["hello bo"]);
    term.wait("the typed text", LIMIT, |s| prompt_line(s) == "> hello bo");
    bob.send("from bob, while alice types");
    let screen = term.wait("bob's message", LIMIT, |s| {
        s.contains("<bob> from bob, while alice types")
    });
    assert_eq!(prompt_line(&screen), "> hello bo", "{screen}");
    // Line editing: the arrow keys move, Backspace deletes, Home goes to the start.
    term.keys(&[
        "b, how arr you",
        "Left",
        "Left",
        "Left",
        "Left",
        "BSpace",
        "e",
        "Home",
        "Right",
        "BSpace",
        "H",
    ]);
    term.keys(&["Enter"]);
    wait_texts(&mut bob, &["Hello bob, how are you"]);

    // Completion of commands and member names; /help; an unknown command.
    term.keys(&["/wh", "Tab", "Enter"]);
    let screen = term.wait("the member list", LIMIT, |s| s.contains("* present:"));
    assert!(screen.contains("> /who"), "{screen}");
    term.keys(&["/msg b", "Tab", "psst", "Enter"]);
    bob.wait_for("alice's whisper", LIMIT, |e| {
        e["event"] == "whisper" && e["text"] == "psst"
    });
    term.keys(&["/help", "Enter"]);
    term.wait("the help", LIMIT, |s| s.contains("/history [N]"));
    term.keys(&["/frob", "Enter"]);
    term.wait("the refusal", LIMIT, |s| {
        s.contains("unknown command /frob: /help lists")
    });
    term.keys(&["/history 2", "Enter"]);
    term.wait("the history", LIMIT, |s| s.contains("<alice> Hello bob, how are you"));
    // Actions both ways; an edit of alice's last message, which bob sees as one.
    term.keys(&["/me waves", "Enter"]);
    bob.wait_for("alice's action", LIMIT, |e| {
        e["event"] == "message" && e["text"] == "waves" && e["action"] == true
    });
    bob.send("/me nods");
    term.wait("bob's action", LIMIT, |s| s.contains("* bob nods"));
    term.keys(&["/ed", "Tab", "waves hello", "Enter"]);
    term.wait("the edit's confirmation", LIMIT, |s| s.contains("* message edited"));
    bob.wait_for("alice's edit", LIMIT, |e| {
        e["event"] == "message" && e["edited"] == true && e["text"] == "waves hello" && e["action"] == true
    });

    // Connection churn is not shown without -v; names are in colour.
    let screen = term.screen();
    assert!(
        !screen.contains("neighbour connection") && !screen.contains("* status"),
        "{screen}"
    );
    let coloured = term.screen_with_colours();
    assert!(coloured.contains("bob") && coloured.contains("\x1b["), "{coloured:?}");

    // A narrow terminal, a message arriving then, pasted control bytes and a resize
    // mid-line: the chat goes on.
    term.resize(20, 8);
    term.keys(&["a long line typed in a narrow terminal"]);
    bob.send("while narrow");
    term.paste("\u{2}\u{6}garbage\u{1b}[999;999H\u{7f}\u{7}");
    term.keys(&["C-@"]);
    term.resize(100, 30);
    term.keys(&["End", " end", "Enter"]);
    let sent = bob.wait_for("the line typed while narrow", LIMIT, |e| {
        e["event"] == "message" && e["text"].as_str().is_some_and(|t| t.ends_with(" end"))
    });
    assert!(
        sent["text"].as_str().unwrap().contains("typed in a narrow terminal"),
        "{sent}"
    );
    term.wait("bob's message after the resize", LIMIT, |s| {
        s.contains("<bob> while narrow")
    });

    // Ctrl-D on an empty line leaves cleanly; bob sees alice go.
    term.keys(&["C-d"]);
    term.wait("a clean exit", LIMIT, |s| s.contains("EXIT 0"));
    term.assert_terminal_restored();
    wait_member(&mut bob, "left", &g[0]);
}

/// Red-team finding: after /quit the editor read again, putting the terminal back in
/// raw mode as the process ended: the shell after it had no echo.
#[test]
fn quit_leaves_the_terminal_as_it_was() {
    let Some((_g, term, _bob)) = alice_and_bob(&[]) else {
        return;
    };
    term.keys(&["/quit", "Enter"]);
    term.wait("a clean exit", LIMIT, |s| s.contains("EXIT 0"));
    term.assert_terminal_restored();
}

#[test]
fn ctrl_c_leaves_and_no_color_turns_colour_off() {
    let Some((g, term, mut bob)) = alice_and_bob(&[("NO_COLOR", "1")]) else {
        return;
    };
    bob.send("plain please");
    term.wait("bob's message", LIMIT, |s| s.contains("<bob> plain please"));
    let coloured = term.screen_with_colours();
    assert!(!coloured.contains("\x1b[38;5;"), "{coloured:?}");
    term.keys(&["half a line", "C-c"]);
    term.wait("a clean exit", LIMIT, |s| s.contains("EXIT 0"));
    term.assert_terminal_restored();
    wait_member(&mut bob, "left", &g[0]);
}
