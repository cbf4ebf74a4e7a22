//! `cargo xtask up`: the whole stack on one machine with embedded defaults.
//!
//! On a new data dir it generates the deployment's secrets (the master key
//! that wraps per-client data keys, the first administrator's password, the
//! chat API's server secret and first admin API key), keeps them in
//! `<data-dir>/secrets.env` (mode 0600) and prints the administrator's
//! credentials and the admin API key once.

use anyhow::{Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct UpArgs {
    /// Address the edge listens on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Where the stack keeps its data (libsql files, secrets, models).
    #[arg(long, default_value = ".data")]
    data_dir: PathBuf,
    /// Address the gpu-host (inference) listens on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    gpu_listen: String,
    /// Checkpoint the gpu-host serves (default: the demo model under
    /// `<data-dir>/models/demo`, pretrained and given its MoE-LoRA adapter
    /// on first start, which takes a few minutes).
    #[arg(long)]
    model: Option<PathBuf>,
}

/// Secrets generated on first start, as `SPIN_VARIABLE_*` names.
const GENERATED_SECRETS: &[(&str, usize)] = &[
    ("SPIN_VARIABLE_PHI_MASTER_KEY", 32),
    ("SPIN_VARIABLE_BOOTSTRAP_ADMIN_PASSWORD", 18),
    // The bearer token between the edge and the gpu-host pool.
    ("SPIN_VARIABLE_GPU_HOST_TOKEN", 24),
    // The chat API's server secret (keys API-key hashes and cache keys).
    ("SPIN_VARIABLE_CHAT_SECRET", 32),
    // The chat API's first admin key (`tk_` + 64 hex digits, as the API makes them).
    ("SPIN_VARIABLE_BOOTSTRAP_API_KEY", 32),
];

pub fn run(root: &Path, args: UpArgs) -> Result<()> {
    crate::toolchain::ensure_wasm_target()?;
    crate::components::build_all(root)?;
    crate::run(crate::cargo().args(["build", "--release", "-p", "edge-host", "-p", "gpu-host"]))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let secrets = load_or_create_secrets(&args.data_dir.join("secrets.env"))?;

    // Inference first: the edge's [llm_compute] points at it.
    let gpu_host = root.join("target/release/gpu-host");
    let model = match args.model {
        Some(m) => m,
        None => default_model(&gpu_host, &args.data_dir)?,
    };
    let token_file = args.data_dir.join("gpu-host.token");
    write_private(&token_file, &secrets["SPIN_VARIABLE_GPU_HOST_TOKEN"])?;
    let mut inference = GpuHost::start(&gpu_host, &model, &args.gpu_listen, &token_file)?;
    println!("xtask: gpu-host serving {} on {}", model.display(), inference.url);

    let runtime_config = args.data_dir.join("runtime-config.toml");
    write_private(
        &runtime_config,
        &format!(
            "# Written by `cargo xtask up`: the edge's LLM backend is the local gpu-host.\n\
             [llm_compute]\ntype = \"remote_http\"\nurl = \"{}\"\nauth_token = \"{}\"\n",
            inference.url, secrets["SPIN_VARIABLE_GPU_HOST_TOKEN"]
        ),
    )?;
    let edge = root.join("target/release/edge-host");
    let mut cmd = std::process::Command::new(edge);
    cmd.args(["up", "--manifest", "spin.toml", "--listen", &args.listen, "--data-dir"])
        .arg(&args.data_dir)
        .arg("--runtime-config")
        .arg(&runtime_config)
        .env("SPIN_VARIABLE_GPU_HOSTS", &inference.url);
    for (k, v) in &secrets {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    let result = crate::run(&mut cmd);
    inference.stop();
    result
}

/// The model served when none is given: the demo model (a small base
/// pretrained on the synthetic therapy corpus plus its MoE-LoRA adapter),
/// generated once into the data dir.
fn default_model(gpu_host: &Path, data_dir: &Path) -> Result<PathBuf> {
    let dir = data_dir.join("models/demo");
    if !dir.join("demo.json").is_file() {
        println!("xtask: training the demo model into {} (first start only; a few minutes)", dir.display());
        crate::run(
            std::process::Command::new(gpu_host)
                .args(["init-model", "--preset", "demo", "--out"])
                .arg(&dir),
        )?;
    }
    Ok(dir)
}

/// A `gpu-host serve` child process, stopped when `up` ends.
pub(crate) struct GpuHost {
    child: std::process::Child,
    pub(crate) url: String,
}

impl GpuHost {
    pub(crate) fn start(bin: &Path, model: &Path, listen: &str, token_file: &Path) -> Result<GpuHost> {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--listen", listen, "--auth-token-file"])
            .arg(token_file);
        // The demo model's MoE-LoRA adapter is served as model `therapy`.
        if model.join("adapter/adapter_config.json").is_file() {
            cmd.arg("--adapter").arg(format!("therapy={}", model.join("adapter").display()));
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        while let Some(line) = lines.next() {
            let line = line?;
            if let Some(url) = line.trim().strip_prefix("gpu-host listening on ") {
                // Keep reading its stdout, so that it never writes into a closed pipe.
                std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| println!("gpu-host: {l}")));
                return Ok(GpuHost { child, url: url.to_string() });
            }
        }
        let status = child.wait()?;
        anyhow::bail!("gpu-host exited with {status} before listening (see its log above)")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GpuHost {
    fn drop(&mut self) {
        self.stop();
    }
}

fn load_or_create_secrets(path: &Path) -> Result<BTreeMap<String, String>> {
    let mut secrets = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some((k, v)) = line.split_once('=') {
                secrets.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }
    let mut created = Vec::new();
    for (name, bytes) in GENERATED_SECRETS {
        if !secrets.contains_key(*name) {
            let value = random_hex(*bytes)?;
            let value = if *name == "SPIN_VARIABLE_BOOTSTRAP_API_KEY" { format!("tk_{value}") } else { value };
            secrets.insert(name.to_string(), value);
            created.push(*name);
        }
    }
    if !created.is_empty() {
        let mut text = String::from(
            "# Generated by `cargo xtask up` on first start. Keep private: the master key\n\
             # decrypts every client record. Values here are used unless the same\n\
             # SPIN_VARIABLE_* is set in the environment.\n",
        );
        for (k, v) in &secrets {
            text.push_str(&format!("{k}={v}\n"));
        }
        write_private(path, &text)?;
        if created.contains(&"SPIN_VARIABLE_BOOTSTRAP_ADMIN_PASSWORD") {
            println!(
                "xtask: first administrator: username `admin`, password `{}` (shown once; also in {})",
                secrets["SPIN_VARIABLE_BOOTSTRAP_ADMIN_PASSWORD"],
                path.display()
            );
        }
        if created.contains(&"SPIN_VARIABLE_BOOTSTRAP_API_KEY") {
            println!(
                "xtask: first chat API admin key: `{}` (shown once; also in {}); \
                 use it as `Authorization: Bearer <key>` on /v1/keys to create the others",
                secrets["SPIN_VARIABLE_BOOTSTRAP_API_KEY"],
                path.display()
            );
        }
    }
    Ok(secrets)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
