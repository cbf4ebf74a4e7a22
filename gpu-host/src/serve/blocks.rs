//! Which KV-cache block belongs to whom: a free list, reference counts, and
//! a prefix cache that lets a request reuse the blocks of an earlier one
//! with the same prompt prefix (automatic prefix caching, as vLLM does it).
//!
//! A full block is identified by a hash chained over every token up to its
//! end (and a salt naming the model/adapter), so equal hashes mean equal
//! prefixes. Blocks are shared only when full: a sequence writes only at
//! positions past its matched prefix, so a shared block is never written.
//! When the last user of a cached block lets go it stays cached (evictable,
//! least recently used first) until its memory is needed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

pub struct BlockManager {
    block_size: usize,
    refcount: Vec<u32>,
    /// Never-cached blocks nobody uses.
    free: Vec<u32>,
    /// Prefix hash of each cached block.
    hash_of: Vec<Option<u64>>,
    cached: HashMap<u64, u32>,
    /// Cached blocks nobody uses, by the tick they were released.
    evictable: BTreeMap<u64, u32>,
    released_at: Vec<u64>,
    tick: u64,
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        Self {
            block_size,
            refcount: vec![0; num_blocks],
            // Pop from the end: hand out low block numbers first.
            free: (0..num_blocks as u32).rev().collect(),
            hash_of: vec![None; num_blocks],
            cached: HashMap::new(),
            evictable: BTreeMap::new(),
            released_at: vec![0; num_blocks],
            tick: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.refcount.len()
    }

    /// Blocks that can be handed out now (free or evictable).
    pub fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks some sequence holds.
    pub fn in_use(&self) -> usize {
        self.num_blocks() - self.available()
    }

    /// Cached blocks nobody holds (kept for prefix reuse).
    pub fn cached_idle(&self) -> usize {
        self.evictable.len()
    }

    /// Blocks needed to hold `positions` positions.
    pub fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.block_size)
    }

    /// One block for a sequence's exclusive use, evicting the least
    /// recently used cached block if nothing is free.
    pub fn allocate(&mut self) -> Option<u32> {
        let block = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.evictable.pop_first()?;
                if let Some(h) = self.hash_of[b as usize].take() {
                    self.cached.remove(&h);
                }
                b
            }
        };
        self.refcount[block as usize] = 1;
        Some(block)
    }

    /// Lets go of a sequence's blocks.
    pub fn release(&mut self, blocks: &[u32]) {
        for &b in blocks {
            let rc = &mut self.refcount[b as usize];
            debug_assert!(*rc > 0, "block {b} released twice");
            *rc = rc.saturating_sub(1);
            if *rc == 0 {
                if self.hash_of[b as usize].is_some() {
                    self.tick += 1;
                    self.released_at[b as usize] = self.tick;
                    self.evictable.insert(self.tick, b);
                } else {
                    self.free.push(b);
                }
            }
        }
    }

    /// The longest run of cached blocks whose prefix hashes are `hashes`
    /// (from [`prefix_hashes`]); the caller now holds them.
    pub fn match_prefix(&mut self, hashes: &[u64]) -> Vec<u32> {
        let mut blocks = Vec::new();
        for h in hashes {
            let Some(&b) = self.cached.get(h) else { break };
            if self.refcount[b as usize] == 0 {
                self.evictable.remove(&self.released_at[b as usize]);
            }
            self.refcount[b as usize] += 1;
            blocks.push(b);
        }
        blocks
    }

    /// Marks a held, now full block as the one holding the prefix `hash`.
    /// If another block already holds that prefix, this one stays private.
    pub fn register(&mut self, block: u32, hash: u64) {
        if self.hash_of[block as usize].is_none() && !self.cached.contains_key(&hash) {
            self.cached.insert(hash, block);
            self.hash_of[block as usize] = Some(hash);
        }
    }
}

/// Chained hashes of each full block of `tokens`: hash `i` covers
/// `tokens[..(i + 1) · block_size]` and `salt`.
pub fn prefix_hashes(tokens: &[u32], block_size: usize, salt: u64) -> Vec<u64> {
    let mut prev = salt;
    tokens
        .chunks_exact(block_size)
        .map(|block| {
            prev = chain_hash(prev, block);
            prev
        })
        .collect()
}

/// The prefix hash of a block from the previous block's and its tokens.
pub fn chain_hash(prev: u64, block: &[u32]) -> u64 {
    // SipHash with fixed keys: stable within a process, and 64 bits make an
    // accidental collision negligible at cache sizes.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    prev.hash(&mut h);
    block.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_blocks_are_shared_then_evicted_least_recently_used_first() {
        let mut m = BlockManager::new(4, 2);
        let tokens = [1, 2, 3, 4, 5];
        let hashes = prefix_hashes(&tokens, 2, 0);
        assert_eq!(hashes.len(), 2);
        // First request: nothing cached; allocates and registers two blocks.
        assert!(m.match_prefix(&hashes).is_empty());
        let a: Vec<u32> = (0..3).map(|_| m.allocate().unwrap()).collect();
        m.register(a[0], hashes[0]);
        m.register(a[1], hashes[1]);
        assert_eq!(m.in_use(), 3);
        // Second request with the same prefix shares both full blocks.
        let shared = m.match_prefix(&hashes);
        assert_eq!(shared, a[..2]);
        // A different prefix shares nothing.
        assert!(
            m.match_prefix(&prefix_hashes(&[9, 9, 3, 4], 2, 0))
                .is_empty()
        );
        assert!(
            m.match_prefix(&prefix_hashes(&[1, 2], 2, 1)).is_empty(),
            "the salt separates models"
        );
        m.release(&a);
        assert_eq!(m.in_use(), 2, "still held by the second request");
        m.release(&shared);
        assert_eq!((m.in_use(), m.cached_idle(), m.available()), (0, 2, 4));
        // Idle cached blocks still match...
        assert_eq!(m.match_prefix(&hashes[..1]), a[..1]);
        m.release(&a[..1]);
        // ...until their memory is needed: free blocks go first, then the
        // least recently released cached block.
        let fresh: Vec<u32> = (0..3).map(|_| m.allocate().unwrap()).collect();
        assert!(fresh.contains(&a[1]) && !fresh.contains(&a[0]));
        assert_eq!(
            m.match_prefix(&hashes),
            a[..1],
            "block 1's prefix was evicted"
        );
        assert!(m.allocate().is_none());
    }
}
