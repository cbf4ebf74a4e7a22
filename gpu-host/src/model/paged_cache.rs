//! The paged KV cache of a serving engine: per layer, one pool of
//! `num_blocks` blocks of `block_size` positions for keys and one for values
//! (layout in [`crate::backend::cpu::ops::paged`]). Which block belongs to
//! which sequence is the scheduler's business (`serve::blocks`); this is
//! only the memory.

use crate::backend::{Backend, PagedShape};
use crate::checkpoint::ModelConfig;
use anyhow::{Result, bail};

pub struct PagedKvCache<B: Backend> {
    pub(crate) k: Vec<B::Buffer>,
    pub(crate) v: Vec<B::Buffer>,
    shape: PagedShape,
    num_blocks: usize,
}

impl<B: Backend> PagedKvCache<B> {
    /// Bytes one block takes over all layers (keys and values, f32).
    pub fn bytes_per_block(config: &ModelConfig, block_size: usize) -> usize {
        2 * config.num_layers * config.num_kv_heads * block_size * config.head_dim * 4
    }

    pub(crate) fn new(
        backend: &B,
        config: &ModelConfig,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<Self> {
        if block_size == 0 || num_blocks == 0 {
            bail!("a paged KV cache needs at least one block of at least one position");
        }
        let shape = PagedShape {
            n_heads: config.num_heads,
            n_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            block_size,
            window: config.sliding_window,
        };
        let len = num_blocks * shape.block_len();
        let mut k = Vec::with_capacity(config.num_layers);
        let mut v = Vec::with_capacity(config.num_layers);
        for _ in 0..config.num_layers {
            k.push(backend.alloc(len)?);
            v.push(backend.alloc(len)?);
        }
        Ok(Self {
            k,
            v,
            shape,
            num_blocks,
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    pub fn block_size(&self) -> usize {
        self.shape.block_size
    }

    pub fn shape(&self) -> PagedShape {
        self.shape
    }
}
