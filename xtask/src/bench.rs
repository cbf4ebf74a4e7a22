//! `cargo xtask bench edge`: load-tests edge-host on loopback.
//!
//! Builds edge-host (release) and the conformance component, starts the
//! host on a free 127.0.0.1 port with a temp data dir, seeds one sqlite
//! row, then drives `/json` and `/sql-row` with a keep-alive HTTP/1.1 load
//! generator (tokio + hyper: N connections, each sending its next request
//! as soon as the previous response is read, for a fixed duration) and
//! prints requests, req/s, p50, p99 and errors per route.
//!
//! Targets (issue #2, 2 cores, load generator on the same machine):
//! `/json` ≥ 6,000 req/s with p99 < 10 ms; `/sql-row` ≥ 2,000 req/s.
//!
//! `cargo xtask bench chat`: the edge chat API's cached path (issue #7:
//! ≥ 5,000 req/s with p99 < 5 ms on 2 cores). Starts a gpu-host on the tiny
//! model and edge-host with the root `spin.toml`, sends one deterministic
//! chat (a miss, answered by the gpu-host), then drives the same request,
//! authenticated, screened and answered from the cache.
//!
//! `cargo xtask bench truncate`: context truncation through the real
//! component (issue #7: < 5 ms p99 for a 4,000-token conversation with a
//! real-size tokenizer). Trains a 32k-vocabulary byte-level BPE tokenizer,
//! uploads it as a model's profile, and sends 4,000-token conversations one
//! at a time; the api reports each truncation's cost in `Server-Timing`.
//! See [`crate::truncate_bench`].
//!
//! Both take the components from `--wasm-dir` (default: the target dir's
//! `wasm32-wasip2/release`, `CARGO_TARGET_DIR` honoured) and copy them
//! first, so a build in another checkout sharing the target dir cannot
//! swap them mid-run.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum BenchTarget {
    /// Benchmark edge-host serving the conformance component (`/json`,
    /// `/sql-row`) on 127.0.0.1.
    Edge(EdgeArgs),
    /// Benchmark a cached chat completion through the edge chat API
    /// (auth, safety screen, cache) on 127.0.0.1.
    Chat(EdgeArgs),
    /// Measure context truncation (4,000-token conversations, a 32k-vocabulary
    /// tokenizer) through the chat API component.
    Truncate(crate::truncate_bench::TruncateArgs),
}

#[derive(Args)]
pub struct EdgeArgs {
    /// Measured seconds per route (1–300).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds per route, not measured (0–60).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrent keep-alive connections (1–1024).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Load-generator worker threads (the host gets the rest of the cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Use this edge-host binary instead of building target/release/edge-host.
    #[arg(long)]
    edge_host: Option<PathBuf>,
    /// Skip the cargo builds (use what is already built).
    #[arg(long)]
    no_build: bool,
    /// Where the built components are (`chat bench`, `truncate`).
    #[arg(long)]
    wasm_dir: Option<PathBuf>,
}

/// Cargo's target dir: `CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

/// The root `spin.toml` with every component's source replaced by a copy
/// (in `dir`) of the one in `wasm_dir`; returns the manifest's path.
pub fn private_manifest(root: &Path, wasm_dir: &Path, dir: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(root.join("spin.toml"))?;
    let mut manifest: toml::Table = toml::from_str(&text)?;
    let comps = manifest
        .get_mut("component")
        .and_then(|c| c.as_table_mut())
        .context("spin.toml has no [component] table")?;
    for (id, c) in comps.iter_mut() {
        let c = c.as_table_mut().context("a component is not a table")?;
        let src = c.get("source").and_then(|s| s.as_str()).with_context(|| format!("component {id} has no source"))?;
        let name = Path::new(src).file_name().context("a source without a file name")?;
        let copy = dir.join(name);
        std::fs::copy(wasm_dir.join(name), &copy)
            .with_context(|| format!("copying {} (build the components first)", wasm_dir.join(name).display()))?;
        c.insert("source".into(), copy.display().to_string().into());
    }
    let path = dir.join("spin.toml");
    std::fs::write(&path, toml::to_string(&manifest)?)?;
    Ok(path)
}

pub fn run(root: &Path, target: BenchTarget) -> Result<()> {
    match target {
        BenchTarget::Edge(args) => edge(root, args),
        BenchTarget::Chat(args) => chat(root, args),
        BenchTarget::Truncate(args) => crate::truncate_bench::run(root, args),
    }
}

const CHAT_KEY: &str = "tk_bench_admin_key_0123456789abcdef0123456789abcdef";
const CHAT_BODY: &str = r#"{"model":"tiny","messages":[{"role":"system","content":"You are a supportive assistant."},{"role":"user","content":"How can I sleep better before exams?"}],"max_tokens":16,"temperature":0}"#;

fn chat(root: &Path, args: EdgeArgs) -> Result<()> {
    if !(1..=300).contains(&args.duration) || args.warmup > 60 || !(1..=1024).contains(&args.connections) {
        bail!("--duration must be 1..=300 s, --warmup 0..=60 s, --connections 1..=1024");
    }
    let target = target_dir(root);
    let edge_host = args.edge_host.clone().unwrap_or_else(|| target.join("release/edge-host"));
    if !args.no_build {
        crate::toolchain::ensure_wasm_target()?;
        crate::components::build_all(root)?;
        crate::run(crate::cargo().args(["build", "--release", "-p", "edge-host", "-p", "gpu-host"]))?;
    }
    let dir = TempDir::new()?;
    let wasm_dir = args.wasm_dir.clone().unwrap_or_else(|| target.join("wasm32-wasip2/release"));
    let manifest = private_manifest(root, &wasm_dir, &dir.0)?;
    let gpu_bin = target.join("release/gpu-host");
    let model = dir.0.join("tiny");
    crate::run(Command::new(&gpu_bin).args(["init-model", "--preset", "tiny", "--out"]).arg(&model).stdout(Stdio::null()))?;
    let token_file = dir.0.join("gpu.token");
    std::fs::write(&token_file, "bench-gpu-token")?;
    let gpu = crate::up::GpuHost::start(&gpu_bin, &model, "127.0.0.1:0", &token_file)?;
    let data_dir = dir.0.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let log = dir.0.join("edge-host.log");
    let env = [
        ("SPIN_VARIABLE_CHAT_SECRET", "bench-chat-secret-0123456789abcdef".to_string()),
        ("SPIN_VARIABLE_BOOTSTRAP_API_KEY", CHAT_KEY.to_string()),
        ("SPIN_VARIABLE_GPU_HOSTS", gpu.url.clone()),
        ("SPIN_VARIABLE_GPU_HOST_TOKEN", "bench-gpu-token".to_string()),
        ("SPIN_VARIABLE_PHI_MASTER_KEY", "00".repeat(32)),
    ];
    let host = Host::start_with(&edge_host, &manifest, &data_dir, &log, &env)?;
    println!("edge-host at http://{} with gpu-host {} (log: {})", host.addr, gpu.url, log.display());
    let probe = Probe { method: "POST", path: "/v1/chat/completions", body: CHAT_BODY, auth: Some(CHAT_KEY) };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?;
    let result = rt.block_on(async {
        // The first request is a miss (answered by the gpu-host), the second a hit.
        for expect in ["miss", "hit"] {
            let (status, cache, text) = send_probe(host.addr, &probe).await?;
            if status != 200 || cache != expect {
                bail!("warm-up chat answered {status} (x-cache {cache:?}, expected {expect}): {text}");
            }
        }
        if args.warmup > 0 {
            load_probe(host.addr, probe, args.connections, Duration::from_secs(args.warmup)).await;
        }
        Ok(load_probe(host.addr, probe, args.connections, Duration::from_secs(args.duration)).await)
    });
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{e:#}\nedge-host log:\n{tail}");
        }
    };
    let rps = stats.ok as f64 / stats.elapsed.as_secs_f64();
    let p99 = stats.percentile(99.0);
    println!(
        "\n| route | connections | requests | req/s | p50 ms | p99 ms | errors | target |\n|---|---|---|---|---|---|---|---|\n\
         | POST /v1/chat/completions (cache hit) | {} | {} | {:.0} | {:.2} | {:.2} | {} | ≥ 5000 req/s, p99 < 5 ms: {} |",
        args.connections,
        stats.ok,
        rps,
        stats.percentile(50.0),
        p99,
        stats.errors,
        if rps >= 5000.0 && p99 < 5.0 && stats.errors == 0 { "met" } else { "MISSED" }
    );
    if let Some(e) = &stats.first_error {
        println!("\nfirst failed request: {e}");
    }
    println!(
        "\nlatency tail, ms: p90 {:.2} p95 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        stats.percentile(90.0),
        stats.percentile(95.0),
        p99,
        stats.percentile(99.9),
        stats.percentile(100.0)
    );
    if !stats.screen_us.is_empty() {
        let p = |q: f64| stats.screen_us[((q / 100.0 * stats.screen_us.len() as f64).ceil() as usize).clamp(1, stats.screen_us.len()) - 1];
        println!(
            "\nsafety screen inside the api (Server-Timing `screen`, the call into the screen component included), µs per message: p50 {} p99 {} max {}",
            p(50.0),
            p(99.0),
            p(100.0)
        );
    }
    drop(gpu);
    Ok(())
}

/// One kind of request the load generator sends.
#[derive(Clone, Copy)]
struct Probe {
    method: &'static str,
    path: &'static str,
    body: &'static str,
    auth: Option<&'static str>,
}

impl Probe {
    fn request(&self, host: &str) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder().method(self.method).uri(self.path).header(hyper::header::HOST, host);
        if let Some(key) = self.auth {
            b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if !self.body.is_empty() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        b.body(Full::new(Bytes::from_static(self.body.as_bytes()))).expect("static request")
    }
}

/// One probe on a fresh connection: (status, x-cache header, body).
async fn send_probe(addr: SocketAddr, probe: &Probe) -> Result<(u16, String, String)> {
    let mut sender = connect::<Full<Bytes>>(addr).await?;
    let resp = sender.send_request(probe.request(&addr.to_string())).await?;
    let status = resp.status().as_u16();
    let cache = resp.headers().get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, cache, String::from_utf8_lossy(&body).into_owned()))
}

struct Route {
    path: &'static str,
    /// Required req/s and p99 bound (ms), from the issue.
    min_rps: f64,
    max_p99_ms: Option<f64>,
}

const ROUTES: &[Route] = &[
    Route {
        path: "/json",
        min_rps: 6000.0,
        max_p99_ms: Some(10.0),
    },
    Route {
        path: "/sql-row",
        min_rps: 2000.0,
        max_p99_ms: None,
    },
];

fn edge(root: &Path, args: EdgeArgs) -> Result<()> {
    if !(1..=300).contains(&args.duration) || args.warmup > 60 {
        bail!("--duration must be 1..=300 s and --warmup 0..=60 s");
    }
    if !(1..=1024).contains(&args.connections) || !(1..=16).contains(&args.threads) {
        bail!("--connections must be 1..=1024 and --threads 1..=16");
    }
    let edge_host = match &args.edge_host {
        Some(p) => p.clone(),
        None => target_dir(root).join("release/edge-host"),
    };
    if !args.no_build {
        crate::toolchain::ensure_wasm_target()?;
        crate::run(crate::cargo().args([
            "build",
            "--release",
            "--target",
            crate::components::WASM_TARGET,
            "-p",
            "conformance",
        ]))?;
        if args.edge_host.is_none() {
            crate::run(crate::cargo().args(["build", "--release", "-p", "edge-host"]))?;
        }
    }
    let wasm = target_dir(root).join("wasm32-wasip2/release/conformance.wasm");
    if !wasm.is_file() {
        bail!("{} is missing (run without --no-build)", wasm.display());
    }

    let dir = TempDir::new()?;
    let manifest = dir.0.join("spin.toml");
    std::fs::write(&manifest, bench_manifest(&wasm))?;
    let data_dir = dir.0.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let log = dir.0.join("edge-host.log");
    let host = Host::start(&edge_host, &manifest, &data_dir, &log)?;
    println!(
        "edge-host {} at http://{} (log: {})",
        edge_host.display(),
        host.addr,
        log.display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        seed(host.addr).await?;
        for route in ROUTES {
            check(host.addr, route.path).await?;
        }
        let mut rows = Vec::new();
        for route in ROUTES {
            if args.warmup > 0 {
                load(
                    host.addr,
                    route.path,
                    args.connections,
                    Duration::from_secs(args.warmup),
                )
                .await;
            }
            let stats = load(
                host.addr,
                route.path,
                args.connections,
                Duration::from_secs(args.duration),
            )
            .await;
            rows.push((route, stats));
        }
        anyhow::Ok(rows)
    });
    drop(host);
    let rows = result?;

    println!(
        "\n{} connections, {} s per route (after {} s warm-up), load generator: {} thread(s)\n",
        args.connections, args.duration, args.warmup, args.threads
    );
    println!(
        "{:<10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8}  target",
        "route", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for (route, s) in &rows {
        let rps = s.ok as f64 / s.elapsed.as_secs_f64();
        let (p50, p99, max) = (s.percentile(50.0), s.percentile(99.0), s.percentile(100.0));
        let pass =
            rps >= route.min_rps && route.max_p99_ms.is_none_or(|m| p99 < m) && s.errors == 0;
        let target = match route.max_p99_ms {
            Some(m) => format!("≥ {:.0} req/s, p99 < {m} ms", route.min_rps),
            None => format!("≥ {:.0} req/s", route.min_rps),
        };
        println!(
            "{:<10} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>8}  {target}: {}",
            route.path,
            s.ok,
            rps,
            p50,
            p99,
            max,
            s.errors,
            if pass { "PASS" } else { "FAIL" }
        );
        if let Some(e) = &s.first_error {
            println!("  {}: first failed request: {e}", route.path);
        }
    }
    Ok(())
}

/// The bench app: the conformance component on the two measured exact
/// routes plus `/api/...` (used to seed the row), default sqlite granted.
fn bench_manifest(wasm: &Path) -> String {
    format!(
        r#"spin_manifest_version = 2

[application]
name = "edge-bench"
version = "0.1.0"

[[trigger.http]]
route = "/json"
component = "conformance"

[[trigger.http]]
route = "/sql-row"
component = "conformance"

[[trigger.http]]
route = "/api/..."
component = "conformance"

[component.conformance]
source = "{}"
sqlite_databases = ["default"]
"#,
        wasm.display()
    )
}

// ------------------------------------------------------------------ host

pub struct Host {
    child: Child,
    pub addr: SocketAddr,
}

impl Host {
    fn start(bin: &Path, manifest: &Path, data_dir: &Path, log: &Path) -> Result<Host> {
        Self::start_with(bin, manifest, data_dir, log, &[])
    }

    pub fn start_with(bin: &Path, manifest: &Path, data_dir: &Path, log: &Path, env: &[(&str, String)]) -> Result<Host> {
        let mut child = Command::new(bin)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("up")
            .arg("--manifest")
            .arg(manifest)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.trim().strip_prefix("edge-host listening on http://") {
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        let mut host = Host {
            child,
            addr: ([127, 0, 0, 1], 0).into(),
        };
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(addr) => {
                host.addr = addr
                    .parse()
                    .with_context(|| format!("listening address {addr:?}"))?;
                if !host.addr.ip().is_loopback() {
                    bail!("edge-host listens on {addr}, not loopback");
                }
                Ok(host)
            }
            Err(_) => {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("edge-host did not start listening; its log:\n{log}")
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("edge-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- client

type Sender<B> = hyper::client::conn::http1::SendRequest<B>;

async fn connect<B>(addr: SocketAddr) -> Result<Sender<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on a fresh connection: (status, body).
async fn once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &'static str,
) -> Result<(u16, String)> {
    let mut sender = connect::<Full<Bytes>>(addr).await?;
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Creates the `bench` table with row 1 that `/sql-row` reads.
async fn seed(addr: SocketAddr) -> Result<()> {
    let body = r#"{"statements": [
        {"sql": "CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, name TEXT)"},
        {"sql": "INSERT OR REPLACE INTO bench (id, name) VALUES (1, 'row one')"}]}"#;
    let (status, text) = once(addr, "POST", "/api/sql/default", body).await?;
    if status != 200 {
        bail!("seeding the sqlite row failed: {status} {text}");
    }
    Ok(())
}

async fn check(addr: SocketAddr, path: &str) -> Result<()> {
    let (status, text) = once(addr, "GET", path, "").await?;
    if status != 200 {
        bail!("GET {path} answered {status}: {text}");
    }
    Ok(())
}

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    /// Latencies of successful requests, microseconds, sorted.
    latencies_us: Vec<u32>,
    /// The api's own `Server-Timing: screen` durations, microseconds.
    screen_us: Vec<u32>,
    elapsed: Duration,
    /// What the first failed request got (a status and body, or the
    /// connection error), so that an error count comes with its cause.
    first_error: Option<String>,
}

impl Stats {
    fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }
}

impl Stats {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let n = self.latencies_us.len();
        let i = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies_us[i.clamp(1, n) - 1] as f64 / 1000.0
    }
}

/// `connections` keep-alive connections each loop GET `path` until the
/// deadline; reconnects after a connection error.
async fn load(addr: SocketAddr, path: &'static str, connections: usize, duration: Duration) -> Stats {
    load_probe(addr, Probe { method: "GET", path, body: "", auth: None }, connections, duration).await
}

/// Like [`load`], with any [`Probe`].
async fn load_probe(addr: SocketAddr, probe: Probe, connections: usize, duration: Duration) -> Stats {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(addr, probe, deadline)))
        .collect();
    let mut total = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            total.ok += s.ok;
            total.errors += s.errors;
            total.first_error = total.first_error.or(s.first_error);
            total.latencies_us.extend(s.latencies_us);
            total.screen_us.extend(s.screen_us);
        } else {
            total.errors += 1;
        }
    }
    total.elapsed = start.elapsed();
    total.latencies_us.sort_unstable();
    total.screen_us.sort_unstable();
    total
}

/// A `Server-Timing` metric's duration in microseconds.
fn server_timing_us(headers: &hyper::HeaderMap, name: &str) -> Option<u32> {
    let v = headers.get("server-timing")?.to_str().ok()?;
    v.split(',').find_map(|m| {
        let ms: f64 = m.trim().strip_prefix(name)?.strip_prefix(";dur=")?.parse().ok()?;
        Some((ms * 1000.0).round() as u32)
    })
}

async fn connection(addr: SocketAddr, probe: Probe, deadline: Instant) -> Stats {
    let mut s = Stats::default();
    let host = addr.to_string();
    'reconnect: while Instant::now() < deadline {
        let mut sender = match connect::<Full<Bytes>>(addr).await {
            Ok(sender) => sender,
            Err(e) => {
                s.error(|| format!("connecting: {e:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while Instant::now() < deadline {
            if let Err(e) = sender.ready().await {
                s.error(|| format!("connection: {e}"));
                continue 'reconnect;
            }
            let req = probe.request(&host);
            let t = Instant::now();
            let resp = match sender.send_request(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    s.error(|| format!("sending: {e}"));
                    continue 'reconnect;
                }
            };
            let status = resp.status();
            let ok = status == hyper::StatusCode::OK;
            let screen_us = server_timing_us(resp.headers(), "screen");
            match resp.into_body().collect().await {
                Ok(_) if ok => {
                    s.ok += 1;
                    s.latencies_us
                        .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    s.screen_us.extend(screen_us);
                }
                Ok(body) => s.error(|| format!("{status}: {}", String::from_utf8_lossy(&body.to_bytes()))),
                Err(e) => {
                    s.error(|| format!("reading the body: {e}"));
                    continue 'reconnect;
                }
            }
        }
    }
    s
}
