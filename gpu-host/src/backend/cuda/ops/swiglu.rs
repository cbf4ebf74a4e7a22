//! SwiGLU gate; kernels/swiglu.cu. Layouts as
//! [`cpu::ops::swiglu`](crate::backend::cpu::ops::swiglu).

use super::check_len;
use crate::backend::cuda::gpu::Gpu;
use anyhow::Result;
use cudarc::driver::{CudaSlice, PushKernelArg};

/// `out[..len] = silu(gate[..len]) · up[..len]`.
pub fn swiglu_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    gate: &CudaSlice<f32>,
    up: &CudaSlice<f32>,
    len: usize,
) -> Result<()> {
    check_len("swiglu out", out.len(), len)?;
    check_len("swiglu gate", gate.len(), len)?;
    check_len("swiglu up", up.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let cfg = gpu.grid_stride(len.div_ceil(4));
    let mut launch = gpu.launch("swiglu_forward")?;
    launch.arg(out).arg(gate).arg(up).arg(&len);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// `dgate += ∂/∂gate`, `dup += ∂/∂up` of [`swiglu_forward`]; twin of
/// `train::ops::swiglu::swiglu_backward`.
pub fn swiglu_backward(
    gpu: &Gpu,
    dgate: &mut CudaSlice<f32>,
    dup: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    gate: &CudaSlice<f32>,
    up: &CudaSlice<f32>,
    len: usize,
) -> Result<()> {
    for (what, have) in [
        ("dgate", dgate.len()),
        ("dup", dup.len()),
        ("dout", dout.len()),
        ("gate", gate.len()),
        ("up", up.len()),
    ] {
        check_len(&format!("swiglu {what}"), have, len)?;
    }
    if len == 0 {
        return Ok(());
    }
    let cfg = gpu.grid_stride(len);
    let mut launch = gpu.launch("swiglu_backward")?;
    launch
        .arg(dgate)
        .arg(dup)
        .arg(dout)
        .arg(gate)
        .arg(up)
        .arg(&len);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}
