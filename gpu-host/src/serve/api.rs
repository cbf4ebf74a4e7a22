//! Request parsing and response shapes of the HTTP API: OpenAI's chat
//! completions (what our edge and any OpenAI client speak) and Spin's
//! `remote_http` LLM protocol (`/infer`, `/embed`, see
//! ../shared/stack-notes.md). Parsing is by hand over `serde_json::Value`
//! so every refusal names the offending field, in OpenAI's error shape.

use crate::tokenizer::ChatMessage;
use serde_json::{Map, Value, json};

/// An error answer: status plus OpenAI's `{"error": {...}}` body.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
        }
    }

    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// A parsed `POST /v1/chat/completions`.
#[derive(Debug, Default)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Extension (not in OpenAI's schema): top-k sampling.
    pub top_k: Option<usize>,
    /// Extension: Hugging Face-style repetition penalty.
    pub repetition_penalty: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    /// Extension (vLLM's): keep generating past EOS, up to `max_tokens`
    /// (benchmarks with fixed output lengths).
    pub ignore_eos: bool,
}

pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid("body", format!("the request body is not valid JSON: {e}"))
    })?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid(
            "body",
            "the request body must be a JSON object",
        )),
    }
}

fn number(m: &Map<String, Value>, key: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if (min..=max).contains(&v) {
                Ok(Some(v))
            } else {
                Err(ApiError::invalid(
                    key,
                    format!("`{key}` must be between {min} and {max}, got {v}"),
                ))
            }
        }
        Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a number"))),
    }
}

fn integer(m: &Map<String, Value>, key: &str, min: i64) -> Result<Option<i64>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= min => Ok(Some(v)),
            Some(v) => Err(ApiError::invalid(
                key,
                format!("`{key}` must be at least {min}, got {v}"),
            )),
            None => Err(ApiError::invalid(
                key,
                format!("`{key}` must be an integer"),
            )),
        },
        Some(_) => Err(ApiError::invalid(
            key,
            format!("`{key}` must be an integer"),
        )),
    }
}

fn boolean(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(
            key,
            format!("`{key}` must be true or false"),
        )),
    }
}

fn string(m: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(key, format!("`{key}` must be a string"))),
    }
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

fn message(i: usize, v: &Value) -> Result<ChatMessage, ApiError> {
    let at = |f: &str| format!("messages[{i}].{f}");
    let Value::Object(m) = v else {
        return Err(ApiError::invalid(
            format!("messages[{i}]"),
            format!("`messages[{i}]` must be an object with `role` and `content`"),
        ));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::invalid(
                at("role"),
                format!("`{}` must be one of {}", at("role"), ROLES.join(", ")),
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                at("role"),
                format!("`{}` is required and must be a string", at("role")),
            ));
        }
    };
    // The chat template knows no "developer" role: OpenAI treats it as system.
    let role = if role == "developer" {
        "system".to_string()
    } else {
        role
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None if role == "assistant" => String::new(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::invalid(
                            format!("messages[{i}].content[{j}]"),
                            format!(
                                "`messages[{i}].content[{j}]` must be a text part (`{{\"type\": \"text\", \"text\": ...}}`); other content types are not supported"
                            ),
                        ));
                    }
                }
            }
            text
        }
        _ => {
            return Err(ApiError::invalid(
                at("content"),
                format!(
                    "`{}` is required and must be a string or a list of text parts",
                    at("content")
                ),
            ));
        }
    };
    Ok(ChatMessage { role, content })
}

pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let m = parse_object(body)?;
    let model =
        string(&m, "model")?.ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
    let messages = match m.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, v)| message(i, v))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "messages",
                "`messages` must hold at least one message",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "messages",
                "`messages` is required and must be a list of messages",
            ));
        }
    };
    let max_completion = integer(&m, "max_completion_tokens", 1)?;
    let max_tokens = max_completion
        .or(integer(&m, "max_tokens", 1)?)
        .map(|v| v as usize);
    if let Some(n) = integer(&m, "n", 1)?
        && n != 1
    {
        return Err(ApiError::invalid("n", "only `n: 1` is supported"));
    }
    for key in ["frequency_penalty", "presence_penalty"] {
        if let Some(v) = number(&m, key, -2.0, 2.0)?
            && v != 0.0
        {
            return Err(ApiError::invalid(
                key,
                format!("`{key}` is not supported (use `repetition_penalty`)"),
            ));
        }
    }
    if boolean(&m, "logprobs")? == Some(true) {
        return Err(ApiError::invalid("logprobs", "`logprobs` is not supported"));
    }
    if m.get("tools")
        .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(ApiError::invalid("tools", "tool calling is not supported"));
    }
    if let Some(rf) = m.get("response_format").filter(|v| !v.is_null())
        && rf.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(ApiError::invalid(
            "response_format",
            "only `{\"type\": \"text\"}` is supported",
        ));
    }
    let stop = match m.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) if list.len() <= 4 && list.iter().all(Value::is_string) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            return Err(ApiError::invalid(
                "stop",
                "`stop` must be a string or a list of at most 4 strings",
            ));
        }
    };
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "`stop` strings must not be empty",
        ));
    }
    let seed = match m.get("seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            Some(n.as_u64().unwrap_or_else(|| n.as_i64().unwrap_or(0) as u64))
        }
        Some(_) => return Err(ApiError::invalid("seed", "`seed` must be an integer")),
    };
    let include_usage = match m.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => boolean(o, "include_usage")
            .map_err(|_| {
                ApiError::invalid(
                    "stream_options.include_usage",
                    "`stream_options.include_usage` must be true or false",
                )
            })?
            .unwrap_or(false),
        Some(_) => {
            return Err(ApiError::invalid(
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    };
    Ok(ChatRequest {
        model,
        messages,
        max_tokens,
        temperature: number(&m, "temperature", 0.0, 2.0)?.map(|v| v as f32),
        top_p: match number(&m, "top_p", 0.0, 1.0)? {
            Some(v) if v <= 0.0 => {
                return Err(ApiError::invalid("top_p", "`top_p` must be greater than 0"));
            }
            v => v.map(|v| v as f32),
        },
        top_k: integer(&m, "top_k", 0)?.map(|v| v as usize),
        repetition_penalty: match number(&m, "repetition_penalty", 0.0, 10.0)? {
            Some(v) if v <= 0.0 => {
                return Err(ApiError::invalid(
                    "repetition_penalty",
                    "`repetition_penalty` must be greater than 0",
                ));
            }
            v => v.map(|v| v as f32),
        },
        stop,
        seed,
        stream: boolean(&m, "stream")?.unwrap_or(false),
        include_usage,
        ignore_eos: boolean(&m, "ignore_eos")?.unwrap_or(false),
    })
}

/// A parsed Spin `POST /infer`.
#[derive(Debug)]
pub struct InferRequest {
    pub model: String,
    pub prompt: String,
    pub max_tokens: usize,
    pub repeat_penalty: f32,
    pub repeat_penalty_last_n: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
}

pub fn parse_infer_request(body: &[u8]) -> Result<InferRequest, ApiError> {
    let m = parse_object(body)?;
    let model =
        string(&m, "model")?.ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
    let prompt =
        string(&m, "prompt")?.ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required"))?;
    let empty = Map::new();
    let o = match m.get("options") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::invalid("options", "`options` must be an object")),
    };
    let field = |e: ApiError| ApiError {
        param: e.param.map(|p| format!("options.{p}")),
        ..e
    };
    // Spin's defaults when a component passes no parameters.
    Ok(InferRequest {
        model,
        prompt,
        max_tokens: integer(o, "maxTokens", 1).map_err(field)?.unwrap_or(100) as usize,
        repeat_penalty: number(o, "repeatPenalty", 0.0, 10.0)
            .map_err(field)?
            .unwrap_or(1.1) as f32,
        repeat_penalty_last_n: integer(o, "repeatPenaltyLastNTokenCount", 0)
            .map_err(field)?
            .unwrap_or(64) as usize,
        temperature: number(o, "temperature", 0.0, 10.0)
            .map_err(field)?
            .unwrap_or(0.8) as f32,
        top_k: integer(o, "topK", 0).map_err(field)?.unwrap_or(40) as usize,
        top_p: number(o, "topP", 0.0, 1.0).map_err(field)?.unwrap_or(0.9) as f32,
    })
    .and_then(|r| {
        if r.repeat_penalty <= 0.0 {
            Err(ApiError::invalid(
                "options.repeatPenalty",
                "`options.repeatPenalty` must be greater than 0",
            ))
        } else if r.top_p <= 0.0 {
            Err(ApiError::invalid(
                "options.topP",
                "`options.topP` must be greater than 0",
            ))
        } else {
            Ok(r)
        }
    })
}

/// A parsed Spin `POST /embed` (or its OpenAI twin's `input`).
pub fn parse_embed_request(body: &[u8]) -> Result<(String, Vec<String>), ApiError> {
    let m = parse_object(body)?;
    let model =
        string(&m, "model")?.ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
    let input = match m.get("input") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::invalid(
                        format!("input[{i}]"),
                        format!("`input[{i}]` must be a string"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::String(s)) => vec![s.clone()],
        _ => {
            return Err(ApiError::invalid(
                "input",
                "`input` is required and must be a non-empty list of strings",
            ));
        }
    };
    Ok((model, input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_requests_parse_and_refusals_name_the_field() {
        let r = parse_chat_request(
            br#"{"model":"m","messages":[{"role":"system","content":"be kind"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "max_completion_tokens":5,"temperature":0,"stop":"END","seed":-1,"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert_eq!(r.messages[1].content, "hi");
        assert_eq!(
            (r.max_tokens, r.temperature, r.stream, r.include_usage),
            (Some(5), Some(0.0), true, true)
        );
        assert_eq!(r.stop, ["END"]);
        assert_eq!(r.seed, Some(u64::MAX));
        let cases: &[(&str, &str)] = &[
            (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0}"#,
                "top_p",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":[1]}"#,
                "stop",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
            ("{not json", "body"),
            ("[1]", "body"),
        ];
        for (body, param) in cases {
            let e = parse_chat_request(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.param.as_deref(), Some(*param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn spin_infer_defaults_are_spins() {
        let r = parse_infer_request(br#"{"model":"m","prompt":"hello"}"#).unwrap();
        assert_eq!(
            (r.max_tokens, r.repeat_penalty_last_n, r.top_k),
            (100, 64, 40)
        );
        assert!((r.temperature - 0.8).abs() < 1e-6 && (r.top_p - 0.9).abs() < 1e-6);
        let e = parse_infer_request(br#"{"model":"m","prompt":"x","options":{"maxTokens":-1}}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("options.maxTokens"));
        let (m, input) = parse_embed_request(br#"{"input":["a","b"],"model":"m"}"#).unwrap();
        assert_eq!((m.as_str(), input.len()), ("m", 2));
    }
}
