//! This instance's most recently used cache entries, as stored: sealed
//! (the reply is only decrypted to answer, exactly as from the key-value
//! store), keyed by the same keyed hash. Edge-host reuses an instance for
//! many requests, so a repeated deterministic request skips the key-value
//! read; a fresh instance (as on Spin) starts empty and reads the store.
//!
//! Safe to serve from: an entry never changes under its key (the key is a
//! MAC of everything that shapes the reply, and a later store under the same
//! key holds the reply to the same deterministic request), and it carries
//! its own expiry, checked on every use ([`crate::cache::open_entry`]).
//! Nothing deletes entries from the store today; so that a future purge
//! still takes effect, an entry is kept here at most [`KEEP_SECONDS`].

use std::collections::HashMap;
use std::sync::Mutex;

/// How long an entry is served from memory before the store is read again.
pub const KEEP_SECONDS: i64 = 30;
/// Entries kept (a few hundred KB at most).
const MAX_ENTRIES: usize = 256;

/// key → (sealed entry, when it was read or stored).
type Entries = HashMap<String, (Vec<u8>, i64)>;
static RECENT: Mutex<Option<Entries>> = Mutex::new(None);

/// The sealed entry under `key`, if this instance read or stored it in the
/// last [`KEEP_SECONDS`].
pub fn get(key: &str, now: i64) -> Option<Vec<u8>> {
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let map = recent.as_mut()?;
    match map.get(key) {
        Some((raw, at)) if now - at < KEEP_SECONDS => Some(raw.clone()),
        Some(_) => {
            map.remove(key);
            None
        }
        None => None,
    }
}

/// Remembers the sealed entry just read from or written to the store.
pub fn put(key: &str, raw: Vec<u8>, now: i64) {
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let map = recent.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
        // Drop the stale ones, or all when none is stale (cheap and bounded).
        map.retain(|_, (_, at)| now - *at < KEEP_SECONDS);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(key.to_string(), (raw, now));
}
