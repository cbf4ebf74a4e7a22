//! Shared helpers for the end-to-end tests.
//!
//! - [`conformance_wasm`] builds `tests/conformance` for wasm32-wasip2 from
//!   source (once per test process);
//! - [`edge_host_bin`] builds `edge-host` (debug) and returns its path, or
//!   takes `EDGE_HOST_BIN` when set (xtask and CI can pass a prebuilt one);
//! - [`AppDir`] writes the conformance manifest (from
//!   `tests/conformance/spin.toml`) and a runtime config into a temp dir;
//! - [`HostCommand`] / [`EdgeHost`] spawn `edge-host up` on `127.0.0.1:0`,
//!   read its `edge-host listening on http://…` line, and kill it on drop;
//! - [`MockServer`] is a tiny real HTTP/1.1 server on loopback that records
//!   the requests it receives (the LLM backend, outbound targets).

pub mod gpu_host;

use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long a host may take to compile its components and start listening.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(240);

// ------------------------------------------------------------- locations

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace")
        .to_path_buf()
}

/// Cargo's target dir: `CARGO_TARGET_DIR` or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The cargo that runs the tests (or `cargo` from PATH).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run_cargo(args: &[&str]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(args);
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Builds the conformance component from source (release, wasm32-wasip2)
/// once per process and returns the `.wasm` path.
pub fn conformance_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        run_cargo(&["build", "--release", "--target", "wasm32-wasip2", "-p", "conformance"])
            .expect("building the conformance component (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)");
        let wasm = target_dir().join("wasm32-wasip2/release/conformance.wasm");
        assert!(wasm.is_file(), "{} missing after the build", wasm.display());
        wasm
    })
}

/// The edge-host binary: `EDGE_HOST_BIN` if set, else `cargo build -p
/// edge-host` (debug) once per process.
pub fn edge_host_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("EDGE_HOST_BIN") {
            return PathBuf::from(bin);
        }
        run_cargo(&["build", "-p", "edge-host"]).expect("building edge-host");
        let bin = target_dir().join("debug/edge-host");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
}

// --------------------------------------------------------------- app dir

/// What the runtime config of an [`AppDir`] contains.
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    /// `allowed_outbound_hosts` of the `conformance` component; `None`
    /// keeps the manifest's.
    pub allowed_outbound_hosts: Option<Vec<String>>,
    /// `[llm_compute] url` (remote_http, auth token [`LLM_TOKEN`]).
    pub llm_url: Option<String>,
}

/// The auth token the tests configure for the LLM backend.
pub const LLM_TOKEN: &str = "test-token-123";

/// A temp dir holding `spin.toml`, `runtime-config.toml` and `data/`.
pub struct AppDir {
    pub dir: tempfile::TempDir,
    pub manifest: PathBuf,
    pub runtime_config: PathBuf,
    pub data_dir: PathBuf,
}

impl AppDir {
    /// The conformance app: `tests/conformance/spin.toml` with absolute
    /// component sources, plus a runtime config defining the stores and
    /// databases `granted` (granted) and `other` (defined, never granted).
    pub fn conformance(opts: &AppOptions) -> Result<AppDir> {
        let wasm = conformance_wasm();
        let src = workspace_root().join("tests/conformance/spin.toml");
        let text = std::fs::read_to_string(&src)?;
        let mut manifest: toml::Table = toml::from_str(&text)?;
        let components = manifest
            .get_mut("component")
            .and_then(|c| c.as_table_mut())
            .ok_or_else(|| anyhow!("no [component] in {}", src.display()))?;
        for (id, component) in components.iter_mut() {
            let component = component.as_table_mut().unwrap();
            component.insert("source".into(), wasm.display().to_string().into());
            if let (true, Some(hosts)) = (id == "conformance", &opts.allowed_outbound_hosts) {
                component.insert(
                    "allowed_outbound_hosts".into(),
                    toml::Value::Array(hosts.iter().map(|h| h.clone().into()).collect()),
                );
            }
        }
        let app = AppDir::empty()?;
        std::fs::write(&app.manifest, toml::to_string(&manifest)?)?;

        let d = app.dir.path();
        let mut rc = format!(
            r#"[key_value_store.granted]
type = "spin"
path = "{granted_kv}"

[key_value_store.other]
type = "spin"
path = "{other_kv}"

[sqlite_database.granted]
type = "spin"
path = ":memory:"

[sqlite_database.other]
type = "spin"
path = "{other_db}"
"#,
            granted_kv = d.join("granted_kv.db").display(),
            other_kv = d.join("other_kv.db").display(),
            other_db = d.join("other.db").display(),
        );
        if let Some(url) = &opts.llm_url {
            rc.push_str(&format!(
                "\n[llm_compute]\ntype = \"remote_http\"\nurl = \"{url}\"\nauth_token = \"{LLM_TOKEN}\"\n"
            ));
        }
        std::fs::write(&app.runtime_config, rc)?;
        Ok(app)
    }

    /// A temp dir with nothing written yet (tests write their own manifest).
    pub fn empty() -> Result<AppDir> {
        let dir = tempfile::Builder::new()
            .prefix("edge-host-e2e-")
            .tempdir()?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        Ok(AppDir {
            manifest: dir.path().join("spin.toml"),
            runtime_config: dir.path().join("runtime-config.toml"),
            data_dir,
            dir,
        })
    }

    /// `edge-host up` for this app with its runtime config and data dir.
    pub fn command(&self) -> HostCommand {
        let mut cmd = HostCommand::new(&self.manifest);
        cmd.data_dir(&self.data_dir);
        if self.runtime_config.is_file() {
            cmd.runtime_config(&self.runtime_config);
        }
        cmd
    }
}

// ------------------------------------------------------------ edge-host

/// A configured but not yet started `edge-host up`.
pub struct HostCommand {
    cmd: Command,
    /// Whether the child dies with this process (PR_SET_PDEATHSIG); only
    /// for hosts spawned from a thread that lives as long as the process.
    pub die_with_process: bool,
}

impl HostCommand {
    pub fn new(manifest: &Path) -> HostCommand {
        let mut cmd = Command::new(edge_host_bin());
        cmd.arg("up")
            .arg("--manifest")
            .arg(manifest)
            .args(["--listen", "127.0.0.1:0"]);
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        // Strip inherited SPIN_VARIABLE_* so tests decide them.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SPIN_VARIABLE_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("SPIN_VARIABLE_API_KEY", "test-api-key");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        HostCommand {
            cmd,
            die_with_process: false,
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn data_dir(&mut self, dir: &Path) -> &mut Self {
        self.cmd.arg("--data-dir").arg(dir);
        self
    }

    pub fn runtime_config(&mut self, file: &Path) -> &mut Self {
        self.cmd.arg("--runtime-config").arg(file);
        self
    }

    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(&mut self, key: &str) -> &mut Self {
        self.cmd.env_remove(key);
        self
    }

    /// Starts the host and waits for its listening line.
    pub fn spawn(&mut self) -> Result<EdgeHost> {
        self.start().map_err(|f| anyhow!("{}", f))
    }

    /// Runs a host that is expected to fail at start-up; returns its exit
    /// status and stderr. Fails if it starts listening instead.
    pub fn expect_startup_failure(&mut self) -> Result<(ExitStatus, String)> {
        match self.start() {
            Ok(host) => bail!(
                "edge-host started listening on {} but should have failed; stderr:\n{}",
                host.base_url,
                host.stderr()
            ),
            Err(StartFailure {
                status: Some(status),
                stderr,
                ..
            }) => Ok((status, stderr)),
            Err(f) => bail!("{f}"),
        }
    }

    fn start(&mut self) -> Result<EdgeHost, StartFailure> {
        let fail = |message: String, status, stderr: &Arc<Mutex<String>>| StartFailure {
            message,
            status,
            stderr: stderr.lock().unwrap().clone(),
        };
        if self.die_with_process {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs here.
            unsafe {
                self.cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut child = self
            .cmd
            .spawn()
            .map_err(|e| fail(format!("spawning {:?}: {e}", self.cmd), None, &stderr))?;
        let stderr_done = spawn_stderr_reader(&mut child, stderr.clone());
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let start = Instant::now();
        let mut stdout_open = true;
        loop {
            if stdout_open {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(line) => {
                        if let Some(url) = line.trim().strip_prefix("edge-host listening on ") {
                            let base_url = url.trim_end_matches('/').to_string();
                            let addr: SocketAddr = match base_url
                                .strip_prefix("http://")
                                .and_then(|a| a.parse().ok())
                            {
                                Some(addr) => addr,
                                None => {
                                    let _ = child.kill();
                                    let _ = child.wait();
                                    return Err(fail(
                                        format!("unexpected listening line {line:?}"),
                                        None,
                                        &stderr,
                                    ));
                                }
                            };
                            return Ok(EdgeHost {
                                child: Some(child),
                                base_url,
                                addr,
                                stderr,
                                stderr_done: Some(stderr_done),
                                client: client(),
                                exit: None,
                            });
                        }
                        eprintln!("edge-host stdout: {line}");
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => stdout_open = false,
                }
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(Some(status)) = child.try_wait() {
                let _ = stderr_done.join();
                return Err(fail(
                    format!("edge-host exited with {status} before listening"),
                    Some(status),
                    &stderr,
                ));
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(
                    format!(
                        "edge-host did not print its listening line within {STARTUP_TIMEOUT:?}"
                    ),
                    None,
                    &stderr,
                ));
            }
        }
    }
}

struct StartFailure {
    message: String,
    status: Option<ExitStatus>,
    stderr: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; stderr:\n{}", self.message, self.stderr)
    }
}

fn spawn_stderr_reader(child: &mut Child, buf: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    let stderr = child.stderr.take().unwrap();
    let echo = std::env::var_os("E2E_ECHO_STDERR").is_some();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("edge-host: {line}");
            }
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    })
}

/// A blocking HTTP client for loopback (no proxy, generous timeout).
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building the HTTP client")
}

/// A running `edge-host up`; killed (SIGKILL) on drop unless it exited.
pub struct EdgeHost {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    stderr_done: Option<std::thread::JoinHandle<()>>,
    pub client: reqwest::blocking::Client,
    exit: Option<ExitStatus>,
}

impl EdgeHost {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Everything the host wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn get(&self, path: &str) -> reqwest::Result<reqwest::blocking::Response> {
        self.client.get(self.url(path)).send()
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        json_of(resp)
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        json_of(resp)
    }

    pub fn put_bytes(&self, path: &str, body: impl Into<Vec<u8>>) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .put(self.url(path))
            .body(body.into())
            .send()
            .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        json_of(resp)
    }

    pub fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .delete(self.url(path))
            .send()
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"));
        json_of(resp)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exit {
            return Some(s);
        }
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(status);
                if let Some(h) = self.stderr_done.take() {
                    let _ = h.join();
                }
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.sigterm();
        self.wait_exit(timeout)
    }
}

impl Drop for EdgeHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.exit.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Status and JSON body of a response (`{"_raw": text}` if not JSON).
pub fn json_of(resp: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "_raw": text }));
    (status, value)
}

/// Runs `f` on a thread that lives as long as the test process, so a host
/// spawned there with `die_with_process` survives the spawning test's
/// thread and still dies with the process.
pub fn on_process_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("process thread panicked")
}

// ---------------------------------------------------------- mock server

/// A request as the mock server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as on the request line.
    pub target: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the mock answers.
#[derive(Clone, Debug)]
pub struct MockResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl MockResponse {
    pub fn json(status: u16, value: serde_json::Value) -> MockResponse {
        MockResponse {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(&value).unwrap(),
        }
    }

    pub fn text(status: u16, text: &str) -> MockResponse {
        MockResponse {
            status,
            content_type: "text/plain",
            body: text.as_bytes().to_vec(),
        }
    }
}

type Handler = dyn Fn(&Recorded) -> MockResponse + Send + Sync;

/// A small HTTP/1.1 server on 127.0.0.1 (one thread per connection, keeps
/// the connection alive) that records every request.
#[derive(Clone)]
pub struct MockServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl MockServer {
    pub fn start(
        handler: impl Fn(&Recorded) -> MockResponse + Send + Sync + 'static,
    ) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the mock server");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recs = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (recs, handler) = (recs.clone(), handler.clone());
                std::thread::spawn(move || {
                    let _ = serve_connection(stream, &recs, &*handler);
                });
            }
        });
        MockServer { addr, requests }
    }

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits up to 5 s for a request matching `pred`.
    pub fn wait_for(&self, pred: impl Fn(&Recorded) -> bool) -> Option<Recorded> {
        let start = Instant::now();
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return Some(r);
            }
            if start.elapsed() > Duration::from_secs(5) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    recs: &Mutex<Vec<Recorded>>,
    handler: &Handler,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                if size == 0 {
                    // Trailers until the empty line.
                    loop {
                        let mut t = String::new();
                        if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = vec![0; size];
                reader.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk);
                let mut crlf = [0u8; 2];
                reader.read_exact(&mut crlf)?;
            }
        } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        }
        let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let rec = Recorded {
            method,
            target,
            headers,
            body,
        };
        let resp = handler(&rec);
        recs.lock().unwrap().push(rec);
        write!(
            writer,
            "HTTP/1.1 {} Mock\r\ncontent-type: {}\r\ncontent-length: {}\r\n{}\r\n",
            resp.status,
            resp.content_type,
            resp.body.len(),
            if close { "connection: close\r\n" } else { "" },
        )?;
        writer.write_all(&resp.body)?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// Compares two JSON values, numbers within 1e-6 relative, for wire-format
/// checks where f32 → text → f64 round trips differ in the last digits.
pub fn json_approx_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
        }
        (Array(x), Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_approx_eq(x, y))
        }
        (Object(x), Object(y)) => {
            let xk: BTreeMap<_, _> = x.iter().collect();
            let yk: BTreeMap<_, _> = y.iter().collect();
            xk.len() == yk.len()
                && xk
                    .iter()
                    .all(|(k, v)| yk.get(k).is_some_and(|w| json_approx_eq(v, w)))
        }
        _ => a == b,
    }
}
