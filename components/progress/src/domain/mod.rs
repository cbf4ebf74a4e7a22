//! Pure logic: no I/O, unit-tested natively.

pub mod access;
pub mod affect;
pub mod dates;
pub mod entries;
pub mod goals;
pub mod history;
pub mod html;
pub mod measures;
pub mod recommend;
pub mod routes;
pub mod report;
pub mod trends;
