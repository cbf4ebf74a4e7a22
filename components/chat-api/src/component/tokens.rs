//! Model profiles for context truncation: a model's context length and its
//! own tokenizer (`tokenizer.json`), uploaded by an admin to
//! `PUT /v1/chat/tokenizers/{model}` and kept in the key-value store.
//! Parsing a tokenizer is the cost to avoid per request: an instance keeps
//! the last parsed one and re-parses only when the stored profile changed.

use edge_common::ApiError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spin_sdk::key_value::Store;
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
}

type Cached = (String, [u8; 32], Arc<Tokenizer>, usize);
static CACHE: Mutex<Option<Cached>> = Mutex::new(None);

fn key(model: &str) -> String {
    format!("chat-tokenizer/{model}")
}

fn parse(raw: &[u8]) -> Result<(Tokenizer, usize), ApiError> {
    let p: Profile = edge_common::api::parse_json(raw)?;
    if p.context_tokens < 16 {
        return Err(ApiError::bad_request("`context_tokens` must be at least 16"));
    }
    let t = Tokenizer::from_str(&p.tokenizer.to_string())
        .map_err(|_| ApiError::bad_request("`tokenizer` is not a valid tokenizer.json"))?;
    Ok((t, p.context_tokens))
}

/// Stores `model`'s profile after checking that it parses.
pub async fn put(kv: &Store, model: &str, body: &[u8]) -> Result<usize, ApiError> {
    let (_, context_tokens) = parse(body)?;
    kv.set(&key(model), body).await.map_err(|_| ApiError::internal("storing the tokenizer"))?;
    Ok(context_tokens)
}

/// `model`'s profile, if one was uploaded.
pub async fn load(kv: &Store, model: &str) -> Result<Option<Loaded>, ApiError> {
    let raw = match kv.get(&key(model)).await {
        Ok(Some(raw)) => raw,
        Ok(None) => return Ok(None),
        Err(_) => return Err(ApiError::internal("reading the tokenizer")),
    };
    let digest: [u8; 32] = Sha256::digest(&raw).into();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((m, d, t, c)) = cache.as_ref()
        && m == model
        && *d == digest
    {
        return Ok(Some(Loaded { tokenizer: t.clone(), context_tokens: *c }));
    }
    let (t, c) = parse(&raw).map_err(|_| ApiError::internal("the stored tokenizer does not parse"))?;
    let t = Arc::new(t);
    *cache = Some((model.to_string(), digest, t.clone(), c));
    Ok(Some(Loaded { tokenizer: t, context_tokens: c }))
}

impl Loaded {
    pub fn count(&self, text: &str) -> usize {
        self.tokenizer.encode(text, false).map(|e| e.len()).unwrap_or(text.len())
    }
}
