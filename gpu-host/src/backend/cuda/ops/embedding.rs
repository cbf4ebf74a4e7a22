//! Token embedding lookup; kernels/embedding.cu. Layouts as
//! [`cpu::ops::embedding`](crate::backend::cpu::ops::embedding).

use super::check_len;
use crate::backend::cuda::gpu::{DeviceElem, Gpu, to_i32};
use anyhow::Result;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// `out[i, :] = wte[tokens[i], :]` for the first `n` tokens. The ids must
/// be below `vocab` (the caller checks them on the host).
pub fn embedding_forward<W: DeviceElem>(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    tokens: &CudaSlice<u32>,
    n: usize,
    wte: &CudaSlice<W>,
    c: usize,
) -> Result<()> {
    check_len("embedding out", out.len(), n * c)?;
    check_len("embedding tokens", tokens.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let c32 = to_i32(c, "embedding width")?;
    let cfg = LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch(&format!("embedding_forward_{}", W::SUFFIX))?;
    launch.arg(out).arg(tokens).arg(wte).arg(&c32);
    // SAFETY: out holds n·c values, tokens n ids below the row count of wte.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// `dwte[tokens[i], :] += dout[i, :]` for the first `n` tokens; twin of
/// `train::ops::embedding::embedding_backward` (atomics: the order of the
/// additions to a repeated token's row is not fixed).
pub fn embedding_backward(
    gpu: &Gpu,
    dwte: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    tokens: &CudaSlice<u32>,
    n: usize,
    c: usize,
) -> Result<()> {
    check_len("embedding dout", dout.len(), n * c)?;
    check_len("embedding tokens", tokens.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let (n32, c32) = (to_i32(n, "embedding rows")?, to_i32(c, "embedding width")?);
    let mut launch = gpu.launch("embedding_backward")?;
    launch.arg(dwte).arg(dout).arg(tokens).arg(&n32).arg(&c32);
    // SAFETY: the caller checked the ids against dwte's rows.
    unsafe { launch.launch(gpu.grid_stride(n * c)) }?;
    Ok(())
}
