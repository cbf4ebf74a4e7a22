//! Conformance component for edge-host: one spin-sdk 7 `#[http_service]`
//! that exercises every host interface edge-host provides, so the
//! end-to-end tests (and the benchmark) can drive each one over HTTP.
//!
//! Dispatch is on the request path with a first segment in [`MOUNTS`]
//! removed (the manifests mount this component on exact routes and on
//! wildcards such as `/api/...` and `/minimal/...`).

//!
//! Conventions, so a test can tell a host refusal from a crash:
//! - success: 200 with a JSON body;
//! - the host returned an error (access denied, model not supported,
//!   request denied, …): **422** with `{"error": "<variant>", "message": …}`,
//!   the variant in WIT kebab-case (`access-denied`, `no-such-store`,
//!   `model-not-supported`, `HttpRequestDenied` for wasi:http's error code);
//! - the request itself is malformed: 400 `{"error": "bad-request", …}`;
//! - no such route inside the component: 404 `{"error": "no-such-route"}`.
//!
//! Routes:
//! - `GET  /json`                      trivial JSON (benchmark)
//! - `GET  /headers`                   the `spin-*` headers received
//! - `GET  /vars/<name>`               `spin:variables` get
//! - `GET  /kv/<store>`                key list (`get-keys`)
//! - `PUT  /kv/<store>/<key>`          set (body is the value)
//! - `GET  /kv/<store>/<key>`          get (`{"value": string|null}`)
//! - `DELETE /kv/<store>/<key>`        delete
//! - `GET  /kv/<store>/<key>/exists`   exists
//! - `POST /sql/<db>`                  run statements (async sqlite API)
//! - `GET  /sql-row`                   read one row of `bench` (benchmark)
//! - `POST /llm/infer`, `/llm/embed`   `fermyon:spin/llm`
//! - `POST /outbound`                  outbound `wasi:http` request
//! - `GET  /trap`                      panics (a trap)
//! - `GET  /sleep/<ms>`                async wait (host timer)
//! - `GET  /busy/<ms>`                 busy loop (needs epoch interruption)
//! - `POST /echo`                      body length
//! - `GET  /alloc/<mb>`                allocate and touch `mb` MiB

use serde::Deserialize;
use serde_json::{Value as Json, json};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Json as JsonBody, Method, Request, StatusCode};
use spin_sdk::http_service;
use spin_sdk::{key_value, llm, sqlite, variables};

/// Route prefixes the manifests mount this component under.
const MOUNTS: &[&str] = &["api", "minimal"];

type Reply = (StatusCode, JsonBody<Json>);

fn ok(v: Json) -> Reply {
    (StatusCode::OK, JsonBody(v))
}

fn host_error(variant: &str, message: impl Into<Option<String>>) -> Reply {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        JsonBody(json!({ "error": variant, "message": message.into() })),
    )
}

fn bad_request(message: impl std::fmt::Display) -> Reply {
    (
        StatusCode::BAD_REQUEST,
        JsonBody(json!({ "error": "bad-request", "message": message.to_string() })),
    )
}

fn not_found() -> Reply {
    (
        StatusCode::NOT_FOUND,
        JsonBody(json!({ "error": "no-such-route" })),
    )
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    route(req).await
}

async fn route(req: Request) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.first().is_some_and(|s| MOUNTS.contains(s)) {
        segments.remove(0);
    }

    match (&method, segments.as_slice()) {
        (&Method::GET, ["json"]) => ok(json!({ "message": "hello", "ok": true })),
        (&Method::GET, ["headers"]) => headers(&req),
        (&Method::GET, ["vars", name]) => var(name).await,
        (&Method::GET, ["kv", store]) => kv_keys(store).await,
        (&Method::GET, ["kv", store, key]) => kv_get(store, key).await,
        (&Method::PUT, ["kv", store, key]) => {
            let (store, key) = (store.to_string(), key.to_string());
            match read_body(req).await {
                Ok(body) => kv_set(&store, &key, &body).await,
                Err(e) => e,
            }
        }
        (&Method::DELETE, ["kv", store, key]) => kv_delete(store, key).await,
        (&Method::GET, ["kv", store, key, "exists"]) => kv_exists(store, key).await,
        (&Method::POST, ["sql", db]) => {
            let db = db.to_string();
            match read_json::<SqlBatch>(req).await {
                Ok(batch) => sql(&db, batch).await,
                Err(e) => e,
            }
        }
        (&Method::GET, ["sql-row"]) => sql_row().await,
        (&Method::POST, ["llm", "infer"]) => match read_json::<InferReq>(req).await {
            Ok(r) => llm_infer(r),
            Err(e) => e,
        },
        (&Method::POST, ["llm", "embed"]) => match read_json::<EmbedReq>(req).await {
            Ok(r) => llm_embed(r),
            Err(e) => e,
        },
        (&Method::POST, ["outbound"]) => match read_json::<OutboundReq>(req).await {
            Ok(r) => outbound(r).await,
            Err(e) => e,
        },
        (&Method::GET, ["trap"]) => panic!("conformance: deliberate trap"),
        (&Method::GET, ["sleep", ms]) => match ms.parse::<u64>() {
            Ok(ms) => {
                spin_sdk::wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                ok(json!({ "slept_ms": ms }))
            }
            Err(e) => bad_request(e),
        },
        (&Method::GET, ["busy", ms]) => match ms.parse::<u64>() {
            Ok(ms) => ok(json!({ "busy_ms": busy(ms) })),
            Err(e) => bad_request(e),
        },
        (&Method::POST, ["echo"]) => match read_body(req).await {
            Ok(body) => ok(json!({ "len": body.len() })),
            Err(e) => e,
        },
        (&Method::GET, ["alloc", mb]) => match mb.parse::<usize>() {
            Ok(mb) => alloc(mb),
            Err(e) => bad_request(e),
        },
        _ => not_found(),
    }
}

// ---------------------------------------------------------------- helpers

async fn read_body(req: Request) -> Result<Vec<u8>, Reply> {
    req.into_body()
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| host_error("body-read", format!("{e:?}")))
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request) -> Result<T, Reply> {
    let body = read_body(req).await?;
    serde_json::from_slice(&body).map_err(bad_request)
}

fn headers(req: &Request) -> Reply {
    let mut map = serde_json::Map::new();
    for (name, value) in req.headers() {
        let name = name.as_str();
        if name.starts_with("spin-") || name == "host" {
            map.insert(
                name.to_string(),
                Json::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            );
        }
    }
    ok(json!({ "headers": map, "uri": req.uri().to_string() }))
}

/// Busy-waits on the wall clock: only epoch interruption can stop it.
fn busy(ms: u64) -> u64 {
    let start = std::time::Instant::now();
    let mut spins: u64 = 0;
    while start.elapsed().as_millis() < ms as u128 {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
    start.elapsed().as_millis() as u64
}

fn alloc(mb: usize) -> Reply {
    let bytes = mb << 20;
    let mut v: Vec<u8> = Vec::new();
    if let Err(e) = v.try_reserve_exact(bytes) {
        return host_error("alloc-failed", format!("{e}"));
    }
    v.resize(bytes, 0);
    // Touch every page so the memory is really used.
    for i in (0..bytes).step_by(4096) {
        v[i] = 1;
    }
    let sum: usize = v.iter().step_by(4096).map(|&b| b as usize).sum();
    ok(json!({ "allocated_mb": mb, "pages": sum }))
}

// ------------------------------------------------------------- variables

async fn var(name: &str) -> Reply {
    match variables::get(name).await {
        Ok(value) => ok(json!({ "name": name, "value": value })),
        Err(e) => {
            let (variant, msg) = match e {
                variables::Error::InvalidName(m) => ("invalid-name", m),
                variables::Error::Undefined(m) => ("undefined", m),
                variables::Error::Provider(m) => ("provider", m),
                variables::Error::Other(m) => ("other", m),
            };
            host_error(variant, msg)
        }
    }
}

// ------------------------------------------------------------- key-value

fn kv_error(e: key_value::Error) -> Reply {
    match e {
        key_value::Error::StoreTableFull => host_error("store-table-full", None),
        key_value::Error::NoSuchStore => host_error("no-such-store", None),
        key_value::Error::AccessDenied => host_error("access-denied", None),
        key_value::Error::Other(m) => host_error("other", m),
    }
}

async fn open_store(label: &str) -> Result<key_value::Store, Reply> {
    key_value::Store::open(label).await.map_err(kv_error)
}

async fn kv_set(store: &str, key: &str, value: &[u8]) -> Reply {
    let store = match open_store(store).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    match store.set(key, value).await {
        Ok(()) => ok(json!({ "ok": true })),
        Err(e) => kv_error(e),
    }
}

async fn kv_get(store: &str, key: &str) -> Reply {
    let store = match open_store(store).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    match store.get(key).await {
        Ok(v) => ok(json!({ "value": v.map(|b| String::from_utf8_lossy(&b).into_owned()) })),
        Err(e) => kv_error(e),
    }
}

async fn kv_delete(store: &str, key: &str) -> Reply {
    let store = match open_store(store).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    match store.delete(key).await {
        Ok(()) => ok(json!({ "ok": true })),
        Err(e) => kv_error(e),
    }
}

async fn kv_exists(store: &str, key: &str) -> Reply {
    let store = match open_store(store).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    match store.exists(key).await {
        Ok(b) => ok(json!({ "exists": b })),
        Err(e) => kv_error(e),
    }
}

async fn kv_keys(store: &str) -> Reply {
    let store = match open_store(store).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    match store.get_keys().await.collect().await {
        Ok(mut keys) => {
            keys.sort();
            ok(json!({ "keys": keys }))
        }
        Err(e) => kv_error(e),
    }
}

// ---------------------------------------------------------------- sqlite

/// `{"statements": [{"sql": "...", "params": [1, "a", 2.5, null, {"blob": [1,2]}]}]}`
/// or a single `{"sql": ..., "params": ...}`; all run in order on one
/// connection (so a `:memory:` database works within one request).
#[derive(Deserialize)]
#[serde(untagged)]
enum SqlBatch {
    Many { statements: Vec<SqlStatement> },
    One(SqlStatement),
}

#[derive(Deserialize)]
struct SqlStatement {
    sql: String,
    #[serde(default)]
    params: Vec<Json>,
}

fn sql_error(e: sqlite::Error) -> Reply {
    match e {
        sqlite::Error::NoSuchDatabase => host_error("no-such-database", None),
        sqlite::Error::AccessDenied => host_error("access-denied", None),
        sqlite::Error::InvalidConnection => host_error("invalid-connection", None),
        sqlite::Error::DatabaseFull => host_error("database-full", None),
        sqlite::Error::Io(m) => host_error("io", m),
    }
}

fn to_param(v: &Json) -> Result<sqlite::Value, String> {
    Ok(match v {
        Json::Null => sqlite::Value::Null,
        Json::Bool(b) => sqlite::Value::Integer(*b as i64),
        Json::Number(n) => match n.as_i64() {
            Some(i) => sqlite::Value::Integer(i),
            None => sqlite::Value::Real(n.as_f64().ok_or("bad number")?),
        },
        Json::String(s) => sqlite::Value::Text(s.clone()),
        Json::Object(o) => match o.get("blob") {
            Some(Json::Array(bytes)) => sqlite::Value::Blob(
                bytes
                    .iter()
                    .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or("blob must be a list of bytes")?,
            ),
            _ => return Err("object params must be {\"blob\": [bytes]}".into()),
        },
        Json::Array(_) => return Err("array params are not supported".into()),
    })
}

fn from_value(v: &sqlite::Value) -> Json {
    match v {
        sqlite::Value::Integer(i) => json!(i),
        sqlite::Value::Real(f) => json!(f),
        sqlite::Value::Text(s) => json!(s),
        sqlite::Value::Blob(b) => json!({ "blob": b }),
        sqlite::Value::Null => Json::Null,
    }
}

async fn sql(db: &str, batch: SqlBatch) -> Reply {
    let statements = match batch {
        SqlBatch::Many { statements } => statements,
        SqlBatch::One(s) => vec![s],
    };
    let conn = match sqlite::Connection::open(db).await {
        Ok(c) => c,
        Err(e) => return sql_error(e),
    };
    let mut results = Vec::new();
    for st in statements {
        let params = match st
            .params
            .iter()
            .map(to_param)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(p) => p,
            Err(e) => return bad_request(e),
        };
        let qr = match conn.execute(&st.sql, params).await {
            Ok(qr) => qr,
            Err(e) => return sql_error(e),
        };
        let columns = qr.columns().to_vec();
        let rows = match qr.collect().await {
            Ok(rows) => rows,
            Err(e) => return sql_error(e),
        };
        let rows: Vec<Vec<Json>> = rows
            .iter()
            .map(|r| r.values.iter().map(from_value).collect())
            .collect();
        results.push(json!({
            "columns": columns,
            "rows": rows,
            "changes": conn.changes().await,
            "last_insert_rowid": conn.last_insert_rowid().await,
        }));
    }
    ok(json!({ "results": results }))
}

/// Reads one row of the `bench` table in the default database (seeded by
/// the benchmark / tests with `POST /sql/default`).
async fn sql_row() -> Reply {
    let conn = match sqlite::Connection::open_default().await {
        Ok(c) => c,
        Err(e) => return sql_error(e),
    };
    let mut qr = match conn
        .execute(
            "SELECT id, name FROM bench WHERE id = ?",
            [sqlite::Value::Integer(1)],
        )
        .await
    {
        Ok(qr) => qr,
        Err(e) => return sql_error(e),
    };
    let row = qr.next().await;
    // Drain so the result future resolves.
    while qr.next().await.is_some() {}
    if let Err(e) = qr.result().await {
        return sql_error(e);
    }
    match row {
        Some(row) => ok(json!({
            "id": row.get::<i64>(0),
            "name": row.get::<&str>(1),
        })),
        None => host_error("no-row", None),
    }
}

// ------------------------------------------------------------------- llm

#[derive(Deserialize)]
struct InferReq {
    model: String,
    prompt: String,
    options: Option<InferOptions>,
}

#[derive(Deserialize)]
struct InferOptions {
    max_tokens: u32,
    repeat_penalty: f32,
    repeat_penalty_last_n_token_count: u32,
    temperature: f32,
    top_k: u32,
    top_p: f32,
}

#[derive(Deserialize)]
struct EmbedReq {
    model: String,
    input: Vec<String>,
}

fn llm_error(e: llm::Error) -> Reply {
    match e {
        llm::Error::ModelNotSupported => host_error("model-not-supported", None),
        llm::Error::RuntimeError(m) => host_error("runtime-error", m),
        llm::Error::InvalidInput(m) => host_error("invalid-input", m),
    }
}

fn llm_infer(r: InferReq) -> Reply {
    let params = r.options.map(|o| llm::InferencingParams {
        max_tokens: o.max_tokens,
        repeat_penalty: o.repeat_penalty,
        repeat_penalty_last_n_token_count: o.repeat_penalty_last_n_token_count,
        temperature: o.temperature,
        top_k: o.top_k,
        top_p: o.top_p,
    });
    match llm::llm::infer(&r.model, &r.prompt, params) {
        Ok(res) => ok(json!({
            "text": res.text,
            "usage": {
                "prompt_token_count": res.usage.prompt_token_count,
                "generated_token_count": res.usage.generated_token_count,
            },
        })),
        Err(e) => llm_error(e),
    }
}

fn llm_embed(r: EmbedReq) -> Reply {
    match llm::llm::generate_embeddings(&r.model, &r.input) {
        Ok(res) => ok(json!({
            "embeddings": res.embeddings,
            "usage": { "prompt_token_count": res.usage.prompt_token_count },
        })),
        Err(e) => llm_error(e),
    }
}

// -------------------------------------------------------------- outbound

#[derive(Deserialize)]
struct OutboundReq {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    body: Option<String>,
}

async fn outbound(r: OutboundReq) -> Reply {
    let method = r.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    let result = match (method.as_str(), r.body) {
        ("GET", _) => spin_sdk::http::get(&r.url).await,
        ("POST", body) => spin_sdk::http::post(&r.url, body.unwrap_or_default()).await,
        ("PUT", body) => spin_sdk::http::put(&r.url, body.unwrap_or_default()).await,
        ("DELETE", _) => spin_sdk::http::delete(&r.url).await,
        (other, _) => return bad_request(format!("unsupported method {other}")),
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(code) => return host_error(&error_code_name(&code), format!("{code:?}")),
    };
    let status = resp.status().as_u16();
    match resp.into_body().bytes().await {
        Ok(body) => ok(json!({
            "status": status,
            "body": String::from_utf8_lossy(&body),
        })),
        Err(code) => host_error(&error_code_name(&code), format!("{code:?}")),
    }
}

/// `ErrorCode::HttpRequestDenied` → `HttpRequestDenied` (payload dropped).
fn error_code_name(code: &impl std::fmt::Debug) -> String {
    let s = format!("{code:?}");
    let s = s.strip_prefix("ErrorCode::").unwrap_or(&s);
    s.split(['(', ' ', '{']).next().unwrap_or(s).to_string()
}
