//! Finding CUDA at run time: the driver (libcuda), NVRTC and cuBLASLt are
//! loaded by cudarc on first use, and cudarc panics when one is missing,
//! so every entry point checks here first and turns absence into an error
//! that says what is missing.

use anyhow::{Context, Result, bail};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A directory holding NVIDIA's PyPI wheels installed with `pip install
/// --target` (`cargo xtask test` sets it): NVRTC is loaded from there when
/// the system has none on its library path.
pub const TOOLS_ENV: &str = "GPU_HOST_CUDA_TOOLS";

/// Library directories inside a wheel install (`nvidia/cu13/lib` for the
/// CUDA 13 wheels, `nvidia/cuda_nvrtc/lib` for the CUDA 12 ones).
fn wheel_lib_dirs(root: &Path) -> Vec<PathBuf> {
    ["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"]
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.is_dir())
        .collect()
}

/// Loads NVRTC (and its builtins library, which NVRTC opens by soname) by
/// absolute path from `dir`, so that cudarc's later load by soname finds
/// the copy already in the process. Returns the libnvrtc path loaded.
pub fn preload_nvrtc_from(dir: &Path) -> Result<PathBuf> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let pick = |prefix: &str| -> Option<PathBuf> {
        let mut found: Vec<&PathBuf> = entries
            .iter()
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with(prefix) && name.contains(".so") && !name.contains(".alt.")
            })
            .collect();
        found.sort();
        found.first().map(|p| (*p).clone())
    };
    let builtins = pick("libnvrtc-builtins")
        .with_context(|| format!("no libnvrtc-builtins in {}", dir.display()))?;
    let nvrtc =
        pick("libnvrtc.so").with_context(|| format!("no libnvrtc.so in {}", dir.display()))?;
    for lib in [&builtins, &nvrtc] {
        // SAFETY: NVIDIA's libraries run no initialisers that depend on us;
        // the handle is leaked on purpose so the library stays loaded.
        let handle = unsafe {
            libloading::os::unix::Library::open(
                Some(lib),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
            )
        }
        .with_context(|| format!("cannot load {}", lib.display()))?;
        std::mem::forget(handle);
    }
    Ok(nvrtc)
}

/// Makes NVRTC loadable if it is not already: from `$GPU_HOST_CUDA_TOOLS`
/// when set. Runs once per process.
fn ensure_nvrtc() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            // SAFETY: probing only loads and unloads the library.
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                return Ok(());
            }
            if let Some(root) = std::env::var_os(TOOLS_ENV) {
                for dir in wheel_lib_dirs(Path::new(&root)) {
                    if preload_nvrtc_from(&dir).is_ok() && unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                        return Ok(());
                    }
                }
                return Err(format!("no usable libnvrtc under {TOOLS_ENV}={}", Path::new(&root).display()));
            }
            Err(format!(
                "libnvrtc (the CUDA run-time compiler) was not found: install the CUDA toolkit and put its lib64 on \
                 LD_LIBRARY_PATH, or set {TOOLS_ENV} to a `pip install --target` of nvidia-cuda-nvrtc"
            ))
        })
        .clone()
}

/// Whether kernels can be compiled here (no GPU needed): `Err` says why not.
pub fn nvrtc_available() -> Result<(), String> {
    ensure_nvrtc()
}

/// Whether the CUDA backend can run here: a driver, a device, NVRTC and
/// cuBLASLt. `Err` holds the reason, for logs and skipped tests.
pub fn cuda_available() -> Result<(), String> {
    // SAFETY: probing only loads and unloads the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so) on this machine".into());
    }
    match CudaContext::device_count() {
        Ok(0) => return Err("the CUDA driver reports no device".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("the CUDA driver cannot list devices: {e}")),
    }
    ensure_nvrtc()?;
    // SAFETY: as above.
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(
            "libcublasLt was not found: put the CUDA toolkit's lib64 on LD_LIBRARY_PATH".into(),
        );
    }
    Ok(())
}

/// What the kernels and benchmarks need to know about the device.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub multiprocessors: usize,
    pub total_memory: usize,
}

impl DeviceInfo {
    /// The NVRTC target, e.g. `sm_90`.
    pub fn arch(&self) -> &'static str {
        arch_name(self.compute_capability)
    }
}

/// `sm_XY` for a compute capability, interned (NVRTC options take
/// `&'static str`).
pub fn arch_name((major, minor): (i32, i32)) -> &'static str {
    static NAMES: OnceLock<std::sync::Mutex<Vec<&'static str>>> = OnceLock::new();
    let name = format!("sm_{major}{minor}");
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.push(leaked);
    leaked
}

/// Opens device `ordinal` and its stream. The kernels need bf16 tensor
/// cores and cp.async: compute capability 8.0 or later.
pub fn open(ordinal: usize) -> Result<(Arc<CudaContext>, Arc<CudaStream>, DeviceInfo)> {
    if let Err(why) = cuda_available() {
        bail!("CUDA is not usable: {why}");
    }
    let count = CudaContext::device_count().context("cannot count CUDA devices")? as usize;
    if ordinal >= count {
        bail!("there is no CUDA device {ordinal} (this machine has {count})");
    }
    let ctx =
        CudaContext::new(ordinal).with_context(|| format!("cannot open CUDA device {ordinal}"))?;
    let info = DeviceInfo {
        ordinal,
        name: ctx.name().unwrap_or_else(|_| "unknown".into()),
        compute_capability: ctx
            .compute_capability()
            .context("cannot read the compute capability")?,
        multiprocessors: ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
            as usize,
        total_memory: ctx.total_mem()?,
    };
    if info.compute_capability.0 < 8 {
        bail!(
            "CUDA device {ordinal} ({}) has compute capability {}.{}; the kernels need 8.0 or later (bf16 tensor cores)",
            info.name,
            info.compute_capability.0,
            info.compute_capability.1
        );
    }
    // One stream per backend: nothing for cudarc to synchronise between,
    // so no events per allocation either (training allocates thousands of
    // activation buffers a step).
    // SAFETY: every buffer of this context is used on this one stream.
    unsafe { ctx.disable_event_tracking() };
    if ctx.has_async_alloc() {
        keep_freed_memory(ordinal)?;
    }
    let stream = ctx.default_stream();
    Ok((ctx, stream, info))
}

/// Lets the device's stream-ordered allocator keep freed memory for reuse.
/// By default its pool returns everything to the driver at each
/// synchronisation, so a step that allocates its activations and
/// synchronises per layer would map and unmap memory over and over.
fn keep_freed_memory(ordinal: usize) -> Result<()> {
    use cudarc::driver::{result, sys};
    let mut threshold = u64::MAX;
    // SAFETY: `ordinal` is a device that was just opened; the release
    // threshold attribute is a u64.
    unsafe {
        let dev = result::device::get(ordinal as i32)?;
        let pool = result::device::get_default_mem_pool(dev)?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut threshold as *mut u64 as *mut std::ffi::c_void,
        )
    }
    .context("cannot set the memory pool's release threshold")
}
