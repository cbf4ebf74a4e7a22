//! API keys: their format, how they are stored, and who may chat.
//!
//! A key is `tk_` + 64 hex digits (256 random bits). The table stores only
//! HMAC-SHA256(server secret, key). Why not Argon2: Argon2 exists to slow
//! down guessing of low-entropy passwords; a 256-bit random token cannot be
//! guessed, so a slow hash would only cost every request milliseconds of CPU
//! for no gain. The keyed MAC still means a stolen table alone (without the
//! `chat_secret` variable) does not even allow checking a candidate key.

use edge_common::auth::Role;
use edge_common::ApiError;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const KEY_PREFIX: &str = "tk_";

/// A new random API key (shown once to its creator, never stored).
pub fn generate_key() -> Result<String, ApiError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|_| ApiError::internal("random source failed"))?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(raw)))
}

/// A new key id (public; safe to log and list).
pub fn generate_id() -> Result<String, ApiError> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|_| ApiError::internal("random source failed"))?;
    Ok(format!("key_{}", hex::encode(raw)))
}

/// HMAC-SHA256(`secret`, `purpose` ‖ 0 ‖ `data`).
pub fn mac(secret: &[u8], purpose: &str, data: &[u8]) -> [u8; 32] {
    // The keyed state (the secret's inner and outer pads, two SHA-256
    // blocks) is computed once per instance and cloned for each MAC; a
    // cached chat request takes four.
    thread_local! {
        static KEYED: std::cell::RefCell<Option<(Vec<u8>, Hmac<Sha256>)>> = const { std::cell::RefCell::new(None) };
    }
    let mut m = KEYED.with(|k| {
        let mut k = k.borrow_mut();
        match &*k {
            Some((s, m)) if s.as_slice() == secret => m.clone(),
            _ => {
                let m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
                *k = Some((secret.to_vec(), m.clone()));
                m
            }
        }
    });
    m.update(purpose.as_bytes());
    m.update(&[0]);
    m.update(data);
    m.finalize().into_bytes().into()
}

/// What the key table stores for `key`.
pub fn key_hash(secret: &[u8], key: &str) -> [u8; 32] {
    mac(secret, "chat-api/api-key/v1", key.trim().as_bytes())
}

/// The client a chat request acts for, after the role rules: a client key
/// may only chat for the client it is scoped to (the request's `client_id`
/// defaults to that scope); therapists and admins may chat for any client
/// (or none); auditors read audit data only and may not chat.
pub fn chat_client(role: Role, key_client: Option<&str>, requested: Option<&str>) -> Result<Option<String>, ApiError> {
    match role {
        Role::Auditor => Err(ApiError::forbidden("the auditor role may not use the chat API")),
        Role::Client => {
            let Some(scope) = key_client else {
                return Err(ApiError::forbidden("this client key has no client scope"));
            };
            match requested {
                None => Ok(Some(scope.to_string())),
                Some(c) if c == scope => Ok(Some(scope.to_string())),
                Some(_) => Err(ApiError::forbidden("a client key may only chat for its own client_id")),
            }
        }
        Role::Therapist | Role::Admin => Ok(requested.map(str::to_string)),
    }
}

/// The key admin API is for admins only.
pub fn require_admin(role: Role) -> Result<(), ApiError> {
    if role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("managing API keys requires the admin role"))
    }
}

/// A syntactically plausible key (cheap check before touching the table).
pub fn looks_like_key(key: &str) -> bool {
    key.len() >= 16 && key.len() <= 256 && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_depends_on_secret() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == 67);
        assert_eq!(key_hash(b"s1", &a), key_hash(b"s1", &a));
        assert_ne!(key_hash(b"s1", &a), key_hash(b"s2", &a));
        assert_ne!(key_hash(b"s1", &a), key_hash(b"s1", &b));
    }

    #[test]
    fn role_rules_for_chat() {
        assert_eq!(chat_client(Role::Auditor, None, None).unwrap_err().status, 403);
        assert_eq!(chat_client(Role::Client, Some("c1"), None).unwrap(), Some("c1".into()));
        assert_eq!(chat_client(Role::Client, Some("c1"), Some("c1")).unwrap(), Some("c1".into()));
        assert_eq!(chat_client(Role::Client, Some("c1"), Some("c2")).unwrap_err().status, 403);
        assert_eq!(chat_client(Role::Client, None, None).unwrap_err().status, 403);
        assert_eq!(chat_client(Role::Therapist, None, Some("c2")).unwrap(), Some("c2".into()));
        assert_eq!(chat_client(Role::Admin, None, None).unwrap(), None);
        assert!(require_admin(Role::Admin).is_ok());
        assert_eq!(require_admin(Role::Therapist).unwrap_err().status, 403);
    }
}
