//! `spin:sqlite/sqlite@3.1.0` over libsql, sync and async methods.
//!
//! Databases are opened once per app (a local file in the data dir by
//! default, `:memory:` or a remote libsql server when the runtime config
//! says so); a component may open only the labels its manifest grants.
//!
//! On a local database `PRAGMA synchronous` belongs to the guest's
//! connection, as in SQLite: it is kept on the connection resource, never
//! run on the pooled connection underneath. On a file in WAL mode (group
//! commit, see [`crate::libsql_pool`]) it decides whether that connection's
//! writes are answered once on disk (`FULL`, the default, and `EXTRA`) or
//! once committed (`NORMAL`, `OFF`); elsewhere every commit syncs itself
//! anyway. A remote database gets the statement as it is.

use crate::factors::bindings::sqlite::{self, Error, QueryResult, RowResult, Value};
use crate::libsql_pool::{
    Conn, DbPool, Synchronous, SynchronousPragma, WriteTurn, batchable, may_insert, may_write, off_runtime,
    synchronous_pragma,
};
use crate::runtime_config::{RuntimeConfig, SqliteDatabaseConfig};
use anyhow::Result;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{
    Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader,
};

/// Every database the app can reach, by label.
#[derive(Default)]
pub struct SqliteDatabases {
    pools: BTreeMap<String, Arc<DbPool>>,
}

impl SqliteDatabases {
    /// Opens the databases of every label some component is granted: the
    /// runtime config's entry, or `<data-dir>/sqlite_db.db` for `default`.
    pub async fn open(
        labels: impl IntoIterator<Item = String>,
        rc: &RuntimeConfig,
        data_dir: &Path,
    ) -> Result<Self> {
        let mut pools = BTreeMap::new();
        for label in labels.into_iter().collect::<HashSet<_>>() {
            let pool = match rc.sqlite_database.get(&label) {
                Some(SqliteDatabaseConfig::Spin { path }) => {
                    let path = match path {
                        Some(p) => rc.resolve(p),
                        None => data_dir.join(format!("{label}.db")),
                    };
                    DbPool::open_local(&path).await?
                }
                Some(SqliteDatabaseConfig::Libsql { url, token }) => {
                    DbPool::open_remote(url, token).await?
                }
                None if label == "default" => {
                    DbPool::open_local(&data_dir.join("sqlite_db.db")).await?
                }
                // Granted but not configured: `open` answers no-such-database.
                None => continue,
            };
            pools.insert(label, Arc::new(pool));
        }
        Ok(Self { pools })
    }
}

/// Per-instance state: what this component may open.
pub struct SqliteCtx {
    pub granted: Arc<HashSet<String>>,
    pub databases: Arc<SqliteDatabases>,
}

/// An open connection (the `connection` resource).
pub struct Connection {
    conn: Option<Conn>,
    pool: Arc<DbPool>,
    /// The database's writer turn, held from a statement that opened a
    /// transaction (`BEGIN`) until the connection is back in autocommit.
    turn: Option<WriteTurn>,
    /// What the last statement run by the batch writer did, for
    /// `changes` and `last-insert-rowid` (it ran on the writer's
    /// connection, not this one): see [`Connection::record`].
    changes: Option<u64>,
    inserted_rowid: Option<i64>,
    /// This connection's `PRAGMA synchronous` (group-committed databases).
    synchronous: Synchronous,
}

impl Connection {
    fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("connection is present until drop")
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The connection first (one left in a transaction is dropped, which
        // rolls it back), then the writer turn.
        if let Some(c) = self.conn.take() {
            self.pool.put(c);
        }
        self.turn = None;
    }
}

pub struct SqliteView<'a> {
    pub ctx: &'a mut SqliteCtx,
    pub table: &'a mut ResourceTable,
}

pub struct SqliteFactor;

impl HasData for SqliteFactor {
    type Data<'a> = SqliteView<'a>;
}

fn pool_for(ctx: &SqliteCtx, label: &str) -> Result<Arc<DbPool>, Error> {
    if !ctx.granted.contains(label) {
        return Err(Error::AccessDenied);
    }
    ctx.databases.pools.get(label).cloned().ok_or(Error::NoSuchDatabase)
}

async fn open_connection(pool: Arc<DbPool>) -> Result<Connection, Error> {
    let conn = pool.get().await.map_err(|e| io_error(format!("{e:#}")))?;
    Ok(Connection { conn: Some(conn), pool, turn: None, changes: None, inserted_rowid: None, synchronous: Synchronous::Full })
}

fn io_error(e: impl std::fmt::Display) -> Error {
    Error::Io(e.to_string())
}

fn to_libsql(v: Value) -> libsql::Value {
    match v {
        Value::Integer(i) => libsql::Value::Integer(i),
        Value::Real(f) => libsql::Value::Real(f),
        Value::Text(s) => libsql::Value::Text(s),
        Value::Blob(b) => libsql::Value::Blob(b),
        Value::Null => libsql::Value::Null,
    }
}

fn from_libsql(v: libsql::Value) -> Value {
    match v {
        libsql::Value::Integer(i) => Value::Integer(i),
        libsql::Value::Real(f) => Value::Real(f),
        libsql::Value::Text(s) => Value::Text(s),
        libsql::Value::Blob(b) => Value::Blob(b),
        libsql::Value::Null => Value::Null,
    }
}

/// What a statement needs from its connection resource.
struct StatementConn {
    conn: Conn,
    pool: Arc<DbPool>,
    /// The resource already holds the writer turn (inside a transaction).
    holds_turn: bool,
    /// The connection's `PRAGMA synchronous`.
    synchronous: Synchronous,
}

/// How a statement ran, for the connection's `changes` and `last-insert-rowid`.
enum Ran {
    /// On the connection itself, which then knows.
    Here { inserts: bool },
    /// By the batch writer: its changes and the rowid it inserted, if any.
    Batched { changes: u64, inserted_rowid: Option<i64> },
    /// `PRAGMA synchronous`, answered from the resource: its level now.
    Synchronous(Synchronous),
}

/// What to do with the resource's writer turn after a statement.
enum TurnAfter {
    /// Back in autocommit: release any turn held.
    Release,
    /// Inside a transaction: keep the turn held (store this one if new).
    Keep(Option<WriteTurn>),
}

/// Runs one statement to completion and collects its rows (off the async
/// runtime for local databases, see [`off_runtime`]). A statement that may
/// write waits for the database's writer turn first, unless its connection
/// is already inside a transaction (which holds the turn, or began without
/// it and then relies on SQLite's busy handler as before); a transaction
/// keeps the turn until it ends.
///
/// A data change outside any transaction goes to the database's batch
/// writer instead (group commit, see [`DbPool::write_batched`]).
async fn run_statement(c: StatementConn, statement: String, params: Vec<Value>) -> (Result<QueryResult, Error>, TurnAfter, Ran) {
    if c.pool.is_local()
        && let Some(pragma) = synchronous_pragma(&statement)
    {
        let (result, level) = synchronous(pragma, c.synchronous);
        return (result, TurnAfter::Keep(None), Ran::Synchronous(level));
    }
    if c.pool.batches_writes() && !c.holds_turn && c.conn.is_autocommit() && batchable(&statement) {
        let params = params.into_iter().map(to_libsql).collect();
        let durable = c.synchronous.waits_for_disk();
        return match c.pool.write_batched(statement, params, durable).await {
            Ok(w) => {
                let ran = Ran::Batched { changes: w.changes, inserted_rowid: w.inserted_rowid };
                (Ok(query_result(w.answer)), TurnAfter::Release, ran)
            }
            Err(e) => (Err(Error::Io(e)), TurnAfter::Release, Ran::Batched { changes: 0, inserted_rowid: None }),
        };
    }
    let ran = Ran::Here { inserts: may_insert(&statement) };
    let (result, after) = run_statement_alone(c, statement, params).await;
    (result, after, ran)
}

/// Answers `PRAGMA synchronous` for a connection now at `level`: a query
/// gets one row, as from SQLite; a setting returns no rows. The level
/// after it comes back too.
fn synchronous(pragma: SynchronousPragma, level: Synchronous) -> (Result<QueryResult, Error>, Synchronous) {
    match pragma {
        SynchronousPragma::Query => (
            Ok(QueryResult {
                columns: vec!["synchronous".into()],
                rows: vec![RowResult { values: vec![Value::Integer(level as i64)] }],
            }),
            level,
        ),
        SynchronousPragma::Set(new) => (Ok(QueryResult { columns: Vec::new(), rows: Vec::new() }), new),
        SynchronousPragma::Invalid => (
            Err(Error::Io(
                "PRAGMA synchronous takes OFF, NORMAL, FULL or EXTRA (or 0 to 3), alone in its statement".into(),
            )),
            level,
        ),
    }
}

async fn run_statement_alone(c: StatementConn, statement: String, params: Vec<Value>) -> (Result<QueryResult, Error>, TurnAfter) {
    let local = c.pool.is_local();
    let turn = if local && !c.holds_turn && c.conn.is_autocommit() && may_write(&statement) {
        c.pool.write_turn().await
    } else {
        None
    };
    let writes = local && may_write(&statement);
    let conn = c.conn.clone();
    let result = if !writes && c.pool.reads_in_place() {
        // Outside a transaction: on the primary connection (warm cache).
        if c.pool.has_primary() && !c.holds_turn && c.conn.is_autocommit() {
            let params = params.into_iter().map(to_libsql).collect();
            match c.pool.read_on_primary(&statement, params).await {
                Some(answer) => answer.map(query_result).map_err(io_error),
                None => Err(Error::Io("the database's primary connection is gone".into())),
            }
        } else {
            run_statement_here(&conn, &statement, params).await
        }
    } else {
        off_runtime(local, async move { run_statement_here(&conn, &statement, params).await }).await
    };
    if !c.conn.is_autocommit() {
        return (result, TurnAfter::Keep(turn));
    }
    // Back in autocommit: whatever was written is committed; answer once
    // it is on disk (group fsync, after giving the turn up), unless the
    // connection asked for `synchronous=NORMAL` or `OFF`.
    drop(turn);
    if writes && c.synchronous.waits_for_disk() && let Err(e) = c.pool.durable().await {
        return (Err(io_error(format!("{e:#}"))), TurnAfter::Release);
    }
    (result, TurnAfter::Release)
}

impl Connection {
    fn statement_conn(&self) -> StatementConn {
        StatementConn {
            conn: self.conn().clone(),
            pool: self.pool.clone(),
            holds_turn: self.turn.is_some(),
            synchronous: self.synchronous,
        }
    }

    fn apply(&mut self, after: TurnAfter, ran: Ran) {
        match after {
            TurnAfter::Release => self.turn = None,
            TurnAfter::Keep(Some(t)) => self.turn = Some(t),
            TurnAfter::Keep(None) => {}
        }
        self.record(ran);
    }

    /// Keeps `changes` and `last-insert-rowid` true to the guest's last
    /// statements: a batched statement's own figures stand until a
    /// statement run here replaces them (its changes always; the rowid
    /// only if it may have inserted, as SQLite keeps the last insert's).
    fn record(&mut self, ran: Ran) {
        match ran {
            Ran::Batched { changes, inserted_rowid } => {
                self.changes = Some(changes);
                if inserted_rowid.is_some() {
                    self.inserted_rowid = inserted_rowid;
                }
            }
            Ran::Here { inserts } => {
                self.changes = None;
                if inserts {
                    self.inserted_rowid = None;
                }
            }
            // A PRAGMA changes neither `changes` nor the last rowid.
            Ran::Synchronous(level) => self.synchronous = level,
        }
    }

    fn changes(&self) -> u64 {
        self.changes.unwrap_or_else(|| self.conn().changes())
    }

    fn last_insert_rowid(&self) -> i64 {
        self.inserted_rowid.unwrap_or_else(|| self.conn().last_insert_rowid())
    }
}

async fn run_statement_here(conn: &Conn, statement: &str, params: Vec<Value>) -> Result<QueryResult, Error> {
    let params: Vec<libsql::Value> = params.into_iter().map(to_libsql).collect();
    Ok(query_result(conn.run(statement, params).await.map_err(io_error)?))
}

fn query_result((columns, rows): crate::libsql_pool::Answer) -> QueryResult {
    let rows = rows
        .into_iter()
        .map(|values| RowResult { values: values.into_iter().map(from_libsql).collect() })
        .collect();
    QueryResult { columns, rows }
}

fn with_conn<T>(
    accessor: &Accessor<T, SqliteFactor>,
    conn: &Resource<Connection>,
) -> wasmtime::Result<Result<StatementConn, Error>> {
    accessor.with(|mut access| {
        let view = access.get();
        Ok(match view.table.get(conn) {
            Ok(c) => Ok(c.statement_conn()),
            Err(_) => Err(Error::InvalidConnection),
        })
    })
}

impl sqlite::Host for SqliteView<'_> {}

impl sqlite::HostConnection for SqliteView<'_> {
    async fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let pool = match pool_for(self.ctx, &database) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match open_connection(pool).await {
            Ok(c) => Ok(self.table.push(c)?),
            Err(e) => Err(e),
        })
    }

    async fn execute(
        &mut self,
        conn: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        let c = match self.table.get(&conn) {
            Ok(c) => c.statement_conn(),
            Err(_) => return Ok(Err(Error::InvalidConnection)),
        };
        let (result, after, ran) = run_statement(c, statement, parameters).await;
        if let Ok(c) = self.table.get_mut(&conn) {
            c.apply(after, ran);
        }
        Ok(result)
    }

    fn last_insert_rowid(&mut self, conn: Resource<Connection>) -> wasmtime::Result<i64> {
        Ok(self.table.get(&conn)?.last_insert_rowid())
    }

    fn changes(&mut self, conn: Resource<Connection>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&conn)?.changes())
    }

    fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

impl<T> sqlite::HostConnectionWithStore<T> for SqliteFactor {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, Error>> {
        let pool = accessor.with(|mut access| pool_for(access.get().ctx, &database));
        let pool = match pool {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let conn = match open_connection(pool).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        accessor.with(|mut access| Ok(Ok(access.get().table.push(conn)?)))
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        conn: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<
        Result<(Vec<String>, StreamReader<RowResult>, FutureReader<Result<(), Error>>), Error>,
    > {
        let c = match with_conn(accessor, &conn)? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        // The statement runs to completion before the rows are streamed:
        // SQLite rows are produced synchronously anyway, and a finished
        // statement releases its locks before the guest reads at its pace.
        let (result, after, ran) = run_statement(c, statement, parameters).await;
        accessor.with(|mut access| {
            if let Ok(c) = access.get().table.get_mut(&conn) {
                c.apply(after, ran);
            }
        });
        let result = match result {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, result.rows)?;
            let done = FutureReader::new(&mut access, async {
                wasmtime::Result::<Result<(), Error>>::Ok(Ok(()))
            })?;
            Ok(Ok((result.columns, rows, done)))
        })
    }

    async fn last_insert_rowid_async(
        accessor: &Accessor<T, Self>,
        conn: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        accessor.with(|mut access| Ok(access.get().table.get(&conn)?.last_insert_rowid()))
    }

    async fn changes_async(
        accessor: &Accessor<T, Self>,
        conn: Resource<Connection>,
    ) -> wasmtime::Result<u64> {
        accessor.with(|mut access| Ok(access.get().table.get(&conn)?.changes()))
    }
}
