//! The response cache's keys and entries.
//!
//! Key: HMAC-SHA256(server secret, tenant ‖ model ‖ adapter ‖ normalised
//! messages ‖ sampling parameters), hex: no message text, and nothing that
//! can be checked against a guess without the secret. The tenant's namespace
//! prefix is a keyed hash too. Only deterministic requests are cached
//! (temperature 0 or a seed), never a turn the safety screen flagged.

use crate::chat::ChatCall;
use crate::keys::mac;
use edge_common::crypto::{self, SecretKey};
use serde_json::Value;

/// Request fields that change the reply (besides model and messages).
const SAMPLING: &[&str] = &[
    "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "seed", "stop",
    "repetition_penalty", "frequency_penalty", "presence_penalty", "n", "ignore_eos", "response_format",
];

/// Whitespace runs collapse to one space, ends trimmed.
pub fn normalise_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical bytes the cache key is a MAC of: the JSON object
/// `{"adapter", "messages": [[role, normalised text], ...], "model",
/// "sampling": [[name, value], ...]}` (keys sorted, compact), written
/// straight into the buffer (building it as a `serde_json::Value` first
/// cost a third of the cached path's key work).
pub fn canonical(call: &ChatCall) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"adapter\":");
    put(&mut out, &call.adapter);
    out.extend_from_slice(b",\"messages\":[");
    for (i, m) in call.upstream["messages"].as_array().into_iter().flatten().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        put(&mut out, &m["role"]);
        out.push(b',');
        put(&mut out, &normalise_text(m["content"].as_str().unwrap_or("")));
        out.push(b']');
    }
    out.extend_from_slice(b"],\"model\":");
    put(&mut out, &call.model);
    out.extend_from_slice(b",\"sampling\":[");
    for (i, k) in SAMPLING.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        put(&mut out, k);
        out.push(b',');
        put(&mut out, call.upstream.get(*k).unwrap_or(&Value::Null));
        out.push(b']');
    }
    out.extend_from_slice(b"]}");
    out
}

fn put<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("JSON values and strings always serialise");
}

/// The tenant's namespace in the key-value store.
pub fn namespace(secret: &[u8], tenant: &str) -> String {
    format!("chat-cache/{}", hex::encode(&mac(secret, "chat-api/cache-ns/v1", tenant.as_bytes())[..12]))
}

/// The full key-value key of `call`'s cached reply for `tenant`.
pub fn entry_key(secret: &[u8], tenant: &str, call: &ChatCall) -> String {
    let mut data = tenant.as_bytes().to_vec();
    data.push(0);
    data.extend(canonical(call));
    format!("{}/{}", namespace(secret, tenant), hex::encode(mac(secret, "chat-api/cache/v1", &data)))
}

fn aead_key(secret: &[u8]) -> SecretKey {
    SecretKey::from_bytes(mac(secret, "chat-api/cache-aead/v1", b""))
}

fn entry_ad(key: &str, expires_at: i64) -> Vec<u8> {
    let mut ad = key.as_bytes().to_vec();
    ad.extend_from_slice(&expires_at.to_be_bytes());
    ad
}

/// A cached reply as stored: its expiry (8 bytes, big-endian) and the reply
/// sealed with XChaCha20-Poly1305 (the model's text may repeat PHI, so it is
/// not kept in the clear); key and expiry are bound as associated data, so
/// an entry cannot be moved to another key or have its expiry extended.
pub fn seal_entry(secret: &[u8], key: &str, body: &str, expires_at: i64) -> Option<Vec<u8>> {
    let sealed = crypto::seal(&aead_key(secret), &entry_ad(key, expires_at), body.as_bytes()).ok()?;
    let mut out = expires_at.to_be_bytes().to_vec();
    out.extend(sealed);
    Some(out)
}

/// The reply of a stored entry, unless it expired or does not open.
pub fn open_entry(secret: &[u8], key: &str, raw: &[u8], now: i64) -> Option<String> {
    let expires_at = i64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    if expires_at <= now {
        return None;
    }
    let body = crypto::open(&aead_key(secret), &entry_ad(key, expires_at), &raw[8..]).ok()?;
    String::from_utf8(body.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::parse;

    fn call(json: &str) -> ChatCall {
        parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn keys_depend_on_what_changes_the_reply_only() {
        let s = b"secret";
        let a = call(r#"{"model":"tiny","messages":[{"role":"user","content":"I feel  low"}],"temperature":0,"client_id":"c1"}"#);
        let b = call(r#"{"model":"tiny","messages":[{"role":"user","content":" I feel low "}],"temperature":0,"session_id":"x"}"#);
        assert_eq!(entry_key(s, "t", &a), entry_key(s, "t", &b), "whitespace and edge fields do not matter");
        let c = call(r#"{"model":"tiny","messages":[{"role":"user","content":"I feel low"}],"temperature":0,"max_tokens":5}"#);
        assert_ne!(entry_key(s, "t", &a), entry_key(s, "t", &c));
        assert_ne!(entry_key(s, "t", &a), entry_key(s, "u", &a), "one namespace per tenant");
        assert_ne!(entry_key(s, "t", &a), entry_key(b"other", "t", &a));
        let k = entry_key(s, "t", &a);
        assert!(k.starts_with(&namespace(s, "t")));
        assert!(!k.contains("feel") && !k.contains("tiny"));
    }

    #[test]
    fn canonical_bytes_are_the_sorted_compact_json_object() {
        let c = call(r#"{"model":"tiny","adapter":"mh","messages":[{"role":"system","content":"Be  kind"},{"role":"user","content":" I feel \"low\"\n"}],"temperature":0,"stop":["\n"],"seed":7}"#);
        let messages: Vec<Value> = c.upstream["messages"].as_array().unwrap().iter()
            .map(|m| serde_json::json!([m["role"], normalise_text(m["content"].as_str().unwrap())]))
            .collect();
        let sampling: Vec<Value> = SAMPLING.iter()
            .map(|k| serde_json::json!([k, c.upstream.get(*k).cloned().unwrap_or(Value::Null)]))
            .collect();
        let expected = serde_json::json!({"model": c.model, "adapter": c.adapter, "messages": messages, "sampling": sampling}).to_string();
        assert_eq!(String::from_utf8(canonical(&c)).unwrap(), expected);
    }

    #[test]
    fn entries_are_sealed_bound_to_their_key_and_expire() {
        let raw = seal_entry(b"secret", "k1", "{\"reply\":\"hello there\"}", 100).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("hello"));
        assert_eq!(open_entry(b"secret", "k1", &raw, 99).as_deref(), Some("{\"reply\":\"hello there\"}"));
        assert_eq!(open_entry(b"secret", "k1", &raw, 100), None, "expired");
        assert_eq!(open_entry(b"secret", "k2", &raw, 99), None, "moved to another key");
        assert_eq!(open_entry(b"other", "k1", &raw, 99), None, "another secret");
        let mut longer = raw.clone();
        longer[..8].copy_from_slice(&1000i64.to_be_bytes());
        assert_eq!(open_entry(b"secret", "k1", &longer, 99), None, "expiry extended");
    }
}
