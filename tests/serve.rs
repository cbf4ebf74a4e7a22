//! `gpu-host serve` end to end on the tiny model over real HTTP: OpenAI
//! chat (plain and streaming), continuous batching visible in /metrics with
//! each greedy request getting exactly the tokens it gets alone, prefix
//! reuse, disconnects freeing KV blocks, 429 under overload, 400s that name
//! the field, and Spin's /infer and /embed shapes.

use e2e_tests::gpu_host::{GpuHost, tiny_model};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::io::Read;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-123";

fn server(args: &[&str]) -> (GpuHost, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut all = vec!["--auth-token-file", token_file.to_str().unwrap(), "--served-model-name", "tiny"];
    all.extend_from_slice(args);
    (GpuHost::start(tiny_model(), &all).unwrap(), dir)
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

fn chat_body(user: &str, max_tokens: usize) -> Value {
    json!({"model": "tiny", "messages": [{"role": "system", "content": "You are a careful listener."}, {"role": "user", "content": user}],
           "max_tokens": max_tokens, "temperature": 0})
}

fn post(host: &GpuHost, path: &str, body: &Value) -> (u16, Value) {
    let r = client().post(host.url(path)).bearer_auth(TOKEN).json(body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"].as_str().unwrap().to_string()
}

/// The `data:` payloads of a server-sent-event body.
fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
}

#[test]
fn chat_plain_and_streaming_agree() {
    let (host, _d) = server(&[]);
    let (status, plain) = post(&host, "/v1/chat/completions", &chat_body("I feel anxious before work.", 12));
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["model"], "tiny");
    let usage = &plain["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), usage["prompt_tokens"].as_u64().unwrap() + completion);
    let reason = plain["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(reason == "stop" || (reason == "length" && completion == 12), "{plain}");

    let mut body = chat_body("I feel anxious before work.", 12);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = client().post(host.url("/v1/chat/completions")).bearer_auth(TOKEN).json(&body).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = sse_events(&r.text().unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, content(&plain), "greedy streaming and plain answers agree");
    let finish: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, [&json!(reason)]);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], completion);

    let models: Value = client().get(host.url("/v1/models")).bearer_auth(TOKEN).send().unwrap().json().unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
}

#[test]
fn concurrent_requests_are_batched_and_each_gets_its_solo_tokens() {
    let (host, _d) = server(&["--max-batch", "8"]);
    let prompts = ["My sleep has been poor.", "I argued with my sister.", "Work is overwhelming lately.", "I want to feel calmer."];
    let solo: Vec<String> = prompts
        .iter()
        .map(|p| {
            let (s, v) = post(&host, "/v1/chat/completions", &chat_body(p, 24));
            assert_eq!(s, 200, "{v}");
            content(&v)
        })
        .collect();
    assert_eq!(host.metric("gpu_host_batch_sequences_max").unwrap(), 1.0, "solo requests ran alone");
    // All at once, several times over, so that they overlap in the batch.
    let together: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .flat_map(|_| prompts.iter())
            .map(|p| {
                let host = &host;
                s.spawn(move || content(&post(host, "/v1/chat/completions", &chat_body(p, 24)).1))
            })
            .collect();
        let results: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        results.chunks(prompts.len()).map(<[String]>::to_vec).collect()
    });
    for round in &together {
        assert_eq!(round, &solo, "batched greedy outputs equal the solo ones");
    }
    let max = host.metric("gpu_host_batch_sequences_max").unwrap();
    assert!(max >= 2.0, "concurrent requests shared forward steps (max batch {max})");
}

#[test]
fn a_shared_prompt_prefix_is_reused_from_the_cache() {
    let (host, _d) = server(&["--block-size", "8"]);
    let long_system = "You are a supportive therapeutic assistant. Listen carefully, reflect feelings, and ask one open question at a time. ".repeat(3);
    let body = |user: &str| {
        json!({"model": "tiny", "messages": [{"role": "system", "content": long_system}, {"role": "user", "content": user}],
               "max_tokens": 10, "temperature": 0})
    };
    let (_, first) = post(&host, "/v1/chat/completions", &body("Hello."));
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let (_, again) = post(&host, "/v1/chat/completions", &body("Hello."));
    let (_, other) = post(&host, "/v1/chat/completions", &body("Something else entirely."));
    let cached = again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let prompt = again["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(cached >= prompt - 8 && cached < prompt, "cached {cached} of {prompt}");
    assert!(other["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0);
    assert_eq!(content(&again), content(&first), "reused keys and values give the same answer");
    assert!(host.metric("gpu_host_prefix_cache_hit_tokens_total").unwrap() >= cached as f64);
}

#[test]
fn a_client_that_disconnects_frees_its_kv_blocks() {
    let (host, _d) = server(&[]);
    let mut body = chat_body("Tell me a long story.", 450);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    // Three long streams; read the first bytes of each, then hang up.
    let mut responses: Vec<_> = (0..3)
        .map(|_| client().post(host.url("/v1/chat/completions")).bearer_auth(TOKEN).json(&body).send().unwrap())
        .collect();
    for r in &mut responses {
        // Past the role chunk: generation has started.
        let mut seen = Vec::new();
        while seen.windows(6).filter(|w| w == b"data: ").count() < 2 {
            let mut buf = [0u8; 256];
            let n = r.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended early");
            seen.extend_from_slice(&buf[..n]);
        }
    }
    let used = host.metric("gpu_host_kv_cache_blocks_used").unwrap();
    assert!(used > 0.0, "running streams hold blocks; metrics: {} generated, {} cancelled", host.metric("gpu_host_generated_tokens_total").unwrap(), host.metric("gpu_host_cancelled_total").unwrap());
    drop(responses);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let used = host.metric("gpu_host_kv_cache_blocks_used").unwrap();
        let cancelled = host.metric("gpu_host_cancelled_total").unwrap();
        if used == 0.0 && cancelled >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "blocks still used: {used}, cancelled: {cancelled}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(host.metric("gpu_host_generated_tokens_total").unwrap() < 3.0 * 450.0, "the streams were cut short");
}

#[test]
fn overload_is_refused_with_429_and_retry_after() {
    let (host, _d) = server(&["--max-batch", "1", "--max-queue", "1"]);
    let mut body = chat_body("Please talk for a while.", 400);
    body["ignore_eos"] = json!(true);
    let results: Vec<(u16, Option<String>, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (host, body) = (&host, &body);
                s.spawn(move || {
                    let r = client().post(host.url("/v1/chat/completions")).bearer_auth(TOKEN).json(body).send().unwrap();
                    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                    (r.status().as_u16(), retry, r.json().unwrap_or(Value::Null))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(!refused.is_empty(), "someone was refused: {results:?}");
    assert!(results.iter().any(|r| r.0 == 200));
    for (_, retry, body) in refused {
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"]["type"], "rate_limit_error");
    }
    assert!(host.metric("gpu_host_requests_total{endpoint=\"chat_completions\",status=\"429\"}").unwrap() >= 1.0);
}

#[test]
fn bad_requests_are_refused_with_a_message_naming_the_problem() {
    let (host, _d) = server(&["--max-body-bytes", "20000"]);
    let c = client();
    let url = host.url("/v1/chat/completions");
    let send = |body: &str| {
        let r = c.post(&url).bearer_auth(TOKEN).body(body.to_string()).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (s, v) = send("{\"model\": ");
    assert_eq!(s, 400);
    assert_eq!(v["error"]["param"], "body");
    assert!(v["error"]["message"].as_str().unwrap().contains("not valid JSON"));
    let (s, v) = send(r#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"temperature":7}"#);
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("temperature")));
    assert!(v["error"]["message"].as_str().unwrap().contains("temperature"));
    let (s, v) = send(r#"{"model":"tiny","messages":[{"role":"user"}]}"#);
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("messages[0].content")));
    let (s, v) = send(r#"{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}"#);
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("model_not_found")));
    // Longer than the context (512 tokens for the tiny model): 400, not truncated.
    let long = "word ".repeat(1500);
    let (s, v) = send(&json!({"model": "tiny", "messages": [{"role": "user", "content": long}]}).to_string());
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("context_length_exceeded")), "{v}");
    // Too big a body.
    let (s, _) = send(&"x".repeat(30000));
    assert_eq!(s, 413);
    // Auth: missing or wrong token.
    let r = c.post(&url).body("{}").send().unwrap();
    assert_eq!(r.status(), 401);
    let r = c.post(&url).bearer_auth("nope").body("{}").send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().unwrap()["error"]["type"], "authentication_error");
    // Health needs no token; unknown routes and methods are named.
    assert_eq!(c.get(host.url("/health")).send().unwrap().status(), 200);
    assert_eq!(c.get(host.url("/nope")).bearer_auth(TOKEN).send().unwrap().status(), 404);
    assert_eq!(c.get(&url).bearer_auth(TOKEN).send().unwrap().status(), 405);
}

#[test]
fn spin_infer_and_embed_speak_spins_exact_shapes() {
    let (host, _d) = server(&[]);
    let c = client();
    // Exactly what Spin's remote_http backend sends: lower-case `bearer`,
    // no content type, camelCase options.
    let infer = |body: &str| {
        let r = c.post(host.url("/infer")).header("authorization", format!("bearer {TOKEN}")).body(body.to_string()).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (s, v) = infer(
        r#"{"model":"tiny","prompt":"How are you today?","options":{"maxTokens":7,"repeatPenalty":1.1,"repeatPenaltyLastNTokenCount":64,"temperature":0.8,"topK":40,"topP":0.9}}"#,
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["text"].is_string());
    let generated = v["usage"]["generatedTokenCount"].as_u64().unwrap();
    assert!((1..=7).contains(&generated), "{v}");
    assert!(v["usage"]["promptTokenCount"].as_u64().unwrap() >= 4);
    let (s, v) = infer(r#"{"model":"tiny","prompt":"x","options":{"topP":5}}"#);
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("options.topP")));

    let embed = |input: Value| {
        let r = c
            .post(host.url("/embed"))
            .header("authorization", format!("bearer {TOKEN}"))
            .body(json!({"input": input, "model": "tiny"}).to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()
    };
    let v = embed(json!(["I feel calm.", "I feel calm.", "The budget meeting ran long."]));
    let e: Vec<Vec<f64>> = serde_json::from_value(v["embeddings"].clone()).unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].len(), 192, "the tiny model's hidden size");
    for x in &e {
        let norm: f64 = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
    }
    assert_eq!(e[0], e[1], "same text, same vector");
    assert_ne!(e[0], e[2]);
    assert!(v["usage"]["promptTokenCount"].as_u64().unwrap() > 6);
}

#[test]
fn bench_serve_reports_a_table_and_json() {
    let (host, dir) = server(&[]);
    let json_path = dir.path().join("report.json");
    let out = std::process::Command::new(e2e_tests::gpu_host::gpu_host_bin())
        .args(["bench", "serve", "--url", &host.base_url, "--concurrency", "2", "--requests", "6", "--max-tokens", "8"])
        .arg("--auth-token-file")
        .arg(dir.path().join("token"))
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("p95 ms") && table.contains("| tiny |"), "{table}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!((report["succeeded"].as_u64(), report["errors"].as_u64()), (Some(6), Some(0)), "{report}");
    assert!(report["latency_seconds"]["p95"].as_f64().unwrap() >= report["latency_seconds"]["p50"].as_f64().unwrap());
    assert!(report["output_tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(host.metric("gpu_host_requests_total{endpoint=\"chat_completions\",status=\"200\"}").unwrap(), 6.0);
}

/// Spin's LLM interface end to end: a component's `llm::infer` and
/// `llm::generate_embeddings` in edge-host, forwarded by its `remote_http`
/// backend to a real gpu-host.
#[test]
fn edge_host_components_reach_gpu_host_through_spins_llm_interface() {
    use e2e_tests::{AppDir, AppOptions, LLM_TOKEN};
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, LLM_TOKEN).unwrap();
    // The conformance app is granted these two model names.
    let gpu = GpuHost::start(
        tiny_model(),
        &["--auth-token-file", token_file.to_str().unwrap(), "--served-model-name", "llama2-chat", "--served-model-name", "all-minilm-l6-v2"],
    )
    .unwrap();
    let app = AppDir::conformance(&AppOptions { allowed_outbound_hosts: None, llm_url: Some(gpu.base_url.clone()) }).unwrap();
    let edge = app.command().spawn().unwrap();
    let (status, body) = edge.post_json("/api/llm/infer", &json!({"model": "llama2-chat", "prompt": "How can I relax?", "options": {
        "max_tokens": 6, "repeat_penalty": 1.1, "repeat_penalty_last_n_token_count": 64, "temperature": 0.0, "top_k": 40, "top_p": 0.9}}));
    assert_eq!(status, 200, "{body}\n{}", gpu.stderr());
    assert!(body["text"].is_string(), "{body}");
    let generated = body["usage"]["generated_token_count"].as_u64().unwrap();
    assert!((1..=6).contains(&generated), "{body}");
    let (status, body) = edge.post_json("/api/llm/embed", &json!({"model": "all-minilm-l6-v2", "input": ["calm", "storm"]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(body["embeddings"][0].as_array().unwrap().len(), 192);
    assert!(gpu.metric("gpu_host_requests_total{endpoint=\"infer\",status=\"200\"}").unwrap() >= 1.0);
    assert!(gpu.metric("gpu_host_requests_total{endpoint=\"embed\",status=\"200\"}").unwrap() >= 1.0);
}

/// A MoE-LoRA adapter with random (large) LoRA and router weights, written
/// with the training code's own adapter writer.
fn random_adapter(dir: &std::path::Path, seed: u64) {
    use gpu_host::train::model::{MoeConfig, TrainModel};
    let mut model = TrainModel::<f32>::from_checkpoint(tiny_model(), MoeConfig::default(), seed).unwrap();
    let mut rng = gpu_host::rng::Rng::new(seed);
    for i in 0..model.params.len() {
        if !model.params.base[i] {
            model.params.data[i].iter_mut().for_each(|x| *x = 0.5 * rng.next_normal() as f32);
        }
    }
    gpu_host::adapter::write_adapter(dir, &model).unwrap();
}

#[test]
fn moe_lora_adapters_are_served_by_name_and_loaded_and_unloaded_at_run_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (calm, second) = (tmp.path().join("calm"), tmp.path().join("second"));
    random_adapter(&calm, 1);
    random_adapter(&second, 2);
    let (host, _d) = server(&["--adapter", &format!("calm={}", calm.display())]);
    let models: Value = client().get(host.url("/v1/models")).bearer_auth(TOKEN).send().unwrap().json().unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tiny", "calm"]);

    let ask = |model: &str| {
        let mut b = chat_body("I keep worrying about everything.", 16);
        b["model"] = json!(model);
        b["ignore_eos"] = json!(true);
        post(&host, "/v1/chat/completions", &b)
    };
    let (s, base) = ask("tiny");
    assert_eq!(s, 200);
    let (s, with_adapter) = ask("calm");
    assert_eq!(s, 200, "{with_adapter}");
    assert_eq!(with_adapter["model"], "calm");
    assert_ne!(content(&with_adapter), content(&base), "the adapter changes the answer");
    // Base and adapter requests share forward steps and still get their own answers.
    let both: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = ["tiny", "calm", "tiny", "calm"].iter().map(|m| s.spawn(move || content(&ask(m).1))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(both, [content(&base), content(&with_adapter), content(&base), content(&with_adapter)]);

    // Load, refuse duplicates and bad paths, unload.
    let c = client();
    let load = |name: &str, path: &std::path::Path| {
        let r = c.post(host.url("/v1/adapters")).bearer_auth(TOKEN).json(&json!({"name": name, "path": path})).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    assert_eq!(load("second", &second).0, 201);
    assert_eq!(ask("second").0, 200);
    assert_eq!(load("second", &second).0, 409);
    let (s, v) = load("third", &tmp.path().join("missing"));
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("path")), "{v}");
    assert_eq!(load("bad name!", &second).0, 400);
    let del = |name: &str| c.delete(host.url(&format!("/v1/adapters/{name}"))).bearer_auth(TOKEN).send().unwrap().status().as_u16();
    assert_eq!(del("second"), 200);
    let (s, v) = ask("second");
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("model_not_found")));
    assert_eq!(del("second"), 404);
    let list: Value = c.get(host.url("/v1/adapters")).bearer_auth(TOKEN).send().unwrap().json().unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["experts"], json!(["psychology", "mental_health", "bias_detection", "general_therapeutic"]));
}
