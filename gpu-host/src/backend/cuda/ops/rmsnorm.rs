//! RMSNorm, alone and fused with the preceding residual add;
//! kernels/rmsnorm.cu. Layouts as [`cpu::ops::rmsnorm`](crate::backend::cpu::ops::rmsnorm).

use super::check_len;
use crate::backend::cuda::gpu::{Gpu, to_i32};
use anyhow::Result;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

fn row_launch(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `out[n, c] = inp / sqrt(mean(inp²) + eps) · weight`, row by row.
pub fn rmsnorm_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    check_len("rmsnorm out", out.len(), n * c)?;
    check_len("rmsnorm inp", inp.len(), n * c)?;
    check_len("rmsnorm weight", weight.len(), c)?;
    if n == 0 {
        return Ok(());
    }
    let c32 = to_i32(c, "rmsnorm width")?;
    let mut launch = gpu.launch("rmsnorm_forward")?;
    launch.arg(out).arg(inp).arg(weight).arg(&c32).arg(&eps);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(row_launch(n)) }?;
    Ok(())
}

/// `residual += inp`, then `out = rmsnorm(residual)`: the two steps that
/// end one Llama sub-block and start the next, in one pass.
#[allow(clippy::too_many_arguments)]
pub fn residual_rmsnorm_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    residual: &mut CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    check_len("rmsnorm out", out.len(), n * c)?;
    check_len("rmsnorm residual", residual.len(), n * c)?;
    check_len("rmsnorm inp", inp.len(), n * c)?;
    check_len("rmsnorm weight", weight.len(), c)?;
    if n == 0 {
        return Ok(());
    }
    let c32 = to_i32(c, "rmsnorm width")?;
    let mut launch = gpu.launch("residual_rmsnorm_forward")?;
    launch
        .arg(out)
        .arg(residual)
        .arg(inp)
        .arg(weight)
        .arg(&c32)
        .arg(&eps);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(row_launch(n)) }?;
    Ok(())
}

/// Training's RMSNorm: as [`rmsnorm_forward`], also saving `rstd [n]` for
/// the backward (twin of `train::ops::rmsnorm::rmsnorm_forward`).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward_rstd(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    rstd: &mut CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    check_len("rmsnorm out", out.len(), n * c)?;
    check_len("rmsnorm rstd", rstd.len(), n)?;
    check_len("rmsnorm inp", inp.len(), n * c)?;
    check_len("rmsnorm weight", weight.len(), c)?;
    if n == 0 {
        return Ok(());
    }
    let c32 = to_i32(c, "rmsnorm width")?;
    let mut launch = gpu.launch("rmsnorm_forward_rstd")?;
    launch
        .arg(out)
        .arg(rstd)
        .arg(inp)
        .arg(weight)
        .arg(&c32)
        .arg(&eps);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(row_launch(n)) }?;
    Ok(())
}

/// `dinp += ∂/∂inp`, `dweight += ∂/∂weight` (when given) of
/// [`rmsnorm_forward_rstd`]; twin of `train::ops::rmsnorm::rmsnorm_backward`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    gpu: &Gpu,
    dinp: &mut CudaSlice<f32>,
    dweight: Option<&mut CudaSlice<f32>>,
    dout: &CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    weight: &CudaSlice<f32>,
    rstd: &CudaSlice<f32>,
    n: usize,
    c: usize,
) -> Result<()> {
    check_len("rmsnorm dinp", dinp.len(), n * c)?;
    check_len("rmsnorm dout", dout.len(), n * c)?;
    check_len("rmsnorm inp", inp.len(), n * c)?;
    check_len("rmsnorm weight", weight.len(), c)?;
    check_len("rmsnorm rstd", rstd.len(), n)?;
    if let Some(dw) = &dweight {
        check_len("rmsnorm dweight", dw.len(), c)?;
    }
    if n == 0 {
        return Ok(());
    }
    let c32 = to_i32(c, "rmsnorm width")?;
    let null: u64 = 0;
    let mut launch = gpu.launch("rmsnorm_backward")?;
    launch.arg(dinp);
    match dweight {
        Some(dw) => launch.arg(dw),
        None => launch.arg(&null),
    };
    launch.arg(dout).arg(inp).arg(weight).arg(rstd).arg(&c32);
    // SAFETY: sizes checked above; a null dweight is skipped by the kernel.
    unsafe { launch.launch(row_launch(n)) }?;
    Ok(())
}
