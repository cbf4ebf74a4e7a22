//! The edge chat API (issue 7).
//!
//! `POST /v1/chat/completions` (OpenAI schema, SSE streaming passed through)
//! behind API keys with roles, a safety screen imported from another
//! component (`wit/safety.wit`), a keyed response cache in the key-value
//! store, and the gpu-host pool imported from another component
//! (`wit/inference.wit`, default `components/gpu-pool`).
//!
//! Pure parts (unit-tested natively):
//! - [`keys`]: API key format, keyed hashing, the role rules for chat;
//! - [`chat`]: request parsing, edge-only fields, determinism;
//! - [`cache`]: cache keys (a keyed hash, no PHI) and entries;
//! - [`sse`]: the output filter over a streamed reply;
//! - [`truncate`]: fitting a conversation into the model's context.
//!
//! The wasm component (`component/`) wires them to spin:sqlite,
//! spin:key-value, spin:variables and the safety and inference imports.

pub mod cache;
pub mod chat;
pub mod keys;
pub mod sse;
pub mod truncate;

#[cfg(target_arch = "wasm32")]
mod component;
