//! API errors and JSON bodies, shaped so that no request data (which may be
//! PHI) ever ends up in an error message or a log line.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// An error answered to the caller as `{"error": code, "message": message}`.
/// Messages are written by us and never quote request data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "gone", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }
    /// An internal failure. `what` names the failing step (no data).
    pub fn internal(what: impl Into<String>) -> Self {
        Self::new(500, "internal", what)
    }

    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.code, "message": self.message }).to_string()
    }

    /// The outcome code recorded in the audit trail.
    pub fn outcome(&self) -> &'static str {
        match self.status {
            401 => "unauthenticated",
            403 => "denied",
            404 | 410 => "not_found",
            400 | 409 | 413 | 422 => "rejected",
            _ => "error",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The 413 for a body over `max` bytes.
pub fn too_large(max: usize) -> ApiError {
    ApiError::new(413, "too_large", format!("request body exceeds {} MiB", max >> 20))
}

/// Parses a JSON body into `T`, answering 400 with a message that says where
/// and what kind of error, but never quotes the submitted values.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_json_limited(body, MAX_BODY_BYTES)
}

/// [`parse_json`] for a body allowed up to `max` bytes.
pub fn parse_json_limited<T: DeserializeOwned>(body: &[u8], max: usize) -> Result<T, ApiError> {
    if body.len() > max {
        return Err(too_large(max));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("request body is empty; a JSON object is required"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Data => "invalid field",
            serde_json::error::Category::Io => "unreadable body",
        };
        ApiError::bad_request(format!(
            "{kind} at line {} column {}: {}",
            e.line(),
            e.column(),
            scrub_quoted(&e.to_string())
        ))
    })
}

/// Removes everything serde quotes from the input (`"..."`) and the trailing
/// position, keeping field names (in backticks) which come from our schema or
/// are JSON keys.
fn scrub_quoted(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    let msg = scrub_backticks(msg);
    let mut out = String::with_capacity(msg.len());
    let mut in_quote = false;
    for ch in msg.chars() {
        if ch == '"' {
            if !in_quote {
                out.push_str("<value>");
            }
            in_quote = !in_quote;
        } else if !in_quote {
            out.push(ch);
        }
    }
    // Numbers and characters serde echoes (e.g. `integer 42`, `character 'x'`).
    let mut cleaned = String::with_capacity(out.len());
    let mut words = out.split(' ').peekable();
    let mut first = true;
    while let Some(w) = words.next() {
        let w = if matches!(w, "integer" | "float" | "character" | "boolean")
            && words.peek().is_some_and(|n| !n.starts_with("expected"))
        {
            words.next();
            w.to_string() + " <value>"
        } else {
            w.to_string()
        };
        if !first {
            cleaned.push(' ');
        }
        cleaned.push_str(&w);
        first = false;
    }
    cleaned
}

/// Replaces what serde quotes from the input in backticks with `<value>`:
/// the `X` of "unknown variant `X`, expected ..." and "unknown field `X`,
/// expected ..." (an enum value or a JSON key the client sent). Everything
/// from the last "`, expected" / "`, there are no" on comes from our schema
/// (the accepted variants and fields) and is kept, as are the field names of
/// "missing field" / "duplicate field", which are always ours.
fn scrub_backticks(msg: &str) -> String {
    let mut out = msg.to_string();
    for prefix in ["unknown variant `", "unknown field `"] {
        let Some(start) = out.find(prefix) else { continue };
        let from = start + prefix.len();
        let end = ["`, expected", "`, there are no"].iter().filter_map(|t| out[from..].rfind(t)).max();
        match end {
            Some(e) => out.replace_range(from..from + e, "<value>"),
            None => {
                out.truncate(from);
                out.push_str("<value>`");
            }
        }
    }
    out
}

/// Whether `s` is an id in the form this system issues (a UUID in canonical
/// lower-case form). Ids from URL paths and bodies are checked with this
/// before they are used or written to the audit trail.
pub fn is_id(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// What the audit trail records instead of an id that is not UUID-shaped
/// (it may be a name or other PHI typed into a URL or body).
pub const INVALID_ID: &str = "invalid-id";

/// `s` if it is an id, else [`INVALID_ID`].
pub fn audit_id(s: &str) -> String {
    if is_id(s) { s.to_string() } else { INVALID_ID.to_string() }
}

/// Serialises `value` as a JSON response body.
pub fn to_json<T: Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|_| ApiError::internal("response serialisation failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct T {
        name: String,
        n: u8,
    }

    #[test]
    fn parse_errors_never_echo_values() {
        let e = parse_json::<T>(br#"{"name": 5, "n": 1}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(!e.message.contains('5') || e.message.contains("column"), "{}", e.message);
        let e = parse_json::<T>(br#"{"name": "x", "n": "SECRET-MARKER"}"#).unwrap_err();
        assert!(!e.message.contains("SECRET-MARKER"), "{}", e.message);
        let e = parse_json::<T>(br#"{"name": "x", "n": 300}"#).unwrap_err();
        assert!(!e.message.contains("300"), "{}", e.message);
        let e = parse_json::<T>(br#"{"name": "x"}"#).unwrap_err();
        assert!(e.message.contains("missing field `n`"), "{}", e.message);
        let e = parse_json::<T>(b"{not json").unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        assert!(parse_json::<T>(b"  ").unwrap_err().message.contains("empty"));
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code)]
    enum Flag {
        SelfHarm,
        Crisis,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        flag: Option<Flag>,
        #[serde(default)]
        flags: Vec<Flag>,
    }

    #[test]
    fn enum_values_and_unknown_keys_are_not_echoed() {
        let e = parse_json::<Strict>(br#"{"flag": "SECRET-MARKER"}"#).unwrap_err();
        assert!(!e.message.contains("SECRET-MARKER"), "{}", e.message);
        assert!(e.message.contains("unknown variant `<value>`"), "{}", e.message);
        assert!(e.message.contains("`self-harm`") && e.message.contains("`crisis`"), "names the variants: {}", e.message);
        let e = parse_json::<Strict>(br#"{"flags": ["crisis", "SECRET-MARKER"]}"#).unwrap_err();
        assert!(!e.message.contains("SECRET-MARKER"), "{}", e.message);
        let e = parse_json::<Strict>(br#"{"SECRET-MARKER": 1}"#).unwrap_err();
        assert!(!e.message.contains("SECRET-MARKER"), "{}", e.message);
        assert!(e.message.contains("unknown field `<value>`") && e.message.contains("`flag`"), "{}", e.message);
        let e = parse_json::<Strict>(br#"{"flag": "crisis", "flag": "crisis"}"#).unwrap_err();
        assert!(e.message.contains("duplicate field `flag`"), "{}", e.message);
        let e = parse_json::<T>(br#"{"name": "x"}"#).unwrap_err();
        assert!(e.message.contains("missing field `n`"), "{}", e.message);
        // A backtick inside the value cannot smuggle text past the scrubber.
        let e = parse_json::<Strict>(br#"{"flag": "a`SECRET-MARKER`b"}"#).unwrap_err();
        assert!(!e.message.contains("SECRET-MARKER"), "{}", e.message);
        let e = parse_json::<Strict>(br#"{"a`SECRET-MARKER": 1}"#).unwrap_err();
        assert!(!e.message.contains("SECRET-MARKER"), "{}", e.message);
        let e = parse_json::<Strict>(br#"{"expected SECRET-MARKER": 1}"#).unwrap_err();
        assert!(!e.message.contains("SECRET-MARKER"), "{}", e.message);
        let e = parse_json::<Strict>(br#"{"flag": "x`, expected SECRET-MARKER`, expected"}"#).unwrap_err();
        assert!(!e.message.contains("SECRET-MARKER"), "{}", e.message);
        let e = parse_json::<Strict>(br#"{"flag": "q\"SECRET-MARKER\"q"}"#).unwrap_err();
        assert!(!e.message.contains("SECRET-MARKER"), "{}", e.message);
    }

    #[test]
    fn ids() {
        assert!(is_id("0f8a2c1e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"));
        assert!(!is_id("0F8A2C1E-3B4D-4E5F-8A9B-0C1D2E3F4A5B"));
        assert!(!is_id("Alex Example"));
        assert!(!is_id("0f8a2c1e-3b4d-4e5f-8a9b-0c1d2e3f4a5"));
        assert!(!is_id("0f8a2c1e-3b4d-4e5f-8a9b-0c1d2e3f4a5bz"));
        assert!(!is_id("0f8a2c1ez3b4d-4e5f-8a9b-0c1d2e3f4a5b"));
        assert_eq!(audit_id("Alex Example"), INVALID_ID);
        assert_eq!(audit_id("0f8a2c1e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"), "0f8a2c1e-3b4d-4e5f-8a9b-0c1d2e3f4a5b");
    }

    #[test]
    fn outcome_codes() {
        assert_eq!(ApiError::forbidden("x").outcome(), "denied");
        assert_eq!(ApiError::bad_request("x").outcome(), "rejected");
        assert_eq!(ApiError::internal("x").outcome(), "error");
    }
}
