//! group-chat: go online with a membership and chat; a front end over common::node.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use common::chat::{self, Input, Line, MessageRef, Mode, Style};
use common::cli::{self, MembershipArgs, parse_duration_arg};
use common::clock;
use common::follow::{self, Drained, Follower, View};
use common::identity::Identity;
use common::membership::{self, Membership};
use common::node::{self, Event, NodeConfig, PeerSpec, Post};
use common::store::{Durability, STORE_FILE, Store};
use common::terminal::{self, Churn, Printer, Terminal, Typed};
use time::UtcOffset;

/// Go online in GROUP as NAME: chat lines from stdin, messages and events out.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Input: a plain line is a chat message; /msg MEMBER TEXT whispers; /who lists present members; /history [N] shows the last N messages; /help lists the commands; /quit or end of input leaves. At a terminal: line editing, Up/Down for earlier lines, Tab completes commands and member names, Ctrl-D or Ctrl-C leaves; names in colour unless NO_COLOR is set.\n\nExamples:\n  group-chat --identity alice --group Friends\n  group-chat --identity bob --group Friends --json --peer 192.0.2.7:7400\n  group-chat --identity ci --group Builds --send 'build 42 passed'\n  group-chat --identity bob --group Friends --history"
)]
struct Args {
    #[command(flatten)]
    target: MembershipArgs,
    /// Listen on IP:PORT instead of the membership's stored address
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// Advertise IP:PORT to others instead of the bound addresses (repeatable; behind port forwarding)
    #[arg(long, value_name = "IP:PORT")]
    advertise: Vec<String>,
    /// Do not ask the home router for a port mapping (UPnP IGD, NAT-PMP/PCP), which is
    /// asked for when listening on private addresses only and no --advertise is given
    #[arg(long)]
    no_port_mapping: bool,
    /// Do not announce this member on the LAN or look for others there (mDNS), which
    /// happens when listening on LAN addresses
    #[arg(long)]
    no_mdns: bool,
    /// Also dial [MEMBER_ID@]IP:PORT (repeatable); with an id, the peer must be that member
    #[arg(long, value_name = "[ID@]IP:PORT")]
    peer: Vec<PeerSpec>,
    /// One JSON object per line on stdout for every event (see README)
    #[arg(long)]
    json: bool,
    /// At a terminal, also show connection changes and status lines (hidden there
    /// otherwise; pipes always get them)
    #[arg(short, long)]
    verbose: bool,
    /// Which events to print (comma-separated): message, record, whisper, member,
    /// connection, status, ready, error, credential, revoked, property, or all
    /// [default: all but record]
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = event_kind)]
    events: Vec<String>,
    /// With record events: only records of TYPE (a UUID or a short name; repeatable)
    #[arg(long = "record-type", value_name = "TYPE")]
    record_types: Vec<String>,
    /// Print the stored chat messages that have not expired, oldest first, and exit
    /// without going online (with --json: one message event per line)
    #[arg(long, conflicts_with_all = ["send", "listen", "peer", "advertise", "no_port_mapping", "no_mdns", "events", "record_types", "message_lifetime"])]
    history: bool,
    /// With --history: only messages created at or after T (RFC 3339, or a duration
    /// meaning that long ago: 2h)
    #[arg(long, value_name = "T", value_parser = cli::parse_time_arg)]
    since: Option<i64>,
    /// Publish TEXT, wait until a neighbour has it, leave; exit 1 if none is reached in time
    #[arg(long, value_name = "TEXT")]
    send: Option<String>,
    /// With --send: the message lives DURATION (at most the group's message lifetime)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, requires = "send")]
    expires: Option<Duration>,
    /// Messages sent in this session live DURATION (at most the group's message lifetime)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, conflicts_with = "send")]
    message_lifetime: Option<Duration>,
    /// How long --send waits for a neighbour
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, default_value = "10s")]
    timeout: Duration,
    /// Most neighbour connections
    #[arg(long, value_name = "N", default_value_t = node::DEFAULT_MAX_NEIGHBOURS as u16, value_parser = clap::value_parser!(u16).range(1..=64))]
    max_neighbours: u16,
    /// normal: survive a crash of the process; full: also survive power loss (fsync per commit)
    #[arg(long, value_name = "MODE", default_value = "normal", value_parser = ["normal", "full"])]
    durability: String,
}

fn event_kind(text: &str) -> Result<String, String> {
    if text == "all" || chat::EVENT_KINDS.contains(&text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "unknown event kind {text:?}: {} or all",
            chat::EVENT_KINDS.join(", ")
        ))
    }
}

/// The event kinds `--events` selects.
fn selected(events: &[String]) -> Vec<&'static str> {
    if events.is_empty() {
        return chat::EVENT_KINDS.into_iter().filter(|k| *k != "record").collect();
    }
    chat::EVENT_KINDS
        .into_iter()
        .filter(|k| events.iter().any(|e| e == "all" || e == k))
        .collect()
}

fn main() -> ExitCode {
    let args = cli::parse::<Args>();
    cli::require::<Args>(args.since.is_none() || args.history, "--since goes with --history");
    // Read the local offset while single-threaded: the time crate refuses later.
    let offset = UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC);
    cli::init_logging();
    cli::run("group-chat", || run(args, offset))
}

fn run(args: Args, offset: UtcOffset) -> anyhow::Result<()> {
    let home = args.target.home.home()?;
    let identity = Identity::load(&home, &args.target.identity)?;
    let m = membership::find(&home, &args.target.identity, &args.target.group)?;
    if args.history {
        // Dates on lines from other days, and colour, for a person reading.
        let style = if std::io::stdout().is_terminal() {
            terminal_style()
        } else {
            Style {
                colour: false,
                dates: true,
            }
        };
        let mode = if args.json { Mode::Json } else { Mode::Human };
        return print_history(&identity, &m, mode, (offset, style), args.since);
    }
    let lifetime = args.expires.or(args.message_lifetime);
    if let Some(life) = lifetime {
        check_lifetime(&m, life)?;
    }
    for a in &args.advertise {
        membership::parse_address(a)?;
    }
    let listen = match &args.listen {
        Some(l) => membership::parse_address(l)?,
        None => m.listen,
    };
    // One thread runs the node and its connections: no hand-offs between workers on the
    // message path; large sync batches verify on every core anyway.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let sent = runtime.block_on(online(args, identity, m, listen, offset))?;
    runtime.shutdown_timeout(Duration::from_millis(200));
    sent
}

/// How a person at a terminal sees lines: dates on other days, names in colour unless
/// `NO_COLOR` is set (to anything but empty, as no-color.org says).
fn terminal_style() -> Style {
    Style {
        colour: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        dates: true,
    }
}

fn now_ms() -> i64 {
    (clock::now_precise().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Refuses a message lifetime longer than the group's in force.
fn check_lifetime(m: &Membership, life: Duration) -> anyhow::Result<()> {
    let store = Store::open_read_only(&m.dir.join(STORE_FILE))?;
    let most = common::admin::properties_now(m, &store)?.message_lifetime_secs;
    if life.as_secs() > most {
        anyhow::bail!(
            "a message in {} lives at most {} (the group's message lifetime): give a shorter duration",
            m.group.name,
            clock::format_duration(Duration::from_secs(most))
        );
    }
    Ok(())
}

/// The stored messages, oldest first: all of them, or the last `last`.
fn history_lines(
    identity: (common::member::MemberId, &str),
    dir: &std::path::Path,
    (mode, look): (Mode, (UtcOffset, Style)),
    since_ms: Option<i64>,
    last: Option<usize>,
) -> anyhow::Result<Vec<String>> {
    let store = Store::open_read_only(&dir.join(STORE_FILE))?;
    let view = follow::HistoryView {
        mode,
        look,
        since_ms,
        now_ms: now_ms(),
    };
    let mut lines = follow::history(&store, identity, view)?;
    if let Some(n) = last {
        lines.drain(..lines.len().saturating_sub(n));
    }
    Ok(lines)
}

fn print_history(
    identity: &Identity,
    m: &Membership,
    mode: Mode,
    look: (UtcOffset, Style),
    since_ms: Option<i64>,
) -> anyhow::Result<()> {
    let me = (identity.member_id(), identity.friendly_name());
    let mut out = String::new();
    for l in history_lines(me, &m.dir, (mode, look), since_ms, None)? {
        out.push_str(&l);
        out.push('\n');
    }
    cli::write_stdout(out.as_bytes())
}

/// The id of the message `/edit` or `/delete` means.
fn message_id(dir: &std::path::Path, me: &common::member::MemberId, target: MessageRef) -> anyhow::Result<uuid::Uuid> {
    let store = Store::open_read_only(&dir.join(STORE_FILE))?;
    match follow::message_id(&store, me, target, now_ms())? {
        Some(id) => Ok(id),
        None => anyhow::bail!("you have no live message to change there: /history shows yours"),
    }
}

/// Lines waiting for the output thread, at most.
const OUT_QUEUE: usize = 1024;

/// Queues a line for the output thread; when it is [`OUT_QUEUE`] behind the line is
/// dropped and counted, and the count goes out first once there is room.
fn say(tx: &std::sync::mpsc::SyncSender<Out>, dropped: &mut u64, mode: Mode, line: Line) {
    if *dropped > 0 {
        let note = chat::error_line(mode, &format!("{dropped} lines were dropped: the display fell behind"));
        if tx.try_send(Out::Line(note)).is_err() {
            *dropped += 1;
            return;
        }
        *dropped = 0;
    }
    if tx.try_send(Out::Line(line)).is_err() {
        *dropped += 1;
    }
}

enum Out {
    Line(Line),
    Records,
    Flush(std::sync::mpsc::Sender<()>),
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn online(
    args: Args,
    identity: Identity,
    m: Membership,
    listen: std::net::SocketAddr,
    offset: UtcOffset,
) -> anyhow::Result<anyhow::Result<()>> {
    let lifetime = args.expires.or(args.message_lifetime);
    let mode = if args.json { Mode::Json } else { Mode::Human };
    // A person at a terminal: line editing, lines above the prompt, colour, churn
    // hidden. Pipes keep plain lines, exactly as before.
    let interactive =
        mode == Mode::Human && args.send.is_none() && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let style = if interactive { terminal_style() } else { Style::PLAIN };
    let kinds = selected(&args.events);
    let record_types = args
        .record_types
        .iter()
        .map(|t| common::records::record_type(&m.group.id, t))
        .collect::<Result<Vec<_>, _>>()?;
    if !record_types.is_empty() && !kinds.contains(&"record") {
        anyhow::bail!("--record-type needs record events: add --events record (or all)");
    }
    let me = identity.member_id();
    let my_name = identity.friendly_name().to_string();
    let dir = m.dir.clone();
    let online_since_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let group_name = m.group.name.clone();
    let cfg = NodeConfig {
        identity,
        membership: m,
        listen,
        advertise: args.advertise.clone(),
        peers: args.peer.clone(),
        max_neighbours: usize::from(args.max_neighbours),
        durability: if args.durability == "full" {
            Durability::Full
        } else {
            Durability::Normal
        },
        initial_messages: args
            .send
            .iter()
            .map(|text| Post {
                text: text.clone(),
                lifetime_ms: lifetime.map(millis),
                action: false,
            })
            .collect(),
        discover: true,
        // --send dials out and leaves: nobody needs to reach it.
        port_mapping: !args.no_port_mapping && args.send.is_none(),
        mdns: !args.no_mdns && args.send.is_none(),
        check_reach: args.send.is_none(),
        record_events: kinds.contains(&"record"),
    };
    // The output thread's own store connection and cursor, opened before going online so
    // that the first events are not held up behind it.
    let view = View {
        me,
        my_name: my_name.clone(),
        mode,
        offset,
        style,
        online_since_ms,
        records: kinds.contains(&"record").then_some(record_types.clone()),
        messages: kinds.contains(&"message"),
    };
    let opened = Follower::open(&dir, view);
    let (handle, mut events, task) = node::start(cfg).await.context("cannot go online")?;
    // --send is for scripts: in human mode only errors are worth a line.
    let quiet = mode == Mode::Human && args.send.is_some();
    if mode == Mode::Human && !quiet {
        cli::note(
            "group-chat",
            &format!(
                "online in {group_name} as {my_name} ({}), listening on {}",
                me.short(),
                handle.addresses.join(", ")
            ),
        );
    }

    // stdout belongs to one thread that follows the store: a slow reader delays only it.
    // Bounded: a display that stops reading must not make this process hold whatever
    // other members send meanwhile (see `say`).
    let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Out>(OUT_QUEUE);
    let mut dropped = 0u64;
    let dirty = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicBool::new(false));
    let names = terminal::Names::default();
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<Option<String>>(64);
    // Whether the line editor still runs: lines after it stopped (the goodbyes) are
    // written plainly, as its printer would leave them without a line end.
    let editing = Arc::new(AtomicBool::new(interactive));
    let saved = interactive.then(terminal::Saved::now);
    let printer = if interactive {
        let (mut term, printer) = Terminal::new(names.clone()).context("cannot use the terminal")?;
        let line_tx = line_tx.clone();
        let editing = editing.clone();
        std::thread::spawn(move || {
            loop {
                let typed = term.read();
                // After /quit the editor reads no more: a read would put the terminal
                // back into raw mode as the process ends.
                let (line, leave) = match typed {
                    Typed::Line(l) => {
                        let quit = chat::parse_input(&l) == Input::Quit;
                        (Some(l), quit)
                    }
                    Typed::Leave => (None, true),
                };
                if leave {
                    editing.store(false, Ordering::Release);
                }
                if line_tx.blocking_send(line).is_err() || leave {
                    return;
                }
            }
        });
        Some(printer)
    } else {
        None
    };
    let output = {
        let (dirty, closed) = (dirty.clone(), closed.clone());
        let editing = editing.clone();
        std::thread::spawn(move || output_loop(out_rx, opened, (&dirty, &closed), printer.map(|p| (p, editing))))
    };
    let notify_records = |tx: &std::sync::mpsc::SyncSender<Out>| {
        // A full queue leaves the flag clear, so the next change asks again.
        if !dirty.swap(true, Ordering::AcqRel) && tx.try_send(Out::Records).is_err() {
            dirty.store(false, Ordering::Release);
        }
    };
    let _ = out_tx.send(Out::Records);

    if args.send.is_none() && !interactive {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) => {
                        if line_tx.blocking_send(Some(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = line_tx.blocking_send(None);
        });
    }
    let mut seq = handle.follow();
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut result = Ok(());
    let mut check_closed = tokio::time::interval(Duration::from_millis(200));
    let mut churn = Churn::default();
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let shown = (!interactive || terminal::shown(&ev, args.verbose))
                    && kinds.contains(&chat::event_kind(&ev))
                    && chat::of_types(&ev, &record_types);
                if let Some(line) = chat::event_line(mode, &ev, (offset, style))
                    && (!quiet || matches!(ev, Event::Error(_)))
                    && shown
                {
                    say(&out_tx, &mut dropped, mode, line);
                }
                if interactive && !args.verbose {
                    for l in churn.event(&ev, std::time::Instant::now()) {
                        say(&out_tx, &mut dropped, mode, Line::Err(l));
                    }
                }
                // Names to complete: whoever is present.
                if interactive && matches!(ev, Event::Member { .. } | Event::Ready) {
                    let members = handle.members().await.unwrap_or_default();
                    names.set(members.into_iter().filter(|m| !m.is_self).map(|m| m.name));
                }
                if ev == Event::Ready && args.send.is_some() {
                    break;
                }
                if let Event::Revoked { member, by, by_name, reason, at_ms, .. } = &ev
                    && *member == me
                {
                    result = Err(anyhow::anyhow!(chat::revoked_message(by, by_name, &group_name, *at_ms, reason)));
                    break;
                }
            }
            Ok(()) = seq.changed() => notify_records(&out_tx),
            line = line_rx.recv() => {
                let Some(Some(line)) = line else { break };
                let input = chat::parse_input(&line);
                let action = matches!(input, Input::Action(_));
                match input {
                    Input::Say(text) | Input::Action(text) => {
                        let post = Post { action, text, lifetime_ms: lifetime.map(millis) };
                        if let Err(e) = handle.post(post).await {
                            say(&out_tx, &mut dropped, mode, chat::error_line(mode, &e.to_string()));
                        }
                    }
                    Input::Edit { target, text } => {
                        let done = match message_id(&dir, &me, target) {
                            Ok(id) => handle.edit(id, &text).await.map_err(anyhow::Error::from),
                            Err(e) => Err(e),
                        };
                        match done {
                            Ok(_) if mode == Mode::Human => say(&out_tx, &mut dropped, mode, Line::Err("* message edited".into())),
                            Ok(_) => {}
                            Err(e) => say(&out_tx, &mut dropped, mode, chat::error_line(mode, &format!("cannot edit: {e:#}"))),
                        }
                    }
                    Input::Delete(target) => {
                        let done = match message_id(&dir, &me, target) {
                            Ok(id) => handle.delete(id).await.map_err(anyhow::Error::from),
                            Err(e) => Err(e),
                        };
                        match done {
                            Ok(_) if mode == Mode::Human => say(&out_tx, &mut dropped, mode, Line::Err("* message deleted".into())),
                            Ok(_) => {}
                            Err(e) => say(&out_tx, &mut dropped, mode, chat::error_line(mode, &format!("cannot delete: {e:#}"))),
                        }
                    }
                    Input::Whisper { member, text } => {
                        if let Err(e) = handle.whisper(&member, &text).await {
                            say(&out_tx, &mut dropped, mode, chat::error_line(mode, &format!("whisper to {member} failed: {e}")));
                        }
                    }
                    Input::Who => {
                        let members = handle.members().await.unwrap_or_default();
                        say(&out_tx, &mut dropped, mode, chat::members_line(mode, &members));
                    }
                    Input::Help => {
                        for l in terminal::help_lines() {
                            say(&out_tx, &mut dropped, mode, Line::Err(l));
                        }
                    }
                    Input::History(n) => {
                        let look = (offset, if interactive { style } else { Style { colour: false, dates: true } });
                        match history_lines((me, &my_name), &dir, (Mode::Human, look), None, Some(n)) {
                            Ok(lines) if mode == Mode::Json || !lines.is_empty() => say(&out_tx, &mut dropped, mode, chat::history_line(mode, lines)),
                            Ok(_) => say(&out_tx, &mut dropped, mode, Line::Err("* no stored messages".into())),
                            Err(e) => say(&out_tx, &mut dropped, mode, chat::error_line(mode, &format!("cannot read the history: {e:#}"))),
                        }
                    }
                    Input::Quit => break,
                    Input::Nothing => {}
                    Input::Bad(msg) => say(&out_tx, &mut dropped, mode, chat::error_line(mode, &msg)),
                }
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep_until(deadline), if args.send.is_some() => {
                result = Err(anyhow::anyhow!(
                    "no member reached within {}; the message is stored and will spread when a member comes online",
                    common::clock::format_duration(args.timeout)
                ));
                break;
            }
            _ = check_closed.tick() => {
                if closed.load(Ordering::Acquire) {
                    break;
                }
                for l in churn.due(std::time::Instant::now()) {
                    say(&out_tx, &mut dropped, mode, Line::Err(l));
                }
            }
        }
    }
    let _ = handle.leave().await;
    let _ = task.await;
    let (ack_tx, ack_rx) = std::sync::mpsc::channel();
    let _ = out_tx.send(Out::Flush(ack_tx));
    drop(out_tx);
    // A reader that stopped reading must not keep us alive: what it has not read stays
    // unshown (the cursor says so) and appears at the next start.
    if ack_rx.recv_timeout(Duration::from_secs(2)).is_ok() {
        let _ = output.join();
    }
    if let Some(saved) = saved {
        saved.restore();
    }
    Ok(result)
}

fn output_loop(
    rx: std::sync::mpsc::Receiver<Out>,
    opened: Result<Follower, follow::FollowError>,
    (dirty, closed): (&AtomicBool, &AtomicBool),
    mut printer: Option<(Printer, Arc<AtomicBool>)>,
) {
    let mut follower = match opened {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "group-chat: cannot follow the store: {e}");
            closed.store(true, Ordering::Release);
            return;
        }
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut write = |line: Line| -> bool {
        // At a terminal every line goes above the prompt, never through what is being
        // typed.
        if let Some((p, editing)) = printer.as_mut()
            && editing.load(Ordering::Acquire)
        {
            let (Line::Out(l) | Line::Err(l)) = line;
            return p.print(terminal::printable(l)).is_ok();
        }
        match line {
            Line::Out(mut l) => {
                // One write per line, newline included: a line is shown when it is whole.
                l.push('\n');
                let mut out = stdout.lock();
                out.write_all(l.as_bytes()).and_then(|_| out.flush()).is_ok()
            }
            Line::Err(l) => {
                let _ = writeln!(stderr.lock(), "{l}");
                true
            }
        }
    };
    // Continue after what an earlier session showed: a restart shows nothing twice. A
    // store that cannot be read now is tried again at the next notice.
    let mut drain = |write: &mut dyn FnMut(Line) -> bool| -> bool {
        dirty.store(false, Ordering::Release);
        !matches!(follower.drain(write), Drained::Stopped)
    };
    while let Ok(msg) = rx.recv() {
        let ok = match msg {
            Out::Line(l) => write(l),
            Out::Records => drain(&mut write),
            Out::Flush(ack) => {
                let ok = drain(&mut write);
                let _ = ack.send(());
                ok
            }
        };
        if !ok {
            // stdout closed: leave quietly.
            closed.store(true, Ordering::Release);
            return;
        }
    }
}
