//! The audit chain in SQLite, with its head anchored in the key-value store.

use crate::api::ApiError;
use crate::audit::{self, Anchor, AuditRecord, ChainStart, StoredEntry, Verification, Verifier};
use crate::crypto::SecretKey;
use crate::db::{text, Db, Row, Value};
use serde::Serialize;
use spin_sdk::key_value::Store;

pub const COMPONENT: &str = "edge-common.audit";
pub const SCHEMA_VERSION: i64 = 1;
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor_id TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        outcome TEXT NOT NULL,
        break_glass INTEGER NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS audit_log_client ON audit_log(client_id, seq)",
    // Where the chain starts after retention pruning; MAC'd so it cannot be moved.
    "CREATE TABLE IF NOT EXISTS audit_checkpoint (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        first_seq INTEGER NOT NULL,
        prev_hash BLOB NOT NULL,
        mac BLOB NOT NULL)",
];

/// Key-value key of the chain head anchor.
pub const ANCHOR_KEY: &str = "audit/head";

/// What happened, before it gets its place in the chain.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor_id: String,
    pub role: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub client_id: String,
    pub outcome: String,
    pub break_glass: bool,
}

/// The chain key, derived from the master key.
pub fn chain_key(master: &SecretKey) -> SecretKey {
    master.derive("audit/chain")
}

/// Appends `event` at `now`. Call inside an open write transaction so the
/// entry commits (or not) together with the change it records.
pub async fn append(db: &Db, key: &SecretKey, event: AuditEvent, now: i64) -> Result<StoredEntry, ApiError> {
    let (seq, prev) = match db.query_one("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", vec![]).await? {
        Some(r) => (r.int(0)? + 1, r.blob(1)?.to_vec()),
        None => match load_start(db, key).await? {
            Some(start) => (start.first_seq, start.prev_hash),
            None => (1, audit::GENESIS.to_vec()),
        },
    };
    let record = AuditRecord {
        seq,
        at: now,
        actor_id: event.actor_id,
        role: event.role,
        action: event.action,
        resource_type: event.resource_type,
        resource_id: event.resource_id,
        client_id: event.client_id,
        outcome: event.outcome,
        break_glass: event.break_glass,
    };
    let entry = audit::link(key, &prev, record);
    let r = &entry.record;
    db.exec(
        "INSERT INTO audit_log (seq, at, actor_id, role, action, resource_type, resource_id, client_id, outcome, break_glass, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            Value::Integer(r.seq),
            Value::Integer(r.at),
            text(&r.actor_id),
            text(&r.role),
            text(&r.action),
            text(&r.resource_type),
            text(&r.resource_id),
            text(&r.client_id),
            text(&r.outcome),
            Value::Integer(r.break_glass as i64),
            Value::Blob(entry.prev_hash.clone()),
            Value::Blob(entry.hash.clone()),
        ],
    )
    .await?;
    Ok(entry)
}

/// Appends `event` in its own transaction and advances the anchor.
pub async fn record(db: &Db, key: &SecretKey, event: AuditEvent, now: i64) -> Result<(), ApiError> {
    db.begin().await?;
    let r = append(db, key, event, now).await.map(|e| ((), e));
    commit(db, r).await
}

/// Ends the write transaction that appended `entry` (the newest entry it
/// appended): on `Ok`, moves the chain head anchor in the key-value store to
/// `entry` and commits; on `Err`, rolls back.
///
/// The anchor is updated while this transaction holds the database write
/// lock, which every audit append (and so every anchor update) takes: the
/// read-compare-write on the key-value store (which has no compare-and-set)
/// cannot interleave with another, so the anchor never moves backwards. It
/// is written just before COMMIT; if COMMIT fails, the previous anchor is put
/// back. [`verify`] reads the anchor under the same lock, so it never sees an
/// anchor ahead of the committed chain.
///
/// A key-value failure does not fail the request: the entry is committed,
/// the failure is logged (ids and codes only) and the next entry moves the
/// anchor on. An anchor behind the chain only weakens the truncation check
/// for the entries after it.
pub async fn commit<T>(db: &Db, result: Result<(T, StoredEntry), ApiError>) -> Result<T, ApiError> {
    let (v, entry) = match result {
        Ok(x) => x,
        Err(e) => return db.finish::<T>(Err(e)).await,
    };
    let undo = match advance_anchor_locked(&entry).await {
        Ok(undo) => undo,
        Err(e) => {
            eprintln!("audit anchor not advanced to seq {}: {}", entry.record.seq, e.message);
            None
        }
    };
    if let Err(e) = db.exec("COMMIT", vec![]).await {
        if let Some(previous) = undo {
            restore_anchor(&entry, previous).await;
        }
        if let Err(rb) = db.exec("ROLLBACK", vec![]).await {
            eprintln!("rollback failed: {}", rb.message);
        }
        return Err(e);
    }
    Ok(v)
}

/// The previous stored anchor (raw), when the anchor was moved.
type Undo = Option<Option<Vec<u8>>>;

async fn advance_anchor_locked(entry: &StoredEntry) -> Result<Undo, ApiError> {
    let store = Store::open_default().await.map_err(|_| ApiError::internal("key-value store unavailable"))?;
    let raw = store.get(ANCHOR_KEY).await.map_err(|_| ApiError::internal("key-value read failed"))?;
    let current: Option<Anchor> = raw.as_deref().and_then(|b| serde_json::from_slice(b).ok());
    if current.is_some_and(|a| a.seq >= entry.record.seq) {
        return Ok(None);
    }
    let anchor = Anchor { seq: entry.record.seq, hash_hex: hex::encode(&entry.hash) };
    let bytes = serde_json::to_vec(&anchor).map_err(|_| ApiError::internal("anchor encoding failed"))?;
    store.set(ANCHOR_KEY, bytes).await.map_err(|_| ApiError::internal("key-value write failed"))?;
    Ok(Some(raw))
}

/// After a failed COMMIT: puts the previous anchor back if ours is still there.
async fn restore_anchor(entry: &StoredEntry, previous: Option<Vec<u8>>) {
    let r = async {
        let store = Store::open_default().await.map_err(|_| ApiError::internal("key-value store unavailable"))?;
        let ours = load_anchor().await?.is_some_and(|a| a.seq == entry.record.seq);
        match (ours, previous) {
            (false, _) => Ok(()),
            (true, Some(p)) => store.set(ANCHOR_KEY, p).await.map_err(|_| ApiError::internal("key-value write failed")),
            (true, None) => store.delete(ANCHOR_KEY).await.map_err(|_| ApiError::internal("key-value delete failed")),
        }
    }
    .await;
    if let Err(e) = r {
        eprintln!("audit anchor not restored after a failed commit of seq {}: {}", entry.record.seq, e.message);
    }
}

async fn load_anchor() -> Result<Option<Anchor>, ApiError> {
    let store = Store::open_default().await.map_err(|_| ApiError::internal("key-value store unavailable"))?;
    Ok(store
        .get(ANCHOR_KEY)
        .await
        .map_err(|_| ApiError::internal("key-value read failed"))?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

fn checkpoint_mac(key: &SecretKey, first_seq: i64, prev_hash: &[u8]) -> Vec<u8> {
    let mut data = b"audit-checkpoint/v1".to_vec();
    data.extend_from_slice(&first_seq.to_be_bytes());
    data.extend_from_slice(prev_hash);
    key.mac(&data).to_vec()
}

/// The chain start recorded by pruning, if any; an altered checkpoint is an error.
async fn load_start(db: &Db, key: &SecretKey) -> Result<Option<ChainStart>, ApiError> {
    let Some(r) = db.query_one("SELECT first_seq, prev_hash, mac FROM audit_checkpoint WHERE id = 1", vec![]).await? else {
        return Ok(None);
    };
    let (first_seq, prev_hash) = (r.int(0)?, r.blob(1)?.to_vec());
    if r.blob(2)? != checkpoint_mac(key, first_seq, &prev_hash).as_slice() {
        return Err(ApiError::internal("audit checkpoint fails authentication"));
    }
    Ok(Some(ChainStart { first_seq, prev_hash }))
}

fn entry_from_row(r: &Row) -> Result<StoredEntry, ApiError> {
    Ok(StoredEntry {
        record: AuditRecord {
            seq: r.int(0)?,
            at: r.int(1)?,
            actor_id: r.text(2)?,
            role: r.text(3)?,
            action: r.text(4)?,
            resource_type: r.text(5)?,
            resource_id: r.text(6)?,
            client_id: r.text(7)?,
            outcome: r.text(8)?,
            break_glass: r.int(9)? != 0,
        },
        prev_hash: r.blob(10)?.to_vec(),
        hash: r.blob(11)?.to_vec(),
    })
}

const COLUMNS: &str = "seq, at, actor_id, role, action, resource_type, resource_id, client_id, outcome, break_glass, prev_hash, hash";

/// A listed entry, hashes in hex.
#[derive(Debug, Clone, Serialize)]
pub struct ListedEntry {
    #[serde(flatten)]
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

/// Filters for listing.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub after_seq: i64,
    pub limit: i64,
    pub client_id: Option<String>,
    pub actor_id: Option<String>,
    pub break_glass_only: bool,
}

pub async fn list(db: &Db, f: &ListFilter) -> Result<Vec<ListedEntry>, ApiError> {
    let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE seq > ?");
    let mut params = vec![Value::Integer(f.after_seq)];
    if let Some(c) = &f.client_id {
        sql.push_str(" AND client_id = ?");
        params.push(text(c));
    }
    if let Some(a) = &f.actor_id {
        sql.push_str(" AND actor_id = ?");
        params.push(text(a));
    }
    if f.break_glass_only {
        sql.push_str(" AND break_glass = 1");
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    params.push(Value::Integer(f.limit.clamp(1, 1000)));
    db.query(&sql, params)
        .await?
        .iter()
        .map(|r| {
            let e = entry_from_row(r)?;
            Ok(ListedEntry { record: e.record, prev_hash: hex::encode(e.prev_hash), hash: hex::encode(e.hash) })
        })
        .collect()
}

/// Verifies the whole chain in stored order, against the checkpoint and the anchor.
pub async fn verify(db: &Db, key: &SecretKey) -> Result<Verification, ApiError> {
    let start = load_start(db, key).await?.unwrap_or_default();
    // Under the write lock no append is between its anchor update and its
    // COMMIT, so the anchor read here never runs ahead of the committed chain;
    // rows only grow after the lock is released.
    db.begin().await?;
    let anchor = load_anchor().await;
    if let Err(e) = db.exec("ROLLBACK", vec![]).await {
        eprintln!("releasing the write lock failed: {}", e.message);
    }
    let anchor = anchor?;
    let mut verifier = Verifier::new(key, start, anchor);
    // Page by rowid order so a reordering of rows is seen as stored.
    let mut after = i64::MIN;
    const PAGE: i64 = 2000;
    loop {
        let rows = db
            .query(
                &format!("SELECT {COLUMNS}, rowid FROM audit_log WHERE rowid > ? ORDER BY rowid LIMIT ?"),
                vec![Value::Integer(after), Value::Integer(PAGE)],
            )
            .await?;
        for r in &rows {
            match entry_from_row(r) {
                Ok(e) => verifier.feed(&e),
                Err(_) => verifier.malformed(r.int(0).ok()),
            }
            after = r.int(12)?;
        }
        if verifier.is_broken() || (rows.len() as i64) < PAGE {
            break;
        }
    }
    Ok(verifier.finish())
}

/// Deletes entries older than `cutoff` (unix seconds), keeping the chain
/// verifiable from the first kept entry. Call inside a transaction.
pub async fn prune_before(db: &Db, key: &SecretKey, cutoff: i64) -> Result<u64, ApiError> {
    let Some(first_kept) = db
        .query_one("SELECT seq, prev_hash FROM audit_log WHERE at >= ? ORDER BY seq LIMIT 1", vec![Value::Integer(cutoff)])
        .await?
    else {
        return Ok(0); // never prune the newest entry: it carries the chain forward
    };
    let (seq, prev) = (first_kept.int(0)?, first_kept.blob(1)?.to_vec());
    db.exec("DELETE FROM audit_log WHERE seq < ?", vec![Value::Integer(seq)]).await?;
    let removed = db.changes().await;
    if removed > 0 {
        db.exec(
            "INSERT INTO audit_checkpoint (id, first_seq, prev_hash, mac) VALUES (1, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET first_seq = excluded.first_seq, prev_hash = excluded.prev_hash, mac = excluded.mac",
            vec![Value::Integer(seq), Value::Blob(prev.clone()), Value::Blob(checkpoint_mac(key, seq, &prev))],
        )
        .await?;
    }
    Ok(removed)
}
