//! End-to-end tests of `edge-host up` with the conformance component
//! (`tests/conformance`), over real HTTP on loopback.
//!
//! Most tests share one host (started once per test process, see
//! [`shared`]) configured with a body limit of 64 KiB, a request timeout of
//! 3 s and a memory limit of 64 MiB, an LLM backend and two outbound
//! targets played by [`MockServer`]s. Tests that need their own process
//! (restart, SIGTERM, env overrides, start-up failures) spawn one.
//!
//! Conformance component conventions: 200 + JSON on success; 422
//! `{"error": "<variant>"}` when a host interface returned an error (so a
//! refusal the component saw is distinguishable from a crash).

use e2e_tests::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MAX_BODY: usize = 64 * 1024;
const TIMEOUT_MS: u64 = 3000;
const MEMORY_MB: usize = 64;

struct Shared {
    host: EdgeHost,
    llm: MockServer,
    allowed: MockServer,
    denied: MockServer,
    _app: AppDir,
}

/// The LLM backend: Spin's `remote_http` protocol.
fn llm_backend() -> MockServer {
    MockServer::start(|req| match req.target.as_str() {
        "/infer" => MockResponse::json(
            200,
            json!({"text": "mock says hi", "usage": {"promptTokenCount": 3, "generatedTokenCount": 4}}),
        ),
        "/embed" => MockResponse::json(
            200,
            json!({"embeddings": [[0.25, -0.5, 1.0]], "usage": {"promptTokenCount": 2}}),
        ),
        _ => MockResponse::text(404, "unknown llm path"),
    })
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        // Spawned from a thread that lives as long as the test process, so
        // PR_SET_PDEATHSIG kills the host when the process ends (statics
        // are never dropped).
        on_process_thread(|| {
            let llm = llm_backend();
            let allowed = MockServer::start(|req| {
                MockResponse::text(
                    200,
                    &format!("hello from mock: {} {}", req.method, req.target),
                )
            });
            let denied = MockServer::start(|_| MockResponse::text(200, "must never be reached"));
            let app = AppDir::conformance(&AppOptions {
                allowed_outbound_hosts: Some(vec![allowed.origin()]),
                llm_url: Some(llm.origin()),
            })
            .expect("writing the app dir");
            let mut cmd = app.command();
            cmd.die_with_process = true;
            cmd.args(["--max-body-bytes", &MAX_BODY.to_string()])
                .args(["--request-timeout-ms", &TIMEOUT_MS.to_string()])
                .args(["--memory-limit-mb", &MEMORY_MB.to_string()]);
            let host = cmd.spawn().expect("starting the shared edge-host");
            Shared {
                host,
                llm,
                allowed,
                denied,
                _app: app,
            }
        })
    })
}

fn host() -> &'static EdgeHost {
    &shared().host
}

fn request_id(resp: &reqwest::blocking::Response) -> String {
    resp.headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {} {}", resp.status(), resp.url()))
        .to_str()
        .unwrap()
        .to_string()
}

fn assert_refused(status: u16, body: &Value, variant: &str) {
    assert_eq!(
        status, 422,
        "expected a refusal the component saw ({variant}), got {status} {body}"
    );
    assert_eq!(body["error"], variant, "{body}");
}

// ------------------------------------------------------------ routing

#[test]
fn json_route_serves_trivial_json() {
    let resp = host().get("/json").unwrap();
    assert_eq!(resp.status(), 200);
    request_id(&resp);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/json")
    );
    let body: Value = resp.json().unwrap();
    assert_eq!(body, json!({"message": "hello", "ok": true}));
}

#[test]
fn wildcard_route_reaches_component() {
    let (status, body) = host().get_json("/api/json");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    // Unknown path inside the component: the component's own 404.
    let (status, body) = host().get_json("/api/definitely/not/here");
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no-such-route");
}

#[test]
fn unknown_route_is_404_from_the_host() {
    // `/nope` matches no trigger; `/json/extra` must not match the exact
    // route `/json`; the private component has no route at all.
    for path in ["/nope", "/json/extra", "/private", "/sql-row/x"] {
        let resp = host().get(path).unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        request_id(&resp);
        let text = resp.text().unwrap();
        assert!(
            !text.contains("no-such-route"),
            "{path} reached the component: {text}"
        );
    }
}

#[test]
fn every_response_carries_a_unique_request_id() {
    let a = request_id(&host().get("/json").unwrap());
    let b = request_id(&host().get("/json").unwrap());
    let c = request_id(&host().get("/nope").unwrap());
    assert!(!a.is_empty());
    assert_ne!(a, b);
    assert_ne!(b, c);
}

#[test]
fn spin_headers_on_wildcard_route() {
    let (status, body) = host().get_json("/api/headers?x=1");
    assert_eq!(status, 200, "{body}");
    let h = &body["headers"];
    let port = host().addr.port();
    assert_eq!(
        h["spin-full-url"],
        format!("http://127.0.0.1:{port}/api/headers?x=1"),
        "{h}"
    );
    assert_eq!(h["spin-path-info"], "/headers", "{h}");
    assert_eq!(h["spin-matched-route"], "/api/...", "{h}");
    assert_eq!(h["spin-raw-component-route"], "/api/...", "{h}");
    assert_eq!(h["spin-component-route"], "/api", "{h}");
    assert_eq!(h["spin-base-path"], "/", "{h}");
    let client = h["spin-client-addr"]
        .as_str()
        .unwrap_or_else(|| panic!("no spin-client-addr: {h}"));
    assert!(client.starts_with("127.0.0.1:"), "{client}");
}

#[test]
fn spin_headers_on_exact_route() {
    let (status, body) = host().get_json("/headers");
    assert_eq!(status, 200, "{body}");
    let h = &body["headers"];
    assert_eq!(h["spin-path-info"], "", "{h}");
    assert_eq!(h["spin-matched-route"], "/headers", "{h}");
    assert_eq!(h["spin-component-route"], "/headers", "{h}");
    assert!(
        h["spin-full-url"]
            .as_str()
            .unwrap_or("")
            .ends_with("/headers"),
        "{h}"
    );
}

#[test]
fn concurrent_requests_all_succeed() {
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                for j in 0..25 {
                    let path = if (i + j) % 5 == 0 {
                        "/api/sleep/20"
                    } else {
                        "/json"
                    };
                    let (status, body) = host().get_json(path);
                    assert_eq!(status, 200, "{path}: {body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// ---------------------------------------------------------- variables

#[test]
fn variables_defaults_templates_and_secrets() {
    let cases = [
        ("greeting", "hello, world"),    // template over an app default
        ("override_me", "from-default"), // plain app default
        ("literal", "plain value"),      // no template
        ("api_key", "test-api-key"),     // required secret, from SPIN_VARIABLE_API_KEY
    ];
    for (name, want) in cases {
        let (status, body) = host().get_json(&format!("/api/vars/{name}"));
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["value"], want, "{name}: {body}");
    }
}

#[test]
fn variables_undefined_and_invalid_names_are_errors() {
    // An app variable the component does not map, and one nobody defines.
    for name in ["unmapped", "no_such_variable"] {
        let (status, body) = host().get_json(&format!("/api/vars/{name}"));
        assert_refused(status, &body, "undefined");
    }
    let (status, body) = host().get_json("/api/vars/Bad-Name");
    assert_refused(status, &body, "invalid-name");
}

#[test]
fn spin_variable_env_overrides() {
    let app = AppDir::conformance(&AppOptions::default()).unwrap();
    let host = app
        .command()
        .env("SPIN_VARIABLE_OVERRIDE_ME", "from-env")
        .env("SPIN_VARIABLE_GREETING", "hi")
        .spawn()
        .unwrap();
    assert_eq!(
        host.get_json("/api/vars/override_me").1["value"],
        "from-env"
    );
    assert_eq!(host.get_json("/api/vars/greeting").1["value"], "hi, world");
}

#[test]
fn required_variable_missing_fails_startup() {
    let app = AppDir::conformance(&AppOptions::default()).unwrap();
    let (status, stderr) = app
        .command()
        .env_remove("SPIN_VARIABLE_API_KEY")
        .expect_startup_failure()
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("api_key"),
        "stderr does not name the variable:\n{stderr}"
    );
}

// ---------------------------------------------------------- key-value

#[test]
fn kv_set_get_exists_delete_keys() {
    let h = host();
    let (status, body) = h.put_bytes("/api/kv/default/kv-basic-a", "value a");
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.put_bytes("/api/kv/default/kv-basic-b", "value b").0, 200);

    assert_eq!(
        h.get_json("/api/kv/default/kv-basic-a").1["value"],
        "value a"
    );
    assert_eq!(
        h.get_json("/api/kv/default/kv-basic-a/exists").1["exists"],
        true
    );
    assert_eq!(
        h.get_json("/api/kv/default/kv-basic-missing").1["value"],
        Value::Null
    );
    assert_eq!(
        h.get_json("/api/kv/default/kv-basic-missing/exists").1["exists"],
        false
    );

    let (status, body) = h.get_json("/api/kv/default");
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&str> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"kv-basic-a") && keys.contains(&"kv-basic-b"),
        "{keys:?}"
    );

    // Overwrite, then delete (deleting twice is not an error).
    assert_eq!(h.put_bytes("/api/kv/default/kv-basic-a", "value a2").0, 200);
    assert_eq!(
        h.get_json("/api/kv/default/kv-basic-a").1["value"],
        "value a2"
    );
    assert_eq!(h.delete("/api/kv/default/kv-basic-a").0, 200);
    assert_eq!(h.delete("/api/kv/default/kv-basic-a").0, 200);
    assert_eq!(
        h.get_json("/api/kv/default/kv-basic-a/exists").1["exists"],
        false
    );
    assert_eq!(
        h.get_json("/api/kv/default/kv-basic-a").1["value"],
        Value::Null
    );
}

#[test]
fn kv_stores_are_separate_namespaces() {
    let h = host();
    assert_eq!(h.put_bytes("/api/kv/granted/ns-key", "in granted").0, 200);
    assert_eq!(
        h.get_json("/api/kv/granted/ns-key").1["value"],
        "in granted"
    );
    assert_eq!(h.get_json("/api/kv/default/ns-key").1["value"], Value::Null);
    let keys = h.get_json("/api/kv/default").1;
    assert!(
        !keys["keys"].as_array().unwrap().contains(&json!("ns-key")),
        "{keys}"
    );
}

#[test]
fn kv_ungranted_store_is_access_denied() {
    let h = host();
    // Defined in the runtime config but not granted; not defined at all.
    for store in ["other", "nosuch"] {
        let (status, body) = h.put_bytes(&format!("/api/kv/{store}/k"), "v");
        assert_refused(status, &body, "access-denied");
        let (status, body) = h.get_json(&format!("/api/kv/{store}/k"));
        assert_refused(status, &body, "access-denied");
    }
    // A component with no grants cannot open even the default store.
    let (status, body) = h.get_json("/minimal/kv/default/k");
    assert_refused(status, &body, "access-denied");
}

// ------------------------------------------------------------- sqlite

#[test]
fn sqlite_roundtrip_with_every_value_type() {
    let h = host();
    let (status, body) = h.post_json(
        "/api/sql/default",
        &json!({"statements": [
            {"sql": "CREATE TABLE IF NOT EXISTS types_t (i INTEGER, r REAL, t TEXT, b BLOB, n)"},
            {"sql": "DELETE FROM types_t"},
            {"sql": "INSERT INTO types_t VALUES (?, ?, ?, ?, ?)",
             "params": [42, 2.5, "héllo", {"blob": [0, 1, 255]}, null]},
            {"sql": "INSERT INTO types_t (i) VALUES (?)", "params": [-7]},
            {"sql": "SELECT i, r, t, b, n FROM types_t ORDER BY rowid"},
        ]}),
    );
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[2]["changes"], 1, "{body}");
    assert!(
        results[3]["last_insert_rowid"].as_i64().unwrap() >= 2,
        "{body}"
    );
    let select = &results[4];
    assert_eq!(select["columns"], json!(["i", "r", "t", "b", "n"]));
    assert_eq!(
        select["rows"],
        json!([
            [42, 2.5, "héllo", {"blob": [0, 1, 255]}, null],
            [-7, null, null, null, null],
        ])
    );
}

#[test]
fn sqlite_memory_database_when_granted() {
    let (status, body) = host().post_json(
        "/api/sql/granted",
        &json!({"statements": [
            {"sql": "CREATE TABLE IF NOT EXISTS m (x INTEGER)"},
            {"sql": "INSERT INTO m VALUES (?), (?)", "params": [1, 2]},
            {"sql": "SELECT sum(x) AS s FROM m"},
        ]}),
    );
    assert_eq!(status, 200, "{body}");
    let rows = &body["results"][2]["rows"];
    assert!(rows[0][0].as_i64().unwrap() >= 3, "{body}");
}

#[test]
fn sqlite_ungranted_database_is_access_denied() {
    let h = host();
    for db in ["other", "nosuch"] {
        let (status, body) = h.post_json(&format!("/api/sql/{db}"), &json!({"sql": "SELECT 1"}));
        assert_refused(status, &body, "access-denied");
    }
    let (status, body) = h.post_json("/minimal/sql/default", &json!({"sql": "SELECT 1"}));
    assert_refused(status, &body, "access-denied");
}

/// `PRAGMA synchronous` belongs to the guest's connection, as in SQLite: a
/// connection starts at FULL (2), may lower itself, and its writes still
/// commit; the next connection starts at FULL again.
#[test]
fn sqlite_synchronous_pragma_is_per_connection() {
    let h = host();
    let (status, body) = h.post_json(
        "/api/sql/default",
        &json!({"statements": [
            {"sql": "PRAGMA synchronous"},
            {"sql": "PRAGMA synchronous = NORMAL"},
            {"sql": "pragma main.synchronous;"},
            {"sql": "CREATE TABLE IF NOT EXISTS relaxed_t (x INTEGER)"},
            {"sql": "INSERT INTO relaxed_t VALUES (?)", "params": [7]},
            {"sql": "SELECT count(*) FROM relaxed_t WHERE x = 7"},
        ]}),
    );
    assert_eq!(status, 200, "{body}");
    let r = &body["results"];
    assert_eq!(r[0]["rows"], json!([[2]]), "{body}");
    assert_eq!(r[2]["rows"], json!([[1]]), "{body}");
    assert_eq!(r[4]["changes"], 1, "{body}");
    assert!(r[5]["rows"][0][0].as_i64().unwrap() >= 1, "{body}");
    let (status, body) = h.post_json("/api/sql/default", &json!({"sql": "PRAGMA synchronous"}));
    assert_eq!((status, &body["results"][0]["rows"]), (200, &json!([[2]])), "a new connection starts at FULL: {body}");
    let (status, body) = h.post_json("/api/sql/default", &json!({"sql": "PRAGMA synchronous = sometimes"}));
    assert_refused(status, &body, "io");
    assert!(body.to_string().contains("OFF, NORMAL, FULL or EXTRA"), "{body}");
}

#[test]
fn sqlite_bad_sql_is_an_error_not_a_crash() {
    let h = host();
    let (status, body) = h.post_json("/api/sql/default", &json!({"sql": "SELEKT nonsense"}));
    assert_refused(status, &body, "io");
    let (status, body) = h.post_json(
        "/api/sql/default",
        &json!({"sql": "SELECT * FROM no_such_table"}),
    );
    assert_refused(status, &body, "io");
    assert_eq!(h.get_json("/json").0, 200);
}

#[test]
fn sql_row_route_reads_the_seeded_row() {
    let h = host();
    let (status, body) = h.post_json(
        "/api/sql/default",
        &json!({"statements": [
            {"sql": "CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, name TEXT)"},
            {"sql": "INSERT OR REPLACE INTO bench (id, name) VALUES (1, 'row one')"},
        ]}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = h.get_json("/sql-row");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": 1, "name": "row one"}));
}

// ---------------------------------------------------------------- llm

fn default_options() -> Value {
    json!({"maxTokens": 100, "repeatPenalty": 1.1, "repeatPenaltyLastNTokenCount": 64,
           "temperature": 0.8, "topK": 40, "topP": 0.9})
}

fn assert_spin_llm_request(rec: &Recorded, path: &str, expected_body: &Value) {
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.target, path);
    assert_eq!(
        rec.header("authorization"),
        Some(&*format!("bearer {LLM_TOKEN}")),
        "{:?}",
        rec.headers
    );
    // Spin sends the JSON without a content-type header.
    assert_eq!(rec.header("content-type"), None, "{:?}", rec.headers);
    let body = rec.json();
    assert!(
        json_approx_eq(&body, expected_body),
        "request body differs from Spin's:\n got  {body}\n want {expected_body}"
    );
}

#[test]
fn llm_infer_speaks_spins_remote_http_protocol() {
    let s = shared();
    let prompt = "infer-default: tell me a joke";
    let (status, body) = s.host.post_json(
        "/api/llm/infer",
        &json!({"model": "llama2-chat", "prompt": prompt}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"text": "mock says hi", "usage": {"prompt_token_count": 3, "generated_token_count": 4}})
    );
    let rec = s
        .llm
        .wait_for(|r| r.json()["prompt"] == prompt)
        .expect("backend got no request");
    assert_spin_llm_request(
        &rec,
        "/infer",
        &json!({"model": "llama2-chat", "prompt": prompt, "options": default_options()}),
    );
}

#[test]
fn llm_infer_passes_explicit_options() {
    let s = shared();
    let prompt = "infer-options: haiku";
    let (status, body) = s.host.post_json(
        "/api/llm/infer",
        &json!({"model": "llama2-chat", "prompt": prompt, "options": {
            "max_tokens": 7, "repeat_penalty": 1.5, "repeat_penalty_last_n_token_count": 3,
            "temperature": 0.25, "top_k": 5, "top_p": 0.5}}),
    );
    assert_eq!(status, 200, "{body}");
    let rec = s
        .llm
        .wait_for(|r| r.json()["prompt"] == prompt)
        .expect("backend got no request");
    assert_spin_llm_request(
        &rec,
        "/infer",
        &json!({"model": "llama2-chat", "prompt": prompt, "options": {
            "maxTokens": 7, "repeatPenalty": 1.5, "repeatPenaltyLastNTokenCount": 3,
            "temperature": 0.25, "topK": 5, "topP": 0.5}}),
    );
}

#[test]
fn llm_embed_speaks_spins_remote_http_protocol() {
    let s = shared();
    let input = ["embed-one", "embed-two"];
    let (status, body) = s.host.post_json(
        "/api/llm/embed",
        &json!({"model": "all-minilm-l6-v2", "input": input}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"embeddings": [[0.25, -0.5, 1.0]], "usage": {"prompt_token_count": 2}})
    );
    let rec = s
        .llm
        .wait_for(|r| r.json()["input"] == json!(input))
        .expect("backend got no request");
    assert_spin_llm_request(
        &rec,
        "/embed",
        &json!({"input": input, "model": "all-minilm-l6-v2"}),
    );
}

#[test]
fn llm_ungranted_model_is_model_not_supported() {
    let s = shared();
    let prompt = "ungranted-model prompt";
    let (status, body) = s.host.post_json(
        "/api/llm/infer",
        &json!({"model": "codellama-instruct", "prompt": prompt}),
    );
    assert_refused(status, &body, "model-not-supported");
    let (status, body) = s.host.post_json(
        "/minimal/llm/infer",
        &json!({"model": "llama2-chat", "prompt": prompt}),
    );
    assert_refused(status, &body, "model-not-supported");
    let (status, body) = s.host.post_json(
        "/api/llm/embed",
        &json!({"model": "other-embedder", "input": ["ungranted-embed"]}),
    );
    assert_refused(status, &body, "model-not-supported");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !s.llm.requests().iter().any(
            |r| r.json()["prompt"] == prompt || r.json()["input"] == json!(["ungranted-embed"])
        ),
        "an ungranted model reached the backend"
    );
}

#[test]
fn llm_url_path_is_replaced_like_spin() {
    // Spin joins "/infer" onto the configured URL, dropping its path.
    let llm = llm_backend();
    let app = AppDir::conformance(&AppOptions {
        llm_url: Some(format!("{}/some/prefix/", llm.origin())),
        ..Default::default()
    })
    .unwrap();
    let host = app.command().spawn().unwrap();
    let (status, body) = host.post_json(
        "/api/llm/infer",
        &json!({"model": "llama2-chat", "prompt": "p"}),
    );
    assert_eq!(status, 200, "{body}; backend saw {:?}", llm.requests());
    assert_eq!(llm.requests()[0].target, "/infer");
}

// ----------------------------------------------------------- outbound

#[test]
fn outbound_to_allowed_host() {
    let s = shared();
    let url = format!("{}/hello?x=1", s.allowed.origin());
    let (status, body) = s.host.post_json("/api/outbound", &json!({"url": url}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": 200, "body": "hello from mock: GET /hello?x=1"})
    );

    let url = format!("{}/post-target", s.allowed.origin());
    let (status, body) = s.host.post_json(
        "/api/outbound",
        &json!({"url": url, "method": "POST", "body": "ping"}),
    );
    assert_eq!(status, 200, "{body}");
    let rec = s.allowed.wait_for(|r| r.target == "/post-target").unwrap();
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.body, b"ping");
}

#[test]
fn outbound_to_ungranted_host_is_denied() {
    let s = shared();
    let denied_urls = [
        format!("{}/denied-port", s.denied.origin()),
        // Same server, host name not in allowed_outbound_hosts.
        format!("http://localhost:{}/denied-name", s.allowed.addr.port()),
        // Same host and port, other scheme.
        format!("https://127.0.0.1:{}/denied-scheme", s.allowed.addr.port()),
    ];
    for url in &denied_urls {
        let (status, body) = s.host.post_json("/api/outbound", &json!({"url": url}));
        assert_refused(status, &body, "HttpRequestDenied");
    }
    let (status, body) = s.host.post_json(
        "/minimal/outbound",
        &json!({"url": format!("{}/denied-minimal", s.allowed.origin())}),
    );
    assert_refused(status, &body, "HttpRequestDenied");
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.denied.requests().is_empty(), "denied host was reached");
    assert!(
        !s.allowed
            .requests()
            .iter()
            .any(|r| r.target.starts_with("/denied")),
        "a denied request reached the server: {:?}",
        s.allowed.requests()
    );
}

// ------------------------------------------------------------- limits

#[test]
fn trap_is_500_with_request_id_and_host_survives() {
    let resp = host().get("/api/trap").unwrap();
    assert_eq!(resp.status(), 500);
    let id = request_id(&resp);
    let text = resp.text().unwrap();
    assert!(
        text.contains(&id),
        "500 body does not carry the request id {id}: {text}"
    );
    assert_eq!(host().get_json("/json").0, 200);
    assert_eq!(host().get_json("/api/kv/default/after-trap").0, 200);
}

fn assert_times_out(path: &str) {
    let host = host(); // start the shared host before timing
    let start = Instant::now();
    let resp = host.get(path).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(resp.status(), 504, "{path}");
    request_id(&resp);
    assert!(
        elapsed >= Duration::from_millis(TIMEOUT_MS - 100)
            && elapsed < Duration::from_millis(TIMEOUT_MS * 3),
        "{path}: 504 after {elapsed:?} with a {TIMEOUT_MS} ms limit"
    );
    assert_eq!(host.get_json("/json").0, 200);
}

#[test]
fn busy_loop_is_interrupted_with_504() {
    assert_times_out("/api/busy/20000");
}

#[test]
fn slow_async_wait_is_504() {
    assert_times_out("/api/sleep/20000");
}

#[test]
fn body_under_the_limit_is_delivered() {
    let resp = host()
        .client
        .post(host().url("/api/echo"))
        .body(vec![b'x'; MAX_BODY])
        .send()
        .unwrap();
    let (status, body) = json_of(resp);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["len"], MAX_BODY);
}

#[test]
fn oversize_body_with_content_length_is_413() {
    let resp = host()
        .client
        .post(host().url("/api/echo"))
        .body(vec![b'x'; MAX_BODY + 1])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 413);
    request_id(&resp);
}

#[test]
fn oversize_chunked_body_is_413() {
    // Raw HTTP/1.1 with Transfer-Encoding: chunked (no content-length), so
    // the host can only find out while streaming.
    let mut conn = std::net::TcpStream::connect(host().addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /api/echo HTTP/1.1\r\nhost: {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        host().addr
    );
    conn.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'y'; 16 * 1024];
    for _ in 0..(MAX_BODY / chunk.len() + 2) {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if conn.write_all(&frame).is_err() {
            break; // the host may stop reading once over the limit
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n");
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or("");
    assert!(
        status_line.starts_with("HTTP/1.1 413"),
        "got {status_line:?}"
    );
}

#[test]
fn memory_limit_refuses_large_allocations() {
    let (status, body) = host().get_json("/api/alloc/8");
    assert_eq!(status, 200, "{body}");
    let resp = host()
        .get(&format!("/api/alloc/{}", MEMORY_MB * 2))
        .unwrap();
    let id = request_id(&resp);
    let (status, body) = json_of(resp);
    // Either the guest sees the failed memory.grow (422 alloc-failed) or it
    // aborts (a trap: 500); it must never succeed or take the host down.
    match status {
        422 => assert_eq!(body["error"], "alloc-failed", "{body}"),
        500 => assert!(body.to_string().contains(&id), "{body}"),
        _ => panic!("allocation over the memory limit gave {status} {body}"),
    }
    assert_eq!(host().get_json("/api/alloc/8").0, 200);
}

// --------------------------------------------------------------- logs

#[test]
fn logs_name_each_request_but_never_bodies() {
    let h = host();
    let secret_in = "REQUEST-BODY-MARKER-5b1e";
    let resp = h
        .client
        .put(h.url("/api/kv/default/log-check"))
        .body(secret_in)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let put_id = request_id(&resp);
    let resp = h.get("/api/kv/default/log-check").unwrap();
    let get_id = request_id(&resp);
    assert!(resp.text().unwrap().contains(secret_in)); // the response body carries it too

    let start = Instant::now();
    let line_for = |id: &str| {
        h.stderr()
            .lines()
            .find(|l| l.contains(id))
            .map(str::to_string)
    };
    while (line_for(&put_id).is_none() || line_for(&get_id).is_none())
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (id, method) in [(&put_id, "PUT"), (&get_id, "GET")] {
        let line = line_for(id)
            .unwrap_or_else(|| panic!("no log line with request id {id}:\n{}", h.stderr()));
        for want in [method, "/api/...", "200", "duration"] {
            assert!(line.contains(want), "log line lacks {want:?}: {line}");
        }
    }
    assert!(
        !h.stderr().contains(secret_in),
        "a body reached the logs:\n{}",
        h.stderr()
    );
}

// ------------------------------------------------------- process level

#[test]
fn data_persists_across_restart_in_the_data_dir() {
    let app = AppDir::conformance(&AppOptions::default()).unwrap();
    {
        let mut host = app.command().spawn().unwrap();
        assert_eq!(host.put_bytes("/api/kv/default/persist", "kept").0, 200);
        assert_eq!(host.put_bytes("/api/kv/granted/persist", "kept too").0, 200);
        let (status, body) = host.post_json(
            "/api/sql/default",
            &json!({"statements": [
                {"sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"},
                {"sql": "INSERT INTO notes (body) VALUES (?)", "params": ["survives restarts"]},
            ]}),
        );
        assert_eq!(status, 200, "{body}");
        let status = host
            .terminate(Duration::from_secs(30))
            .expect("no exit after SIGTERM");
        assert!(
            status.success(),
            "exit {status}; stderr:\n{}",
            host.stderr()
        );
    }
    for file in ["sqlite_db.db", "key_value.db"] {
        assert!(
            app.data_dir.join(file).is_file(),
            "{file} not in the data dir"
        );
    }
    assert!(
        app.dir.path().join("granted_kv.db").is_file(),
        "runtime-config kv path unused"
    );

    let host = app.command().spawn().unwrap();
    assert_eq!(host.get_json("/api/kv/default/persist").1["value"], "kept");
    assert_eq!(
        host.get_json("/api/kv/granted/persist").1["value"],
        "kept too"
    );
    let (status, body) = host.post_json(
        "/api/sql/default",
        &json!({"sql": "SELECT body FROM notes"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["rows"], json!([["survives restarts"]]));
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let app = AppDir::conformance(&AppOptions::default()).unwrap();
    let mut host = app
        .command()
        .args(["--request-timeout-ms", "20000"])
        .spawn()
        .unwrap();
    let url = host.url("/api/sleep/2000");
    let client = host.client.clone();
    let in_flight = std::thread::spawn(move || {
        let start = Instant::now();
        let resp = client.get(url).send();
        (resp.map(json_of), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    host.sigterm();
    let (resp, elapsed) = in_flight.join().unwrap();
    let (status, body) = resp.expect("the in-flight request failed after SIGTERM");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["slept_ms"], 2000);
    assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
    let exit = host
        .wait_exit(Duration::from_secs(30))
        .expect("no exit after draining");
    assert!(exit.success(), "exit {exit}; stderr:\n{}", host.stderr());
}

#[test]
fn malformed_manifest_names_file_line_and_key() {
    let app = AppDir::empty().unwrap();
    let wasm = conformance_wasm().display().to_string();
    let lines = [
        "spin_manifest_version = 2".to_string(),
        "".into(),
        "[application]".into(),
        "name = \"broken\"".into(),
        "".into(),
        "[[trigger.http]]".into(),
        "route = \"/...\"".into(),
        "component = \"c\"".into(),
        "".into(),
        "[component.c]".into(),
        format!("source = \"{wasm}\""),
        "key_value_stores = \"default\"".into(), // line 12: must be an array
    ];
    std::fs::write(&app.manifest, lines.join("\n") + "\n").unwrap();
    let (status, stderr) = HostCommand::new(&app.manifest)
        .data_dir(&app.data_dir)
        .expect_startup_failure()
        .unwrap();
    assert!(!status.success());
    let path = app.manifest.display().to_string();
    assert!(
        stderr.contains(&path),
        "stderr does not name {path}:\n{stderr}"
    );
    assert!(
        stderr.contains("line 12") || stderr.contains(":12:") || stderr.contains(":12\n"),
        "stderr does not name line 12:\n{stderr}"
    );
    assert!(
        stderr.contains("key_value_stores"),
        "stderr does not name the key:\n{stderr}"
    );
}

#[test]
fn manifest_syntax_error_names_file_and_line() {
    let app = AppDir::empty().unwrap();
    let text = "spin_manifest_version = 2\n\n[application]\nname = \"broken\"\n\n[[trigger.http]\nroute = \"/...\"\n";
    std::fs::write(&app.manifest, text).unwrap();
    let (status, stderr) = HostCommand::new(&app.manifest)
        .data_dir(&app.data_dir)
        .expect_startup_failure()
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&app.manifest.display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 6") || stderr.contains(":6:"),
        "stderr does not name line 6:\n{stderr}"
    );
}

#[test]
fn manifest_missing_source_names_the_key() {
    let app = AppDir::empty().unwrap();
    let text = "spin_manifest_version = 2\n\n[application]\nname = \"broken\"\n\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n\n[component.c]\nkey_value_stores = [\"default\"]\n";
    std::fs::write(&app.manifest, text).unwrap();
    let (status, stderr) = HostCommand::new(&app.manifest)
        .data_dir(&app.data_dir)
        .expect_startup_failure()
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&app.manifest.display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("source"),
        "stderr does not name `source`:\n{stderr}"
    );
}

#[test]
fn missing_component_file_is_named() {
    let app = AppDir::empty().unwrap();
    let text = "spin_manifest_version = 2\n\n[application]\nname = \"missing\"\n\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n\n[component.c]\nsource = \"does-not-exist/ghost.wasm\"\n";
    std::fs::write(&app.manifest, text).unwrap();
    let (status, stderr) = HostCommand::new(&app.manifest)
        .data_dir(&app.data_dir)
        .expect_startup_failure()
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("ghost.wasm"),
        "stderr does not name the component file:\n{stderr}"
    );
}
