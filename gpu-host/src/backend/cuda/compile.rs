//! The kernel sources (`gpu-host/kernels/*.cu`, embedded in the binary) and
//! their compilation with NVRTC for the device's architecture. Compiled PTX
//! is cached on disk, keyed by source, architecture and NVRTC version, so
//! only the first start on a machine pays the compiler (seconds for the
//! attention family); the driver caches its own PTX -> SASS step.

use anyhow::{Context, Result, bail};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx, compile_ptx_with_opts};
use std::path::PathBuf;

/// Prepended to every kernel file (types, conversions, tensor-core PTX).
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// One `.cu` file: an op family, and the kernels it defines.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub file: &'static str,
    pub code: &'static str,
    pub functions: &'static [&'static str],
}

macro_rules! source {
    ($file:literal, [$($f:literal),* $(,)?]) => {
        KernelSource { file: $file, code: include_str!(concat!("../../../kernels/", $file)), functions: &[$($f),*] }
    };
}

pub const KERNEL_SOURCES: &[KernelSource] = &[
    source!(
        "embedding.cu",
        [
            "embedding_forward_f32",
            "embedding_forward_bf16",
            "embedding_backward"
        ]
    ),
    source!(
        "rmsnorm.cu",
        [
            "rmsnorm_forward",
            "residual_rmsnorm_forward",
            "rmsnorm_forward_rstd",
            "rmsnorm_backward"
        ]
    ),
    source!("rope.cu", ["rope_forward"]),
    source!("swiglu.cu", ["swiglu_forward", "swiglu_backward"]),
    source!("residual.cu", ["residual_forward"]),
    source!("cast.cu", ["cast_f32_to_bf16", "cast_bf16_to_f32"]),
    source!("kv_cache.cu", ["kv_cache_write_f32", "kv_cache_write_bf16"]),
    source!("matmul.cu", ["matvec_forward_f32", "matvec_forward_bf16"]),
    source!(
        "paged.cu",
        [
            "rope_forward_positions",
            "rope_backward_positions",
            "paged_kv_write",
            "paged_attention_forward"
        ]
    ),
    source!("router.cu", ["router_forward", "router_backward"]),
    source!(
        "moe_lora.cu",
        [
            "gather_rows",
            "scatter_add_rows",
            "scale_rows",
            "row_dot",
            "scatter_slots"
        ]
    ),
    source!("cross_entropy.cu", ["cross_entropy_fused"]),
    source!("adamw.cu", ["grad_sumsq", "adamw_step"]),
    source!(
        "attention_train.cu",
        [
            "attention_train_forward",
            "attention_train_dsum",
            "attention_train_backward_dq",
            "attention_train_backward_dkdv"
        ]
    ),
    source!(
        "attention.cu",
        [
            "attention_flash_f32_hd32_w1",
            "attention_flash_f32_hd32_w4",
            "attention_flash_f32_hd64_w1",
            "attention_flash_f32_hd64_w4",
            "attention_flash_f32_hd128_w1",
            "attention_flash_f32_hd128_w4",
            "attention_flash_bf16_hd32_w1",
            "attention_flash_bf16_hd32_w4",
            "attention_flash_bf16_hd64_w1",
            "attention_flash_bf16_hd64_w4",
            "attention_flash_bf16_hd128_w1",
            "attention_flash_bf16_hd128_w4",
            "attention_flash_bf16_hd128_w8",
            "attention_flash_bf16_hd128_w4_qs",
            "attention_flash_bf16_hd128_w4_db",
            "attention_flash_bf16_hd128_w4_qs_db",
            "attention_flash_bf16_hd128_w1_db",
            "attention_flash_bf16_hd64_w4_db",
            "attention_combine_f32",
            "attention_combine_bf16",
            "attention_forward_naive",
        ]
    ),
];

impl KernelSource {
    /// What NVRTC compiles: the common header, then the file, with a
    /// `#line` so that errors point into the file.
    pub fn full_source(&self) -> String {
        format!("{COMMON}\n#line 1 \"{}\"\n{}", self.file, self.code)
    }
}

/// The NVRTC version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if let Err(why) = super::device::nvrtc_available() {
        bail!("{why}");
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded (checked above); the out-pointers are valid.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .context("nvrtcVersion failed")?;
    Ok((major, minor))
}

/// Compiles one file to PTX for `arch` (e.g. `sm_90`), no caching.
pub fn compile(src: &KernelSource, arch: &'static str) -> Result<Ptx> {
    if let Err(why) = super::device::nvrtc_available() {
        bail!("{why}");
    }
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(src.file.to_string()),
        // Precise division, square root and denormals: the CPU twins are
        // the reference, and these kernels are not limited by arithmetic.
        ..Default::default()
    };
    compile_ptx_with_opts(src.full_source(), opts).map_err(|e| {
        let detail = match &e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        };
        anyhow::anyhow!("NVRTC failed on kernels/{} for {arch}:\n{detail}", src.file)
    })
}

/// Compiles through the on-disk cache (see [`cache_dir`]); a cache that
/// cannot be read or written is skipped, never an error.
pub fn compile_cached(src: &KernelSource, arch: &'static str) -> Result<Ptx> {
    let (major, minor) = nvrtc_version()?;
    let key = format!(
        "{:016x}",
        fnv1a(&[
            src.full_source().as_bytes(),
            arch.as_bytes(),
            &major.to_le_bytes(),
            &minor.to_le_bytes()
        ])
    );
    let path = cache_dir().map(|d| {
        d.join(format!(
            "{}-{arch}-{key}.ptx",
            src.file.trim_end_matches(".cu")
        ))
    });
    if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        tracing::debug!(file = src.file, arch, "kernel PTX from cache");
        return Ok(Ptx::from_src(text));
    }
    let started = std::time::Instant::now();
    let ptx = compile(src, arch)?;
    tracing::debug!(
        file = src.file,
        arch,
        ms = started.elapsed().as_millis() as u64,
        "compiled kernels with NVRTC"
    );
    if let Some(path) = path {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("cache file has a parent"))?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, ptx.to_src())?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::debug!(error = %e, path = %path.display(), "cannot cache kernel PTX");
        }
    }
    Ok(ptx)
}

/// `$GPU_HOST_KERNEL_CACHE`, else `$XDG_CACHE_HOME/gpu-host/kernels`, else
/// `~/.cache/gpu-host/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("GPU_HOST_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("gpu-host").join("kernels"))
}

/// FNV-1a over several byte strings (stable across Rust versions, unlike
/// `DefaultHasher`, so the cache survives toolchain upgrades).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}
