//! The training ops: each op's forward and backward side by side, llm.c
//! style (`X_forward` / `X_backward`, outputs first, sizes explicit,
//! layouts documented at the top of each module), generic over
//! [`Float`](crate::train::float::Float) so that the same code is checked
//! against finite differences in f64 and trains in f32. Backward passes add
//! into their gradient outputs (`+=`) unless documented otherwise.

pub mod attention;
pub mod embedding;
pub mod gemm;
pub mod lora;
pub mod losses;
pub mod matmul;
pub mod rmsnorm;
pub mod rope;
pub mod router;
pub mod swiglu;

#[cfg(test)]
pub(crate) mod gradcheck;
