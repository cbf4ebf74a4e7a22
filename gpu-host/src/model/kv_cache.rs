//! The key/value cache of one sequence: per layer, keys and values
//! `[n_kv_heads, max_seq, head_dim]` on the backend, and how many
//! positions are filled.

use crate::backend::Backend;
use anyhow::Result;

pub struct KvCache<B: Backend> {
    pub(crate) k: Vec<B::Buffer>,
    pub(crate) v: Vec<B::Buffer>,
    len: usize,
    max_seq: usize,
}

impl<B: Backend> KvCache<B> {
    pub(crate) fn new(
        backend: &B,
        num_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        max_seq: usize,
    ) -> Result<Self> {
        let size = n_kv_heads * max_seq * head_dim;
        let mut k = Vec::with_capacity(num_layers);
        let mut v = Vec::with_capacity(num_layers);
        for _ in 0..num_layers {
            k.push(backend.alloc(size)?);
            v.push(backend.alloc(size)?);
        }
        Ok(Self {
            k,
            v,
            len: 0,
            max_seq,
        })
    }

    /// Positions filled so far (the next token goes at this position).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.max_seq
    }

    /// Forgets everything (the memory is reused).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps only the first `len` positions (e.g. a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
