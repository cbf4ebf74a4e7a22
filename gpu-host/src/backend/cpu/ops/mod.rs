//! The CPU reference ops: pure functions over f32 slices (weights f32 or
//! bf16), llm.c style — outputs first (`out, inp, weight, ...`), sizes
//! explicit, layouts documented at the top of each module. Each op family
//! has its own module; a backward pass, when training arrives, sits beside
//! its forward (`rmsnorm_forward` / `rmsnorm_backward`). The CUDA backend
//! mirrors these names and tests its kernels against them.
//!
//! Ops parallelise with rayon on the current pool (the backend installs
//! its own) and panic on inconsistent sizes, which are programming errors:
//! the model validates everything that comes from files or users first.

pub mod attention;
pub mod embedding;
pub mod kv_cache;
pub mod matmul;
pub mod paged;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;
pub mod vector;

pub use attention::{AttentionShape, attention_forward};
pub use embedding::embedding_forward;
pub use kv_cache::kv_cache_write;
pub use matmul::{matmul_forward, matmul_forward_bf16};
pub use paged::{PagedSeq, PagedShape, paged_attention_forward, paged_kv_write};
pub use residual::residual_forward;
pub use rmsnorm::rmsnorm_forward;
pub use rope::{rope_forward, rope_forward_positions};
pub use swiglu::swiglu_forward;
