//! Rotary position embedding (rotate-half pairs); kernels/rope.cu.
//! Layouts as [`cpu::ops::rope`](crate::backend::cpu::ops::rope).

use super::check_len;
use crate::backend::cuda::gpu::{Gpu, to_i32};
use anyhow::{Result, ensure};
use cudarc::driver::{CudaSlice, PushKernelArg};

/// Rotates `x[n, n_heads, head_dim]` in place; row `t` at `pos0 + t`.
#[allow(clippy::too_many_arguments)]
pub fn rope_forward(
    gpu: &Gpu,
    x: &mut CudaSlice<f32>,
    cos: &CudaSlice<f32>,
    sin: &CudaSlice<f32>,
    n: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
) -> Result<()> {
    ensure!(
        head_dim.is_multiple_of(2),
        "rope: head_dim {head_dim} must be even"
    );
    let half = head_dim / 2;
    check_len("rope x", x.len(), n * n_heads * head_dim)?;
    check_len("rope cos table", cos.len(), (pos0 + n) * half)?;
    check_len("rope sin table", sin.len(), (pos0 + n) * half)?;
    let pairs = n * n_heads * half;
    if pairs == 0 {
        return Ok(());
    }
    let (n32, h32, d32, p32) = (
        to_i32(n, "rope rows")?,
        to_i32(n_heads, "rope heads")?,
        to_i32(head_dim, "head_dim")?,
        to_i32(pos0, "position")?,
    );
    let cfg = gpu.grid_stride(pairs);
    let mut launch = gpu.launch("rope_forward")?;
    launch
        .arg(x)
        .arg(cos)
        .arg(sin)
        .arg(&n32)
        .arg(&h32)
        .arg(&d32)
        .arg(&p32);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}
