//! The HTTP component: routes, configuration and the chat pipeline.
//!
//! Routes (spin.toml mounts the exact ones and `/v1/keys/...`):
//! - `POST /v1/chat/completions`: chat (client, therapist, admin);
//! - `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}`: key admin (admin);
//! - `GET /v1/chat/stats`: cache hit and miss counters (admin, auditor);
//! - `GET /v1/chat/audit`: the chat audit trail (admin, auditor);
//! - `PUT /v1/chat/tokenizers/{model}`: a model's context length and
//!   tokenizer for truncation (admin).
//!
//! Chat pipeline: authenticate → parse (400) → role rules (403) → context
//! truncation (when the model's tokenizer was uploaded) → safety
//! screen → (risk: crisis reply, audit, no cache) → cache lookup
//! (deterministic, non-streaming) → gpu-host pool → output filter → cache
//! store. Inference is `therapy:inference/pool` (wit/inference.wit), a
//! component dependency (default `components/gpu-pool`); streamed replies
//! pass through it and the output filter as SSE.

mod recent;
mod safety;
mod store;
mod tokens;

mod inference {
    wit_bindgen::generate!({ path: "../../wit/inference.wit", world: "pool-user", generate_all });
}
use inference::therapy::inference::pool as gpu_pool;

use crate::{cache, chat, keys};
use bytes::Bytes;
use edge_common::auth::Role;
use edge_common::{ApiError, web};
use futures::SinkExt;
use safety::{output_filter, screen};
use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::key_value::Store;
use spin_sdk::wasip3::http::types::{ErrorCode, Response as WasiResponse};
use store::Caller;

type Reply = Result<WasiResponse, ErrorCode>;

#[http_service]
async fn handle(req: Request) -> Reply {
    match serve(req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                eprintln!("chat-api: {} {}", e.status, e.message);
            }
            web::error(&e).into_response()
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Config {
    /// Server secret: keys the API-key hashes and the cache keys.
    secret: Vec<u8>,
    bootstrap_key: String,
    crisis_resources: String,
    blocklist: Vec<String>,
    cache_ttl_seconds: i64,
}

async fn var(name: &str) -> String {
    spin_sdk::variables::get(name).await.unwrap_or_default()
}

impl Config {
    /// The configuration, read once per instance. The variables are the
    /// app's, fixed for its life on edge-host (resolved when it starts,
    /// and an instance serves at most a thousand requests), and Spin starts
    /// every request in a fresh instance, which reads them anew. A failed
    /// read is not kept: the next request tries again.
    async fn get() -> Result<&'static Config, ApiError> {
        static LOADED: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        if let Some(cfg) = LOADED.get() {
            return Ok(cfg);
        }
        let cfg = Config::load().await?;
        Ok(LOADED.get_or_init(|| cfg))
    }

    async fn load() -> Result<Config, ApiError> {
        let secret = var("chat_secret").await;
        if secret.trim().len() < 16 {
            return Err(ApiError::unavailable(
                "the chat API is not configured: set the chat_secret variable (SPIN_VARIABLE_CHAT_SECRET, at least 16 characters)",
            ));
        }
        let num = |s: String, d: u64| s.trim().parse::<u64>().unwrap_or(d);
        Ok(Config {
            secret: secret.trim().as_bytes().to_vec(),
            bootstrap_key: var("bootstrap_api_key").await.trim().to_string(),
            crisis_resources: var("crisis_resources").await,
            blocklist: var("output_blocklist")
                .await
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            cache_ttl_seconds: num(var("cache_ttl_seconds").await, 3600) as i64,
        })
    }
}

fn json_reply(status: u16, body: String, extra: &[(&'static str, &str)]) -> Result<Reply, ApiError> {
    let mut r = web::json(status, body);
    for (k, v) in extra.iter().filter(|(_, v)| !v.is_empty()) {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    Ok(r.into_response())
}

async fn serve(req: Request) -> Result<Reply, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let cfg = Config::get().await?;
    let db = store::open().await?;
    store::retry_busy(|| store::bootstrap(&db, &cfg.secret, &cfg.bootstrap_key, now())).await?;
    let token = web::bearer_token(req.headers());
    let caller = store::authenticate(&db, &cfg.secret, token.as_deref()).await?;
    let is = |m: http::Method| method == m;
    match path.as_str() {
        "/v1/chat/completions" if is(http::Method::POST) => chat_completions(req, cfg, &db, &caller).await,
        "/v1/keys" if is(http::Method::POST) => create_key(req, cfg, &db, &caller).await,
        "/v1/keys" if is(http::Method::GET) => {
            keys::require_admin(caller.role)?;
            json_reply(200, json!({ "keys": store::list(&db).await? }).to_string(), &[])
        }
        p if p.starts_with("/v1/keys/") && is(http::Method::DELETE) => {
            keys::require_admin(caller.role)?;
            let id = &p["/v1/keys/".len()..];
            if !store::revoke(&db, id, now()).await? {
                return Err(ApiError::not_found("no such API key"));
            }
            let ev = store::AuditEvent { caller: &caller, action: "key.revoke", client_id: None, session_id: None, outcome: "ok", detail: json!({ "key_id": id }) };
            store::retry_busy(|| store::audit(&db, ev.clone(), now())).await?;
            json_reply(200, json!({ "id": id, "revoked": true }).to_string(), &[])
        }
        p if p.starts_with("/v1/chat/tokenizers/") && is(http::Method::PUT) => {
            keys::require_admin(caller.role)?;
            let model = &p["/v1/chat/tokenizers/".len()..];
            if model.is_empty() || model.len() > 128 || !model.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::bad_request("the model name must be 1 to 128 printable ASCII characters"));
            }
            let model = model.to_string();
            let body = web::read_body_limited(req, tokens::MAX_PROFILE_BYTES).await?;
            let context_tokens = tokens::put(&open_kv().await?, &db, &model, &body).await?;
            json_reply(200, json!({ "model": model, "context_tokens": context_tokens }).to_string(), &[])
        }
        "/v1/chat/stats" if is(http::Method::GET) => {
            require_oversight(caller.role)?;
            let (mut hits, mut misses) = store::cache_totals(&db).await?;
            // Counts kept in the key-value store before the counters moved
            // to SQLite (schema v2) still count.
            let kv = open_kv().await?;
            hits += get_num(&kv, "chat-stats/cache_hits").await;
            misses += get_num(&kv, "chat-stats/cache_misses").await;
            json_reply(200, json!({ "cache": { "hits": hits, "misses": misses } }).to_string(), &[])
        }
        "/v1/chat/audit" if is(http::Method::GET) => {
            require_oversight(caller.role)?;
            json_reply(200, json!({ "entries": store::audit_list(&db, 200).await? }).to_string(), &[])
        }
        "/v1/chat/completions" | "/v1/keys" | "/v1/chat/stats" | "/v1/chat/audit" => {
            Err(ApiError::new(405, "method_not_allowed", "method not allowed on this endpoint"))
        }
        _ => Err(ApiError::not_found("no such endpoint")),
    }
}

fn require_oversight(role: Role) -> Result<(), ApiError> {
    match role {
        Role::Admin | Role::Auditor => Ok(()),
        _ => Err(ApiError::forbidden("this endpoint requires the admin or auditor role")),
    }
}

// ------------------------------------------------------------ key admin

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    role: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

async fn create_key(req: Request, cfg: &Config, db: &edge_common::db::Db, caller: &Caller) -> Result<Reply, ApiError> {
    keys::require_admin(caller.role)?;
    let body = web::read_body(req).await?;
    let k: CreateKey = edge_common::api::parse_json(&body)?;
    let name = k.name.trim();
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::bad_request("`name` must be 1 to 64 characters"));
    }
    let role = Role::parse(&k.role)
        .ok_or_else(|| ApiError::bad_request("`role` must be one of client, therapist, admin, auditor"))?;
    let valid_id = |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    let client_id = k.client_id.as_deref().filter(|s| !s.is_empty());
    if client_id.is_some_and(|c| !valid_id(c)) {
        return Err(ApiError::bad_request("`client_id` must be at most 128 printable ASCII characters"));
    }
    if role == Role::Client && client_id.is_none() {
        return Err(ApiError::bad_request("a client key needs `client_id` (the client it may chat for)"));
    }
    let tenant = k.tenant.as_deref().filter(|s| !s.is_empty()).unwrap_or(&caller.tenant).to_string();
    if !valid_id(&tenant) {
        return Err(ApiError::bad_request("`tenant` must be at most 128 printable ASCII characters"));
    }
    let (id, key) = store::create(db, &cfg.secret, store::NewKey { name, role, client_id, tenant: &tenant }, &caller.key_id, now()).await?;
    let ev = store::AuditEvent { caller, action: "key.create", client_id, session_id: None, outcome: "ok", detail: json!({ "key_id": id, "role": role.as_str() }) };
    store::retry_busy(|| store::audit(db, ev.clone(), now())).await?;
    json_reply(
        201,
        json!({ "id": id, "key": key, "name": name, "role": role.as_str(), "client_id": client_id, "tenant": tenant,
                "note": "the key is shown only now; store it safely" })
        .to_string(),
        &[],
    )
}

// ---------------------------------------------------------------- chat

async fn open_kv() -> Result<Store, ApiError> {
    Store::open("default").await.map_err(|_| ApiError::internal("opening the key-value store"))
}

async fn get_num(kv: &Store, key: &str) -> i64 {
    match kv.get(key).await {
        Ok(Some(v)) => std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

/// Counts a cache hit or miss; a failure to count never fails the chat.
async fn count_cache(tenant: &str, hit: bool) {
    if let Err(e) = store::count_cache(tenant, hit).await {
        eprintln!("chat-api: counting a cache {} failed: {}", if hit { "hit" } else { "miss" }, e.message);
    }
}

fn random_id() -> String {
    let mut raw = [0u8; 12];
    let _ = getrandom::fill(&mut raw);
    format!("chatcmpl-edge-{}", hex::encode(raw))
}

fn completion(model: &str, content: &str, safety: Value) -> Value {
    json!({
        "id": random_id(), "object": "chat.completion", "created": now(), "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
        "safety": safety,
    })
}

/// SSE events for a reply produced at the edge (one content chunk, a stop
/// chunk and `[DONE]`), as a streaming client expects them.
fn sse_events(model: &str, content: &str, safety: Value) -> String {
    let id = random_id();
    let first = json!({ "id": id, "object": "chat.completion.chunk", "created": now(), "model": model,
        "choices": [{ "index": 0, "delta": { "role": "assistant", "content": content }, "finish_reason": null }],
        "safety": safety });
    let stop = json!({ "id": id, "object": "chat.completion.chunk", "created": now(), "model": model,
        "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] });
    format!("data: {first}\n\ndata: {stop}\n\ndata: [DONE]\n\n")
}

/// Runs the output filter over a completion's text in place; returns the
/// filter's report and whether the reply was blocked.
fn filter_completion(v: &mut Value, cfg: &Config) -> (Value, bool) {
    let Some(content) = v.pointer("/choices/0/message/content").and_then(Value::as_str).map(str::to_string) else {
        return (Value::Null, false);
    };
    let verdict = output_filter::check(&content, &output_filter::FilterConfig { blocklist: cfg.blocklist.clone() });
    let blocked = matches!(verdict.action, output_filter::Action::Block);
    if !matches!(verdict.action, output_filter::Action::Allow) {
        v["choices"][0]["message"]["content"] = Value::String(verdict.text);
    }
    let report = json!({
        "action": safety::action_str(verdict.action),
        "rule_ids": verdict.findings.iter().map(|f| f.rule_id.clone()).collect::<Vec<_>>(),
    });
    (report, blocked)
}

fn pool_error(f: gpu_pool::Failure) -> ApiError {
    let code = match f.status {
        503 => "unavailable",
        504 => "upstream_timeout",
        _ => "upstream_failed",
    };
    ApiError::new(f.status, code, f.message)
}

/// A whole (non-streamed) completion from the pool (which fails over to
/// another host even when one dies mid-reply: nothing reached the client).
async fn complete(body: &[u8]) -> Result<(u16, Vec<u8>), ApiError> {
    let reply = gpu_pool::chat(body.to_vec(), true).await.map_err(pool_error)?;
    Ok((reply.status, reply.body.collect().await))
}

async fn chat_completions(req: Request, cfg: &Config, db: &edge_common::db::Db, caller: &Caller) -> Result<Reply, ApiError> {
    let body = web::read_body(req).await?;
    let mut call = chat::parse(&body)?;
    let client_id = keys::chat_client(caller.role, caller.client_id.as_deref(), call.client_id.as_deref())?;
    let kv = open_kv().await?;

    // Fit the conversation into the model's context (when its tokenizer
    // was uploaded), counted with the model's own tokenizer.
    let mut truncated = 0;
    // `Server-Timing: truncate;dur=<ms>` (counting and cutting, the profile
    // already loaded): what `cargo xtask bench truncate` reads.
    // `profile;dur=<ms>`: loading the profile (a read and a parse only when
    // this instance has not parsed that tokenizer yet).
    let mut timing = String::new();
    let loading = std::time::Instant::now();
    if let Some(profile) = tokens::load(&kv, db, &call.model, caller.profile(&call.model)).await? {
        let started = std::time::Instant::now();
        let budget = crate::truncate::budget(profile.context_tokens, &call.upstream);
        truncated = crate::truncate::truncate(&mut call.upstream, budget, |t| profile.count(t))?;
        timing = format!(
            "profile;dur={:.3}, truncate;dur={:.3}",
            (started - loading).as_secs_f64() * 1000.0,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let truncated = truncated.to_string();
    // Safety screen first: on risk the model is not the only answer.
    // `screen;dur=<ms>` in Server-Timing (the call into the screen
    // component included): what `cargo xtask bench chat` reports.
    let screening = std::time::Instant::now();
    let assessment = screen::classify(&call.last_user_text);
    let screened = format!("screen;dur={:.3}", screening.elapsed().as_secs_f64() * 1000.0);
    timing = if timing.is_empty() { screened } else { format!("{timing}, {screened}") };
    if assessment.risk || assessment.escalate {
        return crisis_reply(&call, cfg, db, caller, client_id.as_deref(), &assessment).await;
    }

    let cache_key = (call.deterministic && !call.stream).then(|| cache::entry_key(&cfg.secret, &caller.tenant, &call));
    if let Some(key) = &cache_key {
        let hit = match recent::get(key, now()) {
            Some(raw) => cache::open_entry(&cfg.secret, key, &raw, now()),
            None => match kv.get(key).await {
                Ok(Some(raw)) => {
                    let body = cache::open_entry(&cfg.secret, key, &raw, now());
                    if body.is_some() {
                        recent::put(key, raw, now());
                    }
                    body
                }
                _ => None,
            },
        };
        count_cache(&caller.tenant, hit.is_some()).await;
        if let Some(body) = hit {
            return json_reply(200, body, &[("x-cache", "hit"), ("x-context-truncated", &truncated), ("server-timing", &timing)]);
        }
    }

    let upstream_body = call.upstream_body();
    if call.stream {
        return stream_through(&upstream_body, cfg.blocklist.clone()).await;
    }
    let (status, bytes) = complete(&upstream_body).await?;
    if status != 200 {
        // The gpu-host's own OpenAI-style error (it never quotes messages).
        let mut r = http::Response::new(String::from_utf8_lossy(&bytes).into_owned());
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        return Ok(r.into_response());
    }
    let mut v: Value = serde_json::from_slice(&bytes).map_err(|_| ApiError::new(502, "upstream_invalid", "the gpu-host answered with invalid JSON"))?;
    let (report, blocked) = filter_completion(&mut v, cfg);
    v["safety"] = json!({ "escalate": false, "output_filter": report });
    let out = v.to_string();
    if let (Some(key), false) = (&cache_key, blocked) {
        if let Some(raw) = cache::seal_entry(&cfg.secret, key, &out, now() + cfg.cache_ttl_seconds)
            && kv.set(key, &raw).await.is_ok()
        {
            recent::put(key, raw, now());
        }
    }
    json_reply(
        200,
        out,
        &[("x-cache", if cache_key.is_some() { "miss" } else { "bypass" }), ("x-context-truncated", &truncated), ("server-timing", &timing)],
    )
}

/// Passes the gpu-host's SSE stream through the output filter
/// (`crate::sse`). The pool returns once the first chunk arrived (a host
/// failing before that is replaced by another).
async fn stream_through(body: &[u8], blocklist: Vec<String>) -> Result<Reply, ApiError> {
    let reply = gpu_pool::chat(body.to_vec(), false).await.map_err(pool_error)?;
    if reply.status != 200 {
        let bytes = reply.body.collect().await;
        let mut r = http::Response::new(String::from_utf8_lossy(&bytes).into_owned());
        *r.status_mut() = http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        return Ok(r.into_response());
    }
    let mut upstream = reply.body;
    let (mut tx, out) = spin_sdk::http::body::stream::<Bytes>();
    spin_sdk::wasip3::spawn(async move {
        let config = output_filter::FilterConfig { blocklist };
        let mut check = |text: &str| stream_check(text, &config);
        let mut filter = crate::sse::StreamFilter::default();
        loop {
            let (result, chunk) = upstream.read(Vec::with_capacity(16 * 1024)).await;
            let pending = filter.push(&chunk, &mut check);
            if !pending.is_empty() && tx.send(Bytes::from(pending)).await.is_err() {
                return;
            }
            if !matches!(result, wit_bindgen::StreamResult::Complete(_)) {
                break;
            }
        }
        let rest = filter.finish(&mut check);
        if !rest.is_empty() {
            let _ = tx.send(Bytes::from(rest)).await;
        }
    });
    let r = http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-store")
        .header("x-cache", "bypass")
        .body(out)
        .expect("static headers");
    Ok(r.into_response())
}

/// A safe sentence put before each streamed group of sentences: the
/// filter's contract blocks a reply in which no sentence survives, which
/// judged one group at a time would block a whole stream for one bad
/// sentence. With the sentinel kept, offending sentences are replaced or
/// removed as in a whole reply. (A plugin that blocks on any finding still
/// blocks: its text does not start with the sentinel.)
const SENTINEL: &str = "Okay.";

fn stream_check(text: &str, config: &output_filter::FilterConfig) -> crate::sse::Filtered {
    let body = text.trim_start();
    let lead = &text[..text.len() - body.len()];
    let v = output_filter::check(&format!("{SENTINEL} {body}"), config);
    match v.action {
        output_filter::Action::Allow => crate::sse::Filtered { text: text.to_string(), blocked: false },
        output_filter::Action::Rewrite if v.text.starts_with(SENTINEL) => {
            let rest = v.text[SENTINEL.len()..].trim_start();
            crate::sse::Filtered { text: if rest.is_empty() { String::new() } else { format!("{lead}{rest}") }, blocked: false }
        }
        _ => crate::sse::Filtered { text: v.text, blocked: true },
    }
}

/// A turn at risk: the crisis message and resources (configurable per
/// deployment), the escalation flag, an audit entry; the model's reply
/// follows only when the payload allows it; nothing is cached.
async fn crisis_reply(
    call: &chat::ChatCall,
    cfg: &Config,
    db: &edge_common::db::Db,
    caller: &Caller,
    client_id: Option<&str>,
    a: &screen::Assessment,
) -> Result<Reply, ApiError> {
    let payload = match screen::build_crisis_payload(a, &cfg.crisis_resources) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chat-api: crisis_resources is invalid ({e}); using the built-in resources");
            screen::build_crisis_payload(a, "").map_err(|_| ApiError::internal("building the crisis payload"))?
        }
    };
    let rule_ids: Vec<String> = a.hits.iter().map(|h| h.rule_id.clone()).collect();
    let ev = store::AuditEvent {
        caller,
        action: "chat.safety_escalation",
        client_id,
        session_id: call.session_id.as_deref(),
        outcome: if payload.escalate { "escalated" } else { "flagged" },
        detail: json!({
            "severity": safety::severity_str(a.severity),
            "categories": a.categories.iter().map(|c| safety::category_str(*c)).collect::<Vec<_>>(),
            "rule_ids": rule_ids,
            "ruleset": a.ruleset,
            "model_reply_allowed": payload.model_reply_allowed,
        }),
    };
    store::retry_busy(|| store::audit(db, ev.clone(), now())).await?;

    let mut content = safety::crisis_text(&payload);
    let mut safety_json = safety::payload_json(&payload);
    if payload.model_reply_allowed {
        let mut upstream = call.upstream.clone();
        upstream.insert("stream".into(), Value::Bool(false));
        upstream.remove("stream_options");
        let body = serde_json::to_vec(&upstream).expect("serialises");
        // The crisis answer stands even when no gpu-host can add to it.
        if let Ok((200, bytes)) = complete(&body).await
            && let Ok(mut v) = serde_json::from_slice::<Value>(&bytes)
        {
            let (report, _) = filter_completion(&mut v, cfg);
            if let Some(text) = v.pointer("/choices/0/message/content").and_then(Value::as_str) {
                content.push_str("\n\n");
                content.push_str(text);
            }
            safety_json["output_filter"] = report;
        }
    }
    let headers = [("x-cache", "bypass"), ("x-safety-escalate", if payload.escalate { "true" } else { "false" })];
    if call.stream {
        let mut r = http::Response::new(sse_events(&call.model, &content, safety_json));
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
        r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        for (k, v) in headers {
            r.headers_mut().insert(k, http::HeaderValue::from_static(v));
        }
        return Ok(r.into_response());
    }
    json_reply(200, completion(&call.model, &content, safety_json).to_string(), &headers)
}
