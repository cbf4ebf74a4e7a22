//! Roles, password hashing, sign-in tokens and the idle-timeout rule.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A user's role. Each user has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A client: their own record and journal.
    Client,
    /// A therapist: assigned clients only (or break-glass).
    Therapist,
    /// Users and assignments; no PHI.
    Admin,
    /// The audit trail only.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Client, Role::Therapist, Role::Admin, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Therapist => "therapist",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Passwords must be at least this long.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Argon2id PHC string for `password` (salt from the OS random source).
pub fn hash_password(password: &str) -> Result<String, &'static str> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| "random source failed")?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| "salt encoding failed")?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| "password hashing failed")
}

/// Checks `password` against a PHC string from [`hash_password`].
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Spends the same work as a password check, so an unknown user name costs
/// the same time as a wrong password.
pub fn dummy_verify(password: &str) {
    let _ = hash_password(password);
}

/// A new opaque bearer token and the hash to store (the token itself is never stored).
pub fn new_session_token() -> Result<(String, [u8; 32]), &'static str> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|_| "random source failed")?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// SHA-256 of a bearer token: the lookup key of its sign-in session.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Sign-in session lifetime rules (automatic logoff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Seconds of inactivity after which a session ends.
    pub idle_timeout_secs: i64,
    /// Seconds after sign-in after which a session ends regardless of activity.
    pub absolute_timeout_secs: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Active,
    IdleExpired,
    AbsoluteExpired,
}

impl SessionPolicy {
    pub fn state(&self, created_at: i64, last_seen_at: i64, now: i64) -> SessionState {
        if now - created_at >= self.absolute_timeout_secs {
            SessionState::AbsoluteExpired
        } else if now - last_seen_at >= self.idle_timeout_secs {
            SessionState::IdleExpired
        } else {
            SessionState::Active
        }
    }

    /// Whether `last_seen_at` is stale enough to be worth a write: refreshing at
    /// most every few seconds keeps reads cheap without stretching the timeout.
    pub fn should_touch(&self, last_seen_at: i64, now: i64) -> bool {
        now - last_seen_at >= (self.idle_timeout_secs / 30).clamp(1, 30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn passwords_verify_and_reject() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("correct horse batterx", &phc));
        assert!(!verify_password("x", "not a phc string"));
        dummy_verify("anything");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (t1, h1) = new_session_token().unwrap();
        let (t2, _) = new_session_token().unwrap();
        assert_ne!(t1, t2);
        assert_eq!(token_hash(&t1), h1);
        assert!(t1.len() >= 43);
    }

    #[test]
    fn idle_and_absolute_timeouts() {
        let p = SessionPolicy { idle_timeout_secs: 900, absolute_timeout_secs: 43_200 };
        assert_eq!(p.state(0, 0, 899), SessionState::Active);
        assert_eq!(p.state(0, 0, 900), SessionState::IdleExpired);
        assert_eq!(p.state(0, 40_000, 40_500), SessionState::Active);
        assert_eq!(p.state(0, 43_000, 43_200), SessionState::AbsoluteExpired);
        assert!(!p.should_touch(100, 110));
        assert!(p.should_touch(100, 130));
    }
}
