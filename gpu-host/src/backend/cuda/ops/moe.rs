//! The MoE-LoRA expert path's row movement; kernels/moe_lora.cu. An
//! expert's rows (`rows [m]`, distinct token indices) are gathered into a
//! dense `[m, w]` block, its LoRA runs as GEMMs on that block, and the
//! results are added back to their tokens.

use super::check_len;
use crate::backend::cuda::gpu::{Gpu, to_i32};
use anyhow::Result;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// `out[i] = src[rows[i]]` for rows of width `w`.
pub fn gather_rows(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    src: &CudaSlice<f32>,
    rows: &CudaSlice<u32>,
    m: usize,
    w: usize,
) -> Result<()> {
    check_len("gather out", out.len(), m * w)?;
    check_len("gather rows", rows.len(), m)?;
    if m == 0 || w == 0 {
        return Ok(());
    }
    let (m32, w32) = (to_i32(m, "gathered rows")?, to_i32(w, "row width")?);
    let mut launch = gpu.launch("gather_rows")?;
    launch.arg(out).arg(src).arg(rows).arg(&m32).arg(&w32);
    // SAFETY: out holds m·w values; the row ids index src (the caller's
    // routing, built from token indices below src's row count).
    unsafe { launch.launch(gpu.grid_stride(m * w)) }?;
    Ok(())
}

/// `dst[rows[i]] += scale · row_scale[i] · src[i]` (`row_scale` 1 when
/// absent). `rows` must be distinct.
#[allow(clippy::too_many_arguments)]
pub fn scatter_add_rows(
    gpu: &Gpu,
    dst: &mut CudaSlice<f32>,
    src: &CudaSlice<f32>,
    rows: &CudaSlice<u32>,
    row_scale: Option<&CudaSlice<f32>>,
    scale: f32,
    m: usize,
    w: usize,
) -> Result<()> {
    check_len("scatter src", src.len(), m * w)?;
    check_len("scatter rows", rows.len(), m)?;
    if let Some(s) = row_scale {
        check_len("scatter row scale", s.len(), m)?;
    }
    if m == 0 || w == 0 {
        return Ok(());
    }
    let (m32, w32) = (to_i32(m, "scattered rows")?, to_i32(w, "row width")?);
    let null: u64 = 0;
    let mut launch = gpu.launch("scatter_add_rows")?;
    launch.arg(dst).arg(src).arg(rows);
    match row_scale {
        Some(s) => launch.arg(s),
        None => launch.arg(&null),
    };
    launch.arg(&scale).arg(&m32).arg(&w32);
    // SAFETY: as gather_rows.
    unsafe { launch.launch(gpu.grid_stride(m * w)) }?;
    Ok(())
}

/// `out[i] = scale · row_scale[i] · src[i]` (`row_scale` 1 when absent).
#[allow(clippy::too_many_arguments)]
pub fn scale_rows(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    src: &CudaSlice<f32>,
    row_scale: Option<&CudaSlice<f32>>,
    scale: f32,
    m: usize,
    w: usize,
) -> Result<()> {
    check_len("scale_rows out", out.len(), m * w)?;
    check_len("scale_rows src", src.len(), m * w)?;
    if let Some(s) = row_scale {
        check_len("scale_rows row scale", s.len(), m)?;
    }
    if m == 0 || w == 0 {
        return Ok(());
    }
    let (m32, w32) = (to_i32(m, "rows")?, to_i32(w, "row width")?);
    let null: u64 = 0;
    let mut launch = gpu.launch("scale_rows")?;
    launch.arg(out).arg(src);
    match row_scale {
        Some(s) => launch.arg(s),
        None => launch.arg(&null),
    };
    launch.arg(&scale).arg(&m32).arg(&w32);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(gpu.grid_stride(m * w)) }?;
    Ok(())
}

/// `out[i] = (accumulate ? out[i] : 0) + scale · a[i]·b[i]` over rows of width `w`.
#[allow(clippy::too_many_arguments)]
pub fn row_dot(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    scale: f32,
    accumulate: bool,
    m: usize,
    w: usize,
) -> Result<()> {
    check_len("row_dot out", out.len(), m)?;
    check_len("row_dot a", a.len(), m * w)?;
    check_len("row_dot b", b.len(), m * w)?;
    if m == 0 {
        return Ok(());
    }
    let (m32, w32) = (to_i32(m, "rows")?, to_i32(w, "row width")?);
    let acc = i32::from(accumulate);
    let cfg = LaunchConfig {
        grid_dim: (m.div_ceil(4) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch("row_dot")?;
    launch
        .arg(out)
        .arg(a)
        .arg(b)
        .arg(&scale)
        .arg(&acc)
        .arg(&m32)
        .arg(&w32);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// `dst[rows[i] · k + slots[i]] += vals[i]`.
pub fn scatter_slots(
    gpu: &Gpu,
    dst: &mut CudaSlice<f32>,
    vals: &CudaSlice<f32>,
    rows: &CudaSlice<u32>,
    slots: &CudaSlice<u32>,
    k: usize,
    m: usize,
) -> Result<()> {
    check_len("scatter_slots vals", vals.len(), m)?;
    check_len("scatter_slots rows", rows.len(), m)?;
    check_len("scatter_slots slots", slots.len(), m)?;
    if m == 0 {
        return Ok(());
    }
    let (k32, m32) = (to_i32(k, "top-k")?, to_i32(m, "rows")?);
    let mut launch = gpu.launch("scatter_slots")?;
    launch
        .arg(dst)
        .arg(vals)
        .arg(rows)
        .arg(slots)
        .arg(&k32)
        .arg(&m32);
    // SAFETY: rows and slots come from the router (below n and k).
    unsafe { launch.launch(gpu.grid_stride(m)) }?;
    Ok(())
}
