//! A libsql database with a small pool of idle connections, shared by every
//! request: opening a SQLite connection costs more than the queries our
//! components run, so connections are reused once they are back in
//! autocommit state (no transaction left open by the last user).

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

const MAX_IDLE: usize = 32;

pub struct DbPool {
    db: libsql::Database,
    idle: Mutex<Vec<libsql::Connection>>,
    local: bool,
    /// For `:memory:`: the one connection that owns the database.
    shared: Option<libsql::Connection>,
}

impl DbPool {
    /// A local libsql file (created if missing) or `:memory:`.
    ///
    /// An in-memory database lives as long as one connection to it, so for
    /// `:memory:` the pool keeps one connection forever and hands out that one.
    pub async fn open_local(path: &Path) -> Result<Self> {
        if path != Path::new(":memory:")
            && let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating directory {}", dir.display()))?;
        }
        let db = libsql::Builder::new_local(path)
            .build()
            .await
            .with_context(|| format!("opening libsql database {}", path.display()))?;
        let mut pool = Self { db, idle: Mutex::new(Vec::new()), local: true, shared: None };
        let conn = pool.connect().await?;
        if path == Path::new(":memory:") {
            pool.shared = Some(conn);
        } else {
            // WAL lets readers proceed while one request writes.
            pragma(&conn, "PRAGMA journal_mode=WAL").await?;
            pool.put(conn);
        }
        Ok(pool)
    }

    /// A remote libsql server (sqld / Turso) reached over Hrana.
    pub async fn open_remote(url: &str, token: &str) -> Result<Self> {
        let db = libsql::Builder::new_remote(url.to_string(), token.to_string())
            .build()
            .await
            .with_context(|| format!("connecting to libsql server {url}"))?;
        Ok(Self { db, idle: Mutex::new(Vec::new()), local: false, shared: None })
    }

    async fn connect(&self) -> Result<libsql::Connection> {
        let conn = self.db.connect().context("opening a libsql connection")?;
        if self.local {
            conn.busy_timeout(Duration::from_secs(5))?;
            // Deleted content is overwritten, not left in free pages: the
            // edge stores encrypted health data and erasure must be real.
            pragma(&conn, "PRAGMA secure_delete=ON").await?;
        }
        Ok(conn)
    }

    /// An idle connection, or a new one.
    pub async fn get(&self) -> Result<libsql::Connection> {
        if let Some(shared) = &self.shared {
            return Ok(shared.clone());
        }
        let idle = self.idle.lock().unwrap().pop();
        match idle {
            Some(c) => Ok(c),
            None => self.connect().await,
        }
    }

    /// Whether this is a local file (or memory) database, whose operations
    /// block the calling thread (see [`off_runtime`]).
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// Returns a connection for reuse; one left inside a transaction is
    /// rolled back by being dropped instead.
    pub fn put(&self, conn: libsql::Connection) {
        if self.shared.is_some() || !conn.is_autocommit() {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// Runs a database operation without stalling the async runtime. Local
/// libsql does its file I/O, and waits out a locked database for up to the
/// busy timeout, synchronously inside its async API; on a runtime worker
/// that would stop every other request on that worker, including the one
/// holding the lock. So local operations run on the blocking pool; remote
/// ones are real async I/O and run in place.
pub async fn off_runtime<T: Send + 'static>(local: bool, op: impl Future<Output = T> + Send + 'static) -> T {
    if local {
        tokio::task::spawn_blocking(move || futures::executor::block_on(op))
            .await
            .expect("a database operation panicked")
    } else {
        op.await
    }
}

/// Runs a PRAGMA (which may answer with rows) and discards its answer.
async fn pragma(conn: &libsql::Connection, sql: &str) -> Result<()> {
    let mut rows = conn.query(sql, ()).await.with_context(|| sql.to_string())?;
    while rows.next().await?.is_some() {}
    Ok(())
}
