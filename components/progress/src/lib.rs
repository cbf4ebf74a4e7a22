//! Progress tracking component (issue #8).
//!
//! [`domain`] is the pure logic (measures and change rules, goals, affect and
//! trends, reports, history context, access policy); the HTTP component over
//! Spin's SQLite and key-value interfaces is built only for wasm32.

pub mod domain;

#[cfg(target_arch = "wasm32")]
mod component;
