//! The response cache's keys and entries.
//!
//! Key: HMAC-SHA256(server secret, tenant ‖ model ‖ adapter ‖ normalised
//! messages ‖ sampling parameters), hex: no message text, and nothing that
//! can be checked against a guess without the secret. The tenant's namespace
//! prefix is a keyed hash too. Only deterministic requests are cached
//! (temperature 0 or a seed), never a turn the safety screen flagged.

use crate::chat::ChatCall;
use crate::keys::mac;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Request fields that change the reply (besides model and messages).
const SAMPLING: &[&str] = &[
    "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "seed", "stop",
    "repetition_penalty", "frequency_penalty", "presence_penalty", "n", "ignore_eos", "response_format",
];

/// Whitespace runs collapse to one space, ends trimmed.
pub fn normalise_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical bytes the cache key is a MAC of.
pub fn canonical(call: &ChatCall) -> Vec<u8> {
    let messages: Vec<Value> = call.upstream["messages"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| json!([m["role"], normalise_text(m["content"].as_str().unwrap_or(""))]))
                .collect()
        })
        .unwrap_or_default();
    let sampling: Vec<Value> = SAMPLING
        .iter()
        .map(|k| json!([k, call.upstream.get(*k).cloned().unwrap_or(Value::Null)]))
        .collect();
    json!({"model": call.model, "adapter": call.adapter, "messages": messages, "sampling": sampling})
        .to_string()
        .into_bytes()
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

/// A cached reply: the gpu-host's JSON body and when it expires.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    pub expires_at: i64,
    pub body: String,
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
}
