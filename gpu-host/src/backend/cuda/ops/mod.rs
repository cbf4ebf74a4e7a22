//! The CUDA ops: launchers for the kernels in `gpu-host/kernels/`, one
//! module per op family, named after and taking the same arguments in the
//! same order as their CPU twins in [`crate::backend::cpu::ops`] (device
//! slices instead of host slices, a [`Gpu`](super::Gpu) first). Each
//! checks the sizes it was given before launching: an out-of-bounds write
//! on a GPU corrupts memory silently, so these are errors, not panics.
//! Launches are asynchronous on the device's stream.

pub mod adamw;
pub mod attention;
pub mod attention_train;
pub mod cast;
pub mod cross_entropy;
pub mod embedding;
pub mod kv_cache;
pub mod matmul;
pub mod moe;
pub mod paged;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod router;
pub mod swiglu;

pub use attention::{AttentionPlan, AttentionScratch, attention_forward, attention_forward_naive};
pub use cast::{cast_bf16_to_f32, cast_f32_to_bf16};
pub use embedding::embedding_forward;
pub use kv_cache::kv_cache_write;
pub use matmul::{Gemm, matmul_forward, matvec_forward};
pub use paged::{paged_attention_forward, paged_kv_write, rope_forward_positions};
pub use residual::residual_forward;
pub use rmsnorm::{residual_rmsnorm_forward, rmsnorm_forward};
pub use rope::rope_forward;
pub use swiglu::swiglu_forward;

use anyhow::{Result, ensure};

/// Checks that a buffer holds at least `need` elements.
pub(crate) fn check_len(what: &str, have: usize, need: usize) -> Result<()> {
    ensure!(have >= need, "{what} holds {have} elements, {need} needed");
    Ok(())
}
