//! One opened device: its context and stream, and every kernel compiled
//! for its architecture and loaded. The ops in [`super::ops`] take a
//! [`Gpu`] first, the way the CPU ops take the current thread pool.

use super::compile::{KERNEL_SOURCES, compile_cached};
use super::device::{self, DeviceInfo};
use anyhow::{Context, Result, bail};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchArgs, LaunchConfig,
    ValidAsZeroBits,
};
use half::bf16;
use std::collections::HashMap;
use std::sync::Arc;

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub info: DeviceInfo,
    kernels: HashMap<&'static str, CudaFunction>,
}

impl Gpu {
    /// Opens device `ordinal` and compiles (or takes from the cache) and
    /// loads every kernel.
    pub fn new(ordinal: usize) -> Result<Self> {
        let (ctx, stream, info) = device::open(ordinal)?;
        let arch = info.arch();
        let mut kernels = HashMap::new();
        let started = std::time::Instant::now();
        for src in KERNEL_SOURCES {
            let ptx = compile_cached(src, arch)?;
            let module = ctx.load_module(ptx).with_context(|| {
                format!(
                    "the driver rejected the PTX of kernels/{} for {arch}",
                    src.file
                )
            })?;
            for &name in src.functions {
                let f = module.load_function(name).with_context(|| {
                    format!("kernel {name} is missing from kernels/{}", src.file)
                })?;
                if name.ends_with("_db") {
                    allow_large_shared_memory(&ctx, &f, name)?;
                }
                kernels.insert(name, f);
            }
        }
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            kernels = kernels.len(),
            arch,
            "CUDA kernels loaded"
        );
        Ok(Self {
            ctx,
            stream,
            info,
            kernels,
        })
    }

    pub fn kernel(&self, name: &str) -> Result<&CudaFunction> {
        match self.kernels.get(name) {
            Some(f) => Ok(f),
            None => bail!("internal: no kernel named {name}"),
        }
    }

    /// A launch of kernel `name` on this device's stream; add the
    /// arguments in the kernel's order, then `launch`.
    pub fn launch(&self, name: &str) -> Result<LaunchArgs<'_>> {
        Ok(self.stream.launch_builder(self.kernel(name)?))
    }

    /// Blocks until the stream has finished, surfacing asynchronous errors.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().context("CUDA stream failed")
    }

    /// A grid-stride launch over `len` items: enough blocks of 256 to fill
    /// the device a few times over, never more than the work.
    pub fn grid_stride(&self, len: usize) -> LaunchConfig {
        let blocks = len.div_ceil(256).clamp(1, self.info.multiprocessors * 16);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Lets a kernel that takes dynamic shared memory (the double-buffered
/// `_db` attention kernels) use more than the default 48 KiB, up to what
/// the device allows one block.
fn allow_large_shared_memory(ctx: &CudaContext, f: &CudaFunction, name: &str) -> Result<()> {
    use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
    let max =
        ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
    // SAFETY: `f` is a function loaded in this context.
    unsafe {
        cudarc::driver::result::function::set_function_attribute(
            f.cu_function(),
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            max,
        )
    }
    .with_context(|| format!("cannot raise the shared memory limit of {name}"))
}

/// Element types kernels are instantiated for; `SUFFIX` completes kernel
/// names (`cast_f32_to_bf16`, `attention_flash_bf16_hd128_w4`).
pub trait DeviceElem: DeviceRepr + ValidAsZeroBits + Copy + Send + Sync + 'static {
    const SUFFIX: &'static str;
    /// The slice as f32, for kernels that exist in f32 only.
    fn as_f32(s: &CudaSlice<Self>) -> Option<&CudaSlice<f32>>;
    fn as_f32_mut(s: &mut CudaSlice<Self>) -> Option<&mut CudaSlice<f32>>;
}

impl DeviceElem for f32 {
    const SUFFIX: &'static str = "f32";
    fn as_f32(s: &CudaSlice<f32>) -> Option<&CudaSlice<f32>> {
        Some(s)
    }
    fn as_f32_mut(s: &mut CudaSlice<f32>) -> Option<&mut CudaSlice<f32>> {
        Some(s)
    }
}

impl DeviceElem for bf16 {
    const SUFFIX: &'static str = "bf16";
    fn as_f32(_: &CudaSlice<bf16>) -> Option<&CudaSlice<f32>> {
        None
    }
    fn as_f32_mut(_: &mut CudaSlice<bf16>) -> Option<&mut CudaSlice<f32>> {
        None
    }
}

/// A size as the kernels' `int`, or an error naming it.
pub fn to_i32(value: usize, what: &str) -> Result<i32> {
    i32::try_from(value)
        .map_err(|_| anyhow::anyhow!("{what} = {value} exceeds the kernels' 32-bit range"))
}
