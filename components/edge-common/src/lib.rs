//! Shared guest library for the edge components.
//!
//! Pure parts (always built, unit-tested natively):
//! - [`crypto`]: AEAD field envelope, data-key wrapping, key derivation;
//! - [`audit`]: the hash-chained audit record and its verifier;
//! - [`auth`]: roles, passwords (Argon2id), sign-in tokens, idle timeout;
//! - [`api`]: API errors and JSON parsing that never echo request data.
//!
//! With the `spin` feature (inside a spin-sdk 7 component):
//! - [`db`]: a thin async wrapper over `spin:sqlite` with transactions;
//! - [`identity`]: users, sign-in sessions and bootstrap admin over SQLite;
//! - [`audit_store`]: appending, listing and verifying the audit chain;
//! - [`web`]: request/response helpers.

pub mod api;
pub mod audit;
pub mod auth;
pub mod crypto;

#[cfg(feature = "spin")]
pub mod audit_store;
#[cfg(feature = "spin")]
pub mod db;
#[cfg(feature = "spin")]
pub mod identity;
#[cfg(feature = "spin")]
pub mod web;

pub use api::ApiError;
