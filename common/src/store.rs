//! The record store: one SQLite database (WAL) per membership.
//!
//! This module owns the schema and the queries; the node decides what to store.
//! Writes come in batches (one transaction for many records: group commit). Durability: WAL with
//! `synchronous=NORMAL` survives a crash of the process; `Durability::Full` adds an
//! fsync per commit for power loss.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use uuid::Uuid;

use crate::member::MemberId;
use crate::record::Record;
use thiserror::Error;

/// File name of the record store inside a membership directory.
pub const STORE_FILE: &str = "store.db";
/// The lock a running node holds on its membership's store.
pub const STORE_LOCK: &str = "store.lock";

/// Schema version written to `PRAGMA user_version`. Version 2 holds record format 2
/// (ids bound to their creators); a version 1 store's records, in format 1, are dropped
/// at open: no node admits them any more, and they come back from peers re-published
/// only if their authors publish again.
pub const SCHEMA_VERSION: i64 = 2;

/// Errors from the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("record store {path}: {source}")]
    Sqlite {
        /// Database path.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer peergroup.
    #[error("record store {path} has schema version {found}, this peergroup reads {SCHEMA_VERSION}: upgrade peergroup")]
    NewerSchema {
        /// Database path.
        path: String,
        /// Its version.
        found: i64,
    },
}

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Committed to the WAL: survives a process crash.
    #[default]
    Normal,
    /// Also fsynced per commit: survives power loss.
    Full,
}

/// An open record store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: String,
    next_seq: i64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id          BLOB PRIMARY KEY,   -- record UUID, 16 bytes
    type        BLOB NOT NULL,      -- record type UUID
    version     INTEGER NOT NULL,
    creator     BLOB NOT NULL,      -- member id, 20 bytes
    modifier    BLOB NOT NULL,      -- member id of the last modifier
    created     INTEGER NOT NULL,   -- unix ms
    modified    INTEGER NOT NULL,   -- unix ms
    expires     INTEGER NOT NULL,   -- unix ms
    deleted     INTEGER NOT NULL,
    digest      BLOB NOT NULL,      -- 16-byte digest of the signature (sync compares it)
    body        BLOB NOT NULL,      -- the signed encoding, as received
    seq         INTEGER NOT NULL,   -- local arrival order of the id, for front ends to follow
    received_ns INTEGER NOT NULL,   -- unix ns when this node first stored the id
    via_sync    INTEGER NOT NULL    -- 1 when it arrived by sync (history), 0 when flooded live
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_seq ON records(seq);
CREATE INDEX IF NOT EXISTS records_expires ON records(expires);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
";

/// Runs WAL checkpoints off the writer's path; stops when dropped.
#[derive(Debug)]
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A record as stored, with what this node knows about its arrival.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// The record.
    pub record: Record,
    /// Arrival order of its id on this node.
    pub seq: i64,
    /// Unix ns when this node first stored it.
    pub received_ns: i64,
    /// Whether it arrived by sync rather than a live flood.
    pub via_sync: bool,
}

/// One record to write.
#[derive(Debug, Clone)]
pub struct Put {
    /// The record (already verified).
    pub record: Record,
    /// Its encoding.
    pub body: Vec<u8>,
    /// Whether it arrived by sync.
    pub via_sync: bool,
    /// Unix ns of arrival.
    pub received_ns: i64,
}

impl Put {
    /// A record to write, encoded here (for records made locally or in tests).
    pub fn new(record: Record, via_sync: bool, received_ns: i64) -> Put {
        let body = record.encode();
        Put {
            record,
            body,
            via_sync,
            received_ns,
        }
    }
}

/// What the core keeps of a stored record without its body: what sync compares, and
/// what quotas count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Record id.
    pub id: Uuid,
    /// Version.
    pub version: u64,
    /// Digest of the signature.
    pub digest: [u8; 16],
    /// Record type.
    pub rtype: Uuid,
    /// Creator.
    pub creator: MemberId,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Expiry, unix ms.
    pub expires_ms: i64,
    /// Encoded size.
    pub bytes: usize,
}

impl Summary {
    /// The summary of `r`, encoded in `bytes` bytes.
    pub fn of(r: &Record, bytes: usize) -> Summary {
        Summary {
            id: r.id,
            version: r.version,
            digest: r.digest(),
            rtype: r.rtype,
            creator: r.creator,
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            bytes,
        }
    }
}

/// The columns a [`Summary`] is read from.
const SUMMARY_COLUMNS: &str = "id, version, digest, type, creator, created, expires, length(body)";

/// Reads a [`Summary`] from a row of [`SUMMARY_COLUMNS`]; None for a damaged row.
fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Summary>> {
    let id: Vec<u8> = r.get(0)?;
    let version: i64 = r.get(1)?;
    let digest: Vec<u8> = r.get(2)?;
    let rtype: Vec<u8> = r.get(3)?;
    let creator: Vec<u8> = r.get(4)?;
    let created_ms: i64 = r.get(5)?;
    let expires_ms: i64 = r.get(6)?;
    let bytes: i64 = r.get(7)?;
    Ok(
        match (
            <[u8; 16]>::try_from(id.as_slice()),
            <[u8; 16]>::try_from(digest.as_slice()),
            <[u8; 16]>::try_from(rtype.as_slice()),
            MemberId::from_slice(&creator),
        ) {
            (Ok(id), Ok(digest), Ok(rtype), Some(creator)) => Some(Summary {
                id: Uuid::from_bytes(id),
                version: version as u64,
                digest,
                rtype: Uuid::from_bytes(rtype),
                creator,
                created_ms,
                expires_ms,
                bytes: usize::try_from(bytes).unwrap_or(0),
            }),
            _ => None,
        },
    )
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: name.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        // journal_mode returns a row, so it needs the _and_check form.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            .map_err(err)?;
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: name,
                found: version,
            });
        }
        // A current store needs no write at open (each costs a commit on the start path).
        if version < SCHEMA_VERSION {
            conn.execute_batch(SCHEMA).map_err(err)?;
            if version == 1 {
                // Arrival numbers go on from where they were: display cursors beside the
                // store point into them.
                conn.execute_batch(
                    "BEGIN;
                     INSERT OR REPLACE INTO meta (key, value)
                         SELECT 'next_seq', coalesce(max(seq), 0) + 1 FROM records;
                     DELETE FROM records;
                     COMMIT;",
                )
                .map_err(err)?;
            }
            conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(err)?;
        }
        let next_seq: i64 = conn
            .query_row(
                "SELECT max(coalesce((SELECT max(seq) FROM records), 0) + 1,
                            coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'next_seq'), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        Ok(Store {
            conn,
            path: name,
            next_seq,
        })
    }

    /// Opens an existing store for reading beside a running node (WAL allows it).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let name = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: name.clone(),
            source,
        };
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        Ok(Store {
            conn,
            path: name,
            next_seq: 0,
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes records in one transaction (group commit): inserts new ids, replaces
    /// existing ones. Each write takes the next arrival number, a replacement too, so
    /// the arrival numbers are the store's change sequence: a follower sees an edit or
    /// a deletion as it sees a new record. Durable when this returns.
    pub fn put_batch(&mut self, batch: &[Put]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO records (id, type, version, creator, modifier, created, modified, expires, deleted,
                                          digest, body, seq, received_ns, via_sync)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                     ON CONFLICT(id) DO UPDATE SET type = excluded.type, version = excluded.version,
                        creator = excluded.creator, modifier = excluded.modifier, created = excluded.created,
                        modified = excluded.modified, expires = excluded.expires, deleted = excluded.deleted,
                        digest = excluded.digest, body = excluded.body, seq = excluded.seq,
                        received_ns = excluded.received_ns, via_sync = excluded.via_sync",
                )
                .map_err(err)?;
            for p in batch {
                let r = &p.record;
                stmt.execute(params![
                    r.id.as_bytes().as_slice(),
                    r.rtype.as_bytes().as_slice(),
                    r.version as i64,
                    r.creator.as_bytes().as_slice(),
                    r.modifier.as_bytes().as_slice(),
                    r.created_ms,
                    r.modified_ms,
                    r.expires_ms,
                    r.deleted,
                    r.digest().as_slice(),
                    p.body,
                    self.next_seq,
                    p.received_ns,
                    p.via_sync,
                ])
                .map_err(err)?;
                self.next_seq += 1;
            }
        }
        tx.commit().map_err(err)
    }

    /// One record by id.
    pub fn get(&self, id: &Uuid) -> Result<Option<Record>, StoreError> {
        let body: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT body FROM records WHERE id = ?1",
                [id.as_bytes().as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(body.and_then(|b| Record::decode(&b).ok()))
    }

    /// The id of `creator`'s `nth` latest live record of `rtype` (1: the latest; by
    /// creation time), neither deleted nor expired at `now_ms`.
    pub fn nth_latest_by(
        &self,
        rtype: &Uuid,
        creator: &MemberId,
        nth: usize,
        now_ms: i64,
    ) -> Result<Option<Uuid>, StoreError> {
        let id: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT id FROM records WHERE type = ?1 AND creator = ?2 AND deleted = 0 AND expires > ?3 \
                 ORDER BY created DESC, id DESC LIMIT 1 OFFSET ?4",
                params![
                    rtype.as_bytes().as_slice(),
                    creator.as_bytes().as_slice(),
                    now_ms,
                    nth.saturating_sub(1) as i64
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(id.and_then(|b| Uuid::from_slice(&b).ok()))
    }

    /// Encoded bodies of the given ids that are held (unknown ids are skipped).
    pub fn bodies(&self, ids: &[Uuid]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT body FROM records WHERE id = ?1")
            .map_err(self.err())?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(b) = stmt
                .query_row([id.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))
                .optional()
                .map_err(self.err())?
            {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// (id, version, digest) of every record, for the sync index.
    pub fn summaries(&self) -> Result<Vec<Summary>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {SUMMARY_COLUMNS} FROM records"))
            .map_err(self.err())?;
        let rows = stmt.query_map([], summary_row).map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            out.extend(row.map_err(self.err())?);
        }
        Ok(out)
    }

    /// Deletes the records with these ids (pushed out by a quota).
    pub fn delete(&mut self, ids: &[Uuid]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM records WHERE id = ?1").map_err(err)?;
            for id in ids {
                stmt.execute([id.as_bytes().as_slice()]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Every record of one type.
    pub fn of_type(&self, rtype: &Uuid) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT body FROM records WHERE type = ?1")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([rtype.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(r) = Record::decode(&row.map_err(self.err())?) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Deletes records expired at `now_ms`; returns (id, type, creator) of each.
    pub fn purge_expired(&mut self, now_ms: i64) -> Result<Vec<Summary>, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut out = Vec::new();
        {
            let mut stmt = tx
                .prepare(&format!("SELECT {SUMMARY_COLUMNS} FROM records WHERE expires <= ?1"))
                .map_err(err)?;
            let rows = stmt.query_map([now_ms], summary_row).map_err(err)?;
            for row in rows {
                out.extend(row.map_err(err)?);
            }
        }
        if !out.is_empty() {
            tx.execute("DELETE FROM records WHERE expires <= ?1", [now_ms])
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Up to `limit` records of `rtype` stored after arrival number `seq`, in order.
    pub fn after(&self, rtype: &Uuid, seq: i64, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        self.stored_after(
            "SELECT body, seq, received_ns, via_sync FROM records WHERE seq > ?1 AND type = ?2 ORDER BY seq LIMIT ?3",
            params![seq, rtype.as_bytes().as_slice(), limit as i64],
        )
    }

    /// Up to `limit` records of any type stored (or replaced) after arrival number `seq`,
    /// in order.
    pub fn changed_after(&self, seq: i64, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        self.stored_after(
            "SELECT body, seq, received_ns, via_sync FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![seq, limit as i64],
        )
    }

    /// The rows `sql` selects (body, seq, received_ns, via_sync) as stored records;
    /// bodies that do not decode are left out.
    fn stored_after(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<StoredRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (body, seq, received_ns, via_sync) = row.map_err(self.err())?;
            if let Ok(record) = Record::decode(&body) {
                out.push(StoredRecord {
                    record,
                    seq,
                    received_ns,
                    via_sync,
                });
            }
        }
        Ok(out)
    }

    /// Highest arrival number stored (0 when empty).
    pub fn max_seq(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT coalesce(max(seq), 0) FROM records", [], |r| r.get(0))
            .map_err(self.err())
    }

    /// Highest arrival number written through this connection (or found at open).
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// Stops automatic checkpoints on this connection and runs them on a thread of
    /// their own (every 200 ms, passive: never blocking the writer) until the returned
    /// guard is dropped.
    pub fn spawn_checkpointer(&self) -> Result<Checkpointer, StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(self.err())?;
        let stop = Arc::new(AtomicBool::new(false));
        let path = PathBuf::from(&self.path);
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                let Ok(conn) = Connection::open(&path) else { return };
                let _ = conn.busy_timeout(std::time::Duration::from_millis(100));
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .map_err(|e| StoreError::Sqlite {
                path: self.path.clone(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }

    /// Number of records held.
    pub fn record_count(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .map_err(self.err())
    }

    /// Result of SQLite's `PRAGMA integrity_check` ("ok" when sound).
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(self.err())
    }
}

/// The SQLite store is what the tokio driver gives the core.
impl crate::core::RecordStore for Store {
    type Error = StoreError;

    fn put_batch(&mut self, batch: &[Put]) -> Result<(), Self::Error> {
        Store::put_batch(self, batch)
    }
    fn get(&self, id: &Uuid) -> Result<Option<Record>, Self::Error> {
        Store::get(self, id)
    }
    fn bodies(&self, ids: &[Uuid]) -> Result<Vec<Vec<u8>>, Self::Error> {
        Store::bodies(self, ids)
    }
    fn summaries(&self) -> Result<Vec<Summary>, Self::Error> {
        Store::summaries(self)
    }
    fn of_type(&self, rtype: &Uuid) -> Result<Vec<Record>, Self::Error> {
        Store::of_type(self, rtype)
    }
    fn purge_expired(&mut self, now_ms: i64) -> Result<Vec<Summary>, Self::Error> {
        Store::purge_expired(self, now_ms)
    }
    fn delete(&mut self, ids: &[Uuid]) -> Result<(), Self::Error> {
        Store::delete(self, ids)
    }
    fn last_seq(&self) -> i64 {
        Store::last_seq(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_is_empty_sound_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let store = Store::open(&path, Durability::Normal).unwrap();
        assert_eq!(store.record_count().unwrap(), 0);
        assert_eq!(store.integrity_check().unwrap(), "ok");
        drop(store);
        Store::open(&path, Durability::Full).unwrap();
    }

    #[test]
    fn a_format_1_store_is_emptied_once_and_arrival_numbers_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let mut store = Store::open(&path, Durability::Normal).unwrap();
        let puts: Vec<Put> = (0..3)
            .map(|i| {
                Put::new(
                    Record::new(crate::record::CHAT_TYPE, MemberId::from_bytes([i; 20]), 0, 1),
                    false,
                    0,
                )
            })
            .collect();
        store.put_batch(&puts).unwrap();
        assert_eq!(store.last_seq(), 3);
        store.conn.pragma_update(None, "user_version", 1).unwrap();
        drop(store);
        let mut store = Store::open(&path, Durability::Normal).unwrap();
        assert_eq!(store.record_count().unwrap(), 0, "format 1 records kept");
        assert_eq!(store.last_seq(), 3, "arrival numbers restart under the display cursor");
        store.put_batch(&puts[..1]).unwrap();
        assert_eq!(store.last_seq(), 4);
        drop(store);
        let store = Store::open(&path, Durability::Normal).unwrap();
        assert_eq!(store.record_count().unwrap(), 1, "emptied again at the second open");
        assert_eq!(store.last_seq(), 4);
    }

    /// Issue 13: a replaced record (an edit, a deletion) takes the next arrival number,
    /// so a follower after the old one sees the change; the others keep theirs.
    #[test]
    fn a_replaced_record_moves_to_the_end_of_the_change_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join(STORE_FILE), Durability::Normal).unwrap();
        let t = uuid::Uuid::from_u128(7);
        let mut a = Record::new(t, MemberId::from_bytes([1; 20]), 0, 1000);
        let b = Record::new(t, MemberId::from_bytes([2; 20]), 0, 1000);
        store
            .put_batch(&[Put::new(a.clone(), false, 0), Put::new(b.clone(), false, 0)])
            .unwrap();
        a.version = 2;
        a.deleted = true;
        store.put_batch(&[Put::new(a.clone(), true, 5)]).unwrap();
        let changed = store.changed_after(2, 10).unwrap();
        assert_eq!(changed.len(), 1);
        assert_eq!((changed[0].record.id, changed[0].seq), (a.id, 3));
        assert!(changed[0].record.deleted && changed[0].via_sync && changed[0].received_ns == 5);
        let all = store.changed_after(0, 10).unwrap();
        assert_eq!(all.iter().map(|r| r.record.id).collect::<Vec<_>>(), [b.id, a.id]);
        assert_eq!(store.record_count().unwrap(), 2);
    }
}
