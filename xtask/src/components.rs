//! Finds and builds the wasm components (everything under `components/`
//! plus the conformance component used by the end-to-end tests).

use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const WASM_TARGET: &str = "wasm32-wasip2";

#[derive(Deserialize)]
struct Manifest {
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    name: String,
}

/// Package names of all component crates, sorted for a stable build order.
pub fn component_packages(root: &Path) -> Result<Vec<String>> {
    // Test components live under tests/; product components under components/.
    let mut dirs: Vec<PathBuf> = ["tests/conformance", "tests/greeter", "tests/dependent", "tests/safety-probe"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    if let Ok(entries) = std::fs::read_dir(root.join("components")) {
        for entry in entries {
            let dir = entry?.path();
            if dir.join("Cargo.toml").is_file() {
                dirs.push(dir);
            }
        }
    }
    let mut names = Vec::new();
    for dir in dirs {
        let path = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        // Shared guest libraries (e.g. edge-common) are not components.
        if !text.contains("cdylib") {
            continue;
        }
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        names.push(manifest.package.name);
    }
    names.sort();
    Ok(names)
}

/// Builds every component for wasm32-wasip2 in release mode and returns the
/// paths of the `.wasm` files, which `spin.toml` and the tests refer to.
pub fn build_all(root: &Path) -> Result<Vec<PathBuf>> {
    let packages = component_packages(root)?;
    let mut cmd = crate::cargo();
    cmd.args(["build", "--release", "--target", WASM_TARGET]);
    for p in &packages {
        cmd.args(["-p", p]);
    }
    crate::run(&mut cmd)?;
    Ok(packages
        .iter()
        .map(|p| {
            root.join("target")
                .join(WASM_TARGET)
                .join("release")
                .join(format!("{}.wasm", p.replace('-', "_")))
        })
        .collect())
}
