//! The store boundary: what the core asks of a record store. The SQLite store
//! (`crate::store::Store`) implements it for the tokio driver, [`MemStore`] for the
//! simulation and tests. The rule the core keeps across it: a record is flooded,
//! acknowledged or shown only after [`RecordStore::put_batch`] returned Ok.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::record::Record;
use crate::store::{Put, Summary};

/// A record store as the core sees it.
pub trait RecordStore {
    /// What goes wrong (shown to the user as text).
    type Error: std::fmt::Display;

    /// Writes records in one transaction: durable when it returns Ok.
    fn put_batch(&mut self, batch: &[Put]) -> Result<(), Self::Error>;
    /// One record by id.
    fn get(&self, id: &Uuid) -> Result<Option<Record>, Self::Error>;
    /// Encoded bodies of the ids held (unknown ids are skipped).
    fn bodies(&self, ids: &[Uuid]) -> Result<Vec<Vec<u8>>, Self::Error>;
    /// Summaries of every record held.
    fn summaries(&self) -> Result<Vec<Summary>, Self::Error>;
    /// Every record of one type.
    fn of_type(&self, rtype: &Uuid) -> Result<Vec<Record>, Self::Error>;
    /// Deletes records expired at `now_ms`; returns the summary of each.
    fn purge_expired(&mut self, now_ms: i64) -> Result<Vec<Summary>, Self::Error>;
    /// Deletes the records with these ids.
    fn delete(&mut self, ids: &[Uuid]) -> Result<(), Self::Error>;
    /// Highest arrival number written (what front ends follow).
    fn last_seq(&self) -> i64;
}

/// A record store in memory, for the simulation and tests. It never fails.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    records: HashMap<Uuid, (Record, Vec<u8>, i64)>,
    expiry: BTreeMap<(i64, Uuid), ()>,
    seq: i64,
}

/// [`MemStore`] never fails; this error has no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every record held, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values().map(|(r, _, _)| r)
    }
}

impl RecordStore for MemStore {
    type Error = Never;

    fn put_batch(&mut self, batch: &[Put]) -> Result<(), Never> {
        for p in batch {
            let r = &p.record;
            // An id keeps its first arrival number, as in SQLite's upsert.
            let seq = match self.records.get(&r.id) {
                Some((old, _, seq)) => {
                    self.expiry.remove(&(old.expires_ms, old.id));
                    *seq
                }
                None => {
                    self.seq += 1;
                    self.seq
                }
            };
            self.expiry.insert((r.expires_ms, r.id), ());
            self.records.insert(r.id, (r.clone(), p.body.clone(), seq));
        }
        Ok(())
    }

    fn get(&self, id: &Uuid) -> Result<Option<Record>, Never> {
        Ok(self.records.get(id).map(|(r, _, _)| r.clone()))
    }

    fn bodies(&self, ids: &[Uuid]) -> Result<Vec<Vec<u8>>, Never> {
        Ok(ids
            .iter()
            .filter_map(|id| self.records.get(id).map(|(_, b, _)| b.clone()))
            .collect())
    }

    fn summaries(&self) -> Result<Vec<Summary>, Never> {
        Ok(self
            .records
            .values()
            .map(|(r, body, _)| Summary::of(r, body.len()))
            .collect())
    }

    fn of_type(&self, rtype: &Uuid) -> Result<Vec<Record>, Never> {
        // In id order: a simulation replays the same way from its seed.
        let mut out: Vec<Record> = self
            .records
            .values()
            .filter(|(r, _, _)| r.rtype == *rtype)
            .map(|(r, _, _)| r.clone())
            .collect();
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    fn purge_expired(&mut self, now_ms: i64) -> Result<Vec<Summary>, Never> {
        let due: Vec<(i64, Uuid)> = self
            .expiry
            .range(..(now_ms + 1, Uuid::nil()))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for key in due {
            self.expiry.remove(&key);
            if let Some((r, body, _)) = self.records.remove(&key.1) {
                out.push(Summary::of(&r, body.len()));
            }
        }
        Ok(out)
    }

    fn delete(&mut self, ids: &[Uuid]) -> Result<(), Never> {
        for id in ids {
            if let Some((r, _, _)) = self.records.remove(id) {
                self.expiry.remove(&(r.expires_ms, r.id));
            }
        }
        Ok(())
    }

    fn last_seq(&self) -> i64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::MemberId;
    use crate::record::CHAT_TYPE;

    fn rec(expires_ms: i64) -> Put {
        let mut r = Record::new(CHAT_TYPE, MemberId::from_bytes([1; 20]), 0, 0);
        r.expires_ms = expires_ms;
        Put::new(r, false, 0)
    }

    #[test]
    fn the_memory_store_keeps_arrival_order_and_purges_what_expired() {
        let mut s = MemStore::new();
        let (a, b) = (rec(100), rec(200));
        s.put_batch(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(s.last_seq(), 2);
        let mut a2 = a.clone();
        a2.record.version = 2;
        a2.record.expires_ms = 300;
        s.put_batch(&[a2]).unwrap();
        assert_eq!(s.last_seq(), 2, "an update keeps the id's arrival number");
        assert_eq!(s.get(&a.record.id).unwrap().unwrap().version, 2);
        let gone = s.purge_expired(200).unwrap();
        assert_eq!(gone, vec![Summary::of(&b.record, b.body.len())]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.bodies(&[a.record.id, b.record.id]).unwrap().len(), 1);
    }
}
