//! Per-kernel timings for `gpu-host bench kernels`: each kernel at a
//! Llama-8B-like size, timed with CUDA events, against its two floors —
//! bytes over the copy bandwidth and flops over the bf16 tensor rate —
//! so every row says how close to the hardware it runs.
//!
//! Timing: a warm-up, then batches of launches back to back between two
//! events (so launch gaps are hidden), the median batch reported per
//! launch. Inputs are random (never zeros: they run faster than real
//! data). Memory-bound cases whose data would fit in L2 rotate through
//! several copies so that the figures are DRAM's, not the cache's.

use super::Gpu;
use super::ops::{self, AttentionPlan, AttentionScratch, Gemm};
use crate::backend::AttentionShape;
use crate::rng::Rng;
use anyhow::{Context, Result};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaSlice, DeviceRepr};
use half::bf16;

#[derive(Clone, Debug)]
pub struct KernelBenchOptions {
    pub ordinal: usize,
    /// Timed batches (the median is reported).
    pub batches: usize,
    /// Launches per batch.
    pub launches: usize,
    /// The device's copy ceiling in GB/s (None: measured here).
    pub copy_gbs: Option<f64>,
    /// The bf16 tensor ceiling in TFLOP/s (None: measured here with cuBLASLt).
    pub tensor_tflops: Option<f64>,
    /// Only kernels whose name contains this.
    pub filter: Option<String>,
}

impl Default for KernelBenchOptions {
    fn default() -> Self {
        Self {
            ordinal: 0,
            batches: 7,
            launches: 10,
            copy_gbs: None,
            tensor_tflops: None,
            filter: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchRow {
    pub kernel: String,
    pub shape: String,
    /// Median time per launch.
    pub micros: f64,
    /// Fewest bytes the kernel must move (each input read once, each output written once).
    pub bytes: f64,
    pub flops: f64,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub device: String,
    pub copy_gbs: f64,
    pub tensor_tflops: f64,
    pub rows: Vec<BenchRow>,
}

impl BenchRow {
    pub fn gbs(&self) -> f64 {
        self.bytes / self.micros / 1e3
    }
    pub fn tflops(&self) -> f64 {
        self.flops / self.micros / 1e6
    }
    /// The larger of the two floors, in microseconds, and which one it is.
    pub fn floor(&self, copy_gbs: f64, tensor_tflops: f64) -> (f64, &'static str) {
        let mem = self.bytes / (copy_gbs * 1e3);
        let math = self.flops / (tensor_tflops * 1e6);
        if mem >= math {
            (mem, "memory")
        } else {
            (math, "compute")
        }
    }
}

impl BenchReport {
    /// The table `gpu-host bench kernels` prints.
    pub fn table(&self) -> String {
        let mut s = format!(
            "device: {}\nceilings: copy {:.0} GB/s, bf16 tensor {:.0} TFLOP/s\n\n{:<34} {:<40} {:>10} {:>9} {:>9} {:>10} {:>8}\n",
            self.device,
            self.copy_gbs,
            self.tensor_tflops,
            "kernel",
            "shape",
            "time us",
            "GB/s",
            "TFLOP/s",
            "floor us",
            "of ceil"
        );
        for r in &self.rows {
            let (floor, _) = r.floor(self.copy_gbs, self.tensor_tflops);
            s += &format!(
                "{:<34} {:<40} {:>10.1} {:>9.0} {:>9.1} {:>10.1} {:>7.0}%\n",
                r.kernel,
                r.shape,
                r.micros,
                r.gbs(),
                r.tflops(),
                floor,
                100.0 * floor / r.micros
            );
        }
        s
    }
}

struct Bench<'a> {
    gpu: &'a Gpu,
    opts: &'a KernelBenchOptions,
    rows: Vec<BenchRow>,
    rng: Rng,
}

impl Bench<'_> {
    fn wanted(&self, kernel: &str) -> bool {
        self.opts
            .filter
            .as_ref()
            .is_none_or(|f| kernel.contains(f.as_str()))
    }

    /// Times `launch(i)` (i counts launches, for rotating inputs).
    fn time(&self, mut launch: impl FnMut(usize) -> Result<()>) -> Result<f64> {
        let gpu = self.gpu;
        let (start, end) = (
            gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
            gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
        );
        let mut i = 0;
        for _ in 0..self.opts.launches.max(3) {
            launch(i)?;
            i += 1;
        }
        gpu.synchronize()?;
        let mut per_launch = Vec::with_capacity(self.opts.batches);
        for _ in 0..self.opts.batches.max(1) {
            start.record(&gpu.stream)?;
            for _ in 0..self.opts.launches.max(1) {
                launch(i)?;
                i += 1;
            }
            end.record(&gpu.stream)?;
            end.synchronize()?;
            per_launch
                .push(f64::from(start.elapsed_ms(&end)?) * 1e3 / self.opts.launches.max(1) as f64);
        }
        gpu.ctx
            .check_err()
            .context("a kernel failed while being timed")?;
        per_launch.sort_by(f64::total_cmp);
        Ok(per_launch[per_launch.len() / 2])
    }

    fn record(&mut self, kernel: &str, shape: String, micros: f64, bytes: f64, flops: f64) {
        tracing::info!(kernel, shape = %shape, micros = format!("{micros:.1}"), "timed");
        self.rows.push(BenchRow {
            kernel: kernel.into(),
            shape,
            micros,
            bytes,
            flops,
        });
    }

    fn random_f32(&mut self, len: usize, scale: f32) -> Result<CudaSlice<f32>> {
        let host: Vec<f32> = (0..len)
            .map(|_| (self.rng.next_f32() * 2.0 - 1.0) * scale)
            .collect();
        Ok(self.gpu.stream.clone_htod(&host)?)
    }

    fn random_bf16(&mut self, len: usize, scale: f32) -> Result<CudaSlice<bf16>> {
        let host: Vec<bf16> = (0..len)
            .map(|_| bf16::from_f32((self.rng.next_f32() * 2.0 - 1.0) * scale))
            .collect();
        Ok(self.gpu.stream.clone_htod(&host)?)
    }

    fn zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        Ok(self.gpu.stream.alloc_zeros(len)?)
    }
}

/// Copies needed so that rotating through them streams at least 200 MB
/// (four times the H100's 50 MB L2).
fn rotations(bytes_per_copy: f64) -> usize {
    ((200e6 / bytes_per_copy).ceil() as usize).clamp(1, 32)
}

pub fn run(opts: &KernelBenchOptions) -> Result<BenchReport> {
    let gpu = Gpu::new(opts.ordinal)?;
    let gemm = Gemm::new(&gpu)?;
    let mut b = Bench {
        gpu: &gpu,
        opts,
        rows: Vec::new(),
        rng: Rng::new(2024),
    };
    let device = format!(
        "{} ({}, {} SMs)",
        gpu.info.name,
        gpu.info.arch(),
        gpu.info.multiprocessors
    );

    // The two ceilings, measured the way METHOD.md asks (bytes read + written).
    let copy_gbs = match opts.copy_gbs {
        Some(v) => v,
        None => {
            let len = 256 << 20; // 1 GiB of f32
            let src = b.random_f32(len, 1.0)?;
            let mut dst = b.zeros::<f32>(len)?;
            let t = b.time(|_| Ok(gpu.stream.memcpy_dtod(&src, &mut dst)?))?;
            b.record(
                "memcpy_dtod (copy ceiling)",
                "1 GiB".into(),
                t,
                2.0 * len as f64 * 4.0,
                0.0,
            );
            2.0 * len as f64 * 4.0 / t / 1e3
        }
    };
    let tensor_tflops = match opts.tensor_tflops {
        Some(v) => v,
        None => {
            let n = 8192;
            let (x, w) = (b.random_bf16(n * n, 1.0)?, b.random_bf16(n * n, 1.0)?);
            let mut y = b.zeros::<f32>(n * n)?;
            let t = b.time(|_| gemm.linear_bf16_input(&gpu, &mut y, &x, &w, None, n, n, n))?;
            let flops = 2.0 * (n as f64).powi(3);
            b.record(
                "cublasLt bf16 (tensor ceiling)",
                format!("{n}x{n}x{n}, f32 out"),
                t,
                3.0 * (n * n) as f64 * 2.0,
                flops,
            );
            flops / t / 1e6
        }
    };

    elementwise(&mut b)?;
    linear(&mut b, &gemm)?;
    attention(&mut b)?;
    Ok(BenchReport {
        device,
        copy_gbs,
        tensor_tflops,
        rows: b.rows,
    })
}

fn elementwise(b: &mut Bench) -> Result<()> {
    let gpu = b.gpu;
    let (n, c) = (8192usize, 4096usize);
    if b.wanted("embedding_forward_bf16") {
        let vocab = 32000;
        let wte = b.random_bf16(vocab * c, 1.0)?;
        let ids: Vec<u32> = (0..n).map(|_| b.rng.below(vocab as u64) as u32).collect();
        let ids = gpu.stream.clone_htod(&ids)?;
        let mut out = b.zeros::<f32>(n * c)?;
        let t = b.time(|_| ops::embedding_forward(gpu, &mut out, &ids, n, &wte, c))?;
        b.record(
            "embedding_forward_bf16",
            format!("n={n} c={c}"),
            t,
            (n * c * 6) as f64,
            0.0,
        );
    }
    if b.wanted("rmsnorm_forward") {
        let (inp, w) = (b.random_f32(n * c, 1.0)?, b.random_f32(c, 1.0)?);
        let mut out = b.zeros::<f32>(n * c)?;
        let t = b.time(|_| ops::rmsnorm_forward(gpu, &mut out, &inp, &w, n, c, 1e-5))?;
        b.record(
            "rmsnorm_forward",
            format!("n={n} c={c}"),
            t,
            (2 * n * c * 4) as f64,
            0.0,
        );
        let mut res = b.random_f32(n * c, 1.0)?;
        let t = b.time(|_| {
            ops::residual_rmsnorm_forward(gpu, &mut out, &mut res, &inp, &w, n, c, 1e-5)
        })?;
        b.record(
            "residual_rmsnorm_forward",
            format!("n={n} c={c}"),
            t,
            (4 * n * c * 4) as f64,
            0.0,
        );
    }
    if b.wanted("rope_forward") {
        let (nh, hd) = (32usize, 128usize);
        let mut x = b.random_f32(n * nh * hd, 1.0)?;
        let (cos, sin) = (
            b.random_f32(n * hd / 2, 1.0)?,
            b.random_f32(n * hd / 2, 1.0)?,
        );
        let t = b.time(|_| ops::rope_forward(gpu, &mut x, &cos, &sin, n, nh, hd, 0))?;
        b.record(
            "rope_forward",
            format!("n={n} heads={nh} hd={hd}"),
            t,
            (2 * n * nh * hd * 4 + n * hd * 4) as f64,
            0.0,
        );
    }
    let len = n * 14336;
    if b.wanted("swiglu_forward") {
        let (g, u) = (b.random_f32(len, 4.0)?, b.random_f32(len, 1.0)?);
        let mut out = b.zeros::<f32>(len)?;
        let t = b.time(|_| ops::swiglu_forward(gpu, &mut out, &g, &u, len))?;
        b.record(
            "swiglu_forward",
            format!("len={len}"),
            t,
            (3 * len * 4) as f64,
            0.0,
        );
    }
    if b.wanted("residual_forward") {
        let inp = b.random_f32(len, 1.0)?;
        let mut out = b.random_f32(len, 1.0)?;
        let t = b.time(|_| ops::residual_forward(gpu, &mut out, &inp, len))?;
        b.record(
            "residual_forward",
            format!("len={len}"),
            t,
            (3 * len * 4) as f64,
            0.0,
        );
    }
    if b.wanted("cast") {
        let x = b.random_f32(len, 1.0)?;
        let mut y = b.zeros::<bf16>(len)?;
        let t = b.time(|_| ops::cast_f32_to_bf16(gpu, &mut y, &x, len))?;
        b.record(
            "cast_f32_to_bf16",
            format!("len={len}"),
            t,
            (len * 6) as f64,
            0.0,
        );
        let mut z = b.zeros::<f32>(len)?;
        let t = b.time(|_| ops::cast_bf16_to_f32(gpu, &mut z, &y, len))?;
        b.record(
            "cast_bf16_to_f32",
            format!("len={len}"),
            t,
            (len * 6) as f64,
            0.0,
        );
    }
    if b.wanted("kv_cache_write") {
        let (nkv, hd, max_seq) = (8usize, 128usize, 8192usize);
        let kv = n * nkv * hd;
        let (k, v) = (b.random_f32(kv, 1.0)?, b.random_f32(kv, 1.0)?);
        let (mut kc, mut vc) = (
            b.zeros::<bf16>(nkv * max_seq * hd)?,
            b.zeros::<bf16>(nkv * max_seq * hd)?,
        );
        let t =
            b.time(|_| ops::kv_cache_write(gpu, &mut kc, &mut vc, &k, &v, n, 0, nkv, hd, max_seq))?;
        b.record(
            "kv_cache_write_bf16",
            format!("n={n} kv_heads={nkv} hd={hd}"),
            t,
            (kv * 2 * 6) as f64,
            0.0,
        );
    }
    Ok(())
}

fn linear(b: &mut Bench, gemm: &Gemm) -> Result<()> {
    let gpu = b.gpu;
    let (c, oc) = (4096usize, 14336usize);
    if b.wanted("matvec_forward_bf16") {
        let w = b.random_bf16(oc * c, 0.05)?;
        let x = b.random_f32(c, 1.0)?;
        let mut y = b.zeros::<f32>(oc)?;
        let t = b.time(|_| ops::matvec_forward(gpu, &mut y, &x, &w, None, c, oc))?;
        b.record(
            "matvec_forward_bf16",
            format!("c={c} oc={oc}"),
            t,
            (oc * c * 2 + c * 4 + oc * 4) as f64,
            (2 * oc * c) as f64,
        );
    }
    if b.wanted("matvec_forward_f32") {
        let w = b.random_f32(oc * c, 0.05)?;
        let x = b.random_f32(c, 1.0)?;
        let mut y = b.zeros::<f32>(oc)?;
        let t = b.time(|_| ops::matvec_forward(gpu, &mut y, &x, &w, None, c, oc))?;
        b.record(
            "matvec_forward_f32",
            format!("c={c} oc={oc}"),
            t,
            (oc * c * 4 + c * 4 + oc * 4) as f64,
            (2 * oc * c) as f64,
        );
    }
    if b.wanted("matmul_forward_bf16") {
        let n = 4096;
        let w = b.random_bf16(oc * c, 0.05)?;
        let x = b.random_f32(n * c, 1.0)?;
        let mut y = b.zeros::<f32>(n * oc)?;
        let t = b.time(|_| ops::matmul_forward(gpu, gemm, &mut y, &x, &w, None, n, c, oc))?;
        let bytes = (n * c * 4 + oc * c * 2 + n * oc * 4) as f64;
        b.record(
            "matmul_forward_bf16 (cast+cuBLASLt)",
            format!("n={n} c={c} oc={oc}"),
            t,
            bytes,
            (2 * n * c * oc) as f64,
        );
    }
    Ok(())
}

fn attention(b: &mut Bench) -> Result<()> {
    let gpu = b.gpu;
    let sms = gpu.info.multiprocessors;
    let mut scratch = AttentionScratch::default();
    let hd = 128usize;
    // Prefill: one causal sequence of 4096, MHA and GQA, bf16 and f32 storage.
    let n = 4096usize;
    for (nh, nkv) in [(32usize, 32usize), (32, 8)] {
        let shape = AttentionShape {
            n,
            pos0: 0,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            max_seq: n,
            window: None,
        };
        // Causal: half of the n² score matrix, two matmuls of 2 flops per MAC.
        let flops = 4.0 * (n as f64).powi(2) * hd as f64 * nh as f64 / 2.0;
        let q_len = n * nh * hd;
        let kv_len = nkv * n * hd;
        let variants = [
            (4usize, false, false),
            (4, true, false),
            (8, false, false),
            (4, false, true),
            (4, true, true),
        ];
        for (warps, q_in_smem, double_buffer) in variants {
            let name = format!(
                "attention_flash_bf16_hd{hd}_w{warps}{}{}",
                if q_in_smem { "_qs" } else { "" },
                if double_buffer { "_db" } else { "" }
            );
            if !b.wanted(&name) {
                continue;
            }
            let (q, k, v) = (
                b.random_bf16(q_len, 1.0)?,
                b.random_bf16(kv_len, 1.0)?,
                b.random_bf16(kv_len, 1.0)?,
            );
            let mut out = b.zeros::<bf16>(q_len)?;
            let plan = AttentionPlan {
                q_in_smem,
                double_buffer,
                ..AttentionPlan::new(&shape, sms, Some(warps), None)
            };
            let t = b.time(|_| {
                ops::attention::attention_forward_with(
                    gpu,
                    &mut scratch,
                    &mut out,
                    &q,
                    &k,
                    &v,
                    shape,
                    &plan,
                )
            })?;
            let bytes = ((2 * q_len + 2 * kv_len) * 2) as f64;
            b.record(
                &name,
                format!("prefill n={n} heads={nh}/{nkv} causal"),
                t,
                bytes,
                flops,
            );
        }
        let name = format!("attention_flash_f32_hd{hd}_w4");
        if b.wanted(&name) {
            let (q, k, v) = (
                b.random_f32(q_len, 1.0)?,
                b.random_f32(kv_len, 1.0)?,
                b.random_f32(kv_len, 1.0)?,
            );
            let mut out = b.zeros::<f32>(q_len)?;
            let t =
                b.time(|_| ops::attention_forward(gpu, &mut scratch, &mut out, &q, &k, &v, shape))?;
            b.record(
                &name,
                format!("prefill n={n} heads={nh}/{nkv} causal"),
                t,
                ((2 * q_len + 2 * kv_len) * 4) as f64,
                flops,
            );
        }
    }
    // Decode: one new token over a filled cache (Llama-8B heads: 32 / 8).
    let (nh, nkv) = (32usize, 8usize);
    for len in [4096usize, 32768] {
        let shape = AttentionShape {
            n: 1,
            pos0: len - 1,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            max_seq: len,
            window: None,
        };
        let plan = AttentionPlan::for_storage(&shape, sms, 2);
        let kv_len = nkv * len * hd;
        let flops = 4.0 * (len * hd * nh) as f64;
        if b.wanted(&format!("attention_flash_bf16_hd{hd}_w1")) {
            let copies = rotations((2 * kv_len * 2) as f64);
            let q = b.random_bf16(nh * hd, 1.0)?;
            let mut caches = Vec::with_capacity(copies);
            for _ in 0..copies {
                caches.push((b.random_bf16(kv_len, 1.0)?, b.random_bf16(kv_len, 1.0)?));
            }
            let mut out = b.zeros::<bf16>(nh * hd)?;
            let bytes = (2 * kv_len * 2 + 2 * nh * hd * 2) as f64;
            // The automatic split count, half and twice it; single and double
            // buffered: how parallelism trades against the combine step.
            for double_buffer in [false, true] {
                for splits in [plan.splits, plan.splits / 2, plan.splits * 2] {
                    let alt = AttentionPlan {
                        double_buffer,
                        ..AttentionPlan::new(&shape, sms, None, Some(splits.max(1)))
                    };
                    let t = b.time(|i| {
                        let (k, v) = &caches[i % copies];
                        ops::attention::attention_forward_with(
                            gpu,
                            &mut scratch,
                            &mut out,
                            &q,
                            k,
                            v,
                            shape,
                            &alt,
                        )
                    })?;
                    let name = format!(
                        "attention_flash_bf16_hd{hd}_w1{} (+combine)",
                        if double_buffer { "_db" } else { "" }
                    );
                    let tag = format!("decode ctx={len} heads={nh}/{nkv} splits={}", alt.splits);
                    b.record(&name, tag, t, bytes, flops);
                }
            }
        }
        let plan = AttentionPlan::for_storage(&shape, sms, 4);
        let tag = format!("decode ctx={len} heads={nh}/{nkv} splits={}", plan.splits);
        let name = format!("attention_flash_f32_hd{hd}_w1");
        if b.wanted(&name) {
            let copies = rotations((2 * kv_len * 4) as f64);
            let q = b.random_f32(nh * hd, 1.0)?;
            let mut caches = Vec::with_capacity(copies);
            for _ in 0..copies {
                caches.push((b.random_f32(kv_len, 1.0)?, b.random_f32(kv_len, 1.0)?));
            }
            let mut out = b.zeros::<f32>(nh * hd)?;
            let t = b.time(|i| {
                let (k, v) = &caches[i % copies];
                ops::attention::attention_forward_with(
                    gpu,
                    &mut scratch,
                    &mut out,
                    &q,
                    k,
                    v,
                    shape,
                    &plan,
                )
            })?;
            b.record(
                &format!("{name} (+combine)"),
                tag.clone(),
                t,
                (2 * kv_len * 4 + 2 * nh * hd * 4) as f64,
                flops,
            );
        }
        if b.wanted("attention_forward_naive") && len == 4096 {
            let q = b.random_f32(nh * hd, 1.0)?;
            let (k, v) = (b.random_f32(kv_len, 1.0)?, b.random_f32(kv_len, 1.0)?);
            let mut out = b.zeros::<f32>(nh * hd)?;
            let t = b.time(|_| ops::attention_forward_naive(gpu, &mut out, &q, &k, &v, shape))?;
            b.record(
                "attention_forward_naive",
                format!("decode ctx={len} heads={nh}/{nkv}"),
                t,
                (2 * kv_len * 4) as f64,
                0.0,
            );
        }
    }
    Ok(())
}
