//! Residual add in place; kernels/residual.cu. Twin of
//! [`cpu::ops::residual`](crate::backend::cpu::ops::residual).

use super::check_len;
use crate::backend::cuda::gpu::Gpu;
use anyhow::Result;
use cudarc::driver::{CudaSlice, PushKernelArg};

/// `out[..len] += inp[..len]`.
pub fn residual_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    len: usize,
) -> Result<()> {
    check_len("residual out", out.len(), len)?;
    check_len("residual inp", inp.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let cfg = gpu.grid_stride(len);
    let mut launch = gpu.launch("residual_forward")?;
    launch.arg(out).arg(inp).arg(&len);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}
