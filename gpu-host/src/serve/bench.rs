//! `gpu-host bench serve`: a load generator for any OpenAI-compatible chat
//! server (ours first). N workers send streaming chat requests until M are
//! done; per request it records time to first token, total latency and
//! tokens, then reports percentiles, throughput, errors and whether the
//! product's SLA (P95 latency < 2 s per chat turn) holds.

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The SLA the product promises: P95 latency per chat turn.
pub const SLA_P95_SECONDS: f64 = 2.0;

#[derive(Clone, Debug)]
pub struct BenchServeParams {
    pub url: String,
    pub model: Option<String>,
    pub token: Option<String>,
    pub concurrency: usize,
    pub requests: usize,
    pub max_tokens: usize,
    /// Conversations to send (cycled); each a list of chat messages.
    pub prompts: Vec<Value>,
    /// Generate exactly `max_tokens` (the server's `ignore_eos`).
    pub fixed_length: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchServeReport {
    pub url: String,
    pub model: String,
    pub concurrency: usize,
    pub requests: usize,
    pub succeeded: usize,
    pub errors: usize,
    /// Errors by kind (status code or transport).
    pub error_kinds: std::collections::BTreeMap<String, usize>,
    pub wall_seconds: f64,
    pub latency_seconds: Percentiles,
    pub ttft_seconds: Percentiles,
    pub requests_per_second: f64,
    pub output_tokens_per_second: f64,
    pub mean_output_tokens: f64,
    pub sla_p95_seconds: f64,
    pub sla_met: bool,
    /// Fraction of requests that finished within the SLA.
    pub within_sla: f64,
}

struct Sample {
    latency: f64,
    ttft: f64,
    tokens: usize,
}

/// Built-in prompts: short therapy-style turns.
pub fn default_prompts() -> Vec<Value> {
    [
        "I've been feeling anxious before work every morning. What can I try?",
        "My sleep has been poor for weeks and I feel exhausted.",
        "I had an argument with my sister and I keep replaying it.",
        "How do I notice when I'm catastrophising?",
        "I want to build a routine that helps my mood.",
        "Sometimes I feel like nobody listens to me.",
        "Can you help me prepare for a difficult conversation with my manager?",
        "I felt proud of myself today for going for a walk.",
    ]
    .iter()
    .map(|p| json!([{"role": "system", "content": "You are a supportive, careful therapeutic assistant."}, {"role": "user", "content": p}]))
    .collect()
}

/// Reads prompts: a JSONL file of `{"messages": [...]}` objects or message
/// lists, or plain text (one user turn per line).
pub fn read_prompts(path: &std::path::Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => o.get("messages").cloned().with_context(|| {
                format!("{}:{}: an object needs `messages`", path.display(), i + 1)
            })?,
            Ok(list @ Value::Array(_)) => list,
            _ => json!([{"role": "user", "content": line}]),
        };
        out.push(v);
    }
    if out.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    Ok(out)
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles {
            p50: 0.0,
            p95: 0.0,
            p99: 0.0,
            mean: 0.0,
        };
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Percentiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        mean: v.iter().sum::<f64>() / v.len() as f64,
    }
}

async fn one_request(
    client: &reqwest::Client,
    p: &BenchServeParams,
    model: &str,
    messages: &Value,
) -> Result<Sample, String> {
    let mut body = json!({
        "model": model, "messages": messages, "max_tokens": p.max_tokens, "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true},
    });
    if p.fixed_length {
        body["ignore_eos"] = json!(true);
    }
    let start = Instant::now();
    let mut req = client
        .post(format!("{}/v1/chat/completions", p.url))
        .json(&body);
    if let Some(t) = &p.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            "timeout".into()
        } else {
            "connect".to_string()
        }
    })?;
    if !resp.status().is_success() {
        return Err(resp.status().as_u16().to_string());
    }
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let (mut ttft, mut tokens, mut done) = (None, 0, false);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| "stream".to_string())?;
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let Some(data) = std::str::from_utf8(&event)
                .ok()
                .and_then(|e| e.trim().strip_prefix("data: "))
            else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).map_err(|_| "bad event".to_string())?;
            if v.get("error").is_some() {
                return Err("server error".into());
            }
            if ttft.is_none()
                && v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            {
                ttft = Some(start.elapsed().as_secs_f64());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n as usize;
            }
        }
    }
    if !done {
        return Err("incomplete stream".into());
    }
    let latency = start.elapsed().as_secs_f64();
    Ok(Sample {
        latency,
        ttft: ttft.unwrap_or(latency),
        tokens,
    })
}

pub async fn run(
    p: BenchServeParams,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Result<BenchServeReport> {
    if p.concurrency == 0 || p.requests == 0 {
        bail!("--concurrency and --requests must be positive");
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let model = match &p.model {
        Some(m) => m.clone(),
        None => {
            let mut req = client.get(format!("{}/v1/models", p.url));
            if let Some(t) = &p.token {
                req = req.bearer_auth(t);
            }
            let v: Value = req
                .send()
                .await
                .with_context(|| format!("cannot reach {}", p.url))?
                .error_for_status()
                .with_context(|| format!("{}/v1/models refused", p.url))?
                .json()
                .await?;
            v["data"][0]["id"]
                .as_str()
                .context("/v1/models lists no model")?
                .to_string()
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    let on_done = Arc::new(on_done);
    let params = Arc::new(p.clone());
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..p.concurrency {
        let (client, next, on_done, params, model) = (
            client.clone(),
            next.clone(),
            on_done.clone(),
            params.clone(),
            model.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= params.requests {
                    break;
                }
                let messages = &params.prompts[i % params.prompts.len()];
                results.push(one_request(&client, &params, &model, messages).await);
                on_done();
            }
            results
        }));
    }
    let mut samples = Vec::new();
    let mut error_kinds = std::collections::BTreeMap::new();
    for w in workers {
        for r in w.await? {
            match r {
                Ok(s) => samples.push(s),
                Err(kind) => *error_kinds.entry(kind).or_insert(0) += 1,
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let latency = percentiles(samples.iter().map(|s| s.latency).collect());
    let within = samples
        .iter()
        .filter(|s| s.latency < SLA_P95_SECONDS)
        .count();
    let errors: usize = error_kinds.values().sum();
    Ok(BenchServeReport {
        url: p.url.clone(),
        model,
        concurrency: p.concurrency,
        requests: p.requests,
        succeeded: samples.len(),
        errors,
        error_kinds,
        wall_seconds: wall,
        sla_met: errors == 0 && latency.p95 < SLA_P95_SECONDS,
        latency_seconds: latency,
        ttft_seconds: percentiles(samples.iter().map(|s| s.ttft).collect()),
        requests_per_second: samples.len() as f64 / wall,
        output_tokens_per_second: tokens as f64 / wall,
        mean_output_tokens: tokens as f64 / samples.len().max(1) as f64,
        sla_p95_seconds: SLA_P95_SECONDS,
        within_sla: within as f64 / p.requests as f64,
    })
}

impl BenchServeReport {
    pub fn table(&self) -> String {
        let ms = |s: f64| format!("{:.1}", s * 1000.0);
        let l = &self.latency_seconds;
        let t = &self.ttft_seconds;
        format!(
            "| url | model | conc | requests | ok | errors | p50 ms | p95 ms | p99 ms | TTFT p50 ms | TTFT p95 ms | req/s | out tok/s | tok/req | SLA (P95 < {:.0} s) |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {} ({:.1}% within) |",
            self.sla_p95_seconds,
            self.url,
            self.model,
            self.concurrency,
            self.requests,
            self.succeeded,
            self.errors,
            ms(l.p50),
            ms(l.p95),
            ms(l.p99),
            ms(t.p50),
            ms(t.p95),
            self.requests_per_second,
            self.output_tokens_per_second,
            self.mean_output_tokens,
            if self.sla_met { "met" } else { "MISSED" },
            self.within_sla * 100.0
        )
    }
}
