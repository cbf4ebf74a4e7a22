//! Component dependencies (Spin 3+ `[component.x.dependencies]`): an
//! import of a WIT interface satisfied by another component's export.
//! `dependent` imports `edge-test:greeter/greet@0.1.0`; `greeter` exports it.

use anyhow::{Context, Result, bail};
use e2e_tests::{HostCommand, cargo, target_dir};
use std::path::PathBuf;

fn build_test_components() -> Result<(PathBuf, PathBuf)> {
    let status = cargo()
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "greeter", "-p", "dependent"])
        .status()
        .context("starting cargo")?;
    if !status.success() {
        bail!("building the greeter and dependent components failed");
    }
    let dir = target_dir().join("wasm32-wasip2/release");
    Ok((dir.join("dependent.wasm"), dir.join("greeter.wasm")))
}

fn manifest(dependent: &std::path::Path, dependency: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "deps"
[[trigger.http]]
route = "/greet"
component = "dependent"
[component.dependent]
source = "{}"
[component.dependent.dependencies]
{dependency}
"#,
        dependent.display()
    )
}

#[test]
fn an_import_is_satisfied_by_another_components_export() -> Result<()> {
    let (dependent, greeter) = build_test_components()?;
    let dir = tempfile::tempdir()?;
    let by_component = manifest(
        &dependent,
        &format!(
            "\"edge-test:greeter/greet\" = {{ component = \"greeter\" }}\n[component.greeter]\nsource = \"{}\"\n",
            greeter.display()
        ),
    );
    let by_path = manifest(
        &dependent,
        &format!("\"edge-test:greeter/greet@0.1.0\" = {{ path = \"{}\" }}\n", greeter.display()),
    );
    for (name, text) in [("by-component", by_component), ("by-path", by_path)] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        let host = HostCommand::new(&path).data_dir(&dir.path().join(name)).spawn()?;
        let body = host.get("/greet?alice")?.text()?;
        assert_eq!(body, "hello, alice, from the greeter component", "{name}");
    }
    Ok(())
}

#[test]
fn an_unsatisfiable_dependency_fails_at_start_naming_it() -> Result<()> {
    let (dependent, greeter) = build_test_components()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("spin.toml");
    std::fs::write(
        &path,
        manifest(
            &dependent,
            &format!("\"edge-test:nothing/here\" = {{ path = \"{}\" }}\n", greeter.display()),
        ),
    )?;
    let (status, stderr) = HostCommand::new(&path).data_dir(dir.path()).expect_startup_failure()?;
    assert!(!status.success());
    assert!(stderr.contains("edge-test:nothing/here"), "{stderr}");
    assert!(stderr.contains("dependent"), "{stderr}");
    Ok(())
}
