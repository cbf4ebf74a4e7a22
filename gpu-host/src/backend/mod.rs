//! Backends: where the math runs. The model code is written once against
//! the [`Backend`] trait; `cpu` is the reference (and the fallback on
//! machines without a GPU), `cuda` will slot in beside it with the same
//! op names.
//!
//! A backend owns two kinds of storage: [`Backend::Buffer`] (f32
//! activations and KV cache, sized by the caller; ops use a prefix) and
//! [`Backend::Weight`] (parameters, in the dtype the backend chose to keep
//! them in). Ops take the same arguments, in the same order, as the CPU
//! functions in [`cpu::ops`] they are named after.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use cpu::ops::{AttentionShape, PagedSeq, PagedShape};

use anyhow::Result;
use half::bf16;

/// Parameter values on the host, ready to hand to a backend.
pub enum HostData {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
}

impl HostData {
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Storage precision of matrix weights; compute is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    Bf16,
}

pub trait Backend: Send + Sync + 'static {
    /// f32 device memory (activations, KV cache, rope tables).
    type Buffer: Send + Sync;
    /// A parameter tensor as the backend stores it.
    type Weight: Send + Sync;

    /// A short description for logs and benchmarks.
    fn describe(&self) -> String;

    /// Runs `f` in the backend's execution context (the CPU backend's
    /// thread pool). The model wraps each forward pass in it.
    fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R;

    fn alloc(&self, len: usize) -> Result<Self::Buffer>;
    fn upload(&self, host: &[f32]) -> Result<Self::Buffer>;
    /// Copies `out.len()` values starting at `offset` back to the host.
    fn download(&self, buf: &Self::Buffer, offset: usize, out: &mut [f32]) -> Result<()>;
    /// `dst[dst_offset..][..len] = src[src_offset..][..len]`.
    fn copy(
        &self,
        dst: &mut Self::Buffer,
        dst_offset: usize,
        src: &Self::Buffer,
        src_offset: usize,
        len: usize,
    ) -> Result<()>;

    /// Stores a parameter. Vectors (norms, biases) are kept in f32; matrices
    /// in `dtype`.
    fn load_weight(
        &self,
        data: HostData,
        is_matrix: bool,
        dtype: WeightDtype,
    ) -> Result<Self::Weight>;

    /// `out[n, c] = wte[tokens[i], :]`.
    fn embedding_forward(
        &self,
        out: &mut Self::Buffer,
        tokens: &[u32],
        wte: &Self::Weight,
        c: usize,
    ) -> Result<()>;
    /// Row-wise RMSNorm of `inp[n, c]` into `out[n, c]`.
    fn rmsnorm_forward(
        &self,
        out: &mut Self::Buffer,
        inp: &Self::Buffer,
        weight: &Self::Weight,
        n: usize,
        c: usize,
        eps: f32,
    ) -> Result<()>;
    /// `out[n, oc] = inp[n, c] · weight[oc, c]ᵀ + bias[oc]`.
    #[allow(clippy::too_many_arguments)]
    fn matmul_forward(
        &self,
        out: &mut Self::Buffer,
        inp: &Self::Buffer,
        weight: &Self::Weight,
        bias: Option<&Self::Weight>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()>;
    /// Rotates `x[n, n_heads, head_dim]` in place; row `t` at `pos0 + t`.
    #[allow(clippy::too_many_arguments)]
    fn rope_forward(
        &self,
        x: &mut Self::Buffer,
        cos: &Self::Buffer,
        sin: &Self::Buffer,
        n: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
    ) -> Result<()>;
    /// Appends `k, v [n, n_kv_heads, head_dim]` at positions `pos0..` of the
    /// caches `[n_kv_heads, max_seq, head_dim]`.
    #[allow(clippy::too_many_arguments)]
    fn kv_cache_write(
        &self,
        k_cache: &mut Self::Buffer,
        v_cache: &mut Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        n: usize,
        pos0: usize,
        n_kv_heads: usize,
        head_dim: usize,
        max_seq: usize,
    ) -> Result<()>;
    /// Causal GQA of `q [n, n_heads, head_dim]` over the caches.
    fn attention_forward(
        &self,
        out: &mut Self::Buffer,
        q: &Self::Buffer,
        k_cache: &Self::Buffer,
        v_cache: &Self::Buffer,
        shape: AttentionShape,
    ) -> Result<()>;
    /// `out[..len] = silu(gate[..len]) · up[..len]`.
    fn swiglu_forward(
        &self,
        out: &mut Self::Buffer,
        gate: &Self::Buffer,
        up: &Self::Buffer,
        len: usize,
    ) -> Result<()>;
    /// `out[..len] += inp[..len]`.
    fn residual_forward(
        &self,
        out: &mut Self::Buffer,
        inp: &Self::Buffer,
        len: usize,
    ) -> Result<()>;

    // Serving: continuous batching over a paged KV cache.

    /// Rotates row `t` of `x [n, n_heads, head_dim]` to `positions[t]`.
    fn rope_forward_positions(
        &self,
        x: &mut Self::Buffer,
        cos: &Self::Buffer,
        sin: &Self::Buffer,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
    ) -> Result<()>;
    /// Writes row `t` of `k, v [n, n_kv_heads, head_dim]` to pool slot
    /// `slots[t]` (see [`cpu::ops::paged`] for the layout).
    fn paged_kv_write(
        &self,
        k_pool: &mut Self::Buffer,
        v_pool: &mut Self::Buffer,
        k: &Self::Buffer,
        v: &Self::Buffer,
        slots: &[u32],
        shape: PagedShape,
    ) -> Result<()>;
    /// Causal GQA of each sequence's rows of `q` over its paged cache.
    fn paged_attention_forward(
        &self,
        out: &mut Self::Buffer,
        q: &Self::Buffer,
        k_pool: &Self::Buffer,
        v_pool: &Self::Buffer,
        seqs: &[PagedSeq],
        shape: PagedShape,
    ) -> Result<()>;
}
