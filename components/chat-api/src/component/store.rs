//! The key table and the chat audit trail in the `default` SQLite database
//! (tables prefixed `chat_`, beside progress's own).

use crate::keys;
use edge_common::auth::Role;
use edge_common::db::{Db, Value, opt_text, text};
use edge_common::ApiError;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};

const COMPONENT: &str = "chat-api";
const SCHEMA_VERSION: i64 = 2;
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
    // Cache hit and miss counts per tenant (v2). Each request adds to its
    // tenant's row with one atomic upsert; the totals are the sums.
    "CREATE TABLE IF NOT EXISTS chat_counters (
        tenant TEXT PRIMARY KEY,
        hits INTEGER NOT NULL DEFAULT 0,
        misses INTEGER NOT NULL DEFAULT 0)",
    // Which tokenizer profile each model uses (v2): the profile itself is
    // in the key-value store under its digest (`tokens.rs`). Small, so the
    // key lookup reads it along (one read per request for both).
    "CREATE TABLE IF NOT EXISTS chat_tokenizers (
        model TEXT PRIMARY KEY,
        digest TEXT NOT NULL,
        context_tokens INTEGER NOT NULL)",
];

/// Set once this instance saw the schema at [`SCHEMA_VERSION`]: schemas
/// only move forward, so later requests skip the check. (Edge-host reuses
/// an instance for many requests; a fresh instance, as on Spin, checks.)
static MIGRATED: AtomicBool = AtomicBool::new(false);
/// Set once this instance saw a key in `chat_api_keys`: keys are revoked,
/// never deleted, so the table never becomes empty again and the bootstrap
/// insert is never needed after that.
static BOOTSTRAPPED: AtomicBool = AtomicBool::new(false);

/// Opens the database, creating the tables on first use. Concurrent first
/// requests race for the write lock of the migration: the losers wait and
/// retry (the migration is idempotent).
pub async fn open() -> Result<Db, ApiError> {
    let db = Db::open("default").await?;
    if MIGRATED.load(Ordering::Relaxed) {
        return Ok(db);
    }
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
    MIGRATED.store(true, Ordering::Relaxed);
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
    /// The models' tokenizer profiles, read along with the key (see
    /// [`authenticate`]): model → (digest, context tokens).
    pub profiles: Vec<(String, String, usize)>,
}

impl Caller {
    /// `model`'s profile pointer, if one was uploaded: (digest, context tokens).
    pub fn profile(&self, model: &str) -> Option<(&str, usize)> {
        self.profiles.iter().find(|(m, _, _)| m == model).map(|(_, d, c)| (d.as_str(), *c))
    }
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
    if key.is_empty() || BOOTSTRAPPED.load(Ordering::Relaxed) {
        return Ok(());
    }
    if db.query_one("SELECT 1 FROM chat_api_keys LIMIT 1", vec![]).await?.is_some() {
        BOOTSTRAPPED.store(true, Ordering::Relaxed);
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
    // The tokenizer profile pointers come along (model names are printable
    // ASCII, digests hex: the separators \x1f and \x1e never occur in them),
    // so a chat request reads the database once before its cache lookup.
    let row = db
        .query_one(
            "SELECT id, role, client_id, tenant, revoked_at,
                    (SELECT group_concat(model || char(31) || digest || char(31) || context_tokens, char(30)) FROM chat_tokenizers)
             FROM chat_api_keys WHERE key_hash = ?",
            vec![Value::Blob(keys::key_hash(secret, key).to_vec())],
        )
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
    if row.opt_int(4)?.is_some() {
        return Err(ApiError::unauthorized("this API key has been revoked"));
    }
    let role = Role::parse(&row.text(1)?).ok_or_else(|| ApiError::internal("unknown role in key table"))?;
    let profiles = row
        .opt_text(5)?
        .unwrap_or_default()
        .split('\x1e')
        .filter_map(|p| {
            let mut f = p.split('\x1f');
            Some((f.next()?.to_string(), f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    Ok(Caller { key_id: row.text(0)?, role, client_id: row.opt_text(2)?, tenant: row.text(3)?, profiles })
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

thread_local! {
    /// This instance's connection for the cache counters (see [`count_cache`]).
    static COUNTER_DB: std::cell::RefCell<Option<std::rc::Rc<Db>>> = const { std::cell::RefCell::new(None) };
}

/// The counters' connection: opened at `PRAGMA synchronous = NORMAL` and
/// kept for the instance's later requests (edge-host reuses instances; on
/// Spin each request opens its own).
async fn counter_db() -> Result<std::rc::Rc<Db>, ApiError> {
    if let Some(db) = COUNTER_DB.with(|c| c.borrow().clone()) {
        return Ok(db);
    }
    let db = Db::open("default").await?;
    // A database that refuses the pragma (a remote libsql server) keeps
    // its own durability; the counts still go in.
    let _ = db.exec("PRAGMA synchronous = NORMAL", vec![]).await;
    let db = std::rc::Rc::new(db);
    COUNTER_DB.with(|c| *c.borrow_mut() = Some(db.clone()));
    Ok(db)
}

/// Adds one cache hit or miss to `tenant`'s counters: a single atomic
/// statement (no read-modify-write, so concurrent requests lose no counts).
///
/// On its own connection at `synchronous = NORMAL`: the count is committed
/// before the reply, so a crash of the process loses none, but the reply
/// does not wait for the disk (a power cut may lose the counts since the
/// last fsync, the next durable write's or checkpoint's). Waiting for the
/// fsync cost a cached reply about a sixth of its throughput, and the
/// counters are operational figures, not records: the audit trail and the
/// keys keep the default (`FULL`), on the request's own connection.
pub async fn count_cache(tenant: &str, hit: bool) -> Result<(), ApiError> {
    let (h, m) = if hit { (1, 0) } else { (0, 1) };
    let db = counter_db().await?;
    let counted = db.exec(
        "INSERT INTO chat_counters (tenant, hits, misses) VALUES (?, ?, ?)
         ON CONFLICT(tenant) DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses",
        vec![text(tenant), Value::Integer(h), Value::Integer(m)],
    )
    .await;
    if counted.is_err() {
        // Open a fresh connection next time.
        COUNTER_DB.with(|c| c.borrow_mut().take());
    }
    counted
}

/// Cache hits and misses over all tenants.
pub async fn cache_totals(db: &Db) -> Result<(i64, i64), ApiError> {
    let row = db
        .query_one("SELECT COALESCE(SUM(hits), 0), COALESCE(SUM(misses), 0) FROM chat_counters", vec![])
        .await?;
    match row {
        Some(r) => Ok((r.int(0)?, r.int(1)?)),
        None => Ok((0, 0)),
    }
}

/// Points `model` at the tokenizer profile stored under `digest`; returns
/// the digest it pointed at before, if another.
pub async fn set_tokenizer(db: &Db, model: &str, digest: &str, context_tokens: usize) -> Result<Option<String>, ApiError> {
    let old = db
        .query_one("SELECT digest FROM chat_tokenizers WHERE model = ?", vec![text(model)])
        .await?
        .map(|r| r.text(0))
        .transpose()?;
    db.exec(
        "INSERT INTO chat_tokenizers (model, digest, context_tokens) VALUES (?, ?, ?)
         ON CONFLICT(model) DO UPDATE SET digest = excluded.digest, context_tokens = excluded.context_tokens",
        vec![text(model), text(digest), Value::Integer(context_tokens as i64)],
    )
    .await?;
    Ok(old.filter(|d| d != digest))
}
