//! Fused cross-entropy; kernels/cross_entropy.cu. Layouts as
//! [`train::ops::losses`](crate::train::ops::losses).

use super::check_len;
use crate::backend::cuda::gpu::{Gpu, to_i32};
use anyhow::Result;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// `losses[t] = logsumexp(logits[t]) − logits[t, targets[t]]` (0 for
/// [`IGNORE`](crate::train::ops::losses::IGNORE)). With `write_grad`, the
/// logits are replaced in place by `dloss · (softmax − onehot)` (zero rows
/// where ignored). Targets must be below `v` or IGNORE (the caller checks).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_fused(
    gpu: &Gpu,
    losses: &mut CudaSlice<f32>,
    logits: &mut CudaSlice<f32>,
    targets: &CudaSlice<u32>,
    dloss: f32,
    n: usize,
    v: usize,
    write_grad: bool,
) -> Result<()> {
    check_len("cross-entropy losses", losses.len(), n)?;
    check_len("cross-entropy logits", logits.len(), n * v)?;
    check_len("cross-entropy targets", targets.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let v32 = to_i32(v, "vocabulary")?;
    let grad = i32::from(write_grad);
    let cfg = LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (512, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch("cross_entropy_fused")?;
    launch
        .arg(losses)
        .arg(logits)
        .arg(targets)
        .arg(&dloss)
        .arg(&v32)
        .arg(&grad);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}
