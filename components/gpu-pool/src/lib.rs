//! The gpu-host pool behind `therapy:inference/pool` (wit/inference.wit).
//!
//! - [`choice`]: which host to try, in which order (pure, unit-tested);
//! - `component` (wasm32): the export, over outbound HTTP, with its state
//!   (outstanding counts, down marks) in the key-value store, since
//!   concurrent requests run in separate instances.

pub mod choice;

#[cfg(target_arch = "wasm32")]
mod component;
