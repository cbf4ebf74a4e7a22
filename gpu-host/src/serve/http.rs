//! The HTTP front: routing, bearer-token auth, body limits, and turning
//! engine events into OpenAI JSON, OpenAI server-sent events or Spin's
//! `/infer` / `/embed` answers. A client that disconnects drops its event
//! receiver, which the engine notices and frees the sequence's KV blocks.

use super::api::{self, ApiError, ChatRequest};
use super::engine::{EngineHandle, Event, Finish, FinishReason, Job, SubmitError};
use super::metrics::Metrics;
use crate::adapter::MoeLoraAdapter;
use crate::generate::GenerateParams;
use crate::tokenizer::TextTokenizer;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

pub type Body = BoxBody<Bytes, Infallible>;

pub struct AppState {
    pub engine: EngineHandle,
    pub tokenizer: Arc<TextTokenizer>,
    /// The names clients may pass as `model` (aliases of the one model).
    pub model_ids: Vec<String>,
    /// The checkpoint's generation defaults (EOS ids, sampling).
    pub defaults: GenerateParams,
    pub auth_token: Option<String>,
    pub metrics: Arc<Metrics>,
    pub started: u64,
    pub max_body_bytes: usize,
    /// MoE-LoRA adapters loaded by name; `model` may name one.
    pub adapters: std::sync::RwLock<std::collections::BTreeMap<String, Arc<MoeLoraAdapter>>>,
    /// The base model's shape, to check adapters against.
    pub model_config: crate::checkpoint::ModelConfig,
}

impl AppState {
    /// Loads the adapter in `dir` under `name` (checked against the base).
    pub fn load_adapter(&self, name: &str, dir: &std::path::Path) -> Result<(), ApiError> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
        {
            return Err(ApiError::invalid(
                "name",
                "`name` must be 1–64 letters, digits, `.`, `_` or `-`",
            ));
        }
        if self.model_ids.iter().any(|m| m == name) {
            return Err(ApiError::invalid(
                "name",
                format!("`{name}` is the base model's name"),
            ));
        }
        let adapter = crate::adapter::load_adapter(dir, &self.model_config)
            .map_err(|e| ApiError::invalid("path", format!("cannot load the adapter: {e:#}")))?;
        let mut map = self.adapters.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(name) {
            return Err(ApiError::new(
                409,
                "invalid_request_error",
                format!("an adapter named `{name}` is already loaded"),
            ));
        }
        map.insert(name.to_string(), Arc::new(adapter));
        tracing::info!(adapter = name, "adapter loaded");
        Ok(())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed())
        .expect("valid response")
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

fn error_response(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(status, &e.body());
    if e.status == 429 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    if e.status == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// Serves one request; never fails (errors become answers).
pub async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let endpoint: &'static str = match path.as_str() {
        "/v1/chat/completions" => "chat_completions",
        "/v1/models" => "models",
        "/infer" => "infer",
        "/embed" => "embed",
        "/health" => "health",
        "/metrics" => "metrics",
        p if p == "/v1/adapters" || p.starts_with("/v1/adapters/") => "adapters",
        _ => "other",
    };
    let response = match route(&state, req, endpoint).await {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::warn!(endpoint, status = e.status, error = %e.message, "request failed");
            }
            error_response(&e)
        }
    };
    state.metrics.request(endpoint, response.status().as_u16());
    Ok(response)
}

async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    endpoint: &'static str,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    if endpoint != "health" {
        authorize(state, &req)?;
    }
    let expect = |m: Method| {
        if method == m {
            Ok(())
        } else {
            Err(ApiError::new(
                405,
                "invalid_request_error",
                format!("{} takes {m}", req.uri().path()),
            ))
        }
    };
    match endpoint {
        "health" => {
            expect(Method::GET)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"status": "ok", "models": state.model_ids}),
            ))
        }
        "metrics" => {
            expect(Method::GET)?;
            Ok(full(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                state.metrics.render(),
            ))
        }
        "models" => {
            expect(Method::GET)?;
            let mut data: Vec<Value> = state
                .model_ids
                .iter()
                .map(|id| json!({"id": id, "object": "model", "created": state.started, "owned_by": "gpu-host"}))
                .collect();
            for name in state
                .adapters
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
            {
                data.push(json!({"id": name, "object": "model", "created": state.started, "owned_by": "gpu-host", "parent": state.model_ids[0]}));
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": data}),
            ))
        }
        "chat_completions" => {
            expect(Method::POST)?;
            let body = read_body(state, req).await?;
            chat(state, api::parse_chat_request(&body)?).await
        }
        "infer" => {
            expect(Method::POST)?;
            let body = read_body(state, req).await?;
            infer(state, api::parse_infer_request(&body)?).await
        }
        "embed" => {
            expect(Method::POST)?;
            let body = read_body(state, req).await?;
            let (model, input) = api::parse_embed_request(&body)?;
            embed(state, &model, &input).await
        }
        "adapters" => adapters(state, req).await,
        _ => Err(ApiError::new(
            404,
            "not_found_error",
            format!("no route for {method} {}", req.uri().path()),
        )),
    }
}

/// `GET /v1/adapters`, `POST /v1/adapters {"name", "path"}` (a directory on
/// this host), `DELETE /v1/adapters/NAME`. Requests already running keep
/// the adapter they started with.
async fn adapters(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let name = req
        .uri()
        .path()
        .strip_prefix("/v1/adapters")
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string();
    match (req.method().clone(), name.is_empty()) {
        (Method::GET, true) => {
            let list: Vec<Value> = state
                .adapters
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(n, a)| json!({"name": n, "experts": a.moe.expert_names, "top_k": a.moe.top_k, "r": a.rank}))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": list}),
            ))
        }
        (Method::POST, true) => {
            let body = read_body(state, req).await?;
            let m = api::parse_object(&body)?;
            let field = |k: &str| {
                m.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ApiError::invalid(k, format!("`{k}` is required and must be a string"))
                    })
            };
            let (name, path) = (field("name")?, field("path")?);
            let st = state.clone();
            let n = name.clone();
            tokio::task::spawn_blocking(move || st.load_adapter(&n, std::path::Path::new(&path)))
                .await
                .map_err(|e| {
                    ApiError::new(500, "server_error", format!("loading failed: {e}"))
                })??;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"name": name, "object": "adapter"}),
            ))
        }
        (Method::DELETE, false) => {
            let removed = state
                .adapters
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            match removed {
                Some(_) => {
                    tracing::info!(adapter = %name, "adapter unloaded");
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"name": name, "deleted": true}),
                    ))
                }
                None => Err(ApiError::new(
                    404,
                    "not_found_error",
                    format!("no adapter named `{name}` is loaded"),
                )),
            }
        }
        _ => Err(ApiError::new(
            405,
            "invalid_request_error",
            "use GET or POST /v1/adapters, or DELETE /v1/adapters/NAME",
        )),
    }
}

fn authorize(state: &AppState, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(token) = &state.auth_token else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        // Constant-time comparison: the token is a secret.
        Some(t)
            if t.len() == token.len()
                && t.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0 =>
        {
            Ok(())
        }
        Some(_) => Err(
            ApiError::new(401, "authentication_error", "the bearer token is not valid")
                .with_code("invalid_api_key"),
        ),
        None => Err(ApiError::new(
            401,
            "authentication_error",
            "an `Authorization: Bearer <token>` header is required",
        )
        .with_code("invalid_api_key")),
    }
}

async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), state.max_body_bytes)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            413,
            "invalid_request_error",
            format!(
                "the request body is larger than {} bytes",
                state.max_body_bytes
            ),
        )),
        Err(e) => Err(ApiError::new(
            400,
            "invalid_request_error",
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// The base model (`None`) or the adapter a request's `model` names.
type Selected = Option<(String, Arc<MoeLoraAdapter>)>;

fn check_model(state: &AppState, model: &str) -> Result<Selected, ApiError> {
    if state.model_ids.iter().any(|m| m == model) {
        Ok(None)
    } else if let Some(a) = state
        .adapters
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(model)
    {
        Ok(Some((model.to_string(), a.clone())))
    } else {
        Err(ApiError {
            param: Some("model".into()),
            ..ApiError::new(
                404,
                "invalid_request_error",
                format!(
                    "the model `{model}` does not exist; this server has {}",
                    state
                        .model_ids
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_code("model_not_found")
        })
    }
}

/// Checks the prompt fits and returns how many tokens may be generated.
fn fit(
    state: &AppState,
    prompt_tokens: usize,
    requested: Option<usize>,
    param: &str,
) -> Result<usize, ApiError> {
    let cfg = state.engine.config();
    if prompt_tokens == 0 {
        return Err(ApiError::invalid(param, "the prompt is empty"));
    }
    if prompt_tokens >= cfg.context_len {
        return Err(ApiError::invalid(
            param,
            format!(
                "the prompt is {prompt_tokens} tokens; this model's context is {} tokens, including the reply (shorten the conversation)",
                cfg.context_len
            ),
        )
        .with_code("context_length_exceeded"));
    }
    if (prompt_tokens + 1).div_ceil(cfg.block_size) > cfg.num_blocks {
        return Err(ApiError::invalid(
            param,
            format!(
                "the prompt is {prompt_tokens} tokens, more than this server's KV cache holds (see --kv-cache-mb)"
            ),
        ));
    }
    let room = cfg.context_len - prompt_tokens;
    Ok(requested.unwrap_or(state.defaults.max_new_tokens).min(room))
}

fn submit(state: &AppState, job: Job) -> Result<(), ApiError> {
    state.engine.submit(job).map_err(|e| match e {
        SubmitError::QueueFull => ApiError::new(
            429,
            "rate_limit_error",
            "the server is at capacity; retry shortly",
        )
        .with_code("rate_limit_exceeded"),
        SubmitError::Stopped => {
            ApiError::new(503, "server_error", "the inference engine has stopped")
        }
    })
}

fn finish_reason(f: &Finish) -> &'static str {
    match f.reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(f: &Finish) -> Value {
    json!({
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": f.cached_tokens},
    })
}

fn params_for_chat(
    state: &AppState,
    r: &ChatRequest,
    max_new_tokens: usize,
) -> Result<GenerateParams, ApiError> {
    let mut p = state.defaults.clone();
    p.max_new_tokens = max_new_tokens;
    if let Some(t) = r.temperature {
        p.sampling.temperature = t;
    }
    if let Some(v) = r.top_p {
        p.sampling.top_p = v;
    }
    if let Some(k) = r.top_k {
        p.sampling.top_k = k;
    }
    if let Some(v) = r.repetition_penalty {
        p.sampling.repetition_penalty = v;
    }
    // Without a seed, sampled requests differ from call to call.
    p.sampling.seed = r.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    p.stop_strings = r.stop.clone();
    if r.ignore_eos {
        p.eos_token_ids.clear();
    }
    p.sampling
        .validate()
        .map_err(|e| ApiError::invalid("temperature", e.to_string()))?;
    Ok(p)
}

async fn chat(state: &Arc<AppState>, r: ChatRequest) -> Result<Response<Body>, ApiError> {
    let adapter = check_model(state, &r.model)?;
    let (_, prompt) = state.tokenizer.encode_chat(&r.messages).map_err(|e| {
        ApiError::invalid(
            "messages",
            format!("cannot render the conversation with the model's chat template: {e:#}"),
        )
    })?;
    let max_new = fit(state, prompt.len(), r.max_tokens, "messages")?;
    let params = params_for_chat(state, &r, max_new)?;
    let (tx, rx) = mpsc::unbounded_channel();
    submit(
        state,
        Job::Generate {
            prompt,
            params,
            penalty_window: None,
            adapter,
            events: tx,
        },
    )?;
    let id = format!("chatcmpl-{:016x}{:08x}", now(), rand_u32());
    let created = now();
    if r.stream {
        return Ok(stream_chat(
            r.model.clone(),
            id,
            created,
            r.include_usage,
            rx,
        ));
    }
    let (text, f) = collect_text(rx).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": r.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish_reason(&f)}],
            "usage": usage(&f),
            "system_fingerprint": null,
        }),
    ))
}

/// Waits for a generation's whole text and how it ended.
async fn collect_text(
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Result<(String, Finish), ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done(f) => return Ok((text, f)),
            Event::Error(e) => return Err(ApiError::new(500, "server_error", e)),
            Event::Embeddings(..) => break,
        }
    }
    Err(ApiError::new(
        500,
        "server_error",
        "the engine ended the request without an answer",
    ))
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now()) as u32
}

/// OpenAI's streaming format: `data: {chunk}\n\n` per piece of text, a last
/// chunk with the finish reason (and, if asked, one with usage), then
/// `data: [DONE]`.
fn stream_chat(
    model: String,
    id: String,
    created: u64,
    include_usage: bool,
    rx: mpsc::UnboundedReceiver<Event>,
) -> Response<Body> {
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let sse = |v: &Value| Bytes::from(format!("data: {v}\n\n"));
    let first = sse(&chunk(json!({"role": "assistant", "content": ""}), None));
    // State: (receiver, pending frames, finished)
    let stream = futures::stream::unfold(
        (rx, vec![first], false),
        move |(mut rx, mut pending, done)| {
            let chunk = chunk.clone();
            async move {
                loop {
                    if !pending.is_empty() {
                        let b = pending.remove(0);
                        return Some((Ok::<_, Infallible>(Frame::data(b)), (rx, pending, done)));
                    }
                    if done {
                        return None;
                    }
                    match rx.recv().await {
                        Some(Event::Text(t)) => {
                            pending.push(sse(&chunk(json!({"content": t}), None)))
                        }
                        Some(Event::Done(f)) => {
                            pending.push(sse(&chunk(json!({}), Some(finish_reason(&f)))));
                            if include_usage {
                                let mut u = chunk(json!({}), None);
                                u["choices"] = json!([]);
                                u["usage"] = usage(&f);
                                pending.push(sse(&u));
                            }
                            pending.push(Bytes::from_static(b"data: [DONE]\n\n"));
                            return next_frame(rx, pending);
                        }
                        Some(Event::Error(e)) => {
                            pending.push(sse(&ApiError::new(500, "server_error", e).body()));
                            pending.push(Bytes::from_static(b"data: [DONE]\n\n"));
                            return next_frame(rx, pending);
                        }
                        Some(Event::Embeddings(..)) | None => return None,
                    }
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(StreamBody::new(stream).boxed())
        .expect("valid response")
}

type StreamState = (mpsc::UnboundedReceiver<Event>, Vec<Bytes>, bool);

fn next_frame(
    rx: mpsc::UnboundedReceiver<Event>,
    mut pending: Vec<Bytes>,
) -> Option<(Result<Frame<Bytes>, Infallible>, StreamState)> {
    let b = pending.remove(0);
    Some((Ok(Frame::data(b)), (rx, pending, true)))
}

async fn infer(state: &Arc<AppState>, r: api::InferRequest) -> Result<Response<Body>, ApiError> {
    let adapter = check_model(state, &r.model)?;
    let prompt = state
        .tokenizer
        .encode(&r.prompt, true)
        .map_err(|e| ApiError::invalid("prompt", format!("cannot tokenize the prompt: {e:#}")))?;
    let max_new = fit(state, prompt.len(), Some(r.max_tokens), "prompt")?;
    let mut params = state.defaults.clone();
    params.max_new_tokens = max_new;
    params.sampling.temperature = r.temperature;
    params.sampling.top_k = r.top_k;
    params.sampling.top_p = r.top_p;
    params.sampling.repetition_penalty = r.repeat_penalty;
    params.sampling.seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let window = (r.repeat_penalty_last_n > 0).then_some(r.repeat_penalty_last_n);
    let (tx, rx) = mpsc::unbounded_channel();
    submit(
        state,
        Job::Generate {
            prompt,
            params,
            penalty_window: window,
            adapter,
            events: tx,
        },
    )?;
    let (text, f) = collect_text(rx).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"text": text, "usage": {"promptTokenCount": f.prompt_tokens, "generatedTokenCount": f.completion_tokens}}),
    ))
}

async fn embed(
    state: &Arc<AppState>,
    model: &str,
    input: &[String],
) -> Result<Response<Body>, ApiError> {
    if check_model(state, model)?.is_some() {
        return Err(ApiError::invalid(
            "model",
            "embeddings come from the base model; name it, not an adapter",
        ));
    }
    let mut inputs = Vec::with_capacity(input.len());
    for (i, text) in input.iter().enumerate() {
        let ids = state.tokenizer.encode(text, true).map_err(|e| {
            ApiError::invalid(
                format!("input[{i}]"),
                format!("cannot tokenize `input[{i}]`: {e:#}"),
            )
        })?;
        // Embedding needs no room for a reply, but does need one position.
        fit(state, ids.len(), Some(1), &format!("input[{i}]"))?;
        inputs.push(ids);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    submit(state, Job::Embed { inputs, events: tx })?;
    match rx.recv().await {
        Some(Event::Embeddings(vectors, tokens)) => Ok(json_response(
            StatusCode::OK,
            &json!({"embeddings": vectors, "usage": {"promptTokenCount": tokens}}),
        )),
        Some(Event::Error(e)) => Err(ApiError::new(500, "server_error", e)),
        _ => Err(ApiError::new(
            500,
            "server_error",
            "the engine ended the request without an answer",
        )),
    }
}
