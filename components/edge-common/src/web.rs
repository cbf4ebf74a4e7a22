//! HTTP request and response helpers for spin-sdk 7 handlers.

use crate::api::{ApiError, MAX_BODY_BYTES};
use spin_sdk::http::Request;

pub type Response = http::Response<String>;

/// Reads the whole request body (up to 1 MiB).
pub async fn read_body(req: Request) -> Result<Vec<u8>, ApiError> {
    read_body_limited(req, MAX_BODY_BYTES).await
}

/// Reads the whole request body, up to `max` bytes.
///
/// Reads the body stream directly rather than through `http_body`'s
/// frames: those always await the trailers future after the stream ends,
/// one more crossing of the component boundary through the host's event
/// loop (about 15 µs on edge-host, on every request). The trailers future
/// also says whether the body arrived whole, so it is still awaited unless
/// `Content-Length` is given and the bytes read match it (a body cut short
/// then cannot pass for a whole one).
pub async fn read_body_limited(req: Request, max: usize) -> Result<Vec<u8>, ApiError> {
    use spin_sdk::http::IncomingMessage;
    use spin_sdk::wasip3::wit_bindgen::StreamResult;
    let unreadable = || ApiError::bad_request("request body could not be read");
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(crate::api::too_large(max));
    }
    let mut body = req.into_body();
    let Some(message) = body.take_unstarted() else {
        return Err(unreadable());
    };
    // `done` tells the host when we finished with the body (on drop).
    let (_done, done_reader) = spin_sdk::wasip3::wit_future::new(|| Ok(()));
    let (mut stream, trailers) = message.consume_body(done_reader);
    let mut out = Vec::with_capacity(declared.map_or(4096, |n| n as usize));
    loop {
        let want = (max + 1 - out.len()).clamp(1, 64 * 1024);
        let (result, chunk) = stream.read(Vec::with_capacity(want)).await;
        match result {
            StreamResult::Complete(_) => {
                out.extend_from_slice(&chunk);
                if out.len() > max {
                    return Err(crate::api::too_large(max));
                }
            }
            StreamResult::Dropped => break,
            StreamResult::Cancelled => return Err(unreadable()),
        }
    }
    if declared != Some(out.len() as u64) && trailers.await.is_err() {
        return Err(unreadable());
    }
    Ok(out)
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
        // The whole body is known: without its length the host sends it
        // chunked, one more write and one more read per response.
        .header(http::header::CONTENT_LENGTH, body.len())
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
