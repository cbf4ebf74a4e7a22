//! Installs what the build and the tests need on a fresh machine.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

use crate::components::WASM_TARGET;

/// Adds the wasm32-wasip2 target through rustup when it is missing.
pub fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to install the wasm32-wasip2 target")?;
    let installed = String::from_utf8_lossy(&out.stdout);
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    eprintln!("xtask: installing the {WASM_TARGET} target");
    crate::run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// Tools the test suites call out to. A C compiler is needed by libsql's
/// bundled SQLite; it is installed with apt when missing.
pub fn ensure_test_tools(root: &Path) -> Result<()> {
    ensure_apt_packages(&[("cc", "build-essential")])?;
    ensure_cuda_tools(root);
    Ok(())
}

/// NVIDIA's PyPI wheels for compiling and assembling the CUDA kernels with
/// no GPU and no toolkit (gpu-host's `cuda_ptxas` test): NVRTC and ptxas.
/// Pinned to CUDA 13.0, the version of the GPU machines' driver (PTX from
/// a newer NVRTC may not load there).
const CUDA_WHEELS: &[&str] = &["nvidia-cuda-nvrtc==13.0.88", "nvidia-cuda-nvcc==13.0.88"];

/// Installs [`CUDA_WHEELS`] into `target/cuda-tools` (once: a stamp file
/// records what is there) and points `GPU_HOST_CUDA_TOOLS` at it for the
/// test run. Failure is a warning, not an error: the kernel check then
/// reports that it skipped, and every other test still runs.
fn ensure_cuda_tools(root: &Path) {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("target"));
    let dir = target.join("cuda-tools");
    let stamp = dir.join(".installed");
    let want = CUDA_WHEELS.join("\n");
    let installed = std::fs::read_to_string(&stamp).is_ok_and(|s| s == want);
    if !installed {
        eprintln!("xtask: installing {} into {}", CUDA_WHEELS.join(" "), dir.display());
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:", "--target"])
            .arg(&dir)
            .args(CUDA_WHEELS)
            .status();
        match status {
            Ok(s) if s.success() => {
                if let Err(e) = std::fs::write(&stamp, &want) {
                    eprintln!("xtask: warning: cannot write {}: {e}", stamp.display());
                }
            }
            other => {
                eprintln!("xtask: warning: could not install the CUDA wheels ({other:?}); the kernel compile check will skip");
                return;
            }
        }
    }
    // SAFETY: xtask is single-threaded here; the variable is read by the
    // `cargo test` child process.
    unsafe { std::env::set_var("GPU_HOST_CUDA_TOOLS", &dir) };
}

/// Installs the Debian packages whose command is missing.
pub fn ensure_apt_packages(needed: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(cmd, _)| !command_exists(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let sudo = if is_root() { vec![] } else { vec!["sudo"] };
    let apt = |args: &[&str]| -> Result<()> {
        let mut full: Vec<&str> = sudo.clone();
        full.push("apt-get");
        full.extend_from_slice(args);
        crate::run(Command::new(full[0]).args(&full[1..]).env("DEBIAN_FRONTEND", "noninteractive"))
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(missing.iter().copied());
    apt(&install)?;
    for (cmd, pkg) in needed {
        if !command_exists(cmd) {
            bail!("{pkg} was installed but `{cmd}` is still missing");
        }
    }
    Ok(())
}

pub fn command_exists(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
