//! Mixture-of-LoRA-experts training: the CPU reference (the ops with
//! their backward passes, [`ops`]; the trainable model, [`model`]) and its
//! CUDA twin ([`cuda`], behind the `cuda` feature).

pub mod bench;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod demo;
pub mod engine;
pub mod float;
pub mod model;
pub mod ops;
pub mod optim;
pub mod planner;
pub mod run;
