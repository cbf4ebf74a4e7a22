//! `cargo xtask bench truncate`: what context truncation costs in the chat
//! API component, with a real-size tokenizer and a 4,000-token conversation
//! (issue #7: < 5 ms p99).
//!
//! 1. Trains a byte-level BPE tokenizer with a 32,000-token vocabulary
//!    (the `tokenizers` crate's trainer, as Hugging Face models ship them)
//!    on a generated corpus: words built from syllables, drawn with a
//!    Zipf-like law, so frequent words become single tokens and rare ones
//!    split into pieces, as in natural text. Deterministic.
//! 2. Starts edge-host with the root `spin.toml` and a stand-in gpu-host
//!    (an in-process HTTP server answering every chat with a fixed reply:
//!    what the upstream does is not measured), uploads the tokenizer as
//!    model `bench-32k`'s profile (context 2,048 tokens) and sends
//!    conversations of about 4,000 tokens (counted with the same tokenizer,
//!    natively), one at a time.
//! 3. The api times the truncation itself (counting messages with the
//!    model's tokenizer, newest first until the budget is spent, and cutting
//!    the oldest turns) and reports it in `Server-Timing:
//!    truncate;dur=<ms>`; the bench prints the percentiles for new
//!    conversations (no message seen before, so every message that fits, and
//!    the first that does not, tokenized for the first time: each request
//!    is a miss answered by the stand-in), for a conversation
//!    going on (each request drops the two oldest turns and adds a new
//!    exchange: an instance counts a message it has seen once, see
//!    `components/chat-api/src/component/tokens.rs`) and for a repeated
//!    conversation (answered from the cache: truncation runs before the
//!    cache lookup), plus the requests' own latency.

use crate::bench::{Host, TempDir, private_manifest, target_dir};
use anyhow::{Context, Result, bail};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{Tokenizer, TokenizerBuilder};

#[derive(Args)]
pub struct TruncateArgs {
    /// Conversations sent (each kind).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Tokens in each conversation (as the model's tokenizer counts them).
    #[arg(long, default_value_t = 4000)]
    tokens: usize,
    /// Vocabulary size of the trained tokenizer.
    #[arg(long, default_value_t = 32000)]
    vocab: usize,
    /// Use this edge-host binary instead of target/release/edge-host.
    #[arg(long)]
    edge_host: Option<std::path::PathBuf>,
    /// Skip the cargo builds (use what is already built).
    #[arg(long)]
    no_build: bool,
    /// Where the built components are.
    #[arg(long)]
    wasm_dir: Option<std::path::PathBuf>,
}

const KEY: &str = "tk_bench_admin_key_0123456789abcdef0123456789abcdef";
const MODEL: &str = "bench-32k";
const CONTEXT: usize = 2048;

pub fn run(root: &std::path::Path, args: TruncateArgs) -> Result<()> {
    if !(1..=10_000).contains(&args.requests) || !(100..=100_000).contains(&args.tokens) {
        bail!("--requests must be 1..=10000 and --tokens 100..=100000");
    }
    let target = target_dir(root);
    let edge_host = args.edge_host.clone().unwrap_or_else(|| target.join("release/edge-host"));
    if !args.no_build {
        crate::toolchain::ensure_wasm_target()?;
        crate::components::build_all(root)?;
        crate::run(crate::cargo().args(["build", "--release", "-p", "edge-host"]))?;
    }
    let dir = TempDir::new()?;
    let wasm_dir = args.wasm_dir.clone().unwrap_or_else(|| target.join("wasm32-wasip2/release"));
    let manifest = private_manifest(root, &wasm_dir, &dir.0)?;

    let t = Instant::now();
    let tokenizer = train(args.vocab)?;
    let tokenizer_json: serde_json::Value = serde_json::from_str(&tokenizer.to_string(false).map_err(|e| anyhow::anyhow!("{e}"))?)?;
    println!(
        "tokenizer: byte-level BPE, {} tokens in the vocabulary, tokenizer.json {} KB (trained in {:.1} s)",
        tokenizer.get_vocab_size(true),
        tokenizer_json.to_string().len() / 1024,
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let upstream = rt.block_on(stand_in_gpu_host())?;
    let data_dir = dir.0.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let log = dir.0.join("edge-host.log");
    let env = [
        ("SPIN_VARIABLE_CHAT_SECRET", "bench-chat-secret-0123456789abcdef".to_string()),
        ("SPIN_VARIABLE_BOOTSTRAP_API_KEY", KEY.to_string()),
        ("SPIN_VARIABLE_GPU_HOSTS", format!("http://{upstream}")),
        ("SPIN_VARIABLE_GPU_HOST_TOKEN", "bench-gpu-token".to_string()),
        ("SPIN_VARIABLE_PHI_MASTER_KEY", "00".repeat(32)),
    ];
    let host = Host::start_with(&edge_host, &manifest, &data_dir, &log, &env)?;
    println!("edge-host at http://{} (log: {})", host.addr, log.display());

    let result = rt.block_on(async {
        let profile = serde_json::json!({ "context_tokens": CONTEXT, "tokenizer": tokenizer_json });
        let (status, _, _, text) = send(host.addr, "PUT", &format!("/v1/chat/tokenizers/{MODEL}"), profile.to_string()).await?;
        if status != 200 {
            bail!("uploading the profile answered {status}: {text}");
        }
        let mut rng = Rng(0x5eed_cafe);
        let lexicon = Lexicon::new(&mut rng);
        let mut fresh = Samples::default();
        let mut tokens_seen = Vec::new();
        let mut first = None;
        // Warm the instance (it parses the uploaded tokenizer once).
        for i in 0..args.requests + 1 {
            let (body, n) = conversation(&lexicon, &mut rng, &tokenizer, args.tokens);
            let t = Instant::now();
            let (status, timing, dropped, text) = send(host.addr, "POST", "/v1/chat/completions", body).await?;
            let total = t.elapsed();
            if status != 200 {
                bail!("chat answered {status}: {text}");
            }
            let dur = timing.truncate.with_context(|| format!("no Server-Timing truncate in the reply: {text}"))?;
            if i == 0 {
                first = Some((dur, timing.profile.unwrap_or(f64::NAN), total, dropped));
                continue;
            }
            tokens_seen.push(n);
            fresh.add(dur, total);
        }
        let (body, _) = conversation(&lexicon, &mut rng, &tokenizer, args.tokens);
        let mut repeated = Samples::default();
        for _ in 0..args.requests + 1 {
            let t = Instant::now();
            let (status, timing, _, text) = send(host.addr, "POST", "/v1/chat/completions", body.clone()).await?;
            if status != 200 {
                bail!("chat answered {status}: {text}");
            }
            repeated.add(timing.truncate.context("no Server-Timing truncate")?, t.elapsed());
        }
        repeated.skip_first();
        // A conversation going on: each request drops its two oldest turns
        // and adds a new exchange (about the same length), as a client
        // resending its history does; only the new turns are new text.
        let (body, _) = conversation(&lexicon, &mut rng, &tokenizer, args.tokens);
        let mut v: serde_json::Value = serde_json::from_str(&body)?;
        let mut going_on = Samples::default();
        for i in 0..args.requests + 1 {
            {
                let messages = v["messages"].as_array_mut().context("messages")?;
                messages.drain(1..3);
                for role in ["assistant", "user"] {
                    let mut text = String::new();
                    for _ in 0..3 + rng.below(5) {
                        lexicon.sentence(&mut rng, &mut text);
                    }
                    messages.push(serde_json::json!({"role": role, "content": text.trim_end()}));
                }
            }
            let t = Instant::now();
            let (status, timing, _, text) = send(host.addr, "POST", "/v1/chat/completions", v.to_string()).await?;
            if status != 200 {
                bail!("chat answered {status}: {text}");
            }
            if i > 0 {
                going_on.add(timing.truncate.context("no Server-Timing truncate")?, t.elapsed());
            }
        }
        Ok((first.expect("one request"), tokens_seen, fresh, repeated, going_on))
    });
    let ((first_dur, first_profile, first_total, dropped), tokens_seen, mut fresh, mut repeated, mut going_on) = match result {
        Ok(r) => r,
        Err(e) => {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{e:#}\nedge-host log:\n{tail}");
        }
    };
    let mean_tokens = tokens_seen.iter().sum::<usize>() as f64 / tokens_seen.len().max(1) as f64;
    println!(
        "\nconversations of {mean_tokens:.0} tokens on average ({} to {}), context {CONTEXT}: {} messages dropped from each",
        tokens_seen.iter().min().unwrap_or(&0),
        tokens_seen.iter().max().unwrap_or(&0),
        dropped
    );
    println!(
        "first chat after the upload: loading the profile {first_profile:.2} ms (reading and parsing tokenizer.json unless this instance did at the upload), truncation {first_dur:.2} ms, request {:.1} ms",
        first_total.as_secs_f64() * 1000.0
    );
    println!("\n| conversations | requests | truncation p50 ms | p99 ms | max ms | request p50 ms | p99 ms | target (truncation p99 < 5 ms) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, s) in [
        ("new each time: no message seen before (miss)", &mut fresh),
        ("going on: one new exchange per request (miss)", &mut going_on),
        ("repeated (cache hit)", &mut repeated),
    ] {
        s.sort();
        let p99 = s.pct(&s.truncate, 99.0);
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            s.truncate.len(),
            s.pct(&s.truncate, 50.0),
            p99,
            s.pct(&s.truncate, 100.0),
            s.pct(&s.total, 50.0),
            s.pct(&s.total, 99.0),
            if p99 < 5.0 { "met" } else { "MISSED" }
        );
    }
    drop(host);
    Ok(())
}

#[derive(Default)]
struct Samples {
    truncate: Vec<f64>,
    total: Vec<f64>,
}

impl Samples {
    fn add(&mut self, truncate_ms: f64, total: Duration) {
        self.truncate.push(truncate_ms);
        self.total.push(total.as_secs_f64() * 1000.0);
    }
    fn skip_first(&mut self) {
        self.truncate.remove(0);
        self.total.remove(0);
    }
    fn sort(&mut self) {
        self.truncate.sort_by(f64::total_cmp);
        self.total.sort_by(f64::total_cmp);
    }
    fn pct(&self, v: &[f64], p: f64) -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[i.clamp(1, v.len()) - 1]
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Words built from syllables, drawn by rank with a Zipf-like law.
struct Lexicon {
    words: Vec<String>,
    /// Cumulative weights of `words`.
    cumulative: Vec<f64>,
}

const ONSETS: &[&str] = &["", "b", "br", "c", "ch", "d", "f", "fl", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pl", "qu", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "wh", "y", "z"];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ee", "ou", "oo", "y"];
const CODAS: &[&str] = &["", "", "n", "r", "s", "t", "l", "nd", "ng", "st", "ck", "m", "nt", "rd", "ght"];

impl Lexicon {
    fn new(rng: &mut Rng) -> Lexicon {
        let mut words = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while words.len() < 60_000 {
            let syllables = 1 + rng.below(4);
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(ONSETS[rng.below(ONSETS.len())]);
                w.push_str(VOWELS[rng.below(VOWELS.len())]);
                w.push_str(CODAS[rng.below(CODAS.len())]);
            }
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=words.len())
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(1.05);
                total
            })
            .collect();
        Lexicon { words, cumulative }
    }

    fn word(&self, rng: &mut Rng) -> &str {
        let x = rng.unit() * self.cumulative.last().copied().unwrap_or(1.0);
        let i = self.cumulative.partition_point(|&c| c < x).min(self.words.len() - 1);
        &self.words[i]
    }

    fn sentence(&self, rng: &mut Rng, out: &mut String) {
        let n = 6 + rng.below(14);
        for i in 0..n {
            let w = self.word(rng);
            if i == 0 {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    out.extend(f.to_uppercase());
                    out.push_str(c.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(w);
            }
            if i + 1 < n && rng.below(9) == 0 {
                out.push(',');
            }
        }
        out.push_str(if rng.below(5) == 0 { "? " } else { ". " });
    }
}

fn train(vocab: usize) -> Result<Tokenizer> {
    let mut rng = Rng(0x7ea1_5eed);
    let lexicon = Lexicon::new(&mut rng);
    let mut lines = Vec::new();
    for _ in 0..60_000 {
        let mut line = String::new();
        for _ in 0..3 {
            lexicon.sentence(&mut rng, &mut line);
        }
        lines.push(line);
    }
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_post_processor(None::<tokenizers::PostProcessorWrapper>)
        .with_decoder(Some(ByteLevelDecoder::default()))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the tokenizer: {e}"))?;
    tokenizer
        .train(&mut trainer, lines.iter())
        .map_err(|e| anyhow::anyhow!("tokenizer training failed: {e}"))?;
    Ok(tokenizer.into())
}

/// A conversation of about `tokens` tokens as the api counts them (each
/// message's role and content plus the per-message overhead), as a chat
/// request body for model [`MODEL`]; returns the body and its count.
fn conversation(lexicon: &Lexicon, rng: &mut Rng, tokenizer: &Tokenizer, tokens: usize) -> (String, usize) {
    let count = |s: &str| tokenizer.encode(s, false).map(|e| e.len()).unwrap_or(0);
    let cost = |role: &str, text: &str| count(role) + count(text) + 6;
    let system = "You are a careful, supportive listener. Keep replies short.";
    let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
    let mut total = cost("system", system);
    let mut role = "user";
    while total < tokens {
        let mut text = String::new();
        for _ in 0..3 + rng.below(5) {
            lexicon.sentence(rng, &mut text);
        }
        let text = text.trim_end().to_string();
        total += cost(role, &text);
        messages.push(serde_json::json!({"role": role, "content": text}));
        role = if role == "user" { "assistant" } else { "user" };
    }
    if role == "user" {
        // End on a user turn.
        let text = "What do you think I should do next?";
        total += cost("user", text);
        messages.push(serde_json::json!({"role": "user", "content": text}));
    }
    let body = serde_json::json!({"model": MODEL, "messages": messages, "max_tokens": 16, "temperature": 0});
    (body.to_string(), total)
}

/// The api's `Server-Timing` metrics, ms.
struct Timing {
    profile: Option<f64>,
    truncate: Option<f64>,
}

/// (status, Server-Timing, x-context-truncated, body).
async fn send(addr: SocketAddr, method: &str, path: &str, body: String) -> Result<(u16, Timing, usize, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let server_timing = header("server-timing");
    let metric = |name: &str| {
        server_timing
            .split(',')
            .find_map(|m| m.trim().strip_prefix(name).and_then(|m| m.strip_prefix(";dur=")).and_then(|d| d.parse().ok()))
    };
    let timing = Timing { profile: metric("profile"), truncate: metric("truncate") };
    let dropped = header("x-context-truncated").parse().unwrap_or(0);
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, timing, dropped, String::from_utf8_lossy(&bytes).into_owned()))
}

/// A stand-in gpu-host: `GET /health` is 200, every chat gets one fixed
/// completion. Returns its address.
async fn stand_in_gpu_host() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = if req.uri().path().starts_with("/health") {
                        r#"{"status":"ok"}"#.to_string()
                    } else {
                        let _ = req.into_body().collect().await;
                        serde_json::json!({
                            "id": "chatcmpl-standin", "object": "chat.completion", "created": 1, "model": MODEL,
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": "That sounds like a lot to carry. What feels most pressing?"}, "finish_reason": "stop"}],
                        })
                        .to_string()
                    };
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header(hyper::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .expect("static response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
