//! HTTP request and response helpers for spin-sdk 7 handlers.

use crate::api::{ApiError, MAX_BODY_BYTES};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::Request;

pub type Response = http::Response<String>;

/// Reads the whole request body (up to 1 MiB).
pub async fn read_body(req: Request) -> Result<Vec<u8>, ApiError> {
    read_body_limited(req, MAX_BODY_BYTES).await
}

/// Reads the whole request body, up to `max` bytes.
pub async fn read_body_limited(req: Request, max: usize) -> Result<Vec<u8>, ApiError> {
    let bytes = req
        .into_body()
        .bytes()
        .await
        .map_err(|_| ApiError::bad_request("request body could not be read"))?;
    if bytes.len() > max {
        return Err(crate::api::too_large(max));
    }
    Ok(bytes.to_vec())
}

/// The bearer token of the `Authorization` header, if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim().to_string())
}

/// Decoded query parameters, in order.
pub fn query_params(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(status: u16, content_type: &str, body: String) -> Response {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-store")
        .header("x-content-type-options", "nosniff")
        .body(body)
        .expect("static headers are valid")
}

pub fn json(status: u16, body: String) -> Response {
    respond(status, "application/json", body)
}

pub fn html(status: u16, body: String) -> Response {
    let mut r = respond(status, "text/html; charset=utf-8", body);
    r.headers_mut().insert(
        "content-security-policy",
        http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    r
}

pub fn error(e: &ApiError) -> Response {
    let mut r = json(e.status, e.body());
    if e.status == 401 {
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    }
    r
}
