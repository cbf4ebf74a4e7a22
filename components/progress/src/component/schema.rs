//! Progress tables. Plaintext columns hold only ids, timestamps, versions and
//! codes; every `BLOB` column named after a field is a sealed PHI value.

use edge_common::db::Db;
use edge_common::{audit_store, identity, ApiError};

pub const COMPONENT: &str = "progress";
pub const SCHEMA_VERSION: i64 = 1;

const STATEMENTS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS client_keys (
        client_id TEXT PRIMARY KEY,
        key_version INTEGER NOT NULL,
        wrapped_key BLOB,
        created_at INTEGER NOT NULL,
        destroyed_at INTEGER)",
    "CREATE TABLE IF NOT EXISTS clients (
        id TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        archived_at INTEGER,
        erased_at INTEGER,
        display_name BLOB,
        date_of_birth BLOB,
        contact BLOB,
        notes BLOB)",
    "CREATE TABLE IF NOT EXISTS assignments (
        therapist_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (therapist_id, client_id))",
    "CREATE INDEX IF NOT EXISTS assignments_client ON assignments(client_id)",
    "CREATE TABLE IF NOT EXISTS entries (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        supersedes TEXT UNIQUE REFERENCES entries(id),
        kind TEXT NOT NULL,
        occurred_at INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL,
        author_id TEXT NOT NULL,
        summary BLOB NOT NULL,
        themes BLOB NOT NULL,
        interventions BLOB NOT NULL,
        homework BLOB,
        mood BLOB,
        risk_flags BLOB NOT NULL,
        sentiment BLOB NOT NULL,
        amendment_reason BLOB)",
    "CREATE INDEX IF NOT EXISTS entries_client_time ON entries(client_id, occurred_at)",
    "CREATE TABLE IF NOT EXISTS measures (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        instrument TEXT NOT NULL,
        administered_at INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL,
        author_id TEXT NOT NULL,
        items BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS measures_client_time ON measures(client_id, administered_at)",
    "CREATE TABLE IF NOT EXISTS goals (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        lifecycle TEXT NOT NULL,
        achievement TEXT NOT NULL,
        due_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        description BLOB NOT NULL,
        target BLOB)",
    "CREATE INDEX IF NOT EXISTS goals_client ON goals(client_id)",
    "CREATE TABLE IF NOT EXISTS milestones (
        id TEXT PRIMARY KEY,
        goal_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        due_at INTEGER,
        achieved_at INTEGER,
        description BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS milestones_client ON milestones(client_id)",
    "CREATE TABLE IF NOT EXISTS break_glass (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        opened_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        reviewed_at INTEGER,
        reviewed_by TEXT,
        reason BLOB)",
    "CREATE INDEX IF NOT EXISTS break_glass_user_client ON break_glass(user_id, client_id, expires_at)",
    // Session entries and measures are append-only: no update ever, and delete
    // only once the client's key has been destroyed (erasure).
    "CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
        BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS entries_delete_only_erased BEFORE DELETE ON entries
        WHEN (SELECT destroyed_at FROM client_keys WHERE client_id = OLD.client_id) IS NULL
        BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS measures_no_update BEFORE UPDATE ON measures
        BEGIN SELECT RAISE(ABORT, 'measures are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS measures_delete_only_erased BEFORE DELETE ON measures
        WHEN (SELECT destroyed_at FROM client_keys WHERE client_id = OLD.client_id) IS NULL
        BEGIN SELECT RAISE(ABORT, 'measures are append-only'); END",
];

/// Brings every schema this component uses up to date. Cheap when current:
/// one read of the version table.
pub async fn ensure(db: &Db) -> Result<(), ApiError> {
    let versions = db.schema_versions().await;
    let at = |k: &str| versions.iter().find(|(n, _)| n == k).map(|(_, v)| *v).unwrap_or(0);
    if at(identity::COMPONENT) < identity::SCHEMA_VERSION {
        db.migrate(identity::COMPONENT, identity::SCHEMA_VERSION, identity::SCHEMA).await?;
    }
    if at(audit_store::COMPONENT) < audit_store::SCHEMA_VERSION {
        db.migrate(audit_store::COMPONENT, audit_store::SCHEMA_VERSION, audit_store::SCHEMA).await?;
    }
    if at(COMPONENT) < SCHEMA_VERSION {
        db.migrate(COMPONENT, SCHEMA_VERSION, STATEMENTS).await?;
    }
    Ok(())
}
