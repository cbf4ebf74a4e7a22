//! Users and sign-in sessions over SQLite.
//!
//! User names are stored only as an HMAC under a key derived from the master
//! key (lookup without a plaintext identifier); passwords as Argon2id PHC
//! strings; bearer tokens only as their SHA-256.

use crate::api::ApiError;
use crate::auth::{self, Role, SessionPolicy, SessionState, MIN_PASSWORD_LEN};
use crate::crypto::SecretKey;
use crate::db::{opt_text, text, Db, Value};
use serde::Serialize;

pub const COMPONENT: &str = "edge-common.identity";
pub const SCHEMA_VERSION: i64 = 1;
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        login_mac BLOB NOT NULL UNIQUE,
        password_phc TEXT NOT NULL,
        subject_id TEXT,
        created_at INTEGER NOT NULL,
        disabled_at INTEGER)",
    "CREATE INDEX IF NOT EXISTS users_subject ON users(subject_id)",
    "CREATE TABLE IF NOT EXISTS auth_sessions (
        token_hash BLOB PRIMARY KEY,
        user_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS auth_sessions_user ON auth_sessions(user_id)",
];

/// The signed-in user making a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
    /// For a client user: the client record they are.
    pub subject_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserSummary {
    pub id: String,
    pub role: Role,
    pub subject_id: Option<String>,
    pub created_at: i64,
    pub disabled: bool,
}

/// Key under which user names are MAC'd for lookup.
pub fn login_key(master: &SecretKey) -> SecretKey {
    master.derive("identity/login-name")
}

fn login_mac(key: &SecretKey, username: &str) -> Vec<u8> {
    key.mac(username.trim().to_lowercase().as_bytes()).to_vec()
}

fn validate_username(username: &str) -> Result<(), ApiError> {
    let u = username.trim();
    if u.is_empty() || u.chars().count() > 128 {
        return Err(ApiError::bad_request("username must be 1 to 128 characters"));
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_LEN || password.len() > 1024 {
        return Err(ApiError::bad_request(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// A new random id (UUID v4 text).
pub fn new_id() -> Result<String, ApiError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|_| ApiError::internal("random source failed"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// Creates a user. Must run inside a transaction if combined with other writes.
pub async fn create_user(
    db: &Db,
    id: &str,
    login: &SecretKey,
    username: &str,
    password: &str,
    role: Role,
    subject_id: Option<&str>,
    now: i64,
) -> Result<(), ApiError> {
    validate_username(username)?;
    validate_password(password)?;
    if (role == Role::Client) != subject_id.is_some() {
        return Err(ApiError::bad_request("client_id is required for client users and only for them"));
    }
    let mac = login_mac(login, username);
    if db.query_one("SELECT 1 FROM users WHERE login_mac = ?", vec![Value::Blob(mac.clone())]).await?.is_some() {
        return Err(ApiError::conflict("a user with that username already exists"));
    }
    let phc = auth::hash_password(password).map_err(ApiError::internal)?;
    db.exec(
        "INSERT INTO users (id, role, login_mac, password_phc, subject_id, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        vec![text(id), text(role.as_str()), Value::Blob(mac), text(&phc), opt_text(subject_id), Value::Integer(now)],
    )
    .await
}

/// Creates the first admin when no user exists yet. Returns whether it did.
pub async fn bootstrap_admin(db: &Db, login: &SecretKey, username: &str, password: &str, now: i64) -> Result<bool, ApiError> {
    if db.query_one("SELECT 1 FROM users LIMIT 1", vec![]).await?.is_some() {
        return Ok(false);
    }
    db.begin().await?;
    let r = async {
        if db.query_one("SELECT 1 FROM users LIMIT 1", vec![]).await?.is_some() {
            return Ok(false);
        }
        create_user(db, &new_id()?, login, username, password, Role::Admin, None, now).await.map(|_| true)
    }
    .await;
    db.finish(r).await
}

/// Checks credentials and opens a sign-in session. Returns the bearer token.
pub async fn sign_in(db: &Db, login: &SecretKey, username: &str, password: &str, now: i64) -> Result<(String, Principal), ApiError> {
    let denied = || ApiError::unauthorized("unknown username or wrong password");
    let row = db
        .query_one(
            "SELECT id, role, password_phc, subject_id, disabled_at FROM users WHERE login_mac = ?",
            vec![Value::Blob(login_mac(login, username))],
        )
        .await?;
    let Some(row) = row else {
        auth::dummy_verify(password);
        return Err(denied());
    };
    if !auth::verify_password(password, &row.text(2)?) || row.opt_int(4)?.is_some() {
        return Err(denied());
    }
    let principal = Principal {
        user_id: row.text(0)?,
        role: Role::parse(&row.text(1)?).ok_or_else(|| ApiError::internal("stored role is unknown"))?,
        subject_id: row.opt_text(3)?,
    };
    let (token, hash) = auth::new_session_token().map_err(ApiError::internal)?;
    db.exec(
        "INSERT INTO auth_sessions (token_hash, user_id, created_at, last_seen_at) VALUES (?, ?, ?, ?)",
        vec![Value::Blob(hash.to_vec()), text(&principal.user_id), Value::Integer(now), Value::Integer(now)],
    )
    .await?;
    Ok((token, principal))
}

/// Resolves a bearer token to its user, enforcing the idle and absolute timeouts.
pub async fn authenticate(db: &Db, token: &str, policy: SessionPolicy, now: i64) -> Result<Principal, ApiError> {
    let hash = auth::token_hash(token).to_vec();
    let row = db
        .query_one(
            "SELECT s.user_id, s.created_at, s.last_seen_at, u.role, u.subject_id, u.disabled_at
             FROM auth_sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
            vec![Value::Blob(hash.clone())],
        )
        .await?
        .ok_or_else(|| ApiError::unauthorized("sign-in session is unknown or has ended"))?;
    let (created, last_seen) = (row.int(1)?, row.int(2)?);
    let state = policy.state(created, last_seen, now);
    if state != SessionState::Active || row.opt_int(5)?.is_some() {
        db.exec("DELETE FROM auth_sessions WHERE token_hash = ?", vec![Value::Blob(hash)]).await?;
        return Err(ApiError::unauthorized(match state {
            SessionState::IdleExpired => "sign-in session ended after inactivity; sign in again",
            SessionState::AbsoluteExpired => "sign-in session reached its maximum length; sign in again",
            SessionState::Active => "user is disabled",
        }));
    }
    if policy.should_touch(last_seen, now) {
        db.exec(
            "UPDATE auth_sessions SET last_seen_at = ? WHERE token_hash = ?",
            vec![Value::Integer(now), Value::Blob(hash)],
        )
        .await?;
    }
    Ok(Principal {
        user_id: row.text(0)?,
        role: Role::parse(&row.text(3)?).ok_or_else(|| ApiError::internal("stored role is unknown"))?,
        subject_id: row.opt_text(4)?,
    })
}

/// Ends the sign-in session of `token`.
pub async fn sign_out(db: &Db, token: &str) -> Result<(), ApiError> {
    db.exec("DELETE FROM auth_sessions WHERE token_hash = ?", vec![Value::Blob(auth::token_hash(token).to_vec())]).await
}

pub async fn list_users(db: &Db) -> Result<Vec<UserSummary>, ApiError> {
    let rows = db
        .query("SELECT id, role, subject_id, created_at, disabled_at FROM users ORDER BY created_at, id", vec![])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(UserSummary {
                id: r.text(0)?,
                role: Role::parse(&r.text(1)?).ok_or_else(|| ApiError::internal("stored role is unknown"))?,
                subject_id: r.opt_text(2)?,
                created_at: r.int(3)?,
                disabled: r.opt_int(4)?.is_some(),
            })
        })
        .collect()
}

/// The role of a user, if the user exists and is enabled.
pub async fn user_role(db: &Db, user_id: &str) -> Result<Option<Role>, ApiError> {
    Ok(db
        .query_one("SELECT role FROM users WHERE id = ? AND disabled_at IS NULL", vec![text(user_id)])
        .await?
        .and_then(|r| r.text(0).ok())
        .and_then(|s| Role::parse(&s)))
}

/// Disables every user whose subject is `subject_id` and ends their sessions.
pub async fn disable_subject_users(db: &Db, subject_id: &str, now: i64) -> Result<(), ApiError> {
    db.exec(
        "DELETE FROM auth_sessions WHERE user_id IN (SELECT id FROM users WHERE subject_id = ?)",
        vec![text(subject_id)],
    )
    .await?;
    db.exec(
        "UPDATE users SET disabled_at = ? WHERE subject_id = ? AND disabled_at IS NULL",
        vec![Value::Integer(now), text(subject_id)],
    )
    .await
}
