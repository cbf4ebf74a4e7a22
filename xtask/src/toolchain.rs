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
pub fn ensure_test_tools(_root: &Path) -> Result<()> {
    ensure_apt_packages(&[("cc", "build-essential")])
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
