//! f32 <-> bf16 casts (round to nearest even); kernels/cast.cu.

use super::check_len;
use crate::backend::cuda::gpu::Gpu;
use anyhow::Result;
use cudarc::driver::{CudaSlice, PushKernelArg};
use half::bf16;

/// `out[..len] = bf16(inp[..len])`.
pub fn cast_f32_to_bf16(
    gpu: &Gpu,
    out: &mut CudaSlice<bf16>,
    inp: &CudaSlice<f32>,
    len: usize,
) -> Result<()> {
    check_len("cast out", out.len(), len)?;
    check_len("cast inp", inp.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let cfg = gpu.grid_stride(len.div_ceil(4));
    let mut launch = gpu.launch("cast_f32_to_bf16")?;
    launch.arg(out).arg(inp).arg(&len);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// `out[..len] = f32(inp[..len])`.
pub fn cast_bf16_to_f32(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    inp: &CudaSlice<bf16>,
    len: usize,
) -> Result<()> {
    check_len("cast out", out.len(), len)?;
    check_len("cast inp", inp.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let cfg = gpu.grid_stride(len.div_ceil(4));
    let mut launch = gpu.launch("cast_bf16_to_f32")?;
    launch.arg(out).arg(inp).arg(&len);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}
