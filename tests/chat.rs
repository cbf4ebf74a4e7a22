//! End-to-end tests of the edge chat API (issue 7) over real processes:
//! edge-host running the `api` and `safety-screen` components from the root
//! spin.toml, and two `gpu-host serve` processes on the tiny model.
//!
//! Run: `cargo test -p e2e-tests --test chat -- --nocapture`.

use anyhow::{Context, Result};
use e2e_tests::gpu_host::{GpuHost, tiny_model};
use e2e_tests::{AppDir, EdgeHost, target_dir};
use reqwest::blocking::Response;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CHAT_SECRET: &str = "test-chat-secret-0123456789abcdef";
const ADMIN_KEY: &str = "tk_bootstrap_admin_key_for_the_chat_tests_0001";
const GPU_TOKEN: &str = "gpu-token-for-chat-tests";
const CHAT_200: &str = "gpu_host_requests_total{endpoint=\"chat_completions\",status=\"200\"}";

/// Cargo in this checkout (see tests/safety_plugins.rs for why not `e2e_tests::cargo`).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits inside the workspace").to_path_buf()
}

/// Private copies of the gpu-host and edge-host binaries built from this
/// checkout. The shared target dir's `debug/gpu-host` and `debug/edge-host`
/// are rebuilt by other checkouts at any time (an older gpu-host without
/// `serve` made these tests fail mid-run); the support code takes
/// `GPU_HOST_BIN` / `EDGE_HOST_BIN` when set, so point them at copies.
fn private_binaries() {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = cargo().args(["build", "-p", "gpu-host", "-p", "edge-host"]).status().expect("running cargo");
        assert!(status.success(), "building gpu-host and edge-host failed");
        let dir = tempfile::Builder::new().prefix("chat-e2e-bin-").tempdir().expect("temp dir");
        for (name, var) in [("gpu-host", "GPU_HOST_BIN"), ("edge-host", "EDGE_HOST_BIN")] {
            let copy = dir.path().join(name);
            std::fs::copy(target_dir().join("debug").join(name), &copy).expect("copying the binary");
            // SAFETY: set once, before any test thread starts a process
            // (every test calls this first, and OnceLock makes the others wait).
            unsafe { std::env::set_var(var, &copy) };
        }
        dir
    });
}

/// The chat components: (component id, wasm) for api, safety-screen, gpu-pool.
fn components() -> &'static [(&'static str, PathBuf)] {
    static W: OnceLock<Vec<(&'static str, PathBuf)>> = OnceLock::new();
    W.get_or_init(|| {
        let status = cargo()
            .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "chat-api", "-p", "safety-screen", "-p", "gpu-pool"])
            .status()
            .expect("running cargo");
        assert!(status.success(), "building the chat components failed");
        let dir = target_dir().join("wasm32-wasip2/release");
        vec![
            ("api", dir.join("chat_api.wasm")),
            ("safety-screen", dir.join("safety_screen.wasm")),
            ("gpu-pool", dir.join("gpu_pool.wasm")),
        ]
    })
}

/// The root spin.toml with only the chat API and its dependencies.
fn write_manifest(app: &AppDir) -> Result<()> {
    let text = std::fs::read_to_string(root().join("spin.toml"))?;
    let mut manifest: toml::Table = toml::from_str(&text)?;
    let comps = manifest["component"].as_table_mut().context("[component]")?;
    comps.retain(|k, _| components().iter().any(|(id, _)| *id == k));
    for (id, wasm) in components() {
        comps[*id].as_table_mut().unwrap().insert("source".into(), wasm.display().to_string().into());
    }
    manifest["trigger"]["http"].as_array_mut().unwrap().retain(|t| t["component"].as_str() == Some("api"));
    std::fs::write(&app.manifest, toml::to_string(&manifest)?)?;
    Ok(())
}

struct Stack {
    edge: EdgeHost,
    gpus: Vec<GpuHost>,
    app: AppDir,
    _token_dir: tempfile::TempDir,
}

fn start(extra_env: &[(&str, &str)]) -> Result<Stack> {
    private_binaries();
    let token_dir = tempfile::tempdir()?;
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, GPU_TOKEN)?;
    let args = ["--auth-token-file", token_file.to_str().unwrap(), "--served-model-name", "tiny"];
    let gpus = vec![GpuHost::start(tiny_model(), &args)?, GpuHost::start(tiny_model(), &args)?];
    let hosts = gpus.iter().map(|g| g.base_url.clone()).collect::<Vec<_>>().join(",");
    let app = AppDir::empty()?;
    write_manifest(&app)?;
    let mut cmd = app.command();
    cmd.env("SPIN_VARIABLE_CHAT_SECRET", CHAT_SECRET)
        .env("SPIN_VARIABLE_BOOTSTRAP_API_KEY", ADMIN_KEY)
        .env("SPIN_VARIABLE_GPU_HOSTS", &hosts)
        .env("SPIN_VARIABLE_GPU_HOST_TOKEN", GPU_TOKEN)
        .env("SPIN_VARIABLE_UPSTREAM_CONNECT_TIMEOUT_MS", "20000");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let edge = cmd.spawn()?;
    Ok(Stack { edge, gpus, app, _token_dir: token_dir })
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    body: Value,
}

fn read(r: Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, headers, text, body }
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    fn content(&self) -> String {
        self.body["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
    }
}

impl Stack {
    fn call(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<&Value>) -> Resp {
        let mut rb = self.edge.client.request(method.clone(), self.edge.url(path)).timeout(Duration::from_secs(120));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        read(rb.send().unwrap_or_else(|e| panic!("{method} {path}: {e}")))
    }
    fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.call(reqwest::Method::POST, path, Some(key), Some(body))
    }
    fn chat(&self, key: &str, body: &Value) -> Resp {
        self.post("/v1/chat/completions", key, body)
    }
    fn create_key(&self, role: &str, client_id: Option<&str>) -> String {
        let r = self.post("/v1/keys", ADMIN_KEY, &json!({"name": format!("{role} key"), "role": role, "client_id": client_id}));
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["key"].as_str().unwrap().to_string()
    }
    /// Chat completions the gpu-hosts answered with 200, summed.
    fn gpu_chats(&self) -> f64 {
        self.gpus.iter().map(|g| g.metric(CHAT_200).unwrap_or(0.0)).sum()
    }
}

fn chat_body(user: &str, extra: Value) -> Value {
    let mut b = json!({"model": "tiny", "max_tokens": 8,
        "messages": [{"role": "system", "content": "You are a careful listener."}, {"role": "user", "content": user}]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// The `data:` payloads of a server-sent-event body.
fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n").filter_map(|e| e.trim().strip_prefix("data: ")).map(str::to_string).collect()
}

#[test]
fn chat_auth_cache_streaming_and_safety() -> Result<()> {
    let t0 = Instant::now();
    let s = start(&[])?;
    println!("stack up in {:?}", t0.elapsed());
    let user_text = "I have been feeling anxious before work all week.";

    // ---- authentication: missing, wrong, then the bootstrap admin works
    let r = s.call(reqwest::Method::POST, "/v1/chat/completions", None, Some(&chat_body(user_text, json!({}))));
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("Bearer"), "{}", r.text);
    let r = s.chat("tk_0000000000000000000000000000000000", &chat_body(user_text, json!({})));
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(!r.body["message"].as_str().unwrap().is_empty());

    // ---- key admin
    let therapist = s.create_key("therapist", None);
    let client = s.create_key("client", Some("client-1"));
    let auditor = s.create_key("auditor", None);
    let r = s.post("/v1/keys", &therapist, &json!({"name": "x", "role": "admin"}));
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s.post("/v1/keys", ADMIN_KEY, &json!({"name": "x", "role": "client"}));
    assert_eq!(r.status, 400, "a client key needs a client_id: {}", r.text);
    let r = s.call(reqwest::Method::GET, "/v1/keys", Some(ADMIN_KEY), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["keys"].as_array().unwrap().len(), 4, "{}", r.text);
    for secret in [&therapist, &client, &auditor] {
        assert!(!r.text.contains(secret.as_str()), "the list never shows a key");
    }

    // ---- roles on chat
    let r = s.chat(&auditor, &chat_body(user_text, json!({})));
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("auditor"));
    let r = s.chat(&client, &chat_body(user_text, json!({"client_id": "client-2"})));
    assert_eq!(r.status, 403, "{}", r.text);

    // ---- bad JSON
    let r = read(s.edge.client.post(s.edge.url("/v1/chat/completions")).bearer_auth(&therapist)
        .header("content-type", "application/json").body("{\"model\": \"tiny\", \"messages\": [").send()?);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("JSON"), "{}", r.text);
    let r = s.chat(&therapist, &json!({"model": "tiny"}));
    assert_eq!(r.status, 400, "{}", r.text);

    // ---- chat works (client for its own client_id, therapist for anyone)
    let t = Instant::now();
    let r = s.chat(&client, &chat_body(user_text, json!({"temperature": 0.8, "session_id": "sess-1"})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "chat.completion");
    assert!(!r.content().is_empty(), "{}", r.text);
    assert_eq!(r.header("x-cache"), "bypass");
    println!("chat (non-deterministic, through a gpu-host): {:?}", t.elapsed());

    // ---- deterministic request: miss, then a hit that never reaches a gpu-host
    let det = chat_body("Can you help me plan a calmer morning?", json!({"temperature": 0, "client_id": "client-9"}));
    let before = s.gpu_chats();
    let t = Instant::now();
    let miss = s.chat(&therapist, &det);
    let miss_time = t.elapsed();
    assert_eq!(miss.status, 200, "{}", miss.text);
    assert_eq!(miss.header("x-cache"), "miss");
    assert_eq!(s.gpu_chats(), before + 1.0, "the miss went to one gpu-host");
    let t = Instant::now();
    let hit = s.chat(&therapist, &det);
    let hit_time = t.elapsed();
    assert_eq!(hit.status, 200, "{}", hit.text);
    assert_eq!(hit.header("x-cache"), "hit");
    assert_eq!(hit.content(), miss.content());
    assert_eq!(hit.body, miss.body, "identical reply");
    assert_eq!(s.gpu_chats(), before + 1.0, "a cache hit never reaches a gpu-host");
    println!("deterministic chat: miss {miss_time:?}, hit {hit_time:?}");
    // Another tenant does not share the cache namespace.
    let other = s.post("/v1/keys", ADMIN_KEY, &json!({"name": "t2", "role": "therapist", "tenant": "clinic-2"}));
    assert_eq!(other.status, 201, "{}", other.text);
    let r = s.chat(other.body["key"].as_str().unwrap(), &det);
    assert_eq!((r.status, r.header("x-cache")), (200, "miss"), "{}", r.text);

    // ---- streaming is passed through as SSE
    let t = Instant::now();
    let r = s.chat(&therapist, &chat_body(user_text, json!({"stream": true})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("content-type").starts_with("text/event-stream"), "{:?}", r.headers);
    let events = sse_events(&r.text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", r.text);
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!streamed.is_empty(), "{}", r.text);
    println!("streamed chat: {:?}, {} events", t.elapsed(), events.len());

    // ---- crisis: escalation response, not cached, audited
    let crisis_text = "I want to kill myself tonight, I have the pills saved up";
    let crisis = chat_body(crisis_text, json!({"temperature": 0, "client_id": "client-7", "session_id": "sess-7"}));
    let before = s.gpu_chats();
    for round in 0..2 {
        let r = s.chat(&therapist, &crisis);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("x-cache"), "bypass", "round {round}");
        assert_eq!(r.header("x-safety-escalate"), "true");
        let safety = &r.body["safety"];
        assert_eq!(safety["escalate"], true, "{}", r.text);
        assert_eq!(safety["severity"], "imminent");
        assert!(safety["resources"].as_array().unwrap().len() >= 2, "{}", r.text);
        assert!(safety["categories"].as_array().unwrap().contains(&json!("suicide")));
        assert!(r.content().contains("988") || r.content().contains("911"), "{}", r.content());
    }
    // Imminent risk: the crisis message stands alone (no model call).
    assert_eq!(s.gpu_chats(), before);
    // Moderate/high risk: the model's reply follows the crisis message.
    let r = s.chat(&client, &chat_body("I want to die", json!({"temperature": 0})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["safety"]["escalate"], true, "{}", r.text);
    assert_eq!(r.header("x-cache"), "bypass");
    // A streaming client gets the crisis reply as SSE.
    let r = s.chat(&therapist, &chat_body(crisis_text, json!({"stream": true})));
    assert_eq!(r.status, 200, "{}", r.text);
    let events = sse_events(&r.text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let first: Value = serde_json::from_str(&events[0])?;
    assert_eq!(first["safety"]["escalate"], true, "{}", r.text);

    let r = s.call(reqwest::Method::GET, "/v1/chat/audit", Some(&auditor), None);
    assert_eq!(r.status, 200, "{}", r.text);
    let escalations: Vec<&Value> = r.body["entries"].as_array().unwrap().iter()
        .filter(|e| e["action"] == "chat.safety_escalation").collect();
    assert_eq!(escalations.len(), 4, "{}", r.text);
    assert!(escalations.iter().any(|e| e["client_id"] == "client-7" && e["session_id"] == "sess-7"
        && e["outcome"] == "escalated" && e["detail"]["severity"] == "imminent"), "{}", r.text);
    assert!(!r.text.contains("kill") && !r.text.contains("pills"), "no message text in the audit trail");
    let r = s.call(reqwest::Method::GET, "/v1/chat/audit", Some(&therapist), None);
    assert_eq!(r.status, 403);

    let r = s.call(reqwest::Method::GET, "/v1/chat/stats", Some(&auditor), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["cache"]["hits"], 1, "{}", r.text);
    assert_eq!(r.body["cache"]["misses"], 2, "{}", r.text);

    // ---- revocation
    let list = s.call(reqwest::Method::GET, "/v1/keys", Some(ADMIN_KEY), None);
    let id = list.body["keys"].as_array().unwrap().iter().find(|k| k["role"] == "auditor").unwrap()["id"].as_str().unwrap().to_string();
    let r = s.call(reqwest::Method::DELETE, &format!("/v1/keys/{id}"), Some(&therapist), None);
    assert_eq!(r.status, 403);
    let r = s.call(reqwest::Method::DELETE, &format!("/v1/keys/{id}"), Some(ADMIN_KEY), None);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.call(reqwest::Method::GET, "/v1/chat/stats", Some(&auditor), None);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("revoked"));

    // ---- no message text in the edge's logs
    let log = s.edge.stderr();
    for phrase in [user_text, crisis_text, "calmer morning"] {
        assert!(!log.contains(phrase), "PHI in edge-host's log");
    }
    println!("whole test: {:?}", t0.elapsed());
    Ok(())
}

#[test]
fn a_gpu_host_dies_and_no_chat_fails() -> Result<()> {
    let mut s = start(&[])?;
    let s_ref = &s;
    let run_batch = |n: usize, tag: &str| -> Vec<(u16, String)> {
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    // Long replies during the kill, so some are in flight on the dying host.
                    let extra = if tag == "during" {
                        json!({"temperature": 0.9, "max_tokens": 64, "ignore_eos": true})
                    } else {
                        json!({"temperature": 0.9})
                    };
                    let body = chat_body(&format!("Tell me something kind, please ({tag} {i})."), extra);
                    sc.spawn(move || {
                        let r = s_ref.chat(ADMIN_KEY, &body);
                        (r.status, r.text)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    // Least outstanding requests (ties at random) spreads a concurrent
    // batch over both hosts; a few batches make that certain.
    let mut served_before = vec![0.0; 2];
    for _ in 0..5 {
        for (status, text) in run_batch(4, "warm") {
            assert_eq!(status, 200, "{text}");
        }
        served_before = s.gpus.iter().map(|g| g.metric(CHAT_200).unwrap_or(0.0)).collect();
        if served_before.iter().all(|&n| n >= 1.0) {
            break;
        }
    }
    println!("served per host before the kill: {served_before:?}");
    assert!(served_before.iter().all(|&n| n >= 1.0), "both hosts got traffic: {served_before:?}");

    // Kill one host while a batch is in flight.
    let t = Instant::now();
    let results = std::thread::scope(|sc| {
        let batch = sc.spawn(|| run_batch(6, "during"));
        // Kill once host 0 is generating for the batch (not at a fixed
        // time: on a loaded machine the batch may not have reached it yet).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && s_ref.gpus[0].metric("gpu_host_running_sequences").unwrap_or(0.0) < 1.0
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        // SIGKILL by pid: the batch threads hold shared borrows of the stack.
        unsafe { libc::kill(s_ref.gpus[0].pid() as i32, libc::SIGKILL) };
        batch.join().unwrap()
    });
    for (status, text) in &results {
        assert_eq!(*status, 200, "a chat failed while a gpu-host died: {text}");
    }
    let failovers = s.edge.stderr().matches("trying another").count();
    println!("requests failed over to the other host: {failovers}");
    assert!(failovers >= 1, "the kill hit no request in flight; the test proves nothing");
    for (status, text) in run_batch(4, "after") {
        assert_eq!(status, 200, "{text}");
    }
    // Streaming after the failure goes to the survivor.
    let r = s.chat(ADMIN_KEY, &chat_body("Hello again.", json!({"stream": true})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(sse_events(&r.text).last().map(String::as_str), Some("[DONE]"));
    println!("kill phase: {:?}", t.elapsed());

    // None healthy: 503 with a message.
    s.gpus[1].kill();
    s.gpus[0].kill();
    let r = s.chat(ADMIN_KEY, &chat_body("Anyone there?", json!({})));
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("gpu-host"), "{}", r.text);
    Ok(())
}


#[test]
fn cache_entries_expire_and_are_not_stored_in_the_clear() -> Result<()> {
    let s = start(&[("SPIN_VARIABLE_CACHE_TTL_SECONDS", "1")])?;
    let det = chat_body("What could help me sleep better?", json!({"seed": 7, "max_tokens": 16}));
    let before = s.gpu_chats();
    let miss = s.chat(ADMIN_KEY, &det);
    assert_eq!((miss.status, miss.header("x-cache")), (200, "miss"), "{}", miss.text);
    let hit = s.chat(ADMIN_KEY, &det);
    assert_eq!((hit.status, hit.header("x-cache")), (200, "hit"), "{}", hit.text);
    assert_eq!(hit.body, miss.body);
    // The cached reply is sealed: its text is nowhere in the data dir's files.
    let reply = miss.content();
    assert!(reply.len() >= 8, "a reply long enough to search for: {reply:?}");
    for entry in std::fs::read_dir(&s.app.data_dir)? {
        let bytes = std::fs::read(entry?.path())?;
        assert!(!String::from_utf8_lossy(&bytes).contains(&reply), "a cached reply in the clear");
        assert!(!String::from_utf8_lossy(&bytes).contains("sleep better"), "request text stored");
    }
    std::thread::sleep(Duration::from_millis(2100));
    let again = s.chat(ADMIN_KEY, &det);
    assert_eq!((again.status, again.header("x-cache")), (200, "miss"), "expired after the TTL: {}", again.text);
    assert_eq!(again.content(), miss.content(), "seeded: same reply from the model");
    assert_eq!(s.gpu_chats(), before + 2.0);
    Ok(())
}

/// The root spin.toml as `cargo xtask up` serves it: progress's `/v1/...`
/// and the chat API's routes side by side.
#[test]
fn the_root_manifest_serves_chat_beside_progress() -> Result<()> {
    private_binaries();
    let status = cargo()
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "progress"])
        .status()?;
    assert!(status.success(), "building progress failed");
    let progress = target_dir().join("wasm32-wasip2/release/progress.wasm");
    let text = std::fs::read_to_string(root().join("spin.toml"))?;
    let mut manifest: toml::Table = toml::from_str(&text)?;
    let comps = manifest["component"].as_table_mut().context("[component]")?;
    for (id, path) in components().iter().map(|(id, p)| (*id, p)).chain([("progress", &progress)]) {
        comps[id].as_table_mut().unwrap().insert("source".into(), path.display().to_string().into());
    }
    let app = AppDir::empty()?;
    std::fs::write(&app.manifest, toml::to_string(&manifest)?)?;
    let token_dir = tempfile::tempdir()?;
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, GPU_TOKEN)?;
    let gpu = GpuHost::start(tiny_model(), &["--auth-token-file", token_file.to_str().unwrap(), "--served-model-name", "tiny"])?;
    let edge = app
        .command()
        .env("SPIN_VARIABLE_CHAT_SECRET", CHAT_SECRET)
        .env("SPIN_VARIABLE_BOOTSTRAP_API_KEY", ADMIN_KEY)
        .env("SPIN_VARIABLE_GPU_HOSTS", &gpu.base_url)
        .env("SPIN_VARIABLE_GPU_HOST_TOKEN", GPU_TOKEN)
        .spawn()?;
    let r = read(edge.client.get(edge.url("/v1/keys")).bearer_auth(ADMIN_KEY).send()?);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["keys"][0]["id"], "key_bootstrap");
    let r = read(edge.client.post(edge.url("/v1/chat/completions")).bearer_auth(ADMIN_KEY)
        .json(&chat_body("Good evening.", json!({}))).send()?);
    assert_eq!(r.status, 200, "{}", r.text);
    // Progress still owns the rest of /v1/.
    let r = read(edge.client.get(edge.url("/v1/openapi.json")).send()?);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("openapi"), "{}", &r.text[..r.text.len().min(200)]);
    Ok(())
}

/// A fake gpu-host (a recording mock) whose replies break the output
/// filter's rules: the filter rewrites them, plain and streamed.
#[test]
fn the_output_filter_covers_plain_and_streamed_replies() -> Result<()> {
    private_binaries();
    use e2e_tests::{MockResponse, MockServer};
    const REPLY: &str = "That sounds hard. You have bipolar disorder. Take 50mg of sertraline. Let's talk.";
    let mock = MockServer::start(|req| {
        if req.target.starts_with("/health") {
            return MockResponse::json(200, json!({"status": "ok"}));
        }
        let base = json!({"id": "chatcmpl-mock", "created": 1, "model": "tiny"});
        if req.json()["stream"] == true {
            let mut sse = String::new();
            let mut chunk = |delta: Value, finish: Value| {
                let mut c = base.clone();
                c["object"] = json!("chat.completion.chunk");
                c["choices"] = json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
                sse.push_str(&format!("data: {c}\n\n"));
            };
            chunk(json!({"role": "assistant"}), Value::Null);
            for word in REPLY.split_inclusive(' ') {
                chunk(json!({"content": word}), Value::Null);
            }
            chunk(json!({}), json!("stop"));
            sse.push_str("data: [DONE]\n\n");
            return MockResponse { status: 200, content_type: "text/event-stream", body: sse.into_bytes() };
        }
        let mut c = base.clone();
        c["object"] = json!("chat.completion");
        c["choices"] = json!([{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}]);
        MockResponse::json(200, c)
    });
    let app = AppDir::empty()?;
    write_manifest(&app)?;
    let edge = app
        .command()
        .env("SPIN_VARIABLE_CHAT_SECRET", CHAT_SECRET)
        .env("SPIN_VARIABLE_BOOTSTRAP_API_KEY", ADMIN_KEY)
        .env("SPIN_VARIABLE_GPU_HOSTS", &mock.origin())
        .env("SPIN_VARIABLE_GPU_HOST_TOKEN", GPU_TOKEN)
        .spawn()?;
    let send = |extra: Value| {
        let body = chat_body("How do I cope?", extra);
        read(edge.client.post(edge.url("/v1/chat/completions")).bearer_auth(ADMIN_KEY).json(&body).send().unwrap())
    };

    let r = send(json!({"client_id": "client-3", "session_id": "s-3"}));
    assert_eq!(r.status, 200, "{}", r.text);
    let text = r.content();
    assert!(text.contains("That sounds hard.") && text.contains("Let's talk."), "{text}");
    assert!(!text.contains("50mg") && !text.contains("You have bipolar"), "{text}");
    assert_eq!(r.body["safety"]["output_filter"]["action"], "rewrite", "{}", r.text);

    let r = send(json!({"stream": true}));
    assert_eq!(r.status, 200, "{}", r.text);
    let events = sse_events(&r.text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{}", r.text);
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    println!("filtered plain:    {text}\nfiltered streamed: {streamed}");
    assert!(streamed.contains("That sounds hard.") && streamed.contains("Let's talk."), "{streamed}");
    assert!(!streamed.contains("50mg") && !streamed.contains("You have bipolar"), "{streamed}");
    assert_eq!(streamed, text, "the same filtering, streamed sentence by sentence");

    // What reached the gpu-host: its token, no edge-only fields.
    let chats: Vec<_> = mock.requests().into_iter().filter(|q| q.target == "/v1/chat/completions").collect();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0].header("authorization"), Some(format!("Bearer {GPU_TOKEN}").as_str()));
    let forwarded = chats[0].json();
    assert!(forwarded.get("client_id").is_none() && forwarded.get("session_id").is_none(), "{forwarded}");
    Ok(())
}

/// Context truncation with the model's own tokenizer: a conversation longer
/// than the tiny model's 512 tokens is refused by the gpu-host until the
/// model's profile (context length, tokenizer.json) is uploaded; then the
/// oldest turns are dropped and the chat works.
#[test]
fn long_conversations_are_truncated_with_the_models_tokenizer() -> Result<()> {
    let s = start(&[])?;
    let turn = "I keep thinking about the argument we had last week and how it made me feel small and unheard at home. ";
    let mut messages = vec![json!({"role": "system", "content": "You are a careful listener."})];
    for i in 0..12 {
        messages.push(json!({"role": "user", "content": format!("{turn}{turn}({i})")}));
        messages.push(json!({"role": "assistant", "content": "That sounds painful. Tell me more."}));
    }
    messages.push(json!({"role": "user", "content": "What should I do now?"}));
    let body = json!({"model": "tiny", "max_tokens": 8, "messages": messages});
    let r = s.chat(ADMIN_KEY, &body);
    assert_eq!(r.status, 400, "without a profile the gpu-host refuses the long prompt: {}", r.text);

    let tokenizer: Value = serde_json::from_str(&std::fs::read_to_string(tiny_model().join("tokenizer.json"))?)?;
    let profile = json!({"context_tokens": 512, "tokenizer": tokenizer});
    let therapist = s.create_key("therapist", None);
    let r = s.call(reqwest::Method::PUT, "/v1/chat/tokenizers/tiny", Some(&therapist), Some(&profile));
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s.call(reqwest::Method::PUT, "/v1/chat/tokenizers/tiny", Some(ADMIN_KEY), Some(&json!({"context_tokens": 512, "tokenizer": {"nope": 1}})));
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.call(reqwest::Method::PUT, "/v1/chat/tokenizers/tiny", Some(ADMIN_KEY), Some(&profile));
    assert_eq!(r.status, 200, "{}", r.text);

    let t = Instant::now();
    let r = s.chat(&therapist, &body);
    assert_eq!(r.status, 200, "{}", r.text);
    let dropped: usize = r.header("x-context-truncated").parse()?;
    println!("truncated {dropped} of {} messages in {:?}", messages.len(), t.elapsed());
    assert!(dropped > 0 && dropped < messages.len() - 1, "{dropped}");

    // A last message that alone exceeds the context: 400 with a message.
    let huge = json!({"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": turn.repeat(40)}]});
    let r = s.chat(&therapist, &huge);
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("context"), "{}", r.text);
    Ok(())
}
