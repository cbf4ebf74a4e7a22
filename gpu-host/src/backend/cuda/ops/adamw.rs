//! AdamW and the global gradient norm; kernels/adamw.cu. Twin of
//! [`train::optim`](crate::train::optim).

use super::check_len;
use crate::backend::cuda::gpu::Gpu;
use anyhow::Result;
use cudarc::driver::{CudaSlice, PushKernelArg};

/// `out[0] += Σ g²` (f64).
pub fn grad_sumsq(gpu: &Gpu, out: &mut CudaSlice<f64>, g: &CudaSlice<f32>) -> Result<()> {
    check_len("grad_sumsq out", out.len(), 1)?;
    let len = g.len();
    if len == 0 {
        return Ok(());
    }
    let mut launch = gpu.launch("grad_sumsq")?;
    launch.arg(out).arg(g).arg(&len);
    // SAFETY: g holds len values, out one.
    unsafe { launch.launch(gpu.grid_stride(len)) }?;
    Ok(())
}

/// The per-step constants of one AdamW update (see `train::optim::AdamW::step`).
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// Gradients are multiplied by this first (global-norm clipping; 1: none).
    pub clip_scale: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `lr / (1 − β1ᵗ)`.
    pub step: f32,
    /// `1 / (1 − β2ᵗ)`.
    pub inv_bc2: f32,
    /// `lr · weight_decay` for matrices, 0 otherwise.
    pub decay: f32,
}

/// One AdamW update of `p` with gradient `g` and moments `m`, `v`.
pub fn adamw_step(
    gpu: &Gpu,
    p: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    s: AdamWStep,
) -> Result<()> {
    let len = p.len();
    check_len("adamw grad", g.len(), len)?;
    check_len("adamw m", m.len(), len)?;
    check_len("adamw v", v.len(), len)?;
    if len == 0 {
        return Ok(());
    }
    let mut launch = gpu.launch("adamw_step")?;
    launch
        .arg(p)
        .arg(g)
        .arg(m)
        .arg(v)
        .arg(&len)
        .arg(&s.clip_scale)
        .arg(&s.beta1)
        .arg(&s.beta2)
        .arg(&s.eps)
        .arg(&s.step)
        .arg(&s.inv_bc2)
        .arg(&s.decay);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(gpu.grid_stride(len)) }?;
    Ok(())
}
