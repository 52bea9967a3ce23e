//! The record store: one SQLite database (WAL) per membership.
//!
//! This module owns the schema and how the database is opened; the record logic that
//! reads and writes it arrives with `group-chat`. Durability: WAL with
//! `synchronous=NORMAL` survives a crash of the process; `Durability::Full` adds an
//! fsync per commit for power loss.

use std::path::Path;

use rusqlite::Connection;
use thiserror::Error;

/// File name of the record store inside a membership directory.
pub const STORE_FILE: &str = "store.db";

/// Schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

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
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id          BLOB PRIMARY KEY,   -- record UUID, 16 bytes
    type        BLOB NOT NULL,      -- record type UUID
    version     INTEGER NOT NULL,
    creator     TEXT NOT NULL,      -- member id
    modifier    TEXT NOT NULL,      -- member id of the last modifier
    created     INTEGER NOT NULL,   -- unix ms
    modified    INTEGER NOT NULL,   -- unix ms
    expires     INTEGER NOT NULL,   -- unix ms
    deleted     INTEGER NOT NULL DEFAULT 0,
    body        BLOB NOT NULL,      -- the signed encoding, as received
    seq         INTEGER NOT NULL    -- local arrival order, for front ends to follow
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_type_seq ON records(type, seq);
CREATE INDEX IF NOT EXISTS records_expires ON records(expires);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
";

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
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(err)?;
        Ok(Store { conn })
    }

    /// Number of records held.
    pub fn record_count(&self) -> Result<i64, rusqlite::Error> {
        self.conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))
    }

    /// Result of SQLite's `PRAGMA integrity_check` ("ok" when sound).
    pub fn integrity_check(&self) -> Result<String, rusqlite::Error> {
        self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
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
}
