//! Model profiles for context truncation: a model's context length and its
//! own tokenizer (`tokenizer.json`), uploaded by an admin to
//! `PUT /v1/chat/tokenizers/{model}`.
//!
//! Storage: the profile (megabytes for a real tokenizer) sits in the
//! key-value store under its SHA-256 digest, `chat-tokenizer/{model}/{digest}`,
//! and the `chat_tokenizers` table points each model at a digest. The
//! pointers come with the API-key lookup ([`store::authenticate`]), so a
//! chat request pays no extra read for them; the profile itself is read and
//! parsed only when an instance has not parsed that digest yet (edge-host
//! reuses instances; a fresh instance, as on Spin, parses once). An upload
//! takes effect with the next request on every instance (the pointer is
//! read per request), and the old profile is deleted after the switch.

use super::store;
use edge_common::ApiError;
use edge_common::db::Db;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spin_sdk::key_value::Store;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use tokenizers::Tokenizer;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    context_tokens: usize,
    tokenizer: serde_json::Value,
}

pub struct Loaded {
    pub tokenizer: Arc<Tokenizer>,
    pub context_tokens: usize,
    digest: String,
}

/// Parsed tokenizers of this instance: (model, digest, tokenizer), newest last.
static PARSED: Mutex<Vec<(String, String, Arc<Tokenizer>)>> = Mutex::new(Vec::new());
const MAX_PARSED: usize = 4;
/// Models this instance already checked for a profile stored the old way.
static LEGACY_CHECKED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn blob_key(model: &str, digest: &str) -> String {
    format!("chat-tokenizer/{model}/{digest}")
}

/// Where profiles were kept before the pointer table (whole profile, one
/// key per model).
fn legacy_key(model: &str) -> String {
    format!("chat-tokenizer/{model}")
}

/// Largest profile accepted: real tokenizer.json files run to megabytes
/// (the host's request limit, 10 MiB by default, applies first).
pub const MAX_PROFILE_BYTES: usize = 16 << 20;

fn parse(raw: &[u8]) -> Result<(Tokenizer, usize), ApiError> {
    let p: Profile = edge_common::api::parse_json_limited(raw, MAX_PROFILE_BYTES)?;
    if p.context_tokens < 16 {
        return Err(ApiError::bad_request("`context_tokens` must be at least 16"));
    }
    let t = Tokenizer::from_str(&p.tokenizer.to_string())
        .map_err(|_| ApiError::bad_request("`tokenizer` is not a valid tokenizer.json"))?;
    Ok((t, p.context_tokens))
}

fn remember(model: &str, digest: &str, t: Arc<Tokenizer>) {
    let mut parsed = PARSED.lock().unwrap_or_else(|e| e.into_inner());
    parsed.retain(|(m, _, _)| m != model);
    if parsed.len() >= MAX_PARSED {
        parsed.remove(0);
    }
    parsed.push((model.to_string(), digest.to_string(), t));
}

/// Stores `model`'s profile after checking that it parses; returns its
/// context length.
pub async fn put(kv: &Store, db: &Db, model: &str, body: &[u8]) -> Result<usize, ApiError> {
    let (t, context_tokens) = parse(body)?;
    let digest = hex::encode(Sha256::digest(body));
    // The profile first, then the pointer: a reader never finds a pointer
    // to a profile that is not there yet.
    kv.set(&blob_key(model, &digest), body).await.map_err(|_| ApiError::internal("storing the tokenizer"))?;
    let old = store::retry_busy(|| store::set_tokenizer(db, model, &digest, context_tokens)).await?;
    if let Some(old) = old {
        let _ = kv.delete(&blob_key(model, &old)).await;
    }
    let _ = kv.delete(&legacy_key(model)).await;
    remember(model, &digest, Arc::new(t));
    Ok(context_tokens)
}

/// `model`'s profile, if one was uploaded. `pointer` is the caller's view
/// of the `chat_tokenizers` row (read with the key, see the module docs).
pub async fn load(kv: &Store, db: &Db, model: &str, pointer: Option<(&str, usize)>) -> Result<Option<Loaded>, ApiError> {
    let Some((digest, context_tokens)) = pointer else {
        return load_legacy(kv, db, model).await;
    };
    if let Some(tokenizer) = parsed(model, digest) {
        return Ok(Some(Loaded { tokenizer, context_tokens, digest: digest.to_string() }));
    }
    let raw = match kv.get(&blob_key(model, digest)).await {
        Ok(Some(raw)) => raw,
        // Replaced by a newer upload between the pointer read and now.
        Ok(None) => return Err(ApiError::unavailable("the model's tokenizer profile was just replaced; retry")),
        Err(_) => return Err(ApiError::internal("reading the tokenizer")),
    };
    let (t, _) = parse(&raw).map_err(|_| ApiError::internal("the stored tokenizer does not parse"))?;
    let t = Arc::new(t);
    remember(model, digest, t.clone());
    Ok(Some(Loaded { tokenizer: t, context_tokens, digest: digest.to_string() }))
}

/// A profile stored before the pointer table existed (one key holding the
/// whole profile): moved to the new layout on first sight. Each instance
/// looks once per model, so requests for a model without a profile do not
/// pay a read each.
async fn load_legacy(kv: &Store, db: &Db, model: &str) -> Result<Option<Loaded>, ApiError> {
    {
        let mut checked = LEGACY_CHECKED.lock().unwrap_or_else(|e| e.into_inner());
        let checked = checked.get_or_insert_with(HashSet::new);
        if checked.contains(model) || checked.len() > 1024 {
            return Ok(None);
        }
        checked.insert(model.to_string());
    }
    let raw = match kv.get(&legacy_key(model)).await {
        Ok(Some(raw)) => raw,
        Ok(None) => return Ok(None),
        Err(_) => return Err(ApiError::internal("reading the tokenizer")),
    };
    let context_tokens = put(kv, db, model, &raw).await.map_err(|_| ApiError::internal("the stored tokenizer does not parse"))?;
    let digest = hex::encode(Sha256::digest(&raw));
    Ok(parsed(model, &digest).map(|tokenizer| Loaded { tokenizer, context_tokens, digest }))
}

/// The tokenizer this instance parsed for (`model`, `digest`), if any.
fn parsed(model: &str, digest: &str) -> Option<Arc<Tokenizer>> {
    PARSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(m, d, _)| m == model && d == digest)
        .map(|(_, _, t)| t.clone())
}

/// Token counts of the messages this instance counted lately, by a keyed
/// 64-bit hash of (tokenizer digest, text): a conversation comes back with
/// every turn so far plus one, so only the new turns are tokenized. The
/// hash key is random per instance (std's `RandomState`) and no text is
/// kept, only the hashes and counts.
static COUNTS: Mutex<Option<(RandomState, HashMap<u64, u32>)>> = Mutex::new(None);
const MAX_COUNTS: usize = 8192;

impl Loaded {
    /// `text`'s tokens with the model's tokenizer (no special tokens).
    pub fn count(&self, text: &str) -> usize {
        let mut memo = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let (keys, counts) = memo.get_or_insert_with(|| (RandomState::new(), HashMap::new()));
        let h = keys.hash_one((self.digest.as_str(), text));
        if let Some(&n) = counts.get(&h) {
            return n as usize;
        }
        // `encode_fast`: the same tokens as `encode`, without offsets.
        let n = self.tokenizer.encode_fast(text, false).map(|e| e.len()).unwrap_or(text.len());
        if counts.len() >= MAX_COUNTS {
            counts.clear();
        }
        counts.insert(h, n as u32);
        n
    }
}
