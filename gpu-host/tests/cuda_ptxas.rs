//! The kernels' compile check, which needs no GPU: NVRTC compiles every
//! file in `gpu-host/kernels/` for sm_90 (the H100) and ptxas assembles it,
//! reporting registers, shared memory and spills per kernel. A file that
//! fails to compile, a kernel missing from the PTX, or any spill fails the
//! test. NVRTC and ptxas come from NVIDIA's PyPI wheels, which `cargo xtask
//! test` installs and names in `GPU_HOST_CUDA_TOOLS`; with neither that
//! nor a CUDA toolkit on the machine, the test says why it skipped.
#![cfg(feature = "cuda")]

use gpu_host::backend::cuda::compile::{KERNEL_SOURCES, compile};
use gpu_host::backend::cuda::device::{TOOLS_ENV, nvrtc_available};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

const ARCH: &str = "sm_90";

fn find_ptxas() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(root) = std::env::var_os(TOOLS_ENV) {
        let root = PathBuf::from(root);
        candidates.push(root.join("nvidia/cu13/bin/ptxas"));
        candidates.push(root.join("nvidia/cuda_nvcc/bin/ptxas"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("ptxas")));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/ptxas"));
    candidates.into_iter().find(|p| p.is_file())
}

#[derive(Default, Debug)]
struct Resources {
    registers: u32,
    smem: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// The number before `unit` in a ptxas line ("24 bytes spill stores").
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let at = line.find(unit)?;
    line[..at]
        .split([' ', ','])
        .rfind(|w| !w.is_empty())?
        .parse()
        .ok()
}

/// Per-kernel resources from `ptxas -v` output.
fn parse_ptxas(report: &str) -> BTreeMap<String, Resources> {
    let mut out: BTreeMap<String, Resources> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some(name) = current.as_ref() else {
            continue;
        };
        let r = out.get_mut(name).expect("entry created above");
        if line.contains("spill stores") {
            r.stack = number_before(line, "bytes stack frame").unwrap_or(0);
            r.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            r.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used") && line.contains("registers") {
            r.registers = number_before(line, "registers").unwrap_or(0);
            r.smem = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}

#[test]
fn cuda_kernels_compile_for_sm90_without_spills() {
    let required = std::env::var_os("GPU_HOST_REQUIRE_CUDA").is_some();
    if let Err(why) = nvrtc_available() {
        assert!(!required, "GPU_HOST_REQUIRE_CUDA is set but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let Some(ptxas) = find_ptxas() else {
        assert!(
            !required,
            "GPU_HOST_REQUIRE_CUDA is set but there is no ptxas"
        );
        eprintln!(
            "skipped: no ptxas (set {TOOLS_ENV} to a pip install of nvidia-cuda-nvcc, or install the CUDA toolkit)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut table = format!(
        "{:<36} {:>5} {:>7} {:>6} {:>7}\n",
        "kernel", "regs", "smem", "stack", "spills"
    );
    for src in KERNEL_SOURCES {
        let ptx = match compile(src, ARCH) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{e:#}"));
                continue;
            }
        };
        let path = dir.path().join(src.file.replace(".cu", ".ptx"));
        std::fs::write(&path, ptx.to_src()).unwrap();
        let run = Command::new(&ptxas)
            .args(["-arch", ARCH, "-v", "-o", "/dev/null"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", ptxas.display()));
        let report = String::from_utf8_lossy(&run.stderr).into_owned()
            + &String::from_utf8_lossy(&run.stdout);
        if !run.status.success() {
            failures.push(format!("ptxas failed on kernels/{}:\n{report}", src.file));
            continue;
        }
        let kernels = parse_ptxas(&report);
        for &name in src.functions {
            let Some(r) = kernels.get(name) else {
                failures.push(format!("kernels/{}: {name} is not in the PTX", src.file));
                continue;
            };
            let spills = r.spill_stores + r.spill_loads;
            table += &format!(
                "{name:<36} {:>5} {:>7} {:>6} {:>7}\n",
                r.registers, r.smem, r.stack, spills
            );
            if spills > 0 {
                failures.push(format!(
                    "{name} spills ({} bytes stored, {} loaded)",
                    r.spill_stores, r.spill_loads
                ));
            }
        }
    }
    let version = gpu_host::backend::cuda::compile::nvrtc_version().unwrap();
    eprintln!(
        "NVRTC {}.{}, {} for {ARCH}:\n{table}",
        version.0,
        version.1,
        ptxas.display()
    );
    assert!(
        failures.is_empty(),
        "kernel compile check failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn ptxas_reports_are_parsed() {
    let report = "ptxas info    : Compiling entry function 'k' for 'sm_90'\n\
                  ptxas info    : Function properties for k\n    \
                  8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n\
                  ptxas info    : Used 198 registers, used 1 barriers, 49152 bytes smem, 400 bytes cmem[0]\n";
    let r = &parse_ptxas(report)["k"];
    assert_eq!(
        (r.registers, r.smem, r.stack, r.spill_stores, r.spill_loads),
        (198, 49152, 8, 12, 16)
    );
}
