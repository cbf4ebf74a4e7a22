//! A chat completion request as the edge sees it: the OpenAI body plus the
//! edge-only fields (`client_id`, `session_id`, `adapter`), which are taken
//! out before the body goes to a gpu-host.
//!
//! Errors never quote the request (message text is PHI).

use edge_common::ApiError;
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct ChatCall {
    pub model: String,
    /// A named adapter served by the gpu-hosts (sent upstream as `model`).
    pub adapter: Option<String>,
    pub client_id: Option<String>,
    pub session_id: Option<String>,
    pub stream: bool,
    /// `temperature: 0` or a `seed`: the same request gives the same reply.
    pub deterministic: bool,
    /// Text of the last `user` message (what the safety screen reads).
    pub last_user_text: String,
    /// The body for the gpu-host (edge fields removed).
    pub upstream: Map<String, Value>,
}

fn id_field(m: &mut Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match m.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("`{name}` must be a non-empty string of at most 128 printable ASCII characters"))),
    }
}

pub fn parse(body: &[u8]) -> Result<ChatCall, ApiError> {
    let value: Value = edge_common::api::parse_json(body)?;
    let Value::Object(mut m) = value else {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    };
    let client_id = id_field(&mut m, "client_id")?;
    let session_id = id_field(&mut m, "session_id")?;
    let adapter = id_field(&mut m, "adapter")?;
    let model = match m.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ApiError::bad_request("`model` is required and must be a non-empty string")),
    };
    let messages = match m.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Err(ApiError::bad_request("`messages` is required and must be a non-empty list")),
    };
    let mut last_user_text = String::new();
    for (i, msg) in messages.iter().enumerate() {
        let role = msg.get("role").and_then(Value::as_str);
        let content = msg.get("content").and_then(Value::as_str);
        match (role, content) {
            (Some("system" | "user" | "assistant"), Some(text)) => {
                if role == Some("user") {
                    last_user_text = text.to_string();
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}] must have `role` (system, user or assistant) and string `content`"
                )));
            }
        }
    }
    let stream = match m.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("`stream` must be true or false")),
    };
    let temperature = match m.get("temperature") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => return Err(ApiError::bad_request("`temperature` must be a number")),
    };
    let seed = m.get("seed").filter(|v| !v.is_null()).is_some();
    if let Some(a) = &adapter {
        m.insert("model".into(), Value::String(a.clone()));
    }
    Ok(ChatCall {
        model,
        adapter,
        client_id,
        session_id,
        stream,
        deterministic: temperature == Some(0.0) || seed,
        last_user_text,
        upstream: m,
    })
}

impl ChatCall {
    pub fn upstream_body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.upstream).expect("a JSON map serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_fields_are_removed_and_determinism_detected() {
        let c = parse(br#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"client_id":"c1","session_id":"s1","temperature":0}"#).unwrap();
        assert_eq!((c.client_id.as_deref(), c.session_id.as_deref()), (Some("c1"), Some("s1")));
        assert!(c.deterministic && !c.stream);
        assert!(!c.upstream.contains_key("client_id") && !c.upstream.contains_key("session_id"));
        assert_eq!(c.last_user_text, "hi");
        let c = parse(br#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"temperature":0.7}"#).unwrap();
        assert!(!c.deterministic);
        let c = parse(br#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"seed":3,"stream":true,"adapter":"mh"}"#).unwrap();
        assert!(c.deterministic && c.stream);
        assert_eq!(c.upstream["model"], "mh");
    }

    #[test]
    fn bad_requests_are_400_without_echo() {
        for body in [&b"{not json"[..], b"[]", br#"{"messages":[]}"#, br#"{"model":"m","messages":[{"role":"user"}]}"#, br#"{"model":"m","messages":[{"role":"x","content":"secret words"}]}"#] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(!e.message.contains("secret"), "{}", e.message);
        }
    }
}
