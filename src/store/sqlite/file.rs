//! The SQLite file itself: noticing it deleted or replaced underneath the worker, and the writer
//! connection borrowed for one write and closed unless that write succeeded.

use crate::store::{StoreError, StoreResult};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::Sqlite;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The database file as opened: its path and (device, inode). A file deleted or replaced under a
/// running worker still takes writes through the open descriptors, into a file nobody will read;
/// once that is seen, every write is refused for the life of this store.
pub(super) struct DatabaseFile {
    path: PathBuf,
    identity: (u64, u64),
    /// Why the file can no longer be written, once found out.
    lost: Mutex<Option<String>>,
}

impl DatabaseFile {
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(DatabaseFile {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            lost: Mutex::new(None),
        })
    }

    pub(super) fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Compares the path's current (device, inode) with the one opened.
    pub(super) fn check(&self) -> StoreResult<()> {
        if let Some(why) = self.lost() {
            return Err(StoreError::Broken(why));
        }
        let now = std::fs::metadata(&self.path).map(|m| (m.dev(), m.ino()));
        let why = match now {
            Ok(identity) if identity == self.identity => return Ok(()),
            Ok(_) => format!(
                "the database file {} was replaced by another file while this worker had it open; \
                 writes are refused so that nothing is acknowledged into the old one (restart the worker)",
                self.path.display()
            ),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => format!(
                "the database file {} was deleted while this worker had it open; writes are \
                 refused so that nothing is acknowledged into a file nobody can read (restart the worker)",
                self.path.display()
            ),
            // Cannot look (permissions, I/O): not proof of a lost file; the write will tell.
            Err(_) => return Ok(()),
        };
        tracing::error!(path = %self.path.display(), "{why}");
        *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
        Err(StoreError::Broken(why))
    }
}

/// The writer connection, borrowed for one write (one statement or one transaction).
///
/// Unless [`finish`](WriteConn::finish) is called after the write succeeded, the connection is
/// closed instead of going back to the pool. A failed COMMIT is why: SQLite may roll the
/// transaction back itself (SQLITE_FULL, SQLITE_IOERR), sqlx's ROLLBACK then fails and its
/// transaction depth stays at 1, so the next `begin` opens a SAVEPOINT that a second failure leaves
/// open for good; every later write then lands in a transaction that never commits. A connection
/// closed after any failure (or a cancelled write) cannot carry such a state into the next write.
pub(super) struct WriteConn {
    pub(super) conn: PoolConnection<Sqlite>,
    pub(super) finished: bool,
}

impl WriteConn {
    /// The write succeeded and ended outside any transaction: the connection may be reused.
    pub(super) fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for WriteConn {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for WriteConn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}
