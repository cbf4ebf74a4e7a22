//! One module per Spin host interface ("factor"). Each owns its runtime
//! configuration, its per-app shared state and its host implementation, and
//! enforces the component's grants from the manifest.

pub mod bindings;
pub mod key_value;
pub mod llm;
pub mod outbound_http;
pub mod sqlite;
pub mod variables;
