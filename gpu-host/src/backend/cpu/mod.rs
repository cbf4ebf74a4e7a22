//! The CPU backend: f32 compute on a rayon thread pool of its own, weights
//! kept in f32 or bf16. Each trait method is a thin call into [`ops`],
//! which hold the math.

pub mod ops;

use super::{AttentionShape, Backend, HostData, PagedSeq, PagedShape, WeightDtype};
use anyhow::{Context, Result, bail};
use half::bf16;

/// A parameter tensor in host memory.
pub enum CpuWeight {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
}

impl CpuWeight {
    /// The f32 values (vectors are always f32; see `load_weight`).
    fn f32(&self) -> Result<&[f32]> {
        match self {
            CpuWeight::F32(v) => Ok(v),
            CpuWeight::Bf16(_) => bail!("internal: expected an f32 parameter vector, found bf16"),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            CpuWeight::F32(v) => v.len(),
            CpuWeight::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct CpuBackend {
    pool: rayon::ThreadPool,
}

impl CpuBackend {
    /// A backend with `threads` worker threads (0: one per core).
    pub fn new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("gpu-host-cpu-{i}"))
            .build()
            .context("cannot start the CPU backend's thread pool")?;
        Ok(Self { pool })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;
    type Weight = CpuWeight;

    fn describe(&self) -> String {
        format!(
            "cpu ({} threads, {:?})",
            self.threads(),
            ops::vector::simd_level()
        )
    }

    fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }

    fn download(&self, buf: &Vec<f32>, offset: usize, out: &mut [f32]) -> Result<()> {
        let src = buf.get(offset..offset + out.len()).with_context(|| {
            format!(
                "download of {}..{} from a buffer of {}",
                offset,
                offset + out.len(),
                buf.len()
            )
        })?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn copy(
        &self,
        dst: &mut Vec<f32>,
        dst_offset: usize,
        src: &Vec<f32>,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        dst[dst_offset..dst_offset + len].copy_from_slice(&src[src_offset..src_offset + len]);
        Ok(())
    }

    fn load_weight(
        &self,
        data: HostData,
        is_matrix: bool,
        dtype: WeightDtype,
    ) -> Result<CpuWeight> {
        Ok(match (data, is_matrix, dtype) {
            (HostData::F32(v), true, WeightDtype::Bf16) => {
                CpuWeight::Bf16(v.into_iter().map(bf16::from_f32).collect())
            }
            (HostData::F32(v), _, _) => CpuWeight::F32(v),
            (HostData::Bf16(v), true, WeightDtype::Bf16) => CpuWeight::Bf16(v),
            (HostData::Bf16(v), _, _) => {
                CpuWeight::F32(v.into_iter().map(|x| x.to_f32()).collect())
            }
        })
    }

    fn embedding_forward(
        &self,
        out: &mut Vec<f32>,
        tokens: &[u32],
        wte: &CpuWeight,
        c: usize,
    ) -> Result<()> {
        let out = &mut out[..tokens.len() * c];
        match wte {
            CpuWeight::F32(w) => ops::embedding_forward(out, tokens, w, c),
            CpuWeight::Bf16(w) => ops::embedding_forward(out, tokens, w, c),
        }
        Ok(())
    }

    fn rmsnorm_forward(
        &self,
        out: &mut Vec<f32>,
        inp: &Vec<f32>,
        weight: &CpuWeight,
        n: usize,
        c: usize,
        eps: f32,
    ) -> Result<()> {
        ops::rmsnorm_forward(&mut out[..n * c], &inp[..n * c], weight.f32()?, n, c, eps);
        Ok(())
    }

    fn matmul_forward(
        &self,
        out: &mut Vec<f32>,
        inp: &Vec<f32>,
        weight: &CpuWeight,
        bias: Option<&CpuWeight>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        let bias = bias.map(CpuWeight::f32).transpose()?;
        let (out, inp) = (&mut out[..n * oc], &inp[..n * c]);
        match weight {
            CpuWeight::F32(w) => ops::matmul_forward(out, inp, w, bias, n, c, oc),
            CpuWeight::Bf16(w) => ops::matmul_forward_bf16(out, inp, w, bias, n, c, oc),
        }
        Ok(())
    }

    fn rope_forward(
        &self,
        x: &mut Vec<f32>,
        cos: &Vec<f32>,
        sin: &Vec<f32>,
        n: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
    ) -> Result<()> {
        ops::rope_forward(
            &mut x[..n * n_heads * head_dim],
            cos,
            sin,
            n,
            n_heads,
            head_dim,
            pos0,
        );
        Ok(())
    }

    fn kv_cache_write(
        &self,
        k_cache: &mut Vec<f32>,
        v_cache: &mut Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        n: usize,
        pos0: usize,
        n_kv_heads: usize,
        head_dim: usize,
        max_seq: usize,
    ) -> Result<()> {
        let len = n * n_kv_heads * head_dim;
        ops::kv_cache_write(
            k_cache,
            v_cache,
            &k[..len],
            &v[..len],
            n,
            pos0,
            n_kv_heads,
            head_dim,
            max_seq,
        );
        Ok(())
    }

    fn attention_forward(
        &self,
        out: &mut Vec<f32>,
        q: &Vec<f32>,
        k_cache: &Vec<f32>,
        v_cache: &Vec<f32>,
        shape: AttentionShape,
    ) -> Result<()> {
        let len = shape.n * shape.n_heads * shape.head_dim;
        ops::attention_forward(&mut out[..len], &q[..len], k_cache, v_cache, shape);
        Ok(())
    }

    fn swiglu_forward(
        &self,
        out: &mut Vec<f32>,
        gate: &Vec<f32>,
        up: &Vec<f32>,
        len: usize,
    ) -> Result<()> {
        ops::swiglu_forward(&mut out[..len], &gate[..len], &up[..len]);
        Ok(())
    }

    fn residual_forward(&self, out: &mut Vec<f32>, inp: &Vec<f32>, len: usize) -> Result<()> {
        ops::residual_forward(&mut out[..len], &inp[..len]);
        Ok(())
    }

    fn rope_forward_positions(
        &self,
        x: &mut Vec<f32>,
        cos: &Vec<f32>,
        sin: &Vec<f32>,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        let len = positions.len() * n_heads * head_dim;
        ops::rope_forward_positions(&mut x[..len], cos, sin, positions, n_heads, head_dim);
        Ok(())
    }

    fn paged_kv_write(
        &self,
        k_pool: &mut Vec<f32>,
        v_pool: &mut Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        slots: &[u32],
        shape: PagedShape,
    ) -> Result<()> {
        ops::paged_kv_write(k_pool, v_pool, k, v, slots, shape);
        Ok(())
    }

    fn paged_attention_forward(
        &self,
        out: &mut Vec<f32>,
        q: &Vec<f32>,
        k_pool: &Vec<f32>,
        v_pool: &Vec<f32>,
        seqs: &[PagedSeq],
        shape: PagedShape,
    ) -> Result<()> {
        ops::paged_attention_forward(out, q, k_pool, v_pool, seqs, shape);
        Ok(())
    }
}
