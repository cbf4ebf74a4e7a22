//! The MoE router; kernels/router.cu. Layouts as
//! [`train::ops::router`](crate::train::ops::router).

use super::check_len;
use crate::backend::cuda::gpu::{Gpu, to_i32};
use anyhow::{Result, ensure};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

fn per_row(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(128) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn check_shape(n: usize, e: usize, k: usize) -> Result<(i32, i32, i32)> {
    ensure!(
        (1..=64).contains(&e) && (1..=e).contains(&k),
        "router: need 1 ≤ k ≤ E ≤ 64, got k = {k}, E = {e}"
    );
    Ok((to_i32(n, "router rows")?, e as i32, k as i32))
}

/// `probs = softmax(logits)`, the top-k experts per row (best first) and
/// their renormalised weights.
#[allow(clippy::too_many_arguments)]
pub fn router_forward(
    gpu: &Gpu,
    probs: &mut CudaSlice<f32>,
    topk_idx: &mut CudaSlice<u32>,
    topk_w: &mut CudaSlice<f32>,
    logits: &CudaSlice<f32>,
    n: usize,
    e: usize,
    k: usize,
) -> Result<()> {
    let (n32, e32, k32) = check_shape(n, e, k)?;
    check_len("router probs", probs.len(), n * e)?;
    check_len("router logits", logits.len(), n * e)?;
    check_len("router topk_idx", topk_idx.len(), n * k)?;
    check_len("router topk_w", topk_w.len(), n * k)?;
    if n == 0 {
        return Ok(());
    }
    let mut launch = gpu.launch("router_forward")?;
    launch
        .arg(probs)
        .arg(topk_idx)
        .arg(topk_w)
        .arg(logits)
        .arg(&n32)
        .arg(&e32)
        .arg(&k32);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(per_row(n)) }?;
    Ok(())
}

/// `dlogits +=` the gradient through the renormalised top-k weights
/// (`dtopk_w`) and through the probabilities (`dprobs`, the auxiliary
/// losses', when given).
#[allow(clippy::too_many_arguments)]
pub fn router_backward(
    gpu: &Gpu,
    dlogits: &mut CudaSlice<f32>,
    dtopk_w: &CudaSlice<f32>,
    dprobs: Option<&CudaSlice<f32>>,
    probs: &CudaSlice<f32>,
    topk_idx: &CudaSlice<u32>,
    topk_w: &CudaSlice<f32>,
    n: usize,
    e: usize,
    k: usize,
) -> Result<()> {
    let (n32, e32, k32) = check_shape(n, e, k)?;
    check_len("router dlogits", dlogits.len(), n * e)?;
    check_len("router probs", probs.len(), n * e)?;
    check_len("router dtopk_w", dtopk_w.len(), n * k)?;
    check_len("router topk_idx", topk_idx.len(), n * k)?;
    check_len("router topk_w", topk_w.len(), n * k)?;
    if let Some(d) = dprobs {
        check_len("router dprobs", d.len(), n * e)?;
    }
    if n == 0 {
        return Ok(());
    }
    let null: u64 = 0;
    let mut launch = gpu.launch("router_backward")?;
    launch.arg(dlogits).arg(dtopk_w);
    match dprobs {
        Some(d) => launch.arg(d),
        None => launch.arg(&null),
    };
    launch
        .arg(probs)
        .arg(topk_idx)
        .arg(topk_w)
        .arg(&n32)
        .arg(&e32)
        .arg(&k32);
    // SAFETY: sizes checked above; a null dprobs is skipped by the kernel.
    unsafe { launch.launch(per_row(n)) }?;
    Ok(())
}
