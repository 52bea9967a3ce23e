//! Following the store's chat records for a front end: what `group-chat` shows of
//! others' messages, in arrival order, each once even across restarts (a cursor file
//! beside the store), read in bounded batches however far behind the display is; and
//! the `--history` listing.

use std::path::{Path, PathBuf};

use thiserror::Error;
use time::UtcOffset;

use crate::chat::{self, Line, Mode, Names};
use crate::member::MemberId;
use crate::record::CHAT_TYPE;
use crate::store::{STORE_FILE, Store, StoreError, StoredRecord};

/// File name of the display cursor inside a membership directory.
pub const CURSOR_FILE: &str = "display.cursor";
/// The cursor of sessions that report records but no messages (`--events record`): a
/// script following records does not use up what a person has yet to see.
pub const RECORDS_CURSOR_FILE: &str = "records.cursor";

/// Most records a follower reads from the store at once: memory stays constant however
/// far behind the display is.
pub const BATCH_RECORDS: usize = 256;

/// Records `history` reads from the store at once (it keeps them all to sort anyway).
const HISTORY_BATCH_RECORDS: usize = 1024;

/// Errors opening a follower.
#[derive(Debug, Error)]
pub enum FollowError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cursor file could not be opened.
    #[error("{}: {source}", path.display())]
    Cursor {
        /// The cursor file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The front end's display cursor: the arrival number of the last chat line shown,
/// kept in a small file beside the store and rewritten after every line, so a restart
/// (even after SIGKILL) shows nothing twice. One 8-byte `pwrite` per line: cheap enough
/// to keep off the message path's cost, unlike a SQLite commit.
#[derive(Debug)]
pub struct Cursor {
    file: std::fs::File,
    /// Last shown arrival number.
    pub seq: i64,
}

impl Cursor {
    /// Opens (creating) the cursor file.
    pub fn open(path: &Path) -> std::io::Result<Cursor> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut b = [0u8; 8];
        let seq = match file.read_at(&mut b, 0) {
            Ok(8) => i64::from_be_bytes(b),
            _ => 0,
        };
        Ok(Cursor { file, seq })
    }

    /// Records that `seq` was shown.
    pub fn advance(&mut self, seq: i64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.seq = seq;
        self.file.write_all_at(&seq.to_be_bytes(), 0)
    }
}

/// Who is looking and how lines are formatted.
#[derive(Debug, Clone)]
pub struct View {
    /// This node's member id: its own messages are not shown back.
    pub me: MemberId,
    /// This node's friendly name.
    pub my_name: String,
    /// Human or JSON lines.
    pub mode: Mode,
    /// Local time offset for human timestamps.
    pub offset: UtcOffset,
    /// How human lines look.
    pub style: chat::Style,
    /// Scripts' records to report (`record` events): `None` none, an empty list every
    /// type but peergroup's own, else these types.
    pub records: Option<Vec<uuid::Uuid>>,
    /// Whether to report chat messages.
    pub messages: bool,
    /// When this session went online (unix ms): older synced messages are history.
    pub online_since_ms: i64,
}

/// How a [`Follower::drain`] ended.
#[derive(Debug)]
pub enum Drained {
    /// Everything stored so far has been shown (or skipped).
    CaughtUp,
    /// A write failed (stdout closed): that line is unshown and the cursor stays before
    /// it, so the next session shows it.
    Stopped,
    /// The store could not be read; the cursor stays where it was and the next drain
    /// tries again from there.
    Unreadable(StoreError),
}

/// Follows a membership's store: others' chat messages not shown yet, as lines.
#[derive(Debug)]
pub struct Follower {
    store: Store,
    cursor: Cursor,
    names: Names,
    view: View,
}

impl Follower {
    /// Opens the store (read-only, beside a running node) and the cursor in the
    /// membership directory `dir`.
    pub fn open(dir: &Path, view: View) -> Result<Follower, FollowError> {
        let store = Store::open_read_only(&dir.join(STORE_FILE))?;
        let path = dir.join(if view.messages || view.records.is_none() {
            CURSOR_FILE
        } else {
            RECORDS_CURSOR_FILE
        });
        let cursor = Cursor::open(&path).map_err(|source| FollowError::Cursor { path, source })?;
        Ok(Follower {
            store,
            cursor,
            names: Names::new(view.me, &view.my_name),
            view,
        })
    }

    /// Arrival number of the last record shown or skipped.
    pub fn seq(&self) -> i64 {
        self.cursor.seq
    }

    /// Hands `write` every message stored after the cursor, in arrival order, one batch
    /// at a time, until caught up or `write` returns false. Own messages and deleted
    /// ones are skipped; the cursor moves past a record only once it was written or
    /// skipped, so what was shown is never shown again and what was not is not lost.
    pub fn drain(&mut self, mut write: impl FnMut(Line) -> bool) -> Drained {
        loop {
            // Only chat unless records are asked for: the store's other changes
            // (presence refreshes above all) are many.
            let batch = match &self.view.records {
                None => self.store.after(&CHAT_TYPE, self.cursor.seq, BATCH_RECORDS),
                Some(_) => self.store.changed_after(self.cursor.seq, BATCH_RECORDS),
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => return Drained::Unreadable(e),
            };
            if batch.is_empty() {
                return Drained::CaughtUp;
            }
            for r in &batch {
                if let Some(line) = self.line_of(r)
                    && !write(line)
                {
                    return Drained::Stopped;
                }
                // A cursor that cannot be written costs at most a repeat after a restart;
                // the display goes on either way. A session showing neither messages
                // nor records moves on in memory only: the file marks what was shown.
                if self.view.messages || self.view.records.is_some() {
                    let _ = self.cursor.advance(r.seq);
                } else {
                    self.cursor.seq = r.seq;
                }
            }
        }
    }
}

impl Follower {
    /// What to show of a stored record: others' messages (new, edited, deleted), and
    /// scripts' records of the types asked for, own ones included (a change made with
    /// `group-record` beside this node).
    fn line_of(&mut self, r: &StoredRecord) -> Option<Line> {
        let t = r.record.rtype;
        if t == CHAT_TYPE {
            if r.record.creator == self.view.me || !self.view.messages {
                return None;
            }
            let name = self.names.name(&self.store, &r.record.creator);
            let by = self.names.name(&self.store, &r.record.modifier);
            let v = &self.view;
            return chat::message_line(v.mode, r, (&name, &by), (v.offset, v.style), v.online_since_ms);
        }
        let wanted = match &self.view.records {
            Some(types) => !crate::records::is_reserved(&t) && (types.is_empty() || types.contains(&t)),
            None => false,
        };
        if !wanted {
            return None;
        }
        let name = self.names.name(&self.store, &r.record.modifier);
        Some(chat::record_line(self.view.mode, r, &name))
    }
}

/// The message `/edit` or `/delete` means: an id as given, or this member's N-th latest
/// live message (`None`: it has not that many).
pub fn message_id(
    store: &Store,
    me: &MemberId,
    target: chat::MessageRef,
    now_ms: i64,
) -> Result<Option<uuid::Uuid>, StoreError> {
    match target {
        chat::MessageRef::Id(id) => Ok(Some(id)),
        chat::MessageRef::Mine(n) => store.nth_latest_by(&CHAT_TYPE, me, n, now_ms),
    }
}

/// Which stored messages `--history` and `/history` give, and how.
#[derive(Debug, Clone, Copy)]
pub struct HistoryView {
    /// Human lines or one `message` JSON object per message.
    pub mode: Mode,
    /// Local offset and look of human lines.
    pub look: (UtcOffset, chat::Style),
    /// Only messages created at or after this unix ms.
    pub since_ms: Option<i64>,
    /// Now, unix ms: messages expired by then are left out.
    pub now_ms: i64,
}

/// `--history`: every stored chat message that is neither deleted nor expired at
/// `now_ms` (an offline store is purged only when a node next runs), own ones included,
/// as lines sorted by creation time (arrival order differs between members). In JSON
/// each is a `message` event with `history` true.
pub fn history(store: &Store, (me, my_name): (MemberId, &str), view: HistoryView) -> Result<Vec<String>, StoreError> {
    let mut names = Names::new(me, my_name);
    let mut all = Vec::new();
    let mut seq = 0;
    loop {
        let batch = store.after(&CHAT_TYPE, seq, HISTORY_BATCH_RECORDS)?;
        let Some(last) = batch.last() else { break };
        seq = last.seq;
        all.extend(batch.into_iter().filter(|r| {
            !r.record.deleted
                && r.record.expires_ms > view.now_ms
                && view.since_ms.is_none_or(|t| r.record.created_ms >= t)
        }));
    }
    all.sort_by_key(|r| (r.record.created_ms, r.record.id));
    let mut lines = Vec::with_capacity(all.len());
    for r in &mut all {
        let name = names.name(store, &r.record.creator);
        let by = names.name(store, &r.record.modifier);
        // All of it is history: as if it came while away (by sync, before a session
        // that starts at the end of time).
        r.via_sync = true;
        if let Some(Line::Out(l)) = chat::message_line(view.mode, r, (&name, &by), view.look, i64::MAX) {
            lines.push(l);
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::store::{Durability, Put};

    const ME: MemberId = MemberId::from_bytes([0xaa; 20]);
    const BOB: MemberId = MemberId::from_bytes([0xbb; 20]);
    const CAROL: MemberId = MemberId::from_bytes([0xcc; 20]);
    /// 2024-01-01T00:00:00Z in unix ms.
    const T0: i64 = 1_704_067_200_000;

    /// A membership directory with a writable store beside the followers.
    struct Dir {
        dir: tempfile::TempDir,
        store: Store,
    }

    impl Dir {
        fn new() -> Dir {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join(STORE_FILE), Durability::Normal).unwrap();
            Dir { dir, store }
        }

        /// Stores one chat record per (creator, seconds after T0, text, deleted), in
        /// this order of arrival.
        fn put(&mut self, msgs: &[(MemberId, i64, &str, bool)]) {
            let puts: Vec<Put> = msgs
                .iter()
                .map(|&(creator, secs, text, deleted)| {
                    let mut r = Record::new(CHAT_TYPE, creator, T0 + secs * 1000, 3_600_000);
                    r.data = text.as_bytes().to_vec();
                    r.deleted = deleted;
                    Put::new(r, false, 0)
                })
                .collect();
            self.store.put_batch(&puts).unwrap();
        }

        fn follower(&self) -> Follower {
            let view = View {
                me: ME,
                my_name: "me".into(),
                mode: Mode::Human,
                offset: UtcOffset::UTC,
                style: chat::Style::PLAIN,
                records: None,
                messages: true,
                online_since_ms: 0,
            };
            Follower::open(self.dir.path(), view).unwrap()
        }
    }

    /// The texts of human lines, in order.
    fn drain_texts(f: &mut Follower) -> Vec<String> {
        let mut texts = Vec::new();
        let d = f.drain(|l| {
            let Line::Out(l) = l else {
                panic!("a message line on stderr: {l:?}")
            };
            texts.push(l.split_once("> ").unwrap().1.to_string());
            true
        });
        assert!(matches!(d, Drained::CaughtUp), "{d:?}");
        texts
    }

    #[test]
    fn a_fresh_follower_shows_others_messages_in_arrival_order_without_own_or_deleted() {
        let mut d = Dir::new();
        // Created out of arrival order: the display follows arrival, not creation.
        d.put(&[
            (BOB, 5, "bob 1", false),
            (ME, 1, "mine", false),
            (CAROL, 2, "carol 1", false),
            (BOB, 3, "bob deleted", true),
            (BOB, 4, "bob 2", false),
            (ME, 6, "mine again", false),
        ]);
        let mut f = d.follower();
        // On a thread: a follower that does not pass skipped records reads them forever.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            let drained = f.drain(|l| {
                lines.push(l);
                true
            });
            let _ = tx.send((drained, lines, f.seq()));
        });
        let (drained, lines, seq) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the drain never caught up: skipped records are read again and again");
        assert!(matches!(drained, Drained::CaughtUp), "{drained:?}");
        let bob = &BOB.short();
        let carol = &CAROL.short();
        assert_eq!(
            lines,
            [
                Line::Out(format!("[00:00:05] <{bob}> bob 1")),
                Line::Out(format!("[00:00:02] <{carol}> carol 1")),
                Line::Out(format!("[00:00:04] <{bob}> bob 2")),
            ]
        );
        // Skipped records are passed too: the last one stored is an own message.
        assert_eq!(seq, d.store.max_seq().unwrap());
    }

    #[test]
    fn a_follower_on_a_drained_cursor_shows_only_what_came_after() {
        let mut d = Dir::new();
        d.put(&[(BOB, 1, "one", false), (CAROL, 2, "two", false)]);
        assert_eq!(drain_texts(&mut d.follower()), ["one", "two"]);
        // A restart: a new follower on the same cursor file.
        let mut again = d.follower();
        assert_eq!(drain_texts(&mut again), Vec::<String>::new());
        d.put(&[(BOB, 3, "three", false)]);
        assert_eq!(drain_texts(&mut again), ["three"]);
        assert_eq!(drain_texts(&mut d.follower()), Vec::<String>::new());
    }

    #[test]
    fn a_failed_write_leaves_its_line_for_the_next_session() {
        let mut d = Dir::new();
        d.put(&[
            (BOB, 1, "one", false),
            (BOB, 2, "two", false),
            (BOB, 3, "three", false),
            (BOB, 4, "four", false),
        ]);
        let mut f = d.follower();
        let mut shown = Vec::new();
        // stdout closes when the third line is written.
        let drained = f.drain(|l| {
            if shown.len() == 2 {
                return false;
            }
            shown.push(l);
            true
        });
        assert!(matches!(drained, Drained::Stopped), "{drained:?}");
        assert_eq!(shown.len(), 2);
        drop(f);
        assert_eq!(drain_texts(&mut d.follower()), ["three", "four"]);
    }

    /// Red-team finding: a session printing no messages (`--events member,status`)
    /// moved the shared cursor past them, and the person never saw them.
    #[test]
    fn a_session_not_showing_messages_leaves_them_for_the_next_one() {
        let mut d = Dir::new();
        d.put(&[(BOB, 1, "one", false), (BOB, 2, "two", false)]);
        let mut quiet = d.follower();
        quiet.view.messages = false;
        let mut shown = 0;
        assert!(matches!(
            quiet.drain(|_| {
                shown += 1;
                true
            }),
            Drained::CaughtUp
        ));
        assert_eq!(shown, 0);
        drop(quiet);
        assert_eq!(drain_texts(&mut d.follower()), ["one", "two"]);
    }

    #[test]
    fn catching_up_over_several_batches_shows_every_message_once() {
        let mut d = Dir::new();
        let n = 2 * BATCH_RECORDS + 88;
        let texts: Vec<String> = (0..n).map(|k| format!("m{k}")).collect();
        let msgs: Vec<_> = texts.iter().map(|t| (BOB, 0, t.as_str(), false)).collect();
        d.put(&msgs);
        let mut f = d.follower();
        assert_eq!(drain_texts(&mut f), texts);
        assert_eq!(drain_texts(&mut f), Vec::<String>::new());
        assert_eq!(drain_texts(&mut d.follower()), Vec::<String>::new());
    }

    fn plain(now_ms: i64, since_ms: Option<i64>) -> HistoryView {
        HistoryView {
            mode: Mode::Human,
            look: (UtcOffset::UTC, chat::Style::PLAIN),
            since_ms,
            now_ms,
        }
    }

    #[test]
    fn edits_mean_the_nth_latest_live_message_of_ones_own() {
        let mut d = Dir::new();
        d.put(&[
            (ME, 10, "first", false),
            (BOB, 20, "bob's", false),
            (ME, 30, "second", false),
            (ME, 40, "gone", true),
        ]);
        let text_of =
            |id: Option<uuid::Uuid>| id.map(|id| String::from_utf8(d.store.get(&id).unwrap().unwrap().data).unwrap());
        let mine = |n| message_id(&d.store, &ME, chat::MessageRef::Mine(n), T0 + 60_000).unwrap();
        assert_eq!(
            text_of(mine(1)).as_deref(),
            Some("second"),
            "the deleted one is skipped"
        );
        assert_eq!(text_of(mine(2)).as_deref(), Some("first"));
        assert_eq!(mine(3), None);
        // Both live an hour: after it, nothing is left to change.
        assert_eq!(
            message_id(&d.store, &ME, chat::MessageRef::Mine(1), T0 + 3_700_000).unwrap(),
            None
        );
        let any = uuid::Uuid::from_u128(7);
        assert_eq!(
            message_id(&d.store, &ME, chat::MessageRef::Id(any), T0).unwrap(),
            Some(any)
        );
    }

    #[test]
    fn history_since_t_and_in_json() {
        let mut d = Dir::new();
        d.put(&[
            (BOB, 10, "before", false),
            (ME, 20, "at", false),
            (BOB, 30, "after", false),
        ]);
        let lines = history(&d.store, (ME, "me"), plain(T0 + 60_000, Some(T0 + 20_000))).unwrap();
        assert_eq!(
            lines,
            [
                "[00:00:20] <me> at".to_string(),
                format!("[00:00:30] <{}> after", BOB.short())
            ]
        );
        let json = HistoryView {
            mode: Mode::Json,
            ..plain(T0 + 60_000, Some(T0 + 20_000))
        };
        let objects: Vec<serde_json::Value> = history(&d.store, (ME, "me"), json)
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0]["event"], "message");
        assert_eq!(objects[0]["text"], "at");
        assert_eq!(objects[0]["name"], "me");
        assert_eq!(objects[1]["text"], "after");
        assert!(objects.iter().all(|o| o["history"] == true && o["deleted"] == false));
    }

    #[test]
    fn history_hides_messages_expired_but_not_purged_yet() {
        let mut d = Dir::new();
        d.put(&[(BOB, 0, "old", false), (BOB, 1800, "newer", false)]);
        // Both live 1 h: an hour and a second after T0 only the newer one is live.
        let lines = history(&d.store, (ME, "me"), plain(T0 + 3_601_000, None)).unwrap();
        assert_eq!(lines, [format!("[00:30:00] <{}> newer", BOB.short())]);
    }

    #[test]
    fn history_is_sorted_by_creation_with_own_messages_and_without_deleted() {
        let mut d = Dir::new();
        d.put(&[
            (BOB, 30, "third", false),
            (ME, 10, "first", false),
            (CAROL, 20, "deleted", true),
            (CAROL, 20, "second", false),
        ]);
        let lines = history(&d.store, (ME, "me"), plain(T0, None)).unwrap();
        let carol = &CAROL.short();
        let bob = &BOB.short();
        assert_eq!(
            lines,
            [
                "[00:00:10] <me> first".to_string(),
                format!("[00:00:20] <{carol}> second"),
                format!("[00:00:30] <{bob}> third"),
            ]
        );
    }
}
