//! edge-host: runs a Spin manifest-v2 application (spin-sdk 7 components)
//! on wasmtime, with Spin's host interfaces backed by libsql.

mod compose;
mod factors;
mod libsql_pool;
mod log_writer;
mod manifest;
mod router;
mod runtime;
mod runtime_config;
mod state;
mod trigger;

// The host allocates and frees small objects on every request (wasmtime's
// resource tables and tasks, hyper's buffers, tokio's tasks); mimalloc's
// per-thread free lists cost less there than glibc's arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "edge-host",
    version,
    about = "Run a Spin manifest-v2 app (spin-sdk 7 components) on one machine, with Spin's \
             host interfaces (variables, key-value, sqlite, llm, outbound HTTP) backed by libsql"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the app's HTTP routes.
    Up(UpArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// The Spin manifest (spin.toml). Component sources are relative to it.
    #[arg(long, default_value = "spin.toml")]
    manifest: PathBuf,
    /// Spin runtime-config TOML: [sqlite_database.<label>], [key_value_store.<label>], [llm_compute].
    #[arg(long)]
    runtime_config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Where default databases and key-value stores live.
    #[arg(long, default_value = ".spin")]
    data_dir: PathBuf,
    /// Largest request body accepted; larger ones get 413.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Wall-clock limit per request in milliseconds; past it the answer is 504.
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Linear-memory limit per component instance, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_limit_mb: usize,
    /// Requests one component instance serves before a fresh one replaces
    /// it (1: a fresh instance per request, as on Spin). A fresh instance
    /// pays the guest's one-time set-up on its first request, and the
    /// requests queued behind it wait: at 1,000 these warm-ups made most of
    /// the cached chat's slowest 1% (`cargo xtask bench chat`).
    #[arg(long, env = "EDGE_HOST_MAX_INSTANCE_REUSE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_instance_reuse: u64,
}

fn main() {
    let log = log_writer::BufferedStderr::start();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(log.clone())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(up(args)),
    };
    log.flush();
    if let Err(e) = result {
        eprintln!("edge-host: error: {e:#}");
        std::process::exit(1);
    }
}

async fn up(args: UpArgs) -> Result<()> {
    let app = manifest::load(&args.manifest)?;
    let rc = match &args.runtime_config {
        Some(p) => runtime_config::RuntimeConfig::load(p)?,
        None => runtime_config::RuntimeConfig::default(),
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let env = std::env::vars().collect();
    let limits = runtime::Limits { memory_bytes: args.memory_limit_mb * 1024 * 1024 };
    let runtime = runtime::Runtime::new(&app, &rc, &args.data_dir, limits, &env).await?;
    let trigger = Arc::new(trigger::HttpTrigger::new(
        router::Router::new(&app.routes),
        &runtime,
        trigger::RequestLimits {
            max_body_bytes: args.max_body_bytes,
            timeout: Duration::from_millis(args.request_timeout_ms),
            max_instance_reuse: args.max_instance_reuse as usize,
        },
    ));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(app = %app.name, %addr, routes = app.routes.len(), "serving");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "edge-host listening on http://{addr}")?;
        out.flush()?;
    }
    trigger.serve(listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
