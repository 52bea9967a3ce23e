//! What `group-chat` shows and reads: input lines (`/msg`, `/who`, `/quit`, plain text)
//! and output lines, either human (`[HH:MM:SS] <name> text`) or one JSON object per
//! event. Pure functions, so the front end and its tests share them.

use serde_json::{Value, json};
use time::{OffsetDateTime, UtcOffset};

use crate::clock;
use crate::member::MemberId;
use crate::node::{ConnChange, ConnKind, ConnReason, Event, MemberChange, MemberInfo, Status};
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
    /// `/quit`: leave.
    Quit,
    /// Nothing to do (an empty line).
    Nothing,
    /// A command that is not understood, with what to say.
    Bad(String),
}

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
        "msg" => match rest.trim_start().split_once(' ') {
            Some((member, text)) if !member.is_empty() && !text.trim().is_empty() => Input::Whisper {
                member: member.to_string(),
                text: text.to_string(),
            },
            _ => Input::Bad("usage: /msg MEMBER TEXT (MEMBER: friendly name or member-id prefix)".into()),
        },
        _ => Input::Bad(format!(
            "unknown command /{name}: use /msg, /who or /quit (start with // to send a line beginning with /)"
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

fn rfc3339_ms(ms: i64) -> String {
    clock::format_rfc3339(clock::from_unix(ms.div_euclid(1000)))
}

fn hms(ms: i64, offset: UtcOffset) -> String {
    let t = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset);
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// Formats a stored chat record from someone else. It is `history` when it arrived by
/// sync and was created before `online_since_ms` (while this node was away); a record
/// created while online is live even if sync brought it (after a partition, say).
pub fn message_line(mode: Mode, r: &StoredRecord, name: &str, offset: UtcOffset, online_since_ms: i64) -> Line {
    let text = String::from_utf8_lossy(&r.record.data);
    match mode {
        Mode::Json => Line::Out(
            json!({
                "event": "message",
                "id": r.record.id.to_string(),
                "from": r.record.creator.to_string(),
                "name": name,
                "text": text,
                "created": rfc3339_ms(r.record.created_ms),
                "recv_ns": r.received_ns,
                "history": r.via_sync && r.record.created_ms < online_since_ms,
            })
            .to_string(),
        ),
        Mode::Human => Line::Out(format!("[{}] <{}> {}", hms(r.record.created_ms, offset), name, text)),
    }
}

fn change_name(c: MemberChange) -> &'static str {
    match c {
        MemberChange::Connected => "connected",
        MemberChange::Disconnected => "disconnected",
        MemberChange::Joined => "joined",
        MemberChange::Left => "left",
        MemberChange::Updated => "updated",
    }
}

fn status_json(s: &Status) -> Value {
    json!({"event": "status", "listening": s.listening, "connected": s.connected, "synchronized": s.synchronized, "neighbours": s.neighbours})
}

/// The answer to `/who`.
pub fn members_line(mode: Mode, members: &[MemberInfo]) -> Line {
    match mode {
        Mode::Json => Line::Out(
            json!({"event": "members", "members": members.iter().map(|m| json!({"member": m.member, "name": m.name, "self": m.is_self})).collect::<Vec<_>>()})
                .to_string(),
        ),
        Mode::Human => {
            let list = members
                .iter()
                .map(|m| format!("{} ({}){}", m.name, m.member.short(), if m.is_self { " (you)" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ");
            Line::Err(format!("* present: {list}"))
        }
    }
}

/// An error line.
pub fn error_line(mode: Mode, message: &str) -> Line {
    match mode {
        Mode::Json => Line::Out(json!({"event": "error", "message": message}).to_string()),
        Mode::Human => Line::Err(format!("group-chat: {message}")),
    }
}

/// Formats a node event; `None` for events a mode does not show.
pub fn event_line(mode: Mode, e: &Event, offset: UtcOffset) -> Option<Line> {
    Some(match (mode, e) {
        (Mode::Json, Event::Ready) => Line::Out(json!({"event": "ready"}).to_string()),
        (Mode::Human, Event::Ready) => Line::Err("* ready: connected and synchronized".into()),
        (Mode::Json, Event::Status(s)) => Line::Out(status_json(s).to_string()),
        (Mode::Human, Event::Status(s)) => Line::Err(format!(
            "* status: {}{}{}, {} neighbour(s)",
            if s.listening { "listening" } else { "not listening" },
            if s.connected { ", connected" } else { "" },
            if s.synchronized { ", synchronized" } else { "" },
            s.neighbours
        )),
        (Mode::Json, Event::Member { change, member, name }) => Line::Out(
            json!({"event": "member", "change": change_name(*change), "member": member, "name": name}).to_string(),
        ),
        (Mode::Human, Event::Member { change, member, name }) => {
            Line::Err(format!("* {name} ({}) {}", member.short(), change_name(*change)))
        }
        (
            mode,
            Event::Connection {
                kind,
                change,
                member,
                address,
                reason,
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
                    json!({"event": "connection", "kind": kind, "change": change, "member": member, "address": address, "reason": text}).to_string(),
                ),
                Mode::Human => {
                    // Failed dials repeat while peers are away; only the log shows them.
                    let auth = matches!(reason, Some(ConnReason::AuthFailed(_)));
                    if change == "failed" && kind == "neighbour" && !auth {
                        return None;
                    }
                    let who = member.map(|m| format!(" {}", m.short())).unwrap_or_default();
                    let why = text.map(|r| format!(": {r}")).unwrap_or_default();
                    Line::Err(format!("* {kind} connection{who} {address} {change}{why}"))
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
                name, text, recv_ns, ..
            },
        ) => Line::Out(format!("[{}] *{}* {}", hms(recv_ns / 1_000_000, offset), name, text)),
        (mode, Event::Error(message)) => error_line(mode, message),
    })
}

/// Friendly names of members as a front end shows them, looked up in the store
/// (presence, else the membership certificate) and remembered.
#[derive(Debug)]
pub struct Names {
    cache: std::collections::HashMap<MemberId, String>,
}

impl Names {
    /// Starts with this node's own name.
    pub fn new(me: MemberId, my_name: &str) -> Names {
        let mut cache = std::collections::HashMap::new();
        cache.insert(me, my_name.to_string());
        Names { cache }
    }

    /// The friendly name of `member`.
    pub fn name(&mut self, store: &Store, member: &MemberId) -> String {
        if let Some(n) = self.cache.get(member) {
            return n.clone();
        }
        let presence = store
            .get(&record::per_member_id(&record::PRESENCE_TYPE, member))
            .ok()
            .flatten();
        let from_presence = presence.as_ref().and_then(|r| r.attr_str("name")).map(str::to_string);
        let name = from_presence.or_else(|| {
            let m = store
                .get(&record::per_member_id(&record::MEMBERSHIP_TYPE, member))
                .ok()
                .flatten()?;
            crate::node::decode_chain(&m.data)?
                .first()
                .map(|c| c.common_name.clone())
        });
        match name {
            Some(n) => {
                self.cache.insert(*member, n.clone());
                n
            }
            None => member.short(),
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

    #[test]
    fn json_events_have_the_documented_fields() {
        let line = event_line(Mode::Json, &Event::Ready, UtcOffset::UTC).unwrap();
        assert_eq!(line, Line::Out(r#"{"event":"ready"}"#.into()));
        let e = Event::Member {
            change: MemberChange::Joined,
            member: MemberId::from_bytes([0xab; 20]),
            name: "bob".into(),
        };
        let Some(Line::Out(s)) = event_line(Mode::Json, &e, UtcOffset::UTC) else {
            panic!()
        };
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["change"], "joined");
        assert_eq!(v["name"], "bob");
    }
}
