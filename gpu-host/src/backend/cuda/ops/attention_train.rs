//! Flash attention for training over packed documents;
//! kernels/attention_train.cu. Layouts as
//! [`train::ops::attention`](crate::train::ops::attention), except that
//! the forward saves the log-sum-exp of each (row, head), `[n, n_heads]`,
//! instead of the probabilities: the backward recomputes them.

use super::check_len;
use crate::backend::cuda::gpu::{Gpu, to_i32};
use crate::train::ops::attention::AttnShape;
use anyhow::{Context, Result, ensure};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Each row's document on the device: its first row and one past its last.
pub struct DocRows {
    pub n: usize,
    start: CudaSlice<i32>,
    end: CudaSlice<i32>,
}

impl DocRows {
    /// From `(start, len)` per document, in order, covering `0..n`.
    pub fn new(gpu: &Gpu, docs: &[(usize, usize)]) -> Result<Self> {
        let n: usize = docs.iter().map(|d| d.1).sum();
        to_i32(n, "attention rows")?;
        let (mut start, mut end) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut next = 0;
        for &(s, len) in docs {
            ensure!(
                s == next,
                "attention: documents must be contiguous and in order"
            );
            start.extend(std::iter::repeat_n(s as i32, len));
            end.extend(std::iter::repeat_n((s + len) as i32, len));
            next = s + len;
        }
        let up = |v: &[i32]| {
            gpu.stream
                .clone_htod(v)
                .context("copying document bounds to the GPU")
        };
        Ok(Self {
            n,
            start: up(&start)?,
            end: up(&end)?,
        })
    }
}

fn warps(items: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items.div_ceil(4) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn dims(s: &AttnShape, n: usize) -> Result<(i32, i32, i32, i32, f32)> {
    ensure!(
        s.head_dim <= 256,
        "training attention supports head_dim ≤ 256, not {}",
        s.head_dim
    );
    ensure!(
        s.n_kv_heads > 0 && s.n_heads.is_multiple_of(s.n_kv_heads),
        "attention: n_heads {} is not a multiple of n_kv_heads {}",
        s.n_heads,
        s.n_kv_heads
    );
    Ok((
        to_i32(n, "attention rows")?,
        s.n_heads as i32,
        s.n_kv_heads as i32,
        s.head_dim as i32,
        1.0 / (s.head_dim as f32).sqrt(),
    ))
}

/// `out` and `lse [n, n_heads]` of causal attention within each document.
#[allow(clippy::too_many_arguments)]
pub fn attention_train_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    lse: &mut CudaSlice<f32>,
    q: &CudaSlice<f32>,
    k: &CudaSlice<f32>,
    v: &CudaSlice<f32>,
    docs: &DocRows,
    s: AttnShape,
) -> Result<()> {
    let n = docs.n;
    let (n32, h32, kv32, d32, scale) = dims(&s, n)?;
    check_len("attention out", out.len(), n * s.n_heads * s.head_dim)?;
    check_len("attention lse", lse.len(), n * s.n_heads)?;
    check_len("attention q", q.len(), n * s.n_heads * s.head_dim)?;
    check_len("attention k", k.len(), n * s.n_kv_heads * s.head_dim)?;
    check_len("attention v", v.len(), n * s.n_kv_heads * s.head_dim)?;
    if n == 0 {
        return Ok(());
    }
    let mut launch = gpu.launch("attention_train_forward")?;
    launch
        .arg(out)
        .arg(lse)
        .arg(q)
        .arg(k)
        .arg(v)
        .arg(&docs.start);
    launch.arg(&n32).arg(&h32).arg(&kv32).arg(&d32).arg(&scale);
    // SAFETY: sizes checked above; document bounds lie in 0..n.
    unsafe { launch.launch(warps(n * s.n_heads)) }?;
    Ok(())
}

/// `dq`, `dk`, `dv` (overwritten) from `dout`, the forward's inputs, its
/// output and its log-sum-exp. `dsum [n, n_heads]` is scratch.
#[allow(clippy::too_many_arguments)]
pub fn attention_train_backward(
    gpu: &Gpu,
    dq: &mut CudaSlice<f32>,
    dk: &mut CudaSlice<f32>,
    dv: &mut CudaSlice<f32>,
    dsum: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    out: &CudaSlice<f32>,
    q: &CudaSlice<f32>,
    k: &CudaSlice<f32>,
    v: &CudaSlice<f32>,
    lse: &CudaSlice<f32>,
    docs: &DocRows,
    s: AttnShape,
) -> Result<()> {
    let n = docs.n;
    let (n32, h32, kv32, d32, scale) = dims(&s, n)?;
    let (qlen, kvlen) = (n * s.n_heads * s.head_dim, n * s.n_kv_heads * s.head_dim);
    for (what, have, need) in [
        ("dq", dq.len(), qlen),
        ("dk", dk.len(), kvlen),
        ("dv", dv.len(), kvlen),
        ("dsum", dsum.len(), n * s.n_heads),
        ("dout", dout.len(), qlen),
        ("out", out.len(), qlen),
        ("q", q.len(), qlen),
        ("k", k.len(), kvlen),
        ("v", v.len(), kvlen),
        ("lse", lse.len(), n * s.n_heads),
    ] {
        check_len(&format!("attention backward {what}"), have, need)?;
    }
    if n == 0 {
        return Ok(());
    }
    let mut launch = gpu.launch("attention_train_dsum")?;
    launch
        .arg(&mut *dsum)
        .arg(dout)
        .arg(out)
        .arg(&n32)
        .arg(&h32)
        .arg(&d32);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(warps(n * s.n_heads)) }?;
    let mut launch = gpu.launch("attention_train_backward_dq")?;
    launch
        .arg(dq)
        .arg(dout)
        .arg(q)
        .arg(k)
        .arg(v)
        .arg(lse)
        .arg(&*dsum)
        .arg(&docs.start);
    launch.arg(&n32).arg(&h32).arg(&kv32).arg(&d32).arg(&scale);
    // SAFETY: as above.
    unsafe { launch.launch(warps(n * s.n_heads)) }?;
    let mut launch = gpu.launch("attention_train_backward_dkdv")?;
    launch
        .arg(dk)
        .arg(dv)
        .arg(dout)
        .arg(q)
        .arg(k)
        .arg(v)
        .arg(lse)
        .arg(&*dsum)
        .arg(&docs.end);
    launch.arg(&n32).arg(&h32).arg(&kv32).arg(&d32).arg(&scale);
    // SAFETY: as above.
    unsafe { launch.launch(warps(n * s.n_kv_heads)) }?;
    Ok(())
}
