//! A libsql database with a small pool of idle connections, shared by every
//! request: opening a SQLite connection costs more than the queries our
//! components run, so connections are reused once they are back in
//! autocommit state (no transaction left open by the last user).
//!
//! Writers to one local database take turns on an async mutex
//! ([`DbPool::write_turn`]) instead of meeting in SQLite's busy handler,
//! which sleeps in growing millisecond steps (1, 2, 5, 10, ... 100 ms) and
//! so turned a few concurrent writers into tail latencies of tens of
//! milliseconds. The queue is FIFO and wakes the next writer as soon as
//! the last one committed. The busy timeout stays as the fallback for what
//! the queue does not cover (another process, a transaction left open).
//!
//! Durability is group-committed: a local file in WAL mode runs its
//! connections with `synchronous=NORMAL` (a commit does not fsync) and a
//! write is answered only after [`DbPool::durable`] saw the WAL fsynced
//! after its commit. One fsync covers every commit made before it started,
//! so concurrent writers share fsyncs instead of queueing one fsync each
//! behind the writer turn (the turn is released before the wait). A write
//! is on disk when its guest gets the answer, as with `synchronous=FULL`
//! (which is what a connection keeps when WAL mode is not available).
//!
//! Single-statement writes are group-committed too ([`DbPool::write_batched`]):
//! an `INSERT`, `UPDATE`, `DELETE` or `REPLACE` sent outside a transaction
//! (a per-request counter, an audit row) goes to the database's batch
//! writer, which runs every such statement queued meanwhile in one
//! transaction, each inside its own savepoint, so that each still succeeds
//! or fails alone, exactly as in autocommit. One commit, one WAL append and
//! one invalidation of the other connections' page caches then serve a
//! whole batch instead of one each, which under concurrent writers cost
//! more than the statements.
//!
//! A guest connection may lower its own durability with SQLite's own
//! `PRAGMA synchronous` (see [`synchronous_pragma`]): at `NORMAL` or `OFF`
//! its writes are answered once committed, without waiting for the group
//! fsync. That is SQLite's meaning of `synchronous=NORMAL` in WAL mode: a
//! commit survives the process crashing (the WAL is in the OS's hands) and
//! may be lost to a power cut until the next fsync (the next durable write's
//! or a checkpoint's). The pragma is kept on the guest's connection for
//! every local database and never runs on a pooled connection, whose level
//! stays the pool's own (a file without WAL syncs every commit itself).

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MAX_IDLE: usize = 32;
/// How long SQLite's busy handler waits for a lock, and how long a writer
/// waits for its turn before going ahead without it.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A writer's turn on a local database (see [`DbPool::write_turn`]).
pub type WriteTurn = tokio::sync::OwnedMutexGuard<()>;

/// Prepared statements kept per local connection, by SQL text.
const MAX_CACHED_STATEMENTS: usize = 64;

/// A pooled connection with its cache of prepared statements (local
/// databases: parsing and planning a statement cost more than running the
/// small ones our components send). Derefs to the libsql connection.
#[derive(Clone)]
pub struct Conn {
    conn: libsql::Connection,
    /// `None` for a remote database (the server prepares).
    statements: Option<Arc<Mutex<HashMap<String, libsql::Statement>>>>,
}

impl std::ops::Deref for Conn {
    type Target = libsql::Connection;
    fn deref(&self) -> &libsql::Connection {
        &self.conn
    }
}

/// A statement's column names and rows.
pub type Answer = (Vec<String>, Vec<Vec<libsql::Value>>);

impl Conn {
    /// Runs `sql` to completion and returns its columns and rows, with a
    /// cached prepared statement where there is one (taken out of the
    /// cache while in use, so concurrent users of one connection never
    /// share a statement).
    pub async fn run(&self, sql: &str, params: Vec<libsql::Value>) -> libsql::Result<Answer> {
        let Some(cache) = &self.statements else {
            let rows = self.conn.query(sql, params).await?;
            return collect(rows).await;
        };
        let cached = cache.lock().unwrap().remove(sql);
        let stmt = match cached {
            Some(s) => s,
            None => self.conn.prepare(sql).await?,
        };
        let answer = match stmt.query(params).await {
            Ok(rows) => collect(rows).await,
            Err(e) => Err(e),
        };
        stmt.reset();
        let mut cache = cache.lock().unwrap();
        if cache.len() >= MAX_CACHED_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_string(), stmt);
        answer
    }
}

async fn collect(mut rows: libsql::Rows) -> libsql::Result<Answer> {
    let n = rows.column_count();
    let columns = (0..n).map(|i| rows.column_name(i).unwrap_or_default().to_string()).collect();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push((0..n).map(|i| row.get_value(i)).collect::<libsql::Result<Vec<_>>>()?);
    }
    Ok((columns, out))
}

/// What a statement run by the batch writer did (see [`DbPool::write_batched`]).
pub struct Written {
    pub answer: Answer,
    /// Rows it changed (`sqlite3_changes`).
    pub changes: u64,
    /// The rowid it inserted, for an `INSERT`/`REPLACE` that changed rows.
    pub inserted_rowid: Option<i64>,
}

/// One statement queued for the batch writer, and where its answer goes.
struct QueuedWrite {
    sql: String,
    params: Vec<libsql::Value>,
    /// Answer only once the commit is on disk (the guest connection's
    /// `synchronous` is `FULL` or `EXTRA`); otherwise once committed.
    durable: bool,
    reply: tokio::sync::oneshot::Sender<Result<Written, String>>,
}

/// The connection shared by the batch writer and autocommit reads, one
/// user at a time.
#[derive(Clone)]
struct Primary {
    conn: Conn,
    in_use: Arc<tokio::sync::Mutex<()>>,
}

/// Copies the WAL back into the database for the batch writer (whose own
/// connection does not checkpoint): SQLite's automatic checkpoint runs
/// inside the commit that crosses its threshold, and on the primary
/// connection that would hold every read waiting for milliseconds.
struct Checkpointer {
    conn: Conn,
    running: Arc<std::sync::atomic::AtomicBool>,
}

/// Batches between checkpoints (SQLite's own default is every 1000 WAL pages;
/// a batch commits a page or a few).
const CHECKPOINT_EVERY: u32 = 500;

impl Checkpointer {
    /// Starts a passive checkpoint on the blocking pool unless one runs:
    /// it copies what no reader still needs, blocking neither readers nor
    /// the writer.
    fn start(&self) {
        if self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let conn = self.conn.clone();
        let running = self.running.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = futures::executor::block_on(pragma(&conn, "PRAGMA wal_checkpoint(PASSIVE)")) {
                tracing::warn!(error = %format!("{e:#}"), "WAL checkpoint failed; the next one retries");
            }
            running.store(false, Ordering::SeqCst);
        });
    }
}

/// Most statements one batch transaction runs.
const MAX_BATCH: usize = 256;

pub struct DbPool {
    db: libsql::Database,
    idle: Mutex<Vec<Conn>>,
    local: bool,
    /// For `:memory:`: the one connection that owns the database.
    shared: Option<Conn>,
    /// One writer at a time (local databases only).
    writers: Arc<tokio::sync::Mutex<()>>,
    /// A local file in WAL mode: the group fsync of its WAL.
    group: Option<Arc<GroupSync>>,
    /// A local file in WAL mode: the queue of the batch writer.
    batch: Option<tokio::sync::mpsc::UnboundedSender<QueuedWrite>>,
    /// A local file in WAL mode: the batch writer's connection, which also
    /// runs reads made outside a transaction (see [`DbPool::read_on_primary`]).
    primary: Option<Primary>,
    /// Reads run on the calling task (see [`DbPool::reads_in_place`]).
    reads_in_place: bool,
}

/// Group commit of a WAL file (see the module docs).
struct GroupSync {
    wal: PathBuf,
    /// The WAL, opened once: the pool's primary connection stays open for
    /// the pool's life, so SQLite never deletes the file (it does so only
    /// when the last connection closes) and this stays the file it writes.
    wal_file: Mutex<Option<Arc<std::fs::File>>>,
    /// Commits counted so far (a commit is counted after it happened).
    commits: AtomicU64,
    /// Every commit up to this count is on disk.
    synced: AtomicU64,
    /// One fsync at a time; waiters whose commit the running one covers
    /// return without another.
    syncing: Mutex<()>,
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
        let mut pool = Self { db, idle: Mutex::new(Vec::new()), local: true, shared: None, writers: Default::default(), group: None, batch: None, primary: None, reads_in_place: false };
        let conn = pool.connect().await?;
        if path == Path::new(":memory:") {
            pool.shared = Some(conn);
        } else {
            // WAL lets readers proceed while one request writes.
            let mode = pragma_value(&conn, "PRAGMA journal_mode=WAL").await?;
            if mode.eq_ignore_ascii_case("wal") {
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                let group = Arc::new(GroupSync {
                    wal: PathBuf::from(wal),
                    wal_file: Mutex::new(None),
                    commits: AtomicU64::new(0),
                    synced: AtomicU64::new(0),
                    syncing: Mutex::new(()),
                });
                pool.group = Some(group.clone());
                // This first connection was opened with FULL; the next ones NORMAL.
                pragma(&conn, "PRAGMA synchronous=NORMAL").await?;
                let (queue, queued) = tokio::sync::mpsc::unbounded_channel();
                let primary = Primary { conn: pool.connect().await?, in_use: Default::default() };
                // Checkpoints run beside, not inside, the primary's commits.
                pragma(&primary.conn, "PRAGMA wal_autocheckpoint=0").await?;
                let checkpointer = Checkpointer { conn: pool.connect().await?, running: Default::default() };
                tokio::spawn(batch_writer(queued, primary.clone(), pool.writers.clone(), group, checkpointer));
                pool.batch = Some(queue);
                pool.primary = Some(primary);
                pool.reads_in_place = std::env::var_os("EDGE_HOST_READS_OFF_RUNTIME").is_none();
            } else {
                tracing::warn!(path = %path.display(), mode, "WAL mode unavailable; every commit fsyncs on its own");
            }
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
        Ok(Self { db, idle: Mutex::new(Vec::new()), local: false, shared: None, writers: Default::default(), group: None, batch: None, primary: None, reads_in_place: false })
    }

    async fn connect(&self) -> Result<Conn> {
        let conn = self.db.connect().context("opening a libsql connection")?;
        let conn = Conn { conn, statements: self.local.then(Default::default) };
        if self.local {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // Deleted content is overwritten, not left in free pages: the
            // edge stores encrypted health data and erasure must be real.
            pragma(&conn, "PRAGMA secure_delete=ON").await?;
            if self.group.is_some() {
                // Commits are made durable by `durable` (group fsync).
                pragma(&conn, "PRAGMA synchronous=NORMAL").await?;
            }
        }
        Ok(conn)
    }

    /// An idle connection, or a new one.
    pub async fn get(&self) -> Result<Conn> {
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

    /// Whether a read (a statement that does not write) may run on the
    /// calling task instead of the blocking pool: true for a local file in
    /// WAL mode, where readers never wait for a lock (no writer blocks
    /// them; SQLite's "readers get SQLITE_BUSY" cases in WAL mode are an
    /// exclusive-locking-mode connection, the last connection closing and
    /// recovery after a crash, none of which happens while this pool
    /// holds connections), so the busy handler that [`off_runtime`] keeps
    /// off the runtime never sleeps for them. This saves two thread
    /// handoffs per read. Writes, `:memory:` (one shared connection, no
    /// WAL) and rollback-journal files keep running off the runtime.
    /// `EDGE_HOST_READS_OFF_RUNTIME=1` sends reads there too.
    pub fn reads_in_place(&self) -> bool {
        self.reads_in_place
    }

    /// Waits for this database's writer turn: hold it while a statement
    /// that may write runs (and for the whole of an explicit transaction).
    /// `None` for a remote database (the server orders writes), or when
    /// the turn did not come within [`BUSY_TIMEOUT`] (e.g. a guest keeps a
    /// transaction open on another connection): the writer then goes ahead
    /// and SQLite's busy handler decides, as without the queue.
    pub async fn write_turn(&self) -> Option<WriteTurn> {
        if !self.local {
            return None;
        }
        tokio::time::timeout(BUSY_TIMEOUT, self.writers.clone().lock_owned()).await.ok()
    }

    /// Returns once every commit made so far (in particular the caller's
    /// own, just made) is on disk: waits for an fsync of the WAL that
    /// started after the commit, running one if none is under way. A no-op
    /// where commits sync themselves (remote, `:memory:`, no WAL).
    pub async fn durable(&self) -> Result<()> {
        match &self.group {
            Some(g) => {
                let g = g.clone();
                tokio::task::spawn_blocking(move || g.durable_blocking())
                    .await
                    .context("the WAL fsync panicked")?
            }
            None => Ok(()),
        }
    }

    /// Whether [`DbPool::read_on_primary`] runs reads (a local file in WAL mode).
    pub fn has_primary(&self) -> bool {
        self.primary.is_some()
    }

    /// Runs a read made outside any transaction on the primary connection,
    /// the one the batch writer commits with; `None` where there is none.
    ///
    /// SQLite drops a connection's whole page cache when it sees that
    /// another connection committed, so with a batched write per request
    /// (a counter, an audit row) every pooled connection re-read its b-tree
    /// pages from the file on nearly every query. The primary connection
    /// sees its own commits and keeps its cache. Reads take turns on it
    /// (a small query costs microseconds) and wait while a batch runs.
    pub async fn read_on_primary(&self, sql: &str, params: Vec<libsql::Value>) -> Option<libsql::Result<Answer>> {
        let primary = self.primary.as_ref()?;
        let _turn = primary.in_use.lock().await;
        Some(primary.conn.run(sql, params).await)
    }

    /// Whether [`DbPool::write_batched`] is available (a local file in WAL mode).
    pub fn batches_writes(&self) -> bool {
        self.batch.is_some()
    }

    /// Runs `sql` (one [`batchable`] statement, outside any transaction)
    /// through the batch writer and answers once its batch is committed and,
    /// if `durable`, on disk. The statement's own error (a constraint, a bad
    /// parameter) is its alone: it is rolled back to its savepoint and the
    /// rest of the batch commits.
    pub async fn write_batched(&self, sql: String, params: Vec<libsql::Value>, durable: bool) -> Result<Written, String> {
        let Some(queue) = &self.batch else {
            return Err("this database has no batch writer".into());
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        queue
            .send(QueuedWrite { sql, params, durable, reply })
            .map_err(|_| "the database's batch writer has stopped".to_string())?;
        answer.await.map_err(|_| "the database's batch writer has stopped".to_string())?
    }
}

impl GroupSync {
    /// Returns once every commit counted so far, the caller's included, is
    /// on disk (see [`DbPool::durable`]); on a blocking thread, which the
    /// batch writer calls right after its commit, without another handoff.
    fn durable_blocking(&self) -> Result<()> {
        let mine = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        if self.synced.load(Ordering::SeqCst) >= mine {
            return Ok(()); // an fsync that started after our commit finished
        }
        // Covers every commit counted before it starts.
        let upto = self.commits.load(Ordering::SeqCst);
        let synced = match self.open_wal() {
            Ok(Some(f)) => f.sync_data(),
            // No WAL file: its content was checkpointed into the database
            // (which SQLite syncs) and the file removed.
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        synced.with_context(|| format!("fsync of {}", self.wal.display()))?;
        self.synced.fetch_max(upto, Ordering::SeqCst);
        Ok(())
    }

    /// The WAL file, opened on first use; `None` while it does not exist.
    fn open_wal(&self) -> std::io::Result<Option<Arc<std::fs::File>>> {
        let mut file = self.wal_file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            match std::fs::OpenOptions::new().write(true).open(&self.wal) {
                Ok(f) => *file = Some(Arc::new(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(file.clone())
    }
}

impl DbPool {
    /// Returns a connection for reuse; one left inside a transaction is
    /// rolled back by being dropped instead.
    pub fn put(&self, conn: Conn) {
        if self.shared.is_some() || !conn.is_autocommit() {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// The batch writer of a local WAL database: takes every statement queued
/// since its last batch, runs them in one transaction on its own
/// connection while holding the writer turn, and answers each once the
/// commit is on disk (a statement from a connection at `synchronous=NORMAL`
/// once committed). The next batch gathers while this one syncs: the
/// slower the disk, the larger the batches.
async fn batch_writer(
    mut queue: tokio::sync::mpsc::UnboundedReceiver<QueuedWrite>,
    primary: Primary,
    writers: Arc<tokio::sync::Mutex<()>>,
    group: Arc<GroupSync>,
    checkpointer: Checkpointer,
) {
    let mut since_checkpoint = 0u32;
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Ok(next) = queue.try_recv()
        {
            batch.push(next);
        }
        let (statements, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|w| ((w.sql, w.params), (w.reply, w.durable))).unzip();
        let turn = tokio::time::timeout(BUSY_TIMEOUT, writers.clone().lock_owned()).await.ok();
        let in_use = primary.in_use.clone().lock_owned().await;
        let c = primary.conn.clone();
        let g = group.clone();
        // One trip to the blocking pool: the batch, then its fsync (the
        // connection and the writer turn are given up before the fsync).
        let trip = tokio::task::spawn_blocking(move || {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                futures::executor::block_on(run_batch(&c, statements))
            }));
            let results = ran.unwrap_or_else(|_| {
                // Roll back what the batch left open (its statements are
                // then not written), and answer each caller with an error
                // instead of dropping its reply.
                if !c.is_autocommit() {
                    let _ = futures::executor::block_on(c.run("ROLLBACK", vec![]));
                }
                tracing::error!("a batch transaction panicked");
                Err("the batch transaction failed inside the host (see its log)".into())
            });
            drop(in_use);
            drop(turn);
            answer_batch(&g, replies, results);
        });
        if trip.await.is_err() {
            tracing::error!("answering a batch panicked");
        }
        since_checkpoint += 1;
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            checkpointer.start();
        }
    }
}

/// A batch's replies: `(answer channel, durable)` per statement.
type Replies = Vec<(tokio::sync::oneshot::Sender<Result<Written, String>>, bool)>;

/// Answers a committed (or failed) batch: statements that need only the
/// commit at once, the others after a group fsync (see
/// [`GroupSync::durable_blocking`]), which is skipped when none needs it.
fn answer_batch(group: &GroupSync, replies: Replies, results: Result<Vec<Result<Written, String>>, String>) {
    let results = match results {
        Ok(results) => results,
        Err(e) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone())); // a caller that went away needs no answer
            }
            return;
        }
    };
    let mut waiting = Vec::new();
    for ((reply, durable), result) in replies.into_iter().zip(results) {
        if durable {
            waiting.push((reply, result));
        } else {
            let _ = reply.send(result);
        }
    }
    if waiting.is_empty() {
        return;
    }
    let synced = group.durable_blocking().map_err(|e| format!("{e:#}"));
    for (reply, result) in waiting {
        let _ = reply.send(synced.clone().and(result));
    }
}

/// Runs one batch in a transaction, each statement in a savepoint; the
/// outer error (the transaction could not begin or commit) fails them all.
/// A batch of one runs on its own, in autocommit.
async fn run_batch(conn: &Conn, statements: Vec<(String, Vec<libsql::Value>)>) -> Result<Vec<Result<Written, String>>, String> {
    let text = |e: libsql::Error| e.to_string();
    if statements.len() == 1 {
        let (sql, params) = statements.into_iter().next().expect("one statement");
        return Ok(vec![run_one(conn, &sql, params).await.map_err(text)]);
    }
    conn.run("BEGIN IMMEDIATE", vec![]).await.map_err(text)?;
    let mut results = Vec::with_capacity(statements.len());
    for (sql, params) in statements {
        let result = async {
            conn.run("SAVEPOINT batched_write", vec![]).await?;
            match run_one(conn, &sql, params).await {
                Ok(w) => {
                    conn.run("RELEASE batched_write", vec![]).await?;
                    Ok(Ok(w))
                }
                Err(e) => {
                    conn.run("ROLLBACK TO batched_write", vec![]).await?;
                    conn.run("RELEASE batched_write", vec![]).await?;
                    Ok(Err(e.to_string()))
                }
            }
        }
        .await;
        match result {
            Ok(r) => results.push(r),
            // The savepoint machinery itself failed: give up the batch.
            Err(e) => return Err(abandon(conn, e).await),
        }
    }
    if let Err(e) = conn.run("COMMIT", vec![]).await {
        return Err(abandon(conn, e).await);
    }
    Ok(results)
}

/// Rolls an unfinished batch back and returns the error that ended it.
async fn abandon(conn: &Conn, e: libsql::Error) -> String {
    if !conn.is_autocommit() {
        let _ = conn.run("ROLLBACK", vec![]).await;
    }
    e.to_string()
}

async fn run_one(conn: &Conn, sql: &str, params: Vec<libsql::Value>) -> libsql::Result<Written> {
    let answer = conn.run(sql, params).await?;
    let changes = conn.changes();
    let inserts = may_insert(sql);
    Ok(Written { answer, changes, inserted_rowid: (inserts && changes > 0).then(|| conn.last_insert_rowid()) })
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

/// Whether `sql` may write: anything but a plain `SELECT` or `VALUES`
/// (comments and whitespace skipped). Erring towards "writes" only costs a
/// writer turn; `WITH` counts as a write (it may lead an `INSERT`).
pub fn may_write(sql: &str) -> bool {
    let word = leading_keyword(sql);
    !(word.eq_ignore_ascii_case("select") || word.eq_ignore_ascii_case("values"))
}

/// Whether `sql` may go to the batch writer ([`DbPool::write_batched`]): a
/// plain data change. Transaction control, DDL, `PRAGMA`, `ATTACH`,
/// `VACUUM` and the like run on their own (several cannot run inside a
/// transaction, and a guest's `BEGIN` must open its own).
pub fn batchable(sql: &str) -> bool {
    let word = leading_keyword(sql);
    ["insert", "update", "delete", "replace"].iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// A `PRAGMA synchronous` statement on the main schema, which the sqlite
/// factor keeps per guest connection instead of running it on a pooled one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynchronousPragma {
    /// `PRAGMA synchronous`: asks the level.
    Query,
    /// `PRAGMA synchronous = <level>`.
    Set(Synchronous),
    /// `PRAGMA synchronous = <something else>`.
    Invalid,
}

/// SQLite's `synchronous` levels, as it numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Synchronous {
    Off = 0,
    Normal = 1,
    Full = 2,
    Extra = 3,
}

impl Synchronous {
    /// Whether a commit is answered only once it is on disk.
    pub fn waits_for_disk(self) -> bool {
        self >= Synchronous::Full
    }

    /// A value as SQLite reads it for this pragma (its `getSafetyLevel`).
    fn parse(value: &str) -> Option<Synchronous> {
        Some(match value {
            "0" | "off" | "no" | "false" => Synchronous::Off,
            "1" | "normal" | "on" | "yes" | "true" => Synchronous::Normal,
            "2" | "full" => Synchronous::Full,
            "3" | "extra" => Synchronous::Extra,
            _ => return None,
        })
    }
}

/// Recognises `PRAGMA synchronous` in any spelling SQLite accepts: any
/// case, comments and whitespace anywhere, a quoted or bracketed name, a
/// `main.` schema, `= x` or `(x)`, a trailing `;`. It fails closed: a
/// PRAGMA naming `synchronous` that is not exactly a query or a setting of
/// the main schema is [`SynchronousPragma::Invalid`], never run, so that no
/// guest changes the level of a pooled connection. Anything else is `None`.
pub fn synchronous_pragma(sql: &str) -> Option<SynchronousPragma> {
    if !leading_keyword(sql).eq_ignore_ascii_case("pragma") {
        return None;
    }
    let rest = &skip_comments(sql)["pragma".len()..];
    // The statement without comments, whitespace and quoting, lower-case.
    let mut flat = String::with_capacity(rest.len());
    let mut s = skip_comments(rest);
    while let Some(c) = s.chars().next() {
        if !matches!(c, '"' | '\'' | '`' | '[' | ']') {
            flat.extend(c.to_lowercase());
        }
        s = skip_comments(&s[c.len_utf8()..]);
    }
    let flat = flat.strip_suffix(';').unwrap_or(&flat);
    let (name, value) = if let Some((n, v)) = flat.split_once('=') {
        (n, Some(v))
    } else if let Some((n, v)) = flat.split_once('(') {
        (n, Some(v.strip_suffix(')').unwrap_or("\u{0}")))
    } else {
        (flat, None)
    };
    if !name.contains("synchronous") {
        return None;
    }
    if name != "synchronous" && name != "main.synchronous" {
        return Some(SynchronousPragma::Invalid);
    }
    Some(match value {
        None => SynchronousPragma::Query,
        Some(v) => Synchronous::parse(v).map_or(SynchronousPragma::Invalid, SynchronousPragma::Set),
    })
}

/// Whether `sql` may set the connection's last inserted rowid.
pub fn may_insert(sql: &str) -> bool {
    let word = leading_keyword(sql);
    ["insert", "replace", "with"].iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// The first word of `sql`, comments and whitespace skipped.
fn leading_keyword(sql: &str) -> &str {
    let s = skip_comments(sql);
    let end = s.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(s.len());
    &s[..end]
}

/// `sql` from its first word on (leading whitespace and comments skipped).
fn skip_comments(sql: &str) -> &str {
    let mut s = sql;
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    s
}

/// Runs a PRAGMA and returns the first column of its first row as text.
async fn pragma_value(conn: &libsql::Connection, sql: &str) -> Result<String> {
    let mut rows = conn.query(sql, ()).await.with_context(|| sql.to_string())?;
    let value = match rows.next().await? {
        Some(row) => match row.get_value(0)? {
            libsql::Value::Text(t) => t,
            libsql::Value::Integer(i) => i.to_string(),
            _ => String::new(),
        },
        None => String::new(),
    };
    while rows.next().await?.is_some() {}
    Ok(value)
}

/// Runs a PRAGMA (which may answer with rows) and discards its answer.
async fn pragma(conn: &libsql::Connection, sql: &str) -> Result<()> {
    let mut rows = conn.query(sql, ()).await.with_context(|| sql.to_string())?;
    while rows.next().await?.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes() {
        for read in ["SELECT 1", "  select * from t", "-- c\nSELECT 1", "/* x */ Values (1)", "SELECT\n1"] {
            assert!(!may_write(read), "{read}");
        }
        for write in ["INSERT INTO t VALUES (1)", "update t set a=1", "BEGIN IMMEDIATE", "COMMIT", "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a",
                      "DELETE FROM t", "CREATE TABLE x (a)", "PRAGMA user_version=3", "", "selectx"] {
            assert!(may_write(write), "{write}");
        }
    }

    #[test]
    fn batchable_statements() {
        for yes in ["INSERT INTO t VALUES (1)", " update t set a=1", "-- c\nDELETE FROM t", "REPLACE INTO t VALUES (2)"] {
            assert!(batchable(yes), "{yes}");
        }
        for no in ["BEGIN", "COMMIT", "SELECT 1", "CREATE TABLE x (a)", "PRAGMA user_version=3", "WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", "VACUUM", "insertx"] {
            assert!(!batchable(no), "{no}");
        }
        assert!(may_insert("insert into t values (1)") && may_insert("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a"));
        assert!(!may_insert("UPDATE t SET a = 1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_writes_succeed_or_fail_alone_and_are_durable() {
        let dir = std::env::temp_dir().join(format!("libsql-pool-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pool = Arc::new(DbPool::open_local(&dir.join("t.db")).await.unwrap());
        assert!(pool.batches_writes() && pool.has_primary());
        let conn = pool.get().await.unwrap();
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)", ()).await.unwrap();
        for j in 0..8 {
            conn.execute("INSERT INTO t (id, name) VALUES (?1, ?2)", (j + 1, format!("taken{j}"))).await.unwrap();
        }
        pool.put(conn);
        // 64 writers at once (so batches form), every 8th a name already
        // taken (before them all, so that the order they run in is free).
        let writers: Vec<_> = (0..64i64)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let name = if i % 8 == 7 { format!("taken{}", i / 8) } else { format!("n{i}") };
                    let sql = "INSERT INTO t (id, name) VALUES (?1, ?2)".to_string();
                    (i, pool.write_batched(sql, vec![libsql::Value::Integer(i + 1000), libsql::Value::Text(name)], true).await)
                })
            })
            .collect();
        for w in writers {
            let (i, result) = w.await.unwrap();
            if i % 8 == 7 {
                let e = result.err().expect("a duplicate fails");
                assert!(e.contains("UNIQUE"), "{e}");
            } else {
                let w = result.unwrap();
                assert_eq!((w.changes, w.inserted_rowid), (1, Some(i + 1000)));
            }
        }
        let (_, rows) = pool.read_on_primary("SELECT count(*) FROM t", vec![]).await.unwrap().unwrap();
        assert_eq!(rows[0][0], libsql::Value::Integer(8 + 56), "every statement but the duplicates committed");
        let g = pool.group.as_ref().unwrap();
        assert!(g.synced.load(Ordering::SeqCst) >= 1, "the batches were fsynced");
        let w = pool.write_batched("UPDATE t SET name = name || 'x' WHERE id >= 1010".into(), vec![], true).await.unwrap();
        assert_eq!((w.changes, w.inserted_rowid), (47, None));
        // A fresh connection sees what the batches committed.
        let fresh = pool.get().await.unwrap();
        let (_, rows) = fresh.run("SELECT count(*) FROM t WHERE name LIKE '%x'", vec![]).await.unwrap();
        assert_eq!(rows[0][0], libsql::Value::Integer(47));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn synchronous_pragmas() {
        use SynchronousPragma::*;
        for (sql, want) in [
            ("PRAGMA synchronous", Some(Query)),
            ("  pragma MAIN.Synchronous ;", Some(Query)),
            ("PRAGMA synchronous = NORMAL", Some(Set(Synchronous::Normal))),
            ("-- relaxed\nPRAGMA synchronous=1;", Some(Set(Synchronous::Normal))),
            ("PRAGMA synchronous('off')", Some(Set(Synchronous::Off))),
            ("PRAGMA main.synchronous = full", Some(Set(Synchronous::Full))),
            ("PRAGMA synchronous = 3", Some(Set(Synchronous::Extra))),
            ("PRAGMA synchronous = sometimes", Some(Invalid)),
            ("PRAGMA synchronous = 7", Some(Invalid)),
            ("PRAGMA synchronous; DROP TABLE t", Some(Invalid)),
            // Every spelling SQLite takes is caught (none reaches a pooled connection).
            ("PRAGMA \"synchronous\"=OFF", Some(Set(Synchronous::Off))),
            ("PRAGMA 'synchronous' = 0", Some(Set(Synchronous::Off))),
            ("PRAGMA [synchronous]=0", Some(Set(Synchronous::Off))),
            ("PRAGMA \"main\".synchronous=yes", Some(Set(Synchronous::Normal))),
            ("PRAGMA main . synchronous = ON", Some(Set(Synchronous::Normal))),
            ("PRAGMA/**/synchronous=false", Some(Set(Synchronous::Off))),
            ("PRAGMA -- x\n synchronous = 2 -- full", Some(Set(Synchronous::Full))),
            // Another schema's, or a name around it: refused, not run.
            ("PRAGMA temp.synchronous = 0", Some(Invalid)),
            ("PRAGMA synchronousx = 0", Some(Invalid)),
            ("PRAGMA journal_mode", None),
            ("PRAGMA user_version = 3", None),
            ("PRAGMA table_info('synchronous_log')", None),
            ("SELECT synchronous FROM t", None),
            ("PRAGMA sync", None),
        ] {
            assert_eq!(synchronous_pragma(sql), want, "{sql}");
        }
        assert!(Synchronous::Full.waits_for_disk() && Synchronous::Extra.waits_for_disk());
        assert!(!Synchronous::Normal.waits_for_disk() && !Synchronous::Off.waits_for_disk());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relaxed_writes_are_answered_without_an_fsync() {
        let dir = std::env::temp_dir().join(format!("libsql-pool-relaxed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pool = Arc::new(DbPool::open_local(&dir.join("t.db")).await.unwrap());
        let conn = pool.get().await.unwrap();
        conn.execute("CREATE TABLE c (k TEXT PRIMARY KEY, n INTEGER NOT NULL)", ()).await.unwrap();
        pool.put(conn);
        let g = pool.group.clone().unwrap();
        let upsert = "INSERT INTO c (k, n) VALUES ('hits', 1) ON CONFLICT(k) DO UPDATE SET n = n + 1";
        let writers: Vec<_> = (0..32)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.write_batched(upsert.into(), vec![], false).await.map(|w| w.changes) })
            })
            .collect();
        for w in writers {
            assert_eq!(w.await.unwrap(), Ok(1));
        }
        assert_eq!(g.commits.load(Ordering::SeqCst), 0, "no relaxed write waited for an fsync");
        let (_, rows) = pool.read_on_primary("SELECT n FROM c", vec![]).await.unwrap().unwrap();
        assert_eq!(rows[0][0], libsql::Value::Integer(32), "every relaxed write committed");
        // A durable write after them is fsynced, and so are they with it.
        pool.write_batched(upsert.into(), vec![], true).await.unwrap();
        assert!(g.synced.load(Ordering::SeqCst) >= 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn writers_take_turns_and_the_turn_is_released() {
        let dir = std::env::temp_dir().join(format!("libsql-pool-test-{}", std::process::id()));
        let pool = Arc::new(DbPool::open_local(&dir.join("t.db")).await.unwrap());
        let first = pool.write_turn().await.expect("a local database has turns");
        let p = pool.clone();
        let waiter = tokio::spawn(async move { p.write_turn().await.is_some() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second writer waits for the first");
        drop(first);
        assert!(waiter.await.unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_wal_file_is_group_synced_and_its_connections_run_normal() {
        let dir = std::env::temp_dir().join(format!("libsql-pool-sync-{}", std::process::id()));
        let pool = Arc::new(DbPool::open_local(&dir.join("t.db")).await.unwrap());
        assert!(pool.group.is_some(), "WAL mode");
        let conn = pool.get().await.unwrap();
        // 1 = NORMAL
        assert_eq!(pragma_value(&conn, "PRAGMA synchronous").await.unwrap(), "1");
        conn.execute("CREATE TABLE t (a)", ()).await.unwrap();
        pool.durable().await.unwrap();
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let conn = pool.get().await.unwrap();
                    let turn = pool.write_turn().await;
                    conn.execute("INSERT INTO t VALUES (?1)", [i]).await.unwrap();
                    drop(turn);
                    pool.put(conn);
                    pool.durable().await.unwrap();
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let g = pool.group.as_ref().unwrap();
        assert_eq!(g.synced.load(Ordering::SeqCst), 9, "every commit is covered by an fsync");
        let mem = DbPool::open_local(Path::new(":memory:")).await.unwrap();
        assert!(mem.group.is_none());
        mem.durable().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
