//! Mixture-of-LoRA-experts training on the CPU reference: the ops with
//! their backward passes ([`ops`]), the trainable model ([`model`]).

pub mod checkpoint;
pub mod config;
pub mod demo;
pub mod float;
pub mod model;
pub mod ops;
pub mod optim;
pub mod planner;
pub mod run;
