//! Async wrapper over `spin:sqlite` with explicit transactions and typed row access.

use crate::api::ApiError;
pub use spin_sdk::sqlite::Value;
// The interface's synchronous functions (`open`, `execute`, `changes`):
// spin-sdk's `Connection` wraps only the async ones, whose rows come back
// through a stream and a result future, and each read of those crosses the
// component boundary through the host's event loop: for the small results
// our components read (one key, a few rows), that machinery cost several
// times the query (measured in edge-host: about 40 µs of a 60 µs lookup).
// `spin:sqlite@3.1.0` defines both forms and Spin implements both.
use spin_sdk::sqlite::wit::sqlite::Connection;

/// One result row.
pub struct Row(Vec<Value>);

fn column_error(i: usize, want: &str) -> ApiError {
    ApiError::internal(format!("database column {i} is not {want}"))
}

impl Row {
    pub fn values(&self) -> &[Value] {
        &self.0
    }
    pub fn text(&self, i: usize) -> Result<String, ApiError> {
        self.opt_text(i)?.ok_or_else(|| column_error(i, "text"))
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, ApiError> {
        match self.0.get(i) {
            Some(Value::Text(s)) => Ok(Some(s.clone())),
            Some(Value::Null) => Ok(None),
            _ => Err(column_error(i, "text")),
        }
    }
    pub fn int(&self, i: usize) -> Result<i64, ApiError> {
        self.opt_int(i)?.ok_or_else(|| column_error(i, "an integer"))
    }
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, ApiError> {
        match self.0.get(i) {
            Some(Value::Integer(n)) => Ok(Some(*n)),
            Some(Value::Null) => Ok(None),
            _ => Err(column_error(i, "an integer")),
        }
    }
    pub fn blob(&self, i: usize) -> Result<&[u8], ApiError> {
        self.opt_blob(i)?.ok_or_else(|| column_error(i, "a blob"))
    }
    pub fn opt_blob(&self, i: usize) -> Result<Option<&[u8]>, ApiError> {
        match self.0.get(i) {
            Some(Value::Blob(b)) => Ok(Some(b.as_slice())),
            Some(Value::Null) => Ok(None),
            _ => Err(column_error(i, "a blob")),
        }
    }
}

/// Optional text/int/blob parameters.
pub fn opt_text(v: Option<&str>) -> Value {
    v.map(|s| Value::Text(s.to_string())).unwrap_or(Value::Null)
}
pub fn opt_int(v: Option<i64>) -> Value {
    v.map(Value::Integer).unwrap_or(Value::Null)
}
pub fn opt_blob(v: Option<Vec<u8>>) -> Value {
    v.map(Value::Blob).unwrap_or(Value::Null)
}
pub fn text(v: &str) -> Value {
    Value::Text(v.to_string())
}

fn db_error(what: &str, e: spin_sdk::sqlite::Error) -> ApiError {
    // SQLite messages name tables and constraints, never bound values.
    eprintln!("sqlite error during {what}: {e:?}");
    if let spin_sdk::sqlite::Error::Io(msg) = &e {
        if msg.contains("UNIQUE constraint failed") {
            return ApiError::conflict("the record already exists");
        }
        if msg.contains("database is locked") || msg.contains("busy") {
            return ApiError::unavailable("the database is busy; retry");
        }
    }
    ApiError::internal(format!("database error during {what}"))
}

/// An open database connection.
pub struct Db {
    conn: Connection,
}

impl Db {
    pub async fn open(label: &str) -> Result<Self, ApiError> {
        Connection::open(label)
            .map(|conn| Db { conn })
            .map_err(|e| db_error("open", e))
    }

    /// Runs a statement and returns its rows.
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, ApiError> {
        self.run(sql, params).await.map_err(|e| db_error("query", e))
    }

    async fn run(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, spin_sdk::sqlite::Error> {
        let res = self.conn.execute(sql, &params)?;
        Ok(res.rows.into_iter().map(|r| Row(r.values)).collect())
    }

    /// Runs a statement and returns its first row, if any.
    pub async fn query_one(&self, sql: &str, params: Vec<Value>) -> Result<Option<Row>, ApiError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs a statement for its effect.
    pub async fn exec(&self, sql: &str, params: Vec<Value>) -> Result<(), ApiError> {
        self.query(sql, params).await.map(|_| ())
    }

    /// Rows changed by the last statement.
    pub async fn changes(&self) -> u64 {
        self.conn.changes()
    }

    /// Starts a write transaction (takes the write lock up front).
    pub async fn begin(&self) -> Result<(), ApiError> {
        self.exec("BEGIN IMMEDIATE", vec![]).await
    }

    /// Commits on `Ok`, rolls back on `Err`, and passes the result through.
    pub async fn finish<T>(&self, result: Result<T, ApiError>) -> Result<T, ApiError> {
        match result {
            Ok(v) => {
                self.exec("COMMIT", vec![]).await?;
                Ok(v)
            }
            Err(e) => {
                if let Err(rb) = self.exec("ROLLBACK", vec![]).await {
                    eprintln!("rollback failed: {}", rb.message);
                }
                Err(e)
            }
        }
    }

    /// Reads the schema versions recorded in the shared `meta` table, or none
    /// if it does not exist yet.
    pub async fn schema_versions(&self) -> Vec<(String, i64)> {
        // Fails (quietly) before the first migration created the table.
        match self.run("SELECT key, value FROM schema_meta", vec![]).await {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| Some((r.text(0).ok()?, r.int(1).ok()?)))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Applies `statements` (idempotent DDL) and records `version` for
    /// `component`, in one transaction, unless already at that version.
    pub async fn migrate(&self, component: &str, version: i64, statements: &[&str]) -> Result<(), ApiError> {
        self.begin().await?;
        let result = async {
            self.exec(
                "CREATE TABLE IF NOT EXISTS schema_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
                vec![],
            )
            .await?;
            let current = self
                .query_one("SELECT value FROM schema_meta WHERE key = ?", vec![text(component)])
                .await?
                .map(|r| r.int(0))
                .transpose()?;
            if current.is_some_and(|v| v >= version) {
                return Ok(());
            }
            for s in statements {
                self.exec(s, vec![]).await?;
            }
            self.exec(
                "INSERT INTO schema_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                vec![text(component), Value::Integer(version)],
            )
            .await
        }
        .await;
        self.finish(result).await
    }
}
