//! Serving over a paged KV cache; kernels/paged.cu. Layouts and rules as
//! [`cpu::ops::paged`](crate::backend::cpu::ops::paged) and
//! [`cpu::ops::rope::rope_forward_positions`](crate::backend::cpu::ops::rope_forward_positions).
//! The small index arrays (positions, slots, block tables) are copied to
//! the device with each call.

use super::check_len;
use crate::backend::cpu::ops::{PagedSeq, PagedShape};
use crate::backend::cuda::gpu::{Gpu, to_i32};
use anyhow::{Context, Result, ensure};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

fn upload_i32(gpu: &Gpu, values: &[u32], what: &str) -> Result<CudaSlice<i32>> {
    let v: Vec<i32> = values
        .iter()
        .map(|&x| to_i32(x as usize, what))
        .collect::<Result<_>>()?;
    gpu.stream
        .clone_htod(&v)
        .with_context(|| format!("copying {what} to the GPU"))
}

/// Rotates row `t` of `x [n, n_heads, head_dim]` to `positions[t]`.
pub fn rope_forward_positions(
    gpu: &Gpu,
    x: &mut CudaSlice<f32>,
    cos: &CudaSlice<f32>,
    sin: &CudaSlice<f32>,
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
) -> Result<()> {
    rope_positions(
        gpu,
        "rope_forward_positions",
        x,
        cos,
        sin,
        positions,
        n_heads,
        head_dim,
    )
}

/// The gradient through [`rope_forward_positions`]: rotates each row of
/// `dx` back by its position's angle, in place.
pub fn rope_backward_positions(
    gpu: &Gpu,
    dx: &mut CudaSlice<f32>,
    cos: &CudaSlice<f32>,
    sin: &CudaSlice<f32>,
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
) -> Result<()> {
    rope_positions(
        gpu,
        "rope_backward_positions",
        dx,
        cos,
        sin,
        positions,
        n_heads,
        head_dim,
    )
}

#[allow(clippy::too_many_arguments)]
fn rope_positions(
    gpu: &Gpu,
    kernel: &str,
    x: &mut CudaSlice<f32>,
    cos: &CudaSlice<f32>,
    sin: &CudaSlice<f32>,
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
) -> Result<()> {
    ensure!(
        head_dim.is_multiple_of(2),
        "rope: head_dim {head_dim} must be even"
    );
    let (n, half) = (positions.len(), head_dim / 2);
    if n == 0 {
        return Ok(());
    }
    check_len("rope x", x.len(), n * n_heads * head_dim)?;
    let max = *positions.iter().max().expect("non-empty") as usize;
    check_len("rope cos table", cos.len(), (max + 1) * half)?;
    check_len("rope sin table", sin.len(), (max + 1) * half)?;
    let pos = upload_i32(gpu, positions, "positions")?;
    let (n32, h32, d32) = (
        to_i32(n, "rope rows")?,
        to_i32(n_heads, "rope heads")?,
        to_i32(head_dim, "head_dim")?,
    );
    let cfg = gpu.grid_stride(n * n_heads * half);
    let mut launch = gpu.launch(kernel)?;
    launch
        .arg(x)
        .arg(cos)
        .arg(sin)
        .arg(&pos)
        .arg(&n32)
        .arg(&h32)
        .arg(&d32);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// Writes row `t` of `k, v [n, n_kv_heads, head_dim]` to pool slot `slots[t]`.
pub fn paged_kv_write(
    gpu: &Gpu,
    k_pool: &mut CudaSlice<f32>,
    v_pool: &mut CudaSlice<f32>,
    k: &CudaSlice<f32>,
    v: &CudaSlice<f32>,
    slots: &[u32],
    s: PagedShape,
) -> Result<()> {
    let n = slots.len();
    let kv_dim = s.n_kv_heads * s.head_dim;
    if n == 0 {
        return Ok(());
    }
    check_len("paged k", k.len(), n * kv_dim)?;
    check_len("paged v", v.len(), n * kv_dim)?;
    ensure!(
        k_pool.len() == v_pool.len(),
        "paged kv write: pools differ in size"
    );
    let pool_slots = k_pool.len() / s.block_len() * s.block_size;
    ensure!(
        slots.iter().all(|&x| (x as usize) < pool_slots),
        "paged kv write: a slot lies outside the pool of {pool_slots}"
    );
    let sl = upload_i32(gpu, slots, "slots")?;
    let (n32, h32, b32, d32) = (
        to_i32(n, "rows")?,
        to_i32(s.n_kv_heads, "kv heads")?,
        to_i32(s.block_size, "block size")?,
        to_i32(s.head_dim, "head_dim")?,
    );
    let cfg = gpu.grid_stride(n * kv_dim);
    let mut launch = gpu.launch("paged_kv_write")?;
    launch
        .arg(k_pool)
        .arg(v_pool)
        .arg(k)
        .arg(v)
        .arg(&sl)
        .arg(&n32)
        .arg(&h32)
        .arg(&b32)
        .arg(&d32);
    // SAFETY: sizes and slots checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// Causal GQA of each sequence's rows of `q` over its paged cache.
pub fn paged_attention_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    q: &CudaSlice<f32>,
    k_pool: &CudaSlice<f32>,
    v_pool: &CudaSlice<f32>,
    seqs: &[PagedSeq],
    s: PagedShape,
) -> Result<()> {
    ensure!(
        s.head_dim.is_multiple_of(32) && s.head_dim <= 256,
        "paged attention on the GPU needs head_dim a multiple of 32 up to 256, got {}",
        s.head_dim
    );
    ensure!(
        s.n_heads.is_multiple_of(s.n_kv_heads),
        "n_heads must be a multiple of n_kv_heads"
    );
    let rows = seqs.iter().map(|q| q.row0 + q.n).max().unwrap_or(0);
    if rows == 0 {
        return Ok(());
    }
    check_len("paged q", q.len(), rows * s.n_heads * s.head_dim)?;
    check_len("paged out", out.len(), rows * s.n_heads * s.head_dim)?;
    let pool_blocks = k_pool.len() / s.block_len();
    let mut row_pos = vec![-1i32; rows];
    let mut row_table = vec![0i32; rows];
    let mut tables: Vec<i32> = Vec::new();
    for sq in seqs {
        ensure!(
            sq.blocks.len() * s.block_size >= sq.pos0 + sq.n,
            "paged attention: block table too short"
        );
        ensure!(
            sq.blocks.iter().all(|&b| (b as usize) < pool_blocks),
            "paged attention: block outside the pool"
        );
        let offset = to_i32(tables.len(), "block tables")?;
        tables.extend(sq.blocks.iter().map(|&b| b as i32));
        for t in 0..sq.n {
            row_pos[sq.row0 + t] = to_i32(sq.pos0 + t, "position")?;
            row_table[sq.row0 + t] = offset;
        }
    }
    let stream = &gpu.stream;
    let row_pos = stream
        .clone_htod(&row_pos)
        .context("copying row positions")?;
    let row_table = stream
        .clone_htod(&row_table)
        .context("copying row tables")?;
    let tables = stream.clone_htod(&tables).context("copying block tables")?;
    let window = to_i32(s.window.unwrap_or(0), "window")?;
    let (r32, h32, kv32, d32, b32) = (
        to_i32(rows, "rows")?,
        to_i32(s.n_heads, "heads")?,
        to_i32(s.n_kv_heads, "kv heads")?,
        to_i32(s.head_dim, "head_dim")?,
        to_i32(s.block_size, "block size")?,
    );
    let cfg = LaunchConfig {
        grid_dim: ((rows * s.n_heads) as u32, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch("paged_attention_forward")?;
    launch
        .arg(out)
        .arg(q)
        .arg(k_pool)
        .arg(v_pool)
        .arg(&row_pos)
        .arg(&row_table)
        .arg(&tables)
        .arg(&r32)
        .arg(&h32)
        .arg(&kv32)
        .arg(&d32)
        .arg(&b32)
        .arg(&window);
    // SAFETY: sizes, tables and head_dim checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}
