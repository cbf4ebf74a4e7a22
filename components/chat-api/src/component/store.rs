//! The key table and the chat audit trail in the `default` SQLite database
//! (tables prefixed `chat_`, beside progress's own).

use crate::keys;
use edge_common::auth::Role;
use edge_common::db::{Db, Value, opt_text, text};
use edge_common::ApiError;
use serde::Serialize;

const COMPONENT: &str = "chat-api";
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS chat_api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        client_id TEXT,
        tenant TEXT NOT NULL,
        key_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        revoked_at INTEGER)",
    // Ids, rule ids and outcomes only: never message text.
    "CREATE TABLE IF NOT EXISTS chat_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        client_id TEXT,
        session_id TEXT,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL)",
];

/// Opens the database, creating the tables on first use. Concurrent first
/// requests race for the write lock of the migration: the losers wait and
/// retry (the migration is idempotent).
pub async fn open() -> Result<Db, ApiError> {
    let db = Db::open("default").await?;
    let mut tries = 0;
    while !db.schema_versions().await.iter().any(|(c, v)| c == COMPONENT && *v >= SCHEMA_VERSION) {
        match db.migrate(COMPONENT, SCHEMA_VERSION, SCHEMA).await {
            Ok(()) => break,
            Err(e) if e.status == 503 && tries < 40 => {
                tries += 1;
                spin_sdk::wasip3::clocks::monotonic_clock::wait_for(25_000_000).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(db)
}

/// Retries `f` while the database reports itself busy (concurrent writers).
pub async fn retry_busy<T, F, Fut>(mut f: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(e) if e.status == 503 && tries < 40 => {
                tries += 1;
                spin_sdk::wasip3::clocks::monotonic_clock::wait_for(25_000_000).await;
            }
            r => return r,
        }
    }
}

/// The caller, as its key says.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    pub client_id: Option<String>,
    pub tenant: String,
}

#[derive(Debug, Serialize)]
pub struct KeySummary {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    pub client_id: Option<String>,
    pub tenant: String,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
}

/// Inserts the bootstrap admin key when the table is empty.
pub async fn bootstrap(db: &Db, secret: &[u8], key: &str, now: i64) -> Result<(), ApiError> {
    if key.is_empty() {
        return Ok(());
    }
    if db.query_one("SELECT 1 FROM chat_api_keys LIMIT 1", vec![]).await?.is_some() {
        return Ok(());
    }
    db.exec(
        "INSERT OR IGNORE INTO chat_api_keys (id, name, role, client_id, tenant, key_hash, created_at, created_by)
         VALUES ('key_bootstrap', 'bootstrap admin', 'admin', NULL, 'default', ?, ?, 'bootstrap')",
        vec![Value::Blob(keys::key_hash(secret, key).to_vec()), Value::Integer(now)],
    )
    .await
}

pub async fn authenticate(db: &Db, secret: &[u8], key: Option<&str>) -> Result<Caller, ApiError> {
    let Some(key) = key else {
        return Err(ApiError::unauthorized("missing API key: send `Authorization: Bearer <api key>`"));
    };
    if !keys::looks_like_key(key) {
        return Err(ApiError::unauthorized("invalid API key"));
    }
    let row = db
        .query_one(
            "SELECT id, role, client_id, tenant, revoked_at FROM chat_api_keys WHERE key_hash = ?",
            vec![Value::Blob(keys::key_hash(secret, key).to_vec())],
        )
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
    if row.opt_int(4)?.is_some() {
        return Err(ApiError::unauthorized("this API key has been revoked"));
    }
    let role = Role::parse(&row.text(1)?).ok_or_else(|| ApiError::internal("unknown role in key table"))?;
    Ok(Caller { key_id: row.text(0)?, role, client_id: row.opt_text(2)?, tenant: row.text(3)? })
}

pub struct NewKey<'a> {
    pub name: &'a str,
    pub role: Role,
    pub client_id: Option<&'a str>,
    pub tenant: &'a str,
}

/// Creates a key; returns (id, the key itself: shown once).
pub async fn create(db: &Db, secret: &[u8], k: NewKey<'_>, by: &str, now: i64) -> Result<(String, String), ApiError> {
    let id = keys::generate_id()?;
    let key = keys::generate_key()?;
    db.exec(
        "INSERT INTO chat_api_keys (id, name, role, client_id, tenant, key_hash, created_at, created_by)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            text(&id),
            text(k.name),
            text(k.role.as_str()),
            opt_text(k.client_id),
            text(k.tenant),
            Value::Blob(keys::key_hash(secret, &key).to_vec()),
            Value::Integer(now),
            text(by),
        ],
    )
    .await?;
    Ok((id, key))
}

pub async fn list(db: &Db) -> Result<Vec<KeySummary>, ApiError> {
    let rows = db
        .query(
            "SELECT id, name, role, client_id, tenant, created_at, created_by, revoked_at FROM chat_api_keys ORDER BY created_at, id",
            vec![],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(KeySummary {
                id: r.text(0)?,
                name: r.text(1)?,
                role: Role::parse(&r.text(2)?).map(Role::as_str).unwrap_or("unknown"),
                client_id: r.opt_text(3)?,
                tenant: r.text(4)?,
                created_at: r.int(5)?,
                created_by: r.text(6)?,
                revoked_at: r.opt_int(7)?,
            })
        })
        .collect()
}

/// Revokes a key; false when there is no such key.
pub async fn revoke(db: &Db, id: &str, now: i64) -> Result<bool, ApiError> {
    if db.query_one("SELECT 1 FROM chat_api_keys WHERE id = ?", vec![text(id)]).await?.is_none() {
        return Ok(false);
    }
    db.exec(
        "UPDATE chat_api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        vec![Value::Integer(now), text(id)],
    )
    .await?;
    Ok(true)
}

/// One audit entry (ids, rule ids, outcomes; no text).
#[derive(Clone)]
pub struct AuditEvent<'a> {
    pub caller: &'a Caller,
    pub action: &'a str,
    pub client_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: serde_json::Value,
}

pub async fn audit(db: &Db, e: AuditEvent<'_>, now: i64) -> Result<(), ApiError> {
    db.exec(
        "INSERT INTO chat_audit (at, key_id, role, action, client_id, session_id, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            Value::Integer(now),
            text(&e.caller.key_id),
            text(e.caller.role.as_str()),
            text(e.action),
            opt_text(e.client_id),
            opt_text(e.session_id),
            text(e.outcome),
            text(&e.detail.to_string()),
        ],
    )
    .await
}

pub async fn audit_list(db: &Db, limit: i64) -> Result<Vec<serde_json::Value>, ApiError> {
    let rows = db
        .query(
            "SELECT seq, at, key_id, role, action, client_id, session_id, outcome, detail FROM chat_audit ORDER BY seq DESC LIMIT ?",
            vec![Value::Integer(limit)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(serde_json::json!({
                "seq": r.int(0)?, "at": r.int(1)?, "key_id": r.text(2)?, "role": r.text(3)?,
                "action": r.text(4)?, "client_id": r.opt_text(5)?, "session_id": r.opt_text(6)?,
                "outcome": r.text(7)?,
                "detail": serde_json::from_str::<serde_json::Value>(&r.text(8)?).unwrap_or(serde_json::Value::Null),
            }))
        })
        .collect()
}
