//! Durable storage in redb. Every write transaction is committed with redb's default
//! `Durability::Immediate` (fsync) before the HTTP API acknowledges it, so an acknowledged
//! registration survives `kill -9` and power loss.
//!
//! A failed commit (a full disk, a read-only or failing device) leaves redb refusing every
//! later transaction until the database is opened again; the next commit reopens it first
//! (redb recovers the last committed state), so writes work again as soon as the device
//! does, without a restart.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{catalog::Change, kv::KvEntry, registration::Registration};

/// What is stored: the last index used, every registration and every key/value entry.
pub type Stored = (u64, Vec<Registration>, Vec<KvEntry>);

const REGISTRATIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("registrations");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const INDEX_KEY: &str = "index";
const FILE_NAME: &str = "registry.redb";

/// The registry's database file (`<data-dir>/registry.redb`).
#[derive(Debug)]
pub struct Db {
    /// `None` after a failed commit, until it is opened again.
    db: Option<Database>,
    path: PathBuf,
}

/// Storage failures. The data directory is usually the thing to check.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}; check that the path is writable")]
    CreateDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be opened (locked by another process, corrupt, unreadable).
    #[error(
        "cannot open registry database {path}: {source}; is another meshplane using the same --data-dir?"
    )]
    Open {
        /// The database file.
        path: String,
        /// redb's error.
        source: Box<redb::DatabaseError>,
    },
    /// A read or write failed.
    #[error("registry database error: {0}; check disk space and permissions of --data-dir")]
    Storage(String),
    /// A stored registration could not be decoded (written by an incompatible version).
    #[error(
        "stored registration {key} is unreadable: {source}; remove it or restore a backup of --data-dir"
    )]
    Corrupt {
        /// The service id under which it is stored.
        key: String,
        /// The decode error.
        source: serde_json::Error,
    },
}

fn storage(e: impl std::fmt::Display) -> DbError {
    DbError::Storage(e.to_string())
}

// === impl Db ===

impl Db {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Self, DbError> {
        std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Self::open_file(&path)?;
        // Create the tables so read transactions never see them missing.
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(REGISTRATIONS).map_err(storage)?;
        txn.open_table(META).map_err(storage)?;
        txn.open_table(KV).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(Self { db: Some(db), path })
    }

    fn open_file(path: &Path) -> Result<Database, DbError> {
        Database::create(path).map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// The open database, opening it again after a failed commit.
    fn database(&mut self) -> Result<&Database, DbError> {
        if self.db.is_none() {
            let db = Database::create(&self.path).map_err(|e| {
                storage(format!(
                    "cannot reopen {} after a failed write: {e}",
                    self.path.display()
                ))
            })?;
            tracing::info!(path = %self.path.display(), "registry database reopened after a failed commit");
            self.db = Some(db);
        }
        self.db
            .as_ref()
            .ok_or_else(|| storage("the registry database is not open"))
    }

    /// Everything stored, and the last index used.
    pub fn load(&mut self) -> Result<Stored, DbError> {
        let txn = self.database()?.begin_read().map_err(storage)?;
        let index = txn
            .open_table(META)
            .map_err(storage)?
            .get(INDEX_KEY)
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(0);
        let table = txn.open_table(REGISTRATIONS).map_err(storage)?;
        let mut regs = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (key, value) = row.map_err(storage)?;
            let reg = serde_json::from_slice(value.value()).map_err(|source| DbError::Corrupt {
                key: key.value().to_string(),
                source,
            })?;
            regs.push(reg);
        }
        let mut kv = Vec::new();
        for row in txn
            .open_table(KV)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (key, value) = row.map_err(storage)?;
            let entry =
                serde_json::from_slice(value.value()).map_err(|source| DbError::Corrupt {
                    key: format!("kv/{}", key.value()),
                    source,
                })?;
            kv.push(entry);
        }
        Ok((index, regs, kv))
    }

    /// Writes a batch of changes and the new index in one durable transaction.
    pub fn commit(&mut self, index: u64, changes: &[Change]) -> Result<(), DbError> {
        let result = self.write(index, changes);
        if result.is_err() {
            // Closed now, so the reopen can take the file's lock.
            self.db = None;
        }
        result
    }

    fn write(&mut self, index: u64, changes: &[Change]) -> Result<(), DbError> {
        let txn = self.database()?.begin_write().map_err(storage)?;
        {
            let mut table = txn.open_table(REGISTRATIONS).map_err(storage)?;
            for change in changes {
                match change {
                    Change::Put(reg) => {
                        let bytes = serde_json::to_vec(reg).map_err(storage)?;
                        table
                            .insert(reg.service.id.as_str(), bytes.as_slice())
                            .map_err(storage)?;
                    }
                    Change::Delete(id) => {
                        table.remove(id.as_str()).map_err(storage)?;
                    }
                    Change::Touch { .. } | Change::KvPut(_) | Change::KvDelete(_) => {}
                }
            }
            let mut kv = txn.open_table(KV).map_err(storage)?;
            for change in changes {
                match change {
                    Change::KvPut(entry) => {
                        let bytes = serde_json::to_vec(entry).map_err(storage)?;
                        kv.insert(entry.key.as_str(), bytes.as_slice())
                            .map_err(storage)?;
                    }
                    Change::KvDelete(key) => {
                        kv.remove(key.as_str()).map_err(storage)?;
                    }
                    _ => {}
                }
            }
            drop(kv);
            let mut meta = txn.open_table(META).map_err(storage)?;
            meta.insert(INDEX_KEY, index).map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }
}
