//! Mixture-of-LoRA-experts training on the CPU reference: the ops with
//! their backward passes ([`ops`]), the trainable model ([`model`]).

pub mod float;
pub mod ops;
pub mod model;
pub mod optim;
pub mod checkpoint;
pub mod config;
pub mod run;
pub mod planner;
pub mod demo;
