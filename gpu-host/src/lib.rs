//! gpu-host: Llama-family inference (and, in later issues, training and
//! serving) with a CPU reference backend.
//!
//! - [`checkpoint`]: a Hugging Face checkpoint directory (config, safetensors)
//! - [`tokenizer`]: `tokenizer.json` and the chat template
//! - [`backend`]: the [`backend::Backend`] trait and its `cpu` reference
//!   (ops in [`backend::cpu::ops`])
//! - [`model`]: the decoder, written once against the trait, and its KV cache
//! - [`generate`]: prefill, incremental decode and sampling
//! - [`init_model`]: writing deterministic random checkpoints (tests, benchmarks)
//! - [`serve`]: the HTTP inference server (continuous batching)
//! - [`bench`]: throughput measurements
//! - [`adapter`]: the MoE-LoRA adapter format (PEFT keys plus router and experts)
//! - [`data`]: conversation records, the synthetic corpus, `data prepare` and its shards
//! - [`train`]: MoE-LoRA training (ops with backward passes, model, loop)

pub mod adapter;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod generate;
pub mod init_model;
pub mod model;
pub mod rng;
pub mod serve;
pub mod tokenizer;
pub mod train;
