//! Appending keys and values to a layer's cache; kernels/kv_cache.cu.
//! Layouts as [`cpu::ops::kv_cache`](crate::backend::cpu::ops::kv_cache);
//! the cache may be f32 or bf16 (rounded on the way in).

use super::check_len;
use crate::backend::cuda::gpu::{DeviceElem, Gpu, to_i32};
use anyhow::{Result, ensure};
use cudarc::driver::{CudaSlice, PushKernelArg};

/// Writes `k, v [n, n_kv_heads, head_dim]` at positions `pos0..pos0 + n` of
/// the caches `[n_kv_heads, max_seq, head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn kv_cache_write<C: DeviceElem>(
    gpu: &Gpu,
    k_cache: &mut CudaSlice<C>,
    v_cache: &mut CudaSlice<C>,
    k: &CudaSlice<f32>,
    v: &CudaSlice<f32>,
    n: usize,
    pos0: usize,
    n_kv_heads: usize,
    head_dim: usize,
    max_seq: usize,
) -> Result<()> {
    ensure!(
        pos0 + n <= max_seq,
        "kv cache: positions {pos0}..{} exceed capacity {max_seq}",
        pos0 + n
    );
    let len = n * n_kv_heads * head_dim;
    check_len("kv cache k", k.len(), len)?;
    check_len("kv cache v", v.len(), len)?;
    check_len("k cache", k_cache.len(), n_kv_heads * max_seq * head_dim)?;
    check_len("v cache", v_cache.len(), n_kv_heads * max_seq * head_dim)?;
    if len == 0 {
        return Ok(());
    }
    let (n32, p32) = (to_i32(n, "kv rows")?, to_i32(pos0, "kv position")?);
    let (h32, d32, s32) = (
        to_i32(n_kv_heads, "kv heads")?,
        to_i32(head_dim, "head_dim")?,
        to_i32(max_seq, "max_seq")?,
    );
    // Four values per thread when head_dim allows (see kernels/kv_cache.cu).
    let cfg = gpu.grid_stride(if head_dim.is_multiple_of(4) {
        len / 4
    } else {
        len
    });
    let mut launch = gpu.launch(&format!("kv_cache_write_{}", C::SUFFIX))?;
    launch
        .arg(k_cache)
        .arg(v_cache)
        .arg(k)
        .arg(v)
        .arg(&n32)
        .arg(&p32)
        .arg(&h32)
        .arg(&d32)
        .arg(&s32);
    // SAFETY: sizes checked above.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}
