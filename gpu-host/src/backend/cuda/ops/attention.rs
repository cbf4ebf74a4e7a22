//! Causal grouped-query attention over a KV cache; kernels/attention.cu.
//! Layouts and semantics as [`cpu::ops::attention`](crate::backend::cpu::ops::attention).
//!
//! Head sizes 32, 64 and 128 run the flash kernel on bf16 tensor cores
//! (bf16 tolerance; f32 buffers are rounded on load); other head sizes run
//! an exact f32 kernel (f32 buffers only). [`AttentionPlan`] picks the
//! block shape and how far the key range is split across blocks.

use super::check_len;
use crate::backend::AttentionShape;
use crate::backend::cuda::gpu::{DeviceElem, Gpu, to_i32};
use anyhow::{Context, Result, bail, ensure};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

/// Keys per tile in the flash kernel (`ATT_BC`).
pub const KEY_TILE: usize = 64;
/// Head sizes the flash kernel is instantiated for.
pub const FLASH_HEAD_DIMS: [usize; 3] = [32, 64, 128];

/// How one attention call is launched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionPlan {
    /// The exact f32 fallback instead of the flash kernel.
    pub naive: bool,
    /// Warps per block (16 rows each); 1 for decode-sized calls.
    pub warps: usize,
    pub row_tiles: usize,
    /// Blocks the key range is split across (1: no combine step).
    pub splits: usize,
    pub tiles_per_split: usize,
    /// Re-read Q from shared memory at every key tile instead of holding
    /// it in registers (`_qs` kernels: bf16, head_dim 128, 4 warps).
    pub q_in_smem: bool,
    /// Two K/V stages in dynamic shared memory (`_db` kernels: bf16,
    /// head_dim 128 with 1 or 4 warps, head_dim 64 with 4).
    pub double_buffer: bool,
}

impl AttentionPlan {
    /// The plan [`attention_forward`] uses for `shape` with storage of
    /// `elem_bytes` per value on a device with `multiprocessors` SMs.
    pub fn for_storage(shape: &AttentionShape, multiprocessors: usize, elem_bytes: usize) -> Self {
        // Splitting the keys over more blocks adds combine traffic and per-
        // block latency, but f32 tiles are loaded synchronously (rounded on
        // the way in), so they need more blocks in flight to cover memory
        // latency. H100 decode, 8 kv heads: bf16 was fastest at 32 splits
        // (4k and 32k keys), f32 at 64 (4k) and 128 (32k).
        let blocks_per_sm = if elem_bytes >= 4 { 8 } else { 2 };
        let mut plan = Self::build(shape, multiprocessors, None, None, blocks_per_sm);
        // Double buffering measured a little faster for bf16 at head_dim 128
        // (prefill 206 vs 196 TFLOP/s MHA, 225 vs 218 GQA; decode at 32k keys
        // 55.5 vs 56.8 us) and is built for it only (kernels/NOTES.md).
        plan.double_buffer = elem_bytes == 2
            && shape.head_dim == 128
            && !plan.naive
            && (plan.warps == 1 || plan.warps == 4);
        plan
    }

    /// The bf16 plan with overrides (benchmarks and tests): `warps` per
    /// block, `splits` of the key range (clamped to at least one key tile
    /// per split).
    pub fn new(
        shape: &AttentionShape,
        multiprocessors: usize,
        warps: Option<usize>,
        splits: Option<usize>,
    ) -> Self {
        Self::build(shape, multiprocessors, warps, splits, 2)
    }

    fn build(
        s: &AttentionShape,
        multiprocessors: usize,
        warps: Option<usize>,
        splits: Option<usize>,
        blocks_per_sm: usize,
    ) -> Self {
        let mut plan = Self {
            naive: true,
            warps: 1,
            row_tiles: 0,
            splits: 1,
            tiles_per_split: 0,
            q_in_smem: false,
            double_buffer: false,
        };
        if !FLASH_HEAD_DIMS.contains(&s.head_dim) {
            return plan;
        }
        let group = s.n_heads / s.n_kv_heads.max(1);
        let rows = s.n * group;
        // Decode (a few rows per kv head) wastes most of a 64-row block:
        // one warp per block, and many blocks along the keys instead.
        let warps = warps.unwrap_or(if rows <= 16 { 1 } else { 4 });
        let row_tiles = rows.div_ceil(16 * warps).max(1);
        let first = s.window.map_or(0, |w| (s.pos0 + 1).saturating_sub(w));
        let key_tiles = (s.pos0 + s.n - first).div_ceil(KEY_TILE).max(1);
        let blocks = row_tiles * s.n_kv_heads;
        let target = multiprocessors * blocks_per_sm;
        let want = splits.unwrap_or(if blocks >= target {
            1
        } else {
            target.div_ceil(blocks)
        });
        let tiles_per_split = key_tiles.div_ceil(want.clamp(1, key_tiles));
        plan.naive = false;
        plan.warps = warps;
        plan.row_tiles = row_tiles;
        plan.tiles_per_split = tiles_per_split;
        plan.splits = key_tiles.div_ceil(tiles_per_split);
        plan
    }

    fn kernel_name(&self, suffix: &str, head_dim: usize) -> String {
        let qs = if self.q_in_smem { "_qs" } else { "" };
        let db = if self.double_buffer { "_db" } else { "" };
        format!(
            "attention_flash_{suffix}_hd{head_dim}_w{}{qs}{db}",
            self.warps
        )
    }

    /// Dynamic shared memory the kernel takes: Q and two K/V stages.
    fn dynamic_shared_bytes(&self, head_dim: usize) -> u32 {
        if self.double_buffer {
            ((16 * self.warps + 4 * KEY_TILE) * head_dim * 2) as u32
        } else {
            0
        }
    }
}

/// Partial results of split-key launches, grown on demand and reused.
#[derive(Default)]
pub struct AttentionScratch {
    part_o: Option<CudaSlice<f32>>,
    part_ml: Option<CudaSlice<f32>>,
}

impl AttentionScratch {
    fn ensure(&mut self, gpu: &Gpu, rows: usize, head_dim: usize, splits: usize) -> Result<()> {
        let (no, nml) = (splits * rows * head_dim, splits * rows * 2);
        if self.part_o.as_ref().is_none_or(|b| b.len() < no) {
            self.part_o = Some(
                gpu.stream
                    .alloc_zeros(no)
                    .context("cannot allocate attention partials")?,
            );
        }
        if self.part_ml.as_ref().is_none_or(|b| b.len() < nml) {
            self.part_ml = Some(
                gpu.stream
                    .alloc_zeros(nml)
                    .context("cannot allocate attention partials")?,
            );
        }
        Ok(())
    }
}

/// The kernel's `AttnArgs` (by value).
#[repr(C)]
#[derive(Clone, Copy)]
struct AttnArgs {
    n: i32,
    pos0: i32,
    n_heads: i32,
    n_kv_heads: i32,
    max_seq: i32,
    window: i32,
    scale_log2: f32,
    tiles_per_split: i32,
}

// SAFETY: a plain C struct of 4-byte fields, laid out as in attention.cu.
unsafe impl DeviceRepr for AttnArgs {}

fn check_shape(
    s: &AttentionShape,
    q_len: usize,
    out_len: usize,
    k_len: usize,
    v_len: usize,
) -> Result<()> {
    ensure!(
        s.n_kv_heads > 0 && s.n_heads.is_multiple_of(s.n_kv_heads),
        "attention: n_heads must be a multiple of n_kv_heads"
    );
    ensure!(
        s.pos0 + s.n <= s.max_seq,
        "attention: positions exceed the cache"
    );
    ensure!(s.window != Some(0), "attention: a window must be positive");
    let len = s.n * s.n_heads * s.head_dim;
    check_len("attention q", q_len, len)?;
    check_len("attention out", out_len, len)?;
    check_len(
        "attention k_cache",
        k_len,
        s.n_kv_heads * s.max_seq * s.head_dim,
    )?;
    check_len(
        "attention v_cache",
        v_len,
        s.n_kv_heads * s.max_seq * s.head_dim,
    )?;
    Ok(())
}

/// Attention with the plan [`AttentionPlan::new`] picks for this device.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward<T: DeviceElem>(
    gpu: &Gpu,
    scratch: &mut AttentionScratch,
    out: &mut CudaSlice<T>,
    q: &CudaSlice<T>,
    k_cache: &CudaSlice<T>,
    v_cache: &CudaSlice<T>,
    shape: AttentionShape,
) -> Result<()> {
    let plan =
        AttentionPlan::for_storage(&shape, gpu.info.multiprocessors, std::mem::size_of::<T>());
    attention_forward_with(gpu, scratch, out, q, k_cache, v_cache, shape, &plan)
}

/// Attention with an explicit plan (benchmarks compare plans).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_with<T: DeviceElem>(
    gpu: &Gpu,
    scratch: &mut AttentionScratch,
    out: &mut CudaSlice<T>,
    q: &CudaSlice<T>,
    k_cache: &CudaSlice<T>,
    v_cache: &CudaSlice<T>,
    s: AttentionShape,
    plan: &AttentionPlan,
) -> Result<()> {
    check_shape(&s, q.len(), out.len(), k_cache.len(), v_cache.len())?;
    if s.n == 0 {
        return Ok(());
    }
    if plan.naive {
        return match (
            T::as_f32_mut(out),
            T::as_f32(q),
            T::as_f32(k_cache),
            T::as_f32(v_cache),
        ) {
            (Some(out), Some(q), Some(k), Some(v)) => attention_forward_naive(gpu, out, q, k, v, s),
            _ => bail!(
                "attention: head_dim {} has no {} kernel (flash kernels: {:?})",
                s.head_dim,
                T::SUFFIX,
                FLASH_HEAD_DIMS
            ),
        };
    }
    let rows = s.n * s.n_heads;
    let args = AttnArgs {
        n: to_i32(s.n, "attention rows")?,
        pos0: to_i32(s.pos0, "attention position")?,
        n_heads: to_i32(s.n_heads, "heads")?,
        n_kv_heads: to_i32(s.n_kv_heads, "kv heads")?,
        max_seq: to_i32(s.max_seq, "max_seq")?,
        window: to_i32(s.window.unwrap_or(0), "window")?,
        scale_log2: std::f32::consts::LOG2_E / (s.head_dim as f32).sqrt(),
        tiles_per_split: to_i32(plan.tiles_per_split, "tiles per split")?,
    };
    let cfg = LaunchConfig {
        grid_dim: (
            plan.row_tiles as u32,
            s.n_kv_heads as u32,
            plan.splits as u32,
        ),
        block_dim: (32 * plan.warps as u32, 1, 1),
        shared_mem_bytes: plan.dynamic_shared_bytes(s.head_dim),
    };
    let null: u64 = 0;
    let name = plan.kernel_name(T::SUFFIX, s.head_dim);
    if plan.splits == 1 {
        let mut launch = gpu.launch(&name)?;
        launch
            .arg(out)
            .arg(&null)
            .arg(&null)
            .arg(q)
            .arg(k_cache)
            .arg(v_cache)
            .arg(&args);
        // SAFETY: sizes checked by check_shape; the grid covers n·group rows per kv head.
        unsafe { launch.launch(cfg) }?;
        return Ok(());
    }
    scratch.ensure(gpu, rows, s.head_dim, plan.splits)?;
    let (part_o, part_ml) = (
        scratch.part_o.as_mut().expect("ensured"),
        scratch.part_ml.as_mut().expect("ensured"),
    );
    let mut launch = gpu.launch(&name)?;
    launch
        .arg(&null)
        .arg(&mut *part_o)
        .arg(&mut *part_ml)
        .arg(q)
        .arg(k_cache)
        .arg(v_cache)
        .arg(&args);
    // SAFETY: as above; the partials hold splits · rows · (head_dim + 2) values.
    unsafe { launch.launch(cfg) }?;
    let (rows32, hd32, splits32) = (
        to_i32(rows, "rows")?,
        to_i32(s.head_dim, "head_dim")?,
        to_i32(plan.splits, "splits")?,
    );
    let combine = LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch(&format!("attention_combine_{}", T::SUFFIX))?;
    launch
        .arg(out)
        .arg(&*part_o)
        .arg(&*part_ml)
        .arg(&rows32)
        .arg(&hd32)
        .arg(&splits32);
    // SAFETY: out holds rows · head_dim values (checked), partials as above.
    unsafe { launch.launch(combine) }?;
    Ok(())
}

/// The exact f32 kernel (any head_dim up to 256), one warp per (row, head).
pub fn attention_forward_naive(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    q: &CudaSlice<f32>,
    k_cache: &CudaSlice<f32>,
    v_cache: &CudaSlice<f32>,
    s: AttentionShape,
) -> Result<()> {
    check_shape(&s, q.len(), out.len(), k_cache.len(), v_cache.len())?;
    ensure!(
        s.head_dim <= 256,
        "attention: head_dim {} exceeds the fallback kernel's 256",
        s.head_dim
    );
    let pairs = s.n * s.n_heads;
    if pairs == 0 {
        return Ok(());
    }
    let ints = [
        s.n,
        s.pos0,
        s.n_heads,
        s.n_kv_heads,
        s.head_dim,
        s.max_seq,
        s.window.unwrap_or(0),
    ];
    let mut v = [0i32; 7];
    for (dst, src) in v.iter_mut().zip(ints) {
        *dst = to_i32(src, "attention size")?;
    }
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    const WARPS: usize = 4;
    let cfg = LaunchConfig {
        grid_dim: (pairs.div_ceil(WARPS) as u32, 1, 1),
        block_dim: (32 * WARPS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch("attention_forward_naive")?;
    launch.arg(out).arg(q).arg(k_cache).arg(v_cache);
    for x in &v {
        launch.arg(x);
    }
    launch.arg(&scale);
    // SAFETY: sizes checked by check_shape.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(
        n: usize,
        pos0: usize,
        nh: usize,
        nkv: usize,
        hd: usize,
        window: Option<usize>,
    ) -> AttentionShape {
        AttentionShape {
            n,
            pos0,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            max_seq: 1 << 20,
            window,
        }
    }

    #[test]
    fn decode_uses_one_warp_blocks_split_over_the_keys() {
        let p = AttentionPlan::new(&shape(1, 4095, 32, 8, 128, None), 132, None, None);
        assert_eq!((p.naive, p.warps, p.row_tiles), (false, 1, 1));
        // 64 key tiles; 8 kv heads want ~132·2 blocks: 33 splits of 2 tiles, 32 needed.
        assert_eq!((p.splits, p.tiles_per_split), (32, 2));
        let p = AttentionPlan::new(&shape(1, 100_000, 32, 8, 128, None), 132, None, None);
        assert!(
            p.splits * 8 >= 132 * 2 && p.splits * p.tiles_per_split >= 100_001usize.div_ceil(64)
        );
        let p = AttentionPlan::for_storage(&shape(1, 4095, 32, 8, 128, None), 132, 2);
        assert!(p.double_buffer && p.splits == 32);
        // f32 storage asks for ~132·8 blocks: one tile per split here.
        let p = AttentionPlan::for_storage(&shape(1, 4095, 32, 8, 128, None), 132, 4);
        assert_eq!((p.splits, p.tiles_per_split), (64, 1));
        assert_eq!(
            p,
            AttentionPlan::for_storage(&shape(1, 4095, 32, 8, 128, None), 132, 4)
        );
        assert_eq!(
            AttentionPlan::for_storage(&shape(1, 4095, 32, 8, 128, None), 132, 2).splits,
            32
        );
    }

    #[test]
    fn prefill_fills_the_device_without_splitting() {
        let p = AttentionPlan::new(&shape(4096, 0, 32, 8, 128, None), 132, None, None);
        assert_eq!((p.warps, p.row_tiles, p.splits), (4, 4096 * 4 / 64, 1));
    }

    #[test]
    fn splits_never_exceed_the_key_tiles_and_cover_them() {
        for (n, pos0, window) in [
            (3, 0, None),
            (1, 63, None),
            (1, 64, None),
            (5, 1000, Some(100)),
            (17, 5, None),
        ] {
            let s = shape(n, pos0, 6, 2, 64, window);
            let p = AttentionPlan::new(&s, 132, None, None);
            let first = window.map_or(0, |w: usize| (pos0 + 1).saturating_sub(w));
            let tiles = (pos0 + n - first).div_ceil(KEY_TILE);
            assert!(
                p.splits <= tiles && p.splits * p.tiles_per_split >= tiles,
                "{p:?}"
            );
            assert!(
                (p.splits - 1) * p.tiles_per_split < tiles,
                "an empty split: {p:?}"
            );
        }
    }

    #[test]
    fn other_head_sizes_take_the_exact_kernel() {
        assert!(AttentionPlan::new(&shape(4, 0, 4, 4, 80, None), 132, None, None).naive);
    }
}
