//! What `group-chat` shows and reads: input lines (`/msg`, `/who`, `/quit`, plain text)
//! and output lines, either human (`[HH:MM:SS] <name> text`) or one JSON object per
//! event. Pure functions, so the front end and its tests share them.

use serde_json::{Value, json};
use time::{OffsetDateTime, UtcOffset};

use crate::clock;
use crate::member::MemberId;
use crate::names::{Directory, sanitize};
use crate::node::{ConnChange, ConnKind, ConnReason, Event, MemberChange, MemberInfo, Status, Via};
use crate::record;
use crate::store::{Store, StoredRecord};

/// One line of input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A chat message to publish.
    Say(String),
    /// `/msg MEMBER TEXT`: a whisper.
    Whisper {
        /// Friendly name or member-id prefix.
        member: String,
        /// The text.
        text: String,
    },
    /// `/who`: list present members.
    Who,
    /// `/help`: the commands.
    Help,
    /// `/history [N]`: the last N stored messages.
    History(usize),
    /// `/me TEXT`: an action.
    Action(String),
    /// `/edit [^N|ID] TEXT`: new text for a message of one's own.
    Edit {
        /// Which message.
        target: MessageRef,
        /// Its new text.
        text: String,
    },
    /// `/delete [^N|ID]`: delete a message of one's own.
    Delete(MessageRef),
    /// `/quit`: leave.
    Quit,
    /// Nothing to do (an empty line).
    Nothing,
    /// A command that is not understood, with what to say.
    Bad(String),
}

/// Which message `/edit` and `/delete` mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRef {
    /// The N-th latest live message of one's own (1: the last).
    Mine(usize),
    /// A message by id (as `--json` and `--history --json` give it).
    Id(uuid::Uuid),
}

impl MessageRef {
    /// `^N` or a message id.
    fn parse(word: &str) -> Option<MessageRef> {
        if let Some(n) = word.strip_prefix('^') {
            return n
                .parse()
                .ok()
                .filter(|n| (1..=HISTORY_MAX).contains(n))
                .map(MessageRef::Mine);
        }
        uuid::Uuid::parse_str(word).ok().map(MessageRef::Id)
    }
}

/// Messages `/history` shows without a number.
pub const HISTORY_DEFAULT: usize = 20;
/// Most messages `/history N` shows.
pub const HISTORY_MAX: usize = 1000;

/// Parses one line of input (without its newline).
pub fn parse_input(line: &str) -> Input {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Input::Nothing;
    }
    let Some(cmd) = line.strip_prefix('/') else {
        return Input::Say(line.to_string());
    };
    // "//text" sends "/text" as a chat message.
    if cmd.starts_with('/') {
        return Input::Say(cmd.to_string());
    }
    let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    match name {
        "quit" | "exit" => Input::Quit,
        "who" => Input::Who,
        "help" | "?" => Input::Help,
        "history" => match rest.trim() {
            "" => Input::History(HISTORY_DEFAULT),
            n => match n.parse::<usize>() {
                Ok(n) if (1..=HISTORY_MAX).contains(&n) => Input::History(n),
                _ => Input::Bad(format!("usage: /history [N] (N from 1 to {HISTORY_MAX})")),
            },
        },
        "me" if !rest.trim().is_empty() => Input::Action(rest.to_string()),
        "me" => Input::Bad("usage: /me TEXT".into()),
        "edit" => {
            let rest = rest.trim_start();
            let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
            let (target, text) = match MessageRef::parse(first) {
                Some(target) => (Some(target), after),
                None if first.starts_with('^') => (None, ""),
                None => (Some(MessageRef::Mine(1)), rest),
            };
            match target {
                Some(target) if !text.trim().is_empty() => Input::Edit {
                    target,
                    text: text.to_string(),
                },
                _ => Input::Bad(format!(
                    "usage: /edit [^N|ID] TEXT (^N: your N-th latest message, 1 to {HISTORY_MAX}; ID: a message id)"
                )),
            }
        }
        "delete" => match rest.trim() {
            "" => Input::Delete(MessageRef::Mine(1)),
            word => match MessageRef::parse(word) {
                Some(target) => Input::Delete(target),
                None => Input::Bad(format!(
                    "usage: /delete [^N|ID] (^N: your N-th latest message, 1 to {HISTORY_MAX}; ID: a message id)"
                )),
            },
        },
        "msg" => match rest.trim_start().split_once(' ') {
            Some((member, text)) if !member.is_empty() && !text.trim().is_empty() => Input::Whisper {
                member: member.to_string(),
                text: text.to_string(),
            },
            _ => Input::Bad("usage: /msg MEMBER TEXT (MEMBER: friendly name or member-id prefix)".into()),
        },
        _ => Input::Bad(format!(
            "unknown command /{name}: /help lists the commands (start with // to send a line beginning with /)"
        )),
    }
}

/// Output mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Chat lines on stdout, events on stderr.
    Human,
    /// One JSON object per line on stdout for every event.
    Json,
}

/// Where a formatted line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// To stdout (data).
    Out(String),
    /// To stderr (diagnostics).
    Err(String),
}

/// A human line for stderr, made safe for a terminal.
fn human_err(line: String) -> Line {
    Line::Err(sanitize(&line))
}

/// `name (id prefix)`, unless the name shows its prefix already (a shared name).
fn with_id(name: &str, member: &MemberId) -> String {
    let suffix = format!("({})", member.short());
    if name.ends_with(&suffix) {
        name.to_string()
    } else {
        format!("{name} {suffix}")
    }
}

fn rfc3339_ms(ms: i64) -> String {
    clock::format_rfc3339(clock::from_unix(ms.div_euclid(1000)))
}

/// `ms` as local time at `offset`.
fn local(ms: i64, offset: UtcOffset) -> OffsetDateTime {
    // A time near the ends of the calendar has no local time in every offset.
    let utc = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    utc.checked_to_offset(offset).unwrap_or(utc)
}

/// `HH:MM:SS`, with the date before it (`YYYY-MM-DD HH:MM:SS`) when `today` is given
/// and the time is on another local day.
fn stamp(ms: i64, offset: UtcOffset, today: Option<time::Date>) -> String {
    let t = local(ms, offset);
    let hms = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    match today {
        Some(d) if t.date() != d => format!("{:04}-{:02}-{:02} {hms}", t.year(), u8::from(t.month()), t.day()),
        _ => hms,
    }
}

/// How human lines look: plain (pipes, scripts: exactly as always), or for a person at
/// a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// Names in a colour of their own (a terminal, `NO_COLOR` unset).
    pub colour: bool,
    /// Times on another day than today show their date.
    pub dates: bool,
}

impl Style {
    /// Plain lines: no colour, times only.
    pub const PLAIN: Style = Style {
        colour: false,
        dates: false,
    };

    /// Today's local date at `offset`, when dates are shown.
    fn today(&self, offset: UtcOffset) -> Option<time::Date> {
        self.dates
            .then(|| local((clock::now_precise().unix_timestamp_nanos() / 1_000_000) as i64, offset).date())
    }

    /// `name` (already safe for a terminal) in `member`'s colour, when colour is on.
    pub fn paint(&self, name: &str, member: &MemberId) -> String {
        if !self.colour {
            return name.to_string();
        }
        format!("\x1b[38;5;{}m{name}\x1b[0m", colour_of(member))
    }
}

/// A member's colour: one of a set of 256-colour codes readable on dark and light
/// backgrounds, chosen by its id, so it is the same at every member's terminal.
pub fn colour_of(member: &MemberId) -> u8 {
    const PALETTE: [u8; 12] = [31, 32, 33, 34, 35, 36, 91, 92, 94, 95, 96, 166];
    let sum = member
        .as_bytes()
        .iter()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(*b)));
    PALETTE[sum as usize % PALETTE.len()]
}

/// Formats a stored chat record from someone else. It is `history` when it arrived by
/// sync and was created before `online_since_ms` (while this node was away); a record
/// created while online is live even if sync brought it (after a partition, say). A
/// later version is an edit (`edited`), a deletion marker a deletion (`deleted`, no
/// text); `None` for a deletion from history (of a message never shown here). `names`
/// are the creator's and the last modifier's: an admin may edit or delete another's
/// message, and the line then says who did.
pub fn message_line(
    mode: Mode,
    r: &StoredRecord,
    (name, modifier_name): (&str, &str),
    (offset, style): (UtcOffset, Style),
    online_since_ms: i64,
) -> Option<Line> {
    let by_other = r.record.modifier != r.record.creator;
    let text = String::from_utf8_lossy(&r.record.data);
    let history = r.via_sync && r.record.created_ms < online_since_ms;
    let (edited, deleted) = (r.record.version > 1 && !r.record.deleted, r.record.deleted);
    let action = is_action(&r.record);
    // A deletion marker at version 1 deletes nothing anyone saw; one from history, a
    // message this person never saw here.
    if deleted && (r.record.version <= 1 || (history && mode == Mode::Human)) {
        return None;
    }
    Some(match mode {
        Mode::Json => {
            let mut v = json!({
                "event": "message",
                "id": r.record.id.to_string(),
                "from": r.record.creator.to_string(),
                "name": name,
                "created": rfc3339_ms(r.record.created_ms),
                "recv_ns": r.received_ns,
                "history": history,
                "edited": edited,
                "deleted": deleted,
                "modifier": r.record.modifier.to_string(),
                "expires": rfc3339_ms(r.record.expires_ms),
            });
            if !deleted {
                v["text"] = json!(text);
                v["action"] = json!(action);
            }
            if by_other {
                v["modifier_name"] = json!(modifier_name);
            }
            Line::Out(v.to_string())
        }
        Mode::Human => {
            // Made safe first, then painted: the colour is ours, never the sender's.
            let name = style.paint(&sanitize(name), &r.record.creator);
            let when = stamp(r.record.created_ms, offset, style.today(offset));
            let by = style.paint(&sanitize(modifier_name), &r.record.modifier);
            if deleted && by_other {
                Line::Out(format!("* {by} deleted {name}'s message of {when}"))
            } else if deleted {
                Line::Out(format!("* {name} deleted their message of {when}"))
            } else {
                let note = match (edited, by_other) {
                    (true, true) => format!("(edited by {by}) "),
                    (true, false) => "(edited) ".to_string(),
                    _ => String::new(),
                };
                // An action reads as a sentence about its sender: `* bob waves`.
                let who = if action {
                    format!("* {name}")
                } else {
                    format!("<{name}>")
                };
                Line::Out(format!("[{when}] {who} {note}{}", sanitize(&text)))
            }
        }
    })
}

/// Whether a chat record is an action (`/me`).
pub fn is_action(r: &record::Record) -> bool {
    r.attributes
        .iter()
        .any(|(k, v)| k == record::ACTION_ATTR && *v == record::AttrValue::Int(1))
}

/// Formats a change to a scripts' record (`group-record`): `added` (its first
/// version), `updated`, or `deleted`; `name` is its last modifier's.
pub fn record_line(mode: Mode, r: &StoredRecord, name: &str) -> Line {
    let change = if r.record.deleted {
        "deleted"
    } else if r.record.version > 1 {
        "updated"
    } else {
        "added"
    };
    match mode {
        Mode::Json => Line::Out(
            json!({
                "event": "record",
                "change": change,
                "name": name,
                "recv_ns": r.received_ns,
                "record": crate::records::to_json(&r.record),
            })
            .to_string(),
        ),
        Mode::Human => human_err(format!(
            "* record {} of type {} {change} by {}: {}",
            r.record.id,
            r.record.rtype,
            with_id(name, &r.record.modifier),
            crate::records::to_line(&r.record, name)
        )),
    }
}

fn change_name(c: MemberChange) -> &'static str {
    match c {
        MemberChange::Connected => "connected",
        MemberChange::Disconnected => "disconnected",
        MemberChange::Joined => "joined",
        MemberChange::Left => "left",
        MemberChange::Updated => "updated",
        MemberChange::Role(_) => "role",
        MemberChange::Revoked => "revoked",
    }
}

fn status_json(s: &Status) -> Value {
    let addresses: Vec<Value> = s
        .addresses
        .iter()
        .map(|a| json!({"address": a.address, "how": a.how, "checked": a.checked}))
        .collect();
    json!({"event": "status", "listening": s.listening, "connected": s.connected, "synchronized": s.synchronized, "neighbours": s.neighbours, "reachable": s.reachable, "addresses": addresses})
}

/// The answer to `/history`: the lines as one (a long history is not dropped line by
/// line when the display falls behind); in JSON one `history` object holding them, so
/// every line of output stays one object.
pub fn history_line(mode: Mode, lines: Vec<String>) -> Line {
    match mode {
        Mode::Json => Line::Out(json!({"event": "history", "lines": lines}).to_string()),
        Mode::Human => Line::Out(lines.join("\n")),
    }
}

/// The kinds of event `group-chat --events` selects (`record` is off unless asked).
pub const EVENT_KINDS: [&str; 11] = [
    "message",
    "record",
    "whisper",
    "member",
    "connection",
    "status",
    "ready",
    "error",
    "credential",
    "revoked",
    "property",
];

/// The kind of a node event, as `--events` names it.
pub fn event_kind(e: &Event) -> &'static str {
    match e {
        Event::Ready => "ready",
        Event::Status(_) => "status",
        Event::Member { .. } => "member",
        Event::Connection { .. } => "connection",
        Event::Whisper { .. } => "whisper",
        Event::Credential { .. } => "credential",
        Event::Revoked { .. } => "revoked",
        Event::Property { .. } => "property",
        Event::Expired { .. } => "record",
        Event::Error(_) => "error",
    }
}

/// Whether an event passes `--record-type`: a record's expiry only when its type is
/// one of `types` (or none are given); every other event.
pub fn of_types(e: &Event, types: &[uuid::Uuid]) -> bool {
    match e {
        Event::Expired { rtype, .. } => types.is_empty() || types.contains(rtype),
        _ => true,
    }
}

/// The answer to `/who`.
pub fn members_line(mode: Mode, members: &[MemberInfo]) -> Line {
    match mode {
        Mode::Json => Line::Out(
            json!({"event": "members", "members": members.iter().map(|m| json!({"member": m.member, "name": m.name, "self": m.is_self, "role": m.role.name(), "via": m.via.map(|v| v.name())})).collect::<Vec<_>>()})
                .to_string(),
        ),
        Mode::Human => {
            let list = members
                .iter()
                .map(|m| {
                    let mut tags = Vec::new();
                    if m.is_self {
                        tags.push("you");
                    }
                    if m.role == crate::pki::Role::Admin {
                        tags.push("admin");
                    }
                    // How this node reaches it; a member with no connection of its own
                    // hears and is heard through the others.
                    if let Some(via) = m.via {
                        tags.push(via.name());
                    }
                    let tags = if tags.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", tags.join(", "))
                    };
                    format!("{}{tags}", with_id(&m.name, &m.member))
                })
                .collect::<Vec<_>>()
                .join(", ");
            human_err(format!("* present: {list}"))
        }
    }
}

/// ": REASON" when the admin gave one.
fn revocation_reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

/// What `group-chat` says when this node's own membership was revoked, before it
/// exits 1.
pub fn revoked_message(by: &MemberId, by_name: &str, group: &str, at_ms: i64, reason: &str) -> String {
    let at = clock::format_rfc3339(clock::from_unix(at_ms.div_euclid(1000)));
    sanitize(&format!(
        "your membership of {group} was revoked by {} at {at}{}",
        with_id(by_name, by),
        revocation_reason(reason)
    ))
}

/// An error line.
pub fn error_line(mode: Mode, message: &str) -> Line {
    match mode {
        Mode::Json => Line::Out(json!({"event": "error", "message": message}).to_string()),
        Mode::Human => human_err(format!("group-chat: {message}")),
    }
}

/// Formats a node event; `None` for events a mode does not show.
pub fn event_line(mode: Mode, e: &Event, (offset, style): (UtcOffset, Style)) -> Option<Line> {
    Some(match (mode, e) {
        (Mode::Json, Event::Ready) => Line::Out(json!({"event": "ready"}).to_string()),
        (Mode::Human, Event::Ready) => Line::Err("* ready: connected and synchronized".into()),
        (Mode::Json, Event::Status(s)) => Line::Out(status_json(s).to_string()),
        (Mode::Human, Event::Status(s)) => human_err(format!(
            "* status: {}{}{}{}, {} neighbour(s); advertising {}",
            if s.listening { "listening" } else { "not listening" },
            if s.connected { ", connected" } else { "" },
            if s.synchronized { ", synchronized" } else { "" },
            if s.reachable { ", reachable" } else { "" },
            s.neighbours,
            if s.addresses.is_empty() {
                "nothing".to_string()
            } else {
                s.addresses
                    .iter()
                    .map(|a| format!("{} ({}{})", a.address, a.how, if a.checked { ", checked" } else { "" }))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )),
        (Mode::Json, Event::Member { change, member, name }) => {
            let mut v = json!({"event": "member", "change": change_name(*change), "member": member, "name": name});
            if let MemberChange::Role(role) = change {
                v["role"] = json!(role.name());
            }
            Line::Out(v.to_string())
        }
        (Mode::Human, Event::Member { change, member, name }) => match change {
            MemberChange::Role(role) => human_err(format!(
                "* {} is now {} {}",
                with_id(name, member),
                if *role == crate::pki::Role::Admin { "an" } else { "a" },
                role.name()
            )),
            _ => human_err(format!("* {} {}", with_id(name, member), change_name(*change))),
        },
        (
            mode,
            Event::Connection {
                kind,
                change,
                member,
                address,
                reason,
                via,
            },
        ) => {
            let kind = match kind {
                ConnKind::Neighbour => "neighbour",
                ConnKind::Direct => "direct",
            };
            let change = match change {
                ConnChange::Up => "up",
                ConnChange::Down => "down",
                ConnChange::Failed => "failed",
            };
            let text = reason.as_ref().map(|r| r.to_string());
            match mode {
                Mode::Json => Line::Out(
                    json!({"event": "connection", "kind": kind, "change": change, "member": member, "address": address, "reason": text, "via": via.map(Via::name)}).to_string(),
                ),
                Mode::Human => {
                    // Failed dials repeat while peers are away, and a failed hole punch
                    // leaves the relay carrying on: only the log shows them.
                    let auth = matches!(reason, Some(ConnReason::AuthFailed(_)));
                    if change == "failed" && (kind == "neighbour" && !auth || *via == Some(Via::Punched)) {
                        return None;
                    }
                    let who = member.map(|m| format!(" {}", m.short())).unwrap_or_default();
                    let why = text.map(|r| format!(": {r}")).unwrap_or_default();
                    let relayed = match via {
                        Some(Via::Relayed) => " (relayed)",
                        Some(Via::Punched) => " (punched through NAT)",
                        _ => "",
                    };
                    human_err(format!("* {kind} connection{who} {address}{relayed} {change}{why}"))
                }
            }
        }
        (
            Mode::Json,
            Event::Whisper {
                from,
                name,
                text,
                recv_ns,
            },
        ) => Line::Out(
            json!({"event": "whisper", "from": from, "name": name, "text": text, "recv_ns": recv_ns}).to_string(),
        ),
        (
            Mode::Human,
            Event::Whisper {
                from,
                name,
                text,
                recv_ns,
            },
        ) => {
            let name = style.paint(&sanitize(name), from);
            let when = stamp(recv_ns / 1_000_000, offset, style.today(offset));
            Line::Out(format!("[{when}] *{name}* {}", sanitize(text)))
        }
        (
            mode,
            Event::Credential {
                member,
                name,
                role,
                until_ms,
                by,
            },
        ) => {
            let until = clock::format_rfc3339(clock::from_unix(until_ms.div_euclid(1000)));
            match mode {
                Mode::Json => Line::Out(
                    json!({"event": "credential", "member": member, "name": name, "role": role.name(), "until": until, "by": by})
                        .to_string(),
                ),
                Mode::Human => human_err(format!(
                    "* credential for {}: {} until {until} (issued by {})",
                    with_id(name, member),
                    role.name(),
                    by.short()
                )),
            }
        }
        (
            mode,
            Event::Revoked {
                member,
                name,
                by,
                by_name,
                reason,
                at_ms,
            },
        ) => {
            let at = clock::format_rfc3339(clock::from_unix(at_ms.div_euclid(1000)));
            match mode {
                Mode::Json => Line::Out(
                    json!({"event": "revoked", "member": member, "name": name, "by": by, "by_name": by_name, "reason": reason, "at": at})
                        .to_string(),
                ),
                Mode::Human => human_err(format!(
                    "* {} was revoked by {} at {at}{}",
                    with_id(name, member),
                    with_id(by_name, by),
                    revocation_reason(reason)
                )),
            }
        }
        (
            mode,
            Event::Property {
                properties: p,
                by,
                by_name,
                at_ms,
            },
        ) => {
            let at = at_ms.map(rfc3339_ms);
            let message = clock::format_duration(std::time::Duration::from_secs(p.message_lifetime_secs));
            let presence = clock::format_duration(std::time::Duration::from_secs(p.presence_lifetime_secs));
            match mode {
                Mode::Json => Line::Out(
                    json!({"event": "property", "name": p.name, "classifier": p.classifier, "comment": p.comment,
                        "message_lifetime": message, "presence_lifetime": presence, "by": by, "by_name": by_name, "at": at})
                    .to_string(),
                ),
                Mode::Human => {
                    let who = match (by, by_name, &at) {
                        (Some(by), Some(name), Some(at)) => format!("set by {} at {at}", with_id(name, by)),
                        _ => "back to those the group was created with".to_string(),
                    };
                    human_err(format!(
                        "* group properties {who}: name {:?}, classifier {:?}, comment {:?}, message lifetime {message}, presence lifetime {presence}",
                        p.name, p.classifier, p.comment,
                    ))
                }
            }
        }
        (
            mode,
            Event::Expired {
                id,
                rtype,
                creator,
                name,
                created_ms,
                expires_ms,
            },
        ) => match mode {
            Mode::Json => Line::Out(
                json!({
                    "event": "record",
                    "change": "expired",
                    "name": name,
                    "record": {
                        "id": id.to_string(),
                        "type": rtype.to_string(),
                        "creator": creator.to_string(),
                        "created": rfc3339_ms(*created_ms),
                        "expires": rfc3339_ms(*expires_ms),
                    },
                })
                .to_string(),
            ),
            Mode::Human => human_err(format!(
                "* record {id} of type {rtype} by {} expired at {}",
                with_id(name, creator),
                rfc3339_ms(*expires_ms)
            )),
        },
        (mode, Event::Error(message)) => error_line(mode, message),
    })
}

/// Names of members as a front end shows them: their certificate names (see
/// [`crate::names`]), from the membership records in the store, reloaded when a member
/// not known yet appears (at most once a second: a member's messages can be stored
/// before its membership record is, and it shows as its id prefix until then).
#[derive(Debug)]
pub struct Names {
    dir: Directory,
    last_reload: Option<std::time::Instant>,
}

/// How often the store's membership records are read again while a member is unknown.
const NAMES_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Names {
    /// Starts with this node's own name.
    pub fn new(me: MemberId, my_name: &str) -> Names {
        let mut dir = Directory::new();
        dir.learn(me, my_name);
        Names { dir, last_reload: None }
    }

    /// How `member` is shown.
    pub fn name(&mut self, store: &Store, member: &MemberId) -> String {
        let due = self.last_reload.is_none_or(|t| t.elapsed() >= NAMES_RELOAD_EVERY);
        if self.dir.name(member).is_none() && due {
            self.last_reload = Some(std::time::Instant::now());
            learn_names(store, &mut self.dir);
        }
        self.dir.display(member)
    }
}

/// Learns the certificate names of the membership records in `store` (their chains
/// were verified when they were stored).
pub fn learn_names(store: &Store, dir: &mut Directory) {
    for r in store.of_type(&record::MEMBERSHIP_TYPE).unwrap_or_default() {
        if let Some(cert) = crate::node::decode_chain(&r.data).and_then(|c| c.into_iter().next())
            && cert.member_id == r.creator
        {
            dir.learn(r.creator, &cert.common_name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_parse() {
        assert_eq!(parse_input("hello"), Input::Say("hello".into()));
        assert_eq!(parse_input("/who"), Input::Who);
        assert_eq!(parse_input("/quit"), Input::Quit);
        assert_eq!(parse_input(""), Input::Nothing);
        assert_eq!(parse_input("//slash"), Input::Say("/slash".into()));
        assert_eq!(
            parse_input("/msg bob hi there"),
            Input::Whisper {
                member: "bob".into(),
                text: "hi there".into()
            }
        );
        assert!(matches!(parse_input("/msg bob"), Input::Bad(_)));
        assert!(matches!(parse_input("/frobnicate"), Input::Bad(_)));
        assert_eq!(parse_input("crlf\r"), Input::Say("crlf".into()));
    }

    /// Issue 13: `/me`, `/edit [^N|ID] TEXT`, `/delete [^N|ID]`.
    #[test]
    fn actions_edits_and_deletions_parse() {
        assert_eq!(parse_input("/me waves"), Input::Action("waves".into()));
        assert!(matches!(parse_input("/me  "), Input::Bad(_)));
        let edit = |target, text: &str| Input::Edit {
            target,
            text: text.into(),
        };
        assert_eq!(parse_input("/edit fixed it"), edit(MessageRef::Mine(1), "fixed it"));
        assert_eq!(parse_input("/edit ^3 fixed"), edit(MessageRef::Mine(3), "fixed"));
        let id = uuid::Uuid::from_u128(0x0193_0000_0000_8000_8000_0000_0000_0001);
        assert_eq!(parse_input(&format!("/edit {id} new")), edit(MessageRef::Id(id), "new"));
        // A word that is neither ^N nor an id is the start of the text.
        assert_eq!(parse_input("/edit 2 beers"), edit(MessageRef::Mine(1), "2 beers"));
        for bad in [
            "/edit",
            "/edit ^2",
            "/edit ^0 x",
            "/edit ^x y",
            "/edit ^1001 y",
            "/edit    ",
        ] {
            assert!(matches!(parse_input(bad), Input::Bad(_)), "{bad}");
        }
        assert_eq!(parse_input("/delete"), Input::Delete(MessageRef::Mine(1)));
        assert_eq!(parse_input("/delete ^2"), Input::Delete(MessageRef::Mine(2)));
        assert_eq!(parse_input(&format!("/delete {id}")), Input::Delete(MessageRef::Id(id)));
        for bad in ["/delete 2", "/delete ^0", "/delete last one"] {
            assert!(matches!(parse_input(bad), Input::Bad(_)), "{bad}");
        }
    }

    #[test]
    fn an_action_reads_as_a_sentence_and_says_so_in_json() {
        let mut r = record::Record::new(record::CHAT_TYPE, MemberId::repeat('b'), 1_000, 1000);
        r.data = b"waves".to_vec();
        r.attributes
            .push((record::ACTION_ATTR.into(), record::AttrValue::Int(1)));
        let stored = StoredRecord {
            record: r,
            seq: 1,
            received_ns: 0,
            via_sync: false,
        };
        let line = message_line(Mode::Human, &stored, ("bob", "bob"), (UtcOffset::UTC, Style::PLAIN), 0);
        assert_eq!(line, Some(Line::Out("[00:00:01] * bob waves".into())));
        let Some(Line::Out(json)) =
            message_line(Mode::Json, &stored, ("bob", "bob"), (UtcOffset::UTC, Style::PLAIN), 0)
        else {
            panic!("no line")
        };
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!((v["action"].clone(), v["text"].clone()), (json!(true), json!("waves")));
    }

    /// Red-team: a record dated before year -9999 made `to_offset` panic west of UTC.
    #[test]
    fn a_time_out_of_range_never_panics_in_any_offset() {
        // -9999-01-01T00:00:00Z: the first second the calendar holds.
        let mut r = crate::record::Record::new(
            record::CHAT_TYPE,
            MemberId::from_bytes([1; 20]),
            -377_705_116_800_000,
            1,
        );
        r.data = b"x".to_vec();
        let stored = StoredRecord {
            record: r,
            seq: 1,
            received_ns: 0,
            via_sync: true,
        };
        for offset in [
            UtcOffset::from_hms(-5, 0, 0).unwrap(),
            UtcOffset::from_hms(14, 0, 0).unwrap(),
        ] {
            assert!(matches!(
                message_line(Mode::Human, &stored, ("m", "m"), (offset, Style::PLAIN), 0),
                Some(Line::Out(_))
            ));
        }
        // 9999-12-31T23:59:59Z, the last.
        assert_eq!(
            stamp(253_402_300_799_000, UtcOffset::from_hms(14, 0, 0).unwrap(), None).len(),
            8
        );
    }

    /// At a terminal: the date on lines from other days, and each name in its member's
    /// colour, the colour codes ours only (a sender's escapes are taken out first).
    #[test]
    fn a_terminal_sees_dates_on_other_days_and_names_in_colour_only_from_us() {
        let day = time::Date::from_calendar_date(2024, time::Month::January, 1).unwrap();
        let ms = 1_704_067_210_000; // 2024-01-01T00:00:10Z
        assert_eq!(stamp(ms, UtcOffset::UTC, Some(day)), "00:00:10");
        assert_eq!(stamp(ms, UtcOffset::UTC, day.next_day()), "2024-01-01 00:00:10");
        assert_eq!(stamp(ms, UtcOffset::UTC, None), "00:00:10");
        let mut r = record::Record::new(record::CHAT_TYPE, MemberId::repeat('b'), ms, 1000);
        r.data = b"\x1b[31mred\x1b[0m".to_vec();
        let stored = StoredRecord {
            record: r,
            seq: 1,
            received_ns: 0,
            via_sync: false,
        };
        let colour = Style {
            colour: true,
            dates: false,
        };
        let Some(Line::Out(l)) = message_line(
            Mode::Human,
            &stored,
            ("b\x1b]0;x\x07ob", ""),
            (UtcOffset::UTC, colour),
            0,
        ) else {
            panic!()
        };
        let code = colour_of(&MemberId::repeat('b'));
        assert_eq!(l, format!("[00:00:10] <\x1b[38;5;{code}mb]0;xob\x1b[0m> [31mred[0m"));
        let Some(Line::Out(plain)) =
            message_line(Mode::Human, &stored, ("bob", "bob"), (UtcOffset::UTC, Style::PLAIN), 0)
        else {
            panic!()
        };
        assert!(!plain.contains('\x1b'), "{plain:?}");
    }

    /// Issue 13: an edited message is shown as one, a deleted one as a deletion (never
    /// one from history, nor a marker that deleted nothing); scripts' records as
    /// record events with their change.
    #[test]
    fn edits_deletions_and_record_changes_have_their_forms() {
        let mut r = record::Record::new(record::CHAT_TYPE, MemberId::repeat('b'), 1_000, 1000);
        r.data = b"fixed".to_vec();
        r.version = 2;
        let mut stored = StoredRecord {
            record: r,
            seq: 1,
            received_ns: 0,
            via_sync: false,
        };
        let look = (UtcOffset::UTC, Style::PLAIN);
        let human = |s: &StoredRecord| message_line(Mode::Human, s, ("bob", "bob"), look, 0);
        let json = |s: &StoredRecord| match message_line(Mode::Json, s, ("bob", "bob"), look, 0) {
            Some(Line::Out(l)) => serde_json::from_str::<Value>(&l).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            human(&stored),
            Some(Line::Out("[00:00:01] <bob> (edited) fixed".into()))
        );
        assert_eq!(json(&stored)["edited"], true);
        stored.record.deleted = true;
        stored.record.version = 3;
        assert_eq!(
            human(&stored),
            Some(Line::Out("* bob deleted their message of 00:00:01".into()))
        );
        let v = json(&stored);
        assert!(
            v["deleted"] == true && v["edited"] == false && v.get("text").is_none(),
            "{v}"
        );
        stored.via_sync = true;
        // An admin's deletion says whose message and who deleted it.
        stored.record.modifier = MemberId::repeat('a');
        let by_admin = message_line(Mode::Human, &stored, ("bob", "alice"), look, 0);
        assert_eq!(
            by_admin,
            Some(Line::Out("* alice deleted bob's message of 00:00:01".into()))
        );
        stored.record.modifier = stored.record.creator;
        let from_history = message_line(Mode::Human, &stored, ("bob", "bob"), look, i64::MAX);
        assert_eq!(from_history, None, "a deletion from history");
        stored.record.version = 1;
        assert_eq!(
            message_line(Mode::Json, &stored, ("bob", "bob"), look, 0),
            None,
            "deleted nothing"
        );
        stored.record.rtype = uuid::Uuid::from_u128(7);
        stored.record.deleted = false;
        for (version, deleted, change) in [(1, false, "added"), (2, false, "updated"), (3, true, "deleted")] {
            stored.record.version = version;
            stored.record.deleted = deleted;
            let Line::Out(l) = record_line(Mode::Json, &stored, "bob") else {
                panic!()
            };
            let v: Value = serde_json::from_str(&l).unwrap();
            assert_eq!(
                (v["event"].as_str(), v["change"].as_str()),
                (Some("record"), Some(change))
            );
            assert_eq!(v["record"]["version"], version);
        }
    }

    #[test]
    fn help_and_history_commands_parse_and_bad_counts_are_refused() {
        assert_eq!(parse_input("/help"), Input::Help);
        assert_eq!(parse_input("/history"), Input::History(HISTORY_DEFAULT));
        assert_eq!(parse_input("/history 5"), Input::History(5));
        for bad in ["/history 0", "/history x", "/history 1001", "/history -1"] {
            assert!(matches!(parse_input(bad), Input::Bad(_)), "{bad}");
        }
        let Input::Bad(msg) = parse_input("/frob") else {
            panic!()
        };
        assert!(msg.contains("/help"), "{msg}");
    }

    #[test]
    fn json_events_have_the_documented_fields() {
        let line = event_line(Mode::Json, &Event::Ready, (UtcOffset::UTC, Style::PLAIN)).unwrap();
        assert_eq!(line, Line::Out(r#"{"event":"ready"}"#.into()));
        let e = Event::Member {
            change: MemberChange::Joined,
            member: MemberId::from_bytes([0xab; 20]),
            name: "bob".into(),
        };
        let Some(Line::Out(s)) = event_line(Mode::Json, &e, (UtcOffset::UTC, Style::PLAIN)) else {
            panic!()
        };
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["change"], "joined");
        assert_eq!(v["name"], "bob");
    }
}
