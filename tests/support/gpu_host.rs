//! gpu-host processes for end-to-end tests: the binary built from source
//! (debug, or `GPU_HOST_BIN`), tiny checkpoints written by its own
//! `init-model`, and `gpu-host serve` on `127.0.0.1:0`, killed on drop.

use crate::{run_cargo, target_dir};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

pub fn gpu_host_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("GPU_HOST_BIN") {
            return PathBuf::from(bin);
        }
        run_cargo(&["build", "-p", "gpu-host"]).expect("building gpu-host");
        let bin = target_dir().join("debug/gpu-host");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
}

/// A tiny llama checkpoint in a temp dir (written once per test process).
pub fn tiny_model() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("gpu-host-tiny-").tempdir().expect("temp dir");
        let status = Command::new(gpu_host_bin())
            .args(["init-model", "--preset", "tiny", "--out"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("running gpu-host init-model");
        assert!(status.success(), "gpu-host init-model failed");
        dir
    })
    .path()
}

/// A running `gpu-host serve`.
pub struct GpuHost {
    child: Child,
    pub base_url: String,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    /// The bearer token from `--auth-token-file`, if one was given.
    token: Option<String>,
}

impl GpuHost {
    /// Starts `gpu-host serve --model DIR --listen 127.0.0.1:0 ARGS…`.
    pub fn start(model: &Path, args: &[&str]) -> Result<GpuHost> {
        let token = args
            .iter()
            .position(|a| *a == "--auth-token-file")
            .and_then(|i| args.get(i + 1))
            .map(|f| std::fs::read_to_string(f).map(|t| t.trim().to_string()))
            .transpose()?;
        let mut child = Command::new(gpu_host_bin())
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning gpu-host serve")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_pipe = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                if std::env::var_os("E2E_ECHO_STDERR").is_some() {
                    eprintln!("gpu-host: {line}");
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        let out_pipe = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let start = Instant::now();
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
                && let Some(url) = line.trim().strip_prefix("gpu-host listening on ")
            {
                let base_url = url.to_string();
                let addr = base_url.trim_start_matches("http://").parse().context("listening address")?;
                return Ok(GpuHost { child, base_url, addr, stderr, token });
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("gpu-host exited with {status} before listening; stderr:\n{}", stderr.lock().unwrap());
            }
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                bail!("gpu-host did not start listening in 120 s; stderr:\n{}", stderr.lock().unwrap());
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// One metric's value from `/metrics` (the first sample whose name and
    /// labels start with `prefix`).
    pub fn metric(&self, prefix: &str) -> Result<f64> {
        let mut req = reqwest::blocking::Client::new().get(self.url("/metrics"));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let text = req.send()?.error_for_status()?.text()?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no metric {prefix} in:\n{text}"))
    }

    /// Stops the process now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GpuHost {
    fn drop(&mut self) {
        self.kill();
    }
}
