//! The safety contracts (wit/safety.wit) as Spin component dependencies:
//! `safety-probe` imports `therapy:safety/screen` and
//! `therapy:safety/output-filter`; the default `safety-screen` component
//! provides both, and a plugin (`example-output-filter`) can replace the
//! output filter alone through `spin.toml`.

use anyhow::{Context, Result, bail};
use e2e_tests::{HostCommand, target_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Cargo in this test's own workspace (not `e2e_tests::cargo`, whose root is
/// compiled into the shared support library: with one target dir shared by
/// several checkouts, that can be another checkout's root).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits inside the workspace"));
    cmd
}

struct Wasm {
    probe: PathBuf,
    screen: PathBuf,
    strict: PathBuf,
}

fn build() -> Result<Wasm> {
    let status = cargo()
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(["-p", "safety-probe", "-p", "safety-screen", "-p", "example-output-filter"])
        .status()
        .context("starting cargo")?;
    if !status.success() {
        bail!("building the safety components failed");
    }
    let dir = target_dir().join("wasm32-wasip2/release");
    Ok(Wasm {
        probe: dir.join("safety_probe.wasm"),
        screen: dir.join("safety_screen.wasm"),
        strict: dir.join("example_output_filter.wasm"),
    })
}

fn manifest(w: &Wasm, output_filter: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "safety"
[[trigger.http]]
route = "/..."
component = "safety-probe"
[component.safety-probe]
source = "{}"
[component.safety-probe.dependencies]
"therapy:safety/screen" = {{ component = "safety-screen" }}
"therapy:safety/output-filter" = {output_filter}
[component.safety-screen]
source = "{}"
"#,
        w.probe.display(),
        w.screen.display()
    )
}

fn serve(dir: &Path, name: &str, text: String) -> Result<e2e_tests::EdgeHost> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    HostCommand::new(&path).data_dir(&dir.join(name)).spawn()
}

const REPLY: &str = "/filter?That+sounds+hard.+You+have+depression.+Take+50mg+of+sertraline.+Let%27s+talk.";

#[test]
fn the_default_component_screens_and_filters() -> Result<()> {
    let w = build()?;
    let dir = tempfile::tempdir()?;
    let host = serve(dir.path(), "default", manifest(&w, "{ component = \"safety-screen\" }"))?;
    let body = host.get("/screen?I+want+to+kill+myself+tonight")?.text()?;
    assert!(body.starts_with("risk=true severity=Severity::Imminent escalate=true"), "{body}");
    assert!(body.contains("SUI-001") && body.contains("resources=4"), "{body}");
    let body = host.get("/screen?this+commute+is+killing+me")?.text()?;
    assert!(body.starts_with("risk=false severity=Severity::None escalate=false"), "{body}");
    let body = host.get(REPLY)?.text()?;
    assert!(body.starts_with("action=Action::Rewrite findings=OUT-DX-001,OUT-MED-001"), "{body}");
    assert!(body.contains("That sounds hard.") && body.contains("Let's talk.") && !body.contains("50mg"), "{body}");
    Ok(())
}

#[test]
fn a_plugin_replaces_the_output_filter() -> Result<()> {
    let w = build()?;
    let dir = tempfile::tempdir()?;
    let plugin = format!("{{ path = \"{}\" }}", w.strict.display());
    let host = serve(dir.path(), "swapped", manifest(&w, &plugin))?;
    let body = host.get(REPLY)?.text()?;
    assert!(body.starts_with("action=Action::Block findings=STRICT-DX,STRICT-DOSE"), "{body}");
    // the screen still comes from the default component
    let body = host.get("/screen?I+want+to+kill+myself")?.text()?;
    assert!(body.starts_with("risk=true"), "{body}");
    Ok(())
}
