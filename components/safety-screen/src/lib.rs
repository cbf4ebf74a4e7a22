//! Safety screen and output filter (issue 7), the default implementation of
//! `wit/safety.wit` (`therapy:safety@0.1.0`).
//!
//! The core is plain Rust, unit-tested natively:
//! - [`normalise`]: case, spacing, punctuation, leetspeak, slang and
//!   misspellings, elongations, clauses;
//! - [`pattern`]: the small pattern language the rules are written in;
//! - [`rules`]: the rule table (ids, categories, severities, descriptions,
//!   patterns) and the negation / history / imminence word lists;
//! - [`screen`]: classification of one user turn;
//! - [`crisis`]: per-deployment crisis resources and the escalation payload;
//! - [`output_filter`]: checks of model text.
//!
//! Built for wasm32, the crate is also a component exporting
//! `therapy:safety/screen` and `therapy:safety/output-filter`. Other
//! components should import that WIT (a Spin component dependency) rather
//! than link this crate: linking it into another wasm component would
//! export the interfaces from that component too.

pub mod crisis;
pub mod normalise;
pub mod output_filter;
pub mod pattern;
pub mod rules;
pub mod screen;

pub use crisis::{CrisisConfig, CrisisPayload, crisis_payload};
pub use output_filter::{FilterConfig, Verdict, check};
pub use screen::{Assessment, Category, Severity, classify};

#[cfg(target_arch = "wasm32")]
mod component;
