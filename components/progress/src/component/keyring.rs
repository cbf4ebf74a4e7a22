//! Per-client data keys (wrapped under the master key) and field sealing.

use edge_common::crypto::{self, FieldPlace, SecretKey};
use edge_common::db::{text, Db, Value};
use edge_common::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::HashMap;

const KEY_VERSION: i64 = 1;

pub struct Keyring {
    master: SecretKey,
    cache: RefCell<HashMap<String, SecretKey>>,
}

impl Keyring {
    pub fn new(master: SecretKey) -> Self {
        Keyring { master, cache: RefCell::new(HashMap::new()) }
    }

    /// Creates and stores a new data key for `client_id` (inside the caller's transaction).
    pub async fn create(&self, db: &Db, client_id: &str, now: i64) -> Result<SecretKey, ApiError> {
        let key = SecretKey::generate().map_err(|_| ApiError::internal("key generation failed"))?;
        let wrapped = crypto::wrap_data_key(&self.master, client_id, KEY_VERSION, &key)
            .map_err(|_| ApiError::internal("key wrapping failed"))?;
        db.exec(
            "INSERT INTO client_keys (client_id, key_version, wrapped_key, created_at) VALUES (?, ?, ?, ?)",
            vec![text(client_id), Value::Integer(KEY_VERSION), Value::Blob(wrapped), Value::Integer(now)],
        )
        .await?;
        self.cache.borrow_mut().insert(client_id.to_string(), key.clone());
        Ok(key)
    }

    /// The data key of `client_id`; 410 once it has been destroyed.
    pub async fn get(&self, db: &Db, client_id: &str) -> Result<SecretKey, ApiError> {
        if let Some(k) = self.cache.borrow().get(client_id) {
            return Ok(k.clone());
        }
        let row = db
            .query_one("SELECT key_version, wrapped_key FROM client_keys WHERE client_id = ?", vec![text(client_id)])
            .await?
            .ok_or_else(|| ApiError::not_found("client not found"))?;
        let wrapped = row.opt_blob(1)?.ok_or_else(|| ApiError::gone("the client record has been erased"))?;
        let key = crypto::unwrap_data_key(&self.master, client_id, row.int(0)?, wrapped)
            .map_err(|_| ApiError::internal("the client key could not be unwrapped (wrong master key?)"))?;
        self.cache.borrow_mut().insert(client_id.to_string(), key.clone());
        Ok(key)
    }

    /// Destroys the client's data key (crypto-shredding). Inside the caller's transaction.
    pub async fn destroy(&self, db: &Db, client_id: &str, now: i64) -> Result<(), ApiError> {
        db.exec(
            "UPDATE client_keys SET wrapped_key = NULL, destroyed_at = ? WHERE client_id = ?",
            vec![Value::Integer(now), text(client_id)],
        )
        .await?;
        self.cache.borrow_mut().remove(client_id);
        Ok(())
    }
}

/// Seals and opens the fields of one row.
pub struct Cells<'a> {
    pub key: &'a SecretKey,
    pub client_id: &'a str,
    pub table: &'static str,
    pub row: &'a str,
    pub version: i64,
}

fn open_error() -> ApiError {
    ApiError::internal("a stored field failed authentication")
}

impl Cells<'_> {
    fn place<'b>(&'b self, column: &'b str) -> FieldPlace<'b> {
        FieldPlace { subject: self.client_id, table: self.table, row: self.row, column, version: self.version }
    }
    pub fn seal_bytes(&self, column: &str, plain: &[u8]) -> Result<Vec<u8>, ApiError> {
        crypto::seal_field(self.key, self.place(column), plain).map_err(|_| ApiError::internal("encryption failed"))
    }
    pub fn seal<T: Serialize + ?Sized>(&self, column: &str, value: &T) -> Result<Vec<u8>, ApiError> {
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(value).map_err(|_| ApiError::internal("encoding failed"))?);
        self.seal_bytes(column, &plain)
    }
    pub fn seal_opt<T: Serialize>(&self, column: &str, value: Option<&T>) -> Result<Value, ApiError> {
        Ok(match value {
            Some(v) => Value::Blob(self.seal(column, v)?),
            None => Value::Null,
        })
    }
    pub fn open<T: DeserializeOwned>(&self, column: &str, sealed: &[u8]) -> Result<T, ApiError> {
        let plain = crypto::open_field(self.key, self.place(column), sealed).map_err(|_| open_error())?;
        serde_json::from_slice(&plain).map_err(|_| open_error())
    }
    pub fn open_opt<T: DeserializeOwned>(&self, column: &str, sealed: Option<&[u8]>) -> Result<Option<T>, ApiError> {
        sealed.map(|s| self.open(column, s)).transpose()
    }
}
