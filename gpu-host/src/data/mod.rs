//! Training data: conversation records ([`records`]), the synthetic corpus
//! ([`synth`]), `data prepare` ([`prepare`]) and the shard format it writes
//! ([`shards`]).

pub mod prepare;
pub mod records;
pub mod shards;
pub mod synth;
