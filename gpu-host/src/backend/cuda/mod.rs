//! The CUDA backend: the same ops as [`cpu`](super::cpu), as kernels in
//! `gpu-host/kernels/*.cu` compiled at start with NVRTC for the device's
//! architecture (and cached on disk), plus cuBLASLt for GEMMs. cudarc
//! loads the driver, NVRTC and cuBLASLt at run time, so this module builds
//! everywhere; [`device::cuda_available`] says whether it can run here.
//!
//! - [`device`]: finding CUDA, opening a device
//! - [`compile`]: the kernel sources and NVRTC
//! - [`gpu`]: an opened device with its kernels loaded
//! - [`ops`]: the kernel launchers, named after their CPU twins
//! - [`bench`]: per-kernel timings (`gpu-host bench kernels`)
//!
//! Buffers are f32 as the [`Backend`] trait has them; matrices may be kept
//! in bf16. Attention runs on bf16 tensor cores (bf16 tolerance against
//! the CPU) for head sizes 32, 64 and 128, and in exact f32 otherwise.

pub mod bench;
pub mod compile;
pub mod device;
pub mod gpu;
pub mod ops;

pub use device::cuda_available;
pub use gpu::Gpu;

use super::{AttentionShape, Backend, HostData, PagedSeq, PagedShape, WeightDtype};
use anyhow::{Context, Result, bail, ensure};
use cudarc::driver::CudaSlice;
use half::bf16;
use ops::{AttentionScratch, Gemm};
use std::sync::Mutex;

/// A parameter tensor in device memory.
pub enum CudaWeight {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
}

impl CudaWeight {
    fn f32(&self) -> Result<&CudaSlice<f32>> {
        match self {
            CudaWeight::F32(v) => Ok(v),
            CudaWeight::Bf16(_) => bail!("internal: expected an f32 parameter vector, found bf16"),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CudaWeight::F32(v) => v.len(),
            CudaWeight::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct CudaBackend {
    gpu: Gpu,
    gemm: Gemm,
    attention: Mutex<AttentionScratch>,
    /// Token ids of the current forward pass, on the device.
    tokens: Mutex<Option<CudaSlice<u32>>>,
}

impl CudaBackend {
    /// Opens CUDA device `ordinal` and prepares its kernels.
    pub fn new(ordinal: usize) -> Result<Self> {
        let gpu = Gpu::new(ordinal)?;
        let gemm = Gemm::new(&gpu)?;
        Ok(Self {
            gpu,
            gemm,
            attention: Mutex::new(AttentionScratch::default()),
            tokens: Mutex::new(None),
        })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn gemm(&self) -> &Gemm {
        &self.gemm
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Backend for CudaBackend {
    type Buffer = CudaSlice<f32>;
    type Weight = CudaWeight;

    fn describe(&self) -> String {
        let i = &self.gpu.info;
        format!(
            "cuda:{} ({}, {}, {} SMs)",
            i.ordinal,
            i.name,
            i.arch(),
            i.multiprocessors
        )
    }

    fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.gpu
            .stream
            .alloc_zeros(len)
            .with_context(|| format!("cannot allocate {len} floats on the GPU"))
    }

    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        self.gpu
            .stream
            .clone_htod(host)
            .context("host-to-device copy failed")
    }

    fn download(&self, buf: &CudaSlice<f32>, offset: usize, out: &mut [f32]) -> Result<()> {
        ensure!(
            offset + out.len() <= buf.len(),
            "download of {}..{} from a buffer of {}",
            offset,
            offset + out.len(),
            buf.len()
        );
        self.gpu
            .stream
            .memcpy_dtoh(&buf.slice(offset..offset + out.len()), out)
            .context("device-to-host copy failed")?;
        // Surfaces any asynchronous kernel failure at the point results are read.
        self.gpu.synchronize()?;
        self.gpu
            .ctx
            .check_err()
            .context("a CUDA operation failed")?;
        Ok(())
    }

    fn copy(
        &self,
        dst: &mut CudaSlice<f32>,
        dst_offset: usize,
        src: &CudaSlice<f32>,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        ensure!(
            src_offset + len <= src.len() && dst_offset + len <= dst.len(),
            "device copy out of bounds"
        );
        self.gpu
            .stream
            .memcpy_dtod(
                &src.slice(src_offset..src_offset + len),
                &mut dst.slice_mut(dst_offset..dst_offset + len),
            )
            .context("device-to-device copy failed")
    }

    fn load_weight(
        &self,
        data: HostData,
        is_matrix: bool,
        dtype: WeightDtype,
    ) -> Result<CudaWeight> {
        let s = &self.gpu.stream;
        Ok(match (data, is_matrix, dtype) {
            (HostData::F32(v), true, WeightDtype::Bf16) => {
                let b: Vec<bf16> = v.into_iter().map(bf16::from_f32).collect();
                CudaWeight::Bf16(s.clone_htod(&b)?)
            }
            (HostData::F32(v), _, _) => CudaWeight::F32(s.clone_htod(&v)?),
            (HostData::Bf16(v), true, WeightDtype::Bf16) => CudaWeight::Bf16(s.clone_htod(&v)?),
            (HostData::Bf16(v), _, _) => {
                let f: Vec<f32> = v.into_iter().map(|x| x.to_f32()).collect();
                CudaWeight::F32(s.clone_htod(&f)?)
            }
        })
    }

    fn embedding_forward(
        &self,
        out: &mut CudaSlice<f32>,
        tokens: &[u32],
        wte: &CudaWeight,
        c: usize,
    ) -> Result<()> {
        let vocab = wte.len() / c.max(1);
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            bail!("token id {bad} is out of range for an embedding of {vocab} rows");
        }
        let n = tokens.len();
        let mut ids = lock(&self.tokens);
        if ids.as_ref().is_none_or(|b| b.len() < n) {
            *ids = Some(self.gpu.stream.alloc_zeros(n.max(64))?);
        }
        let ids = ids.as_mut().expect("allocated above");
        self.gpu
            .stream
            .memcpy_htod(tokens, &mut ids.slice_mut(..n))?;
        match wte {
            CudaWeight::F32(w) => ops::embedding_forward(&self.gpu, out, ids, n, w, c),
            CudaWeight::Bf16(w) => ops::embedding_forward(&self.gpu, out, ids, n, w, c),
        }
    }

    fn rmsnorm_forward(
        &self,
        out: &mut CudaSlice<f32>,
        inp: &CudaSlice<f32>,
        weight: &CudaWeight,
        n: usize,
        c: usize,
        eps: f32,
    ) -> Result<()> {
        ops::rmsnorm_forward(&self.gpu, out, inp, weight.f32()?, n, c, eps)
    }

    fn matmul_forward(
        &self,
        out: &mut CudaSlice<f32>,
        inp: &CudaSlice<f32>,
        weight: &CudaWeight,
        bias: Option<&CudaWeight>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        let bias = bias.map(CudaWeight::f32).transpose()?;
        match weight {
            CudaWeight::F32(w) => {
                ops::matmul_forward(&self.gpu, &self.gemm, out, inp, w, bias, n, c, oc)
            }
            CudaWeight::Bf16(w) => {
                ops::matmul_forward(&self.gpu, &self.gemm, out, inp, w, bias, n, c, oc)
            }
        }
    }

    fn rope_forward(
        &self,
        x: &mut CudaSlice<f32>,
        cos: &CudaSlice<f32>,
        sin: &CudaSlice<f32>,
        n: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
    ) -> Result<()> {
        ops::rope_forward(&self.gpu, x, cos, sin, n, n_heads, head_dim, pos0)
    }

    fn kv_cache_write(
        &self,
        k_cache: &mut CudaSlice<f32>,
        v_cache: &mut CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        n: usize,
        pos0: usize,
        n_kv_heads: usize,
        head_dim: usize,
        max_seq: usize,
    ) -> Result<()> {
        ops::kv_cache_write(
            &self.gpu, k_cache, v_cache, k, v, n, pos0, n_kv_heads, head_dim, max_seq,
        )
    }

    fn attention_forward(
        &self,
        out: &mut CudaSlice<f32>,
        q: &CudaSlice<f32>,
        k_cache: &CudaSlice<f32>,
        v_cache: &CudaSlice<f32>,
        shape: AttentionShape,
    ) -> Result<()> {
        let mut scratch = lock(&self.attention);
        ops::attention_forward(&self.gpu, &mut scratch, out, q, k_cache, v_cache, shape)
    }

    fn swiglu_forward(
        &self,
        out: &mut CudaSlice<f32>,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        len: usize,
    ) -> Result<()> {
        ops::swiglu_forward(&self.gpu, out, gate, up, len)
    }

    fn residual_forward(
        &self,
        out: &mut CudaSlice<f32>,
        inp: &CudaSlice<f32>,
        len: usize,
    ) -> Result<()> {
        ops::residual_forward(&self.gpu, out, inp, len)
    }

    fn rope_forward_positions(
        &self,
        x: &mut CudaSlice<f32>,
        cos: &CudaSlice<f32>,
        sin: &CudaSlice<f32>,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        ops::rope_forward_positions(&self.gpu, x, cos, sin, positions, n_heads, head_dim)
    }

    fn paged_kv_write(
        &self,
        k_pool: &mut CudaSlice<f32>,
        v_pool: &mut CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        slots: &[u32],
        shape: PagedShape,
    ) -> Result<()> {
        ops::paged_kv_write(&self.gpu, k_pool, v_pool, k, v, slots, shape)
    }

    fn paged_attention_forward(
        &self,
        out: &mut CudaSlice<f32>,
        q: &CudaSlice<f32>,
        k_pool: &CudaSlice<f32>,
        v_pool: &CudaSlice<f32>,
        seqs: &[PagedSeq],
        shape: PagedShape,
    ) -> Result<()> {
        ops::paged_attention_forward(&self.gpu, out, q, k_pool, v_pool, seqs, shape)
    }
}
