//! The paged KV cache used by serving: keys and values of many sequences
//! share one pool of fixed-size blocks, and each sequence owns a block table
//! (which pool block holds its positions `b·block_size ..`). Blocks can be
//! shared between sequences with the same prompt prefix.
//! Layouts:
//! - `k_pool`, `v_pool`: `[num_blocks, n_kv_heads, block_size, head_dim]`,
//!   head-major within a block so one head's keys in a block are contiguous
//! - `k`, `v`: `[n, n_kv_heads, head_dim]` (the projections' output rows)
//! - `q`, `out`: `[n, n_heads, head_dim]`, rows of several sequences one
//!   after another (see [`PagedSeq`])
//! - slot `s` = `block · block_size + offset` names one position of the pool
//!
//! Attention reads the block table position by position; the rules (GQA
//! grouping, causal mask, sliding window, 1/sqrt(head_dim) scale, f32
//! softmax after subtracting the maximum) are those of
//! [`super::attention`], which is the test oracle for this module.

use super::attention::softmax_weighted_sum;
use super::vector::dot;
use rayon::prelude::*;

/// The rows of one sequence inside a batch.
#[derive(Clone, Copy, Debug)]
pub struct PagedSeq<'a> {
    /// First row of this sequence in `q` / `out`.
    pub row0: usize,
    /// How many rows (new tokens) it has.
    pub n: usize,
    /// Position of its first row (tokens before it are already cached).
    pub pos0: usize,
    /// Pool block of each `block_size` positions, covering `pos0 + n`.
    pub blocks: &'a [u32],
}

/// Geometry of the pool and the heads.
#[derive(Clone, Copy, Debug)]
pub struct PagedShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    /// Sliding window (Mistral): how many most recent positions a query sees.
    pub window: Option<usize>,
}

impl PagedShape {
    /// Values per pool block (per layer, keys or values).
    pub fn block_len(&self) -> usize {
        self.n_kv_heads * self.block_size * self.head_dim
    }

    /// Offset in the pool of (slot, kv head).
    fn offset(&self, slot: usize, kv_head: usize) -> usize {
        let (block, off) = (slot / self.block_size, slot % self.block_size);
        block * self.block_len() + (kv_head * self.block_size + off) * self.head_dim
    }
}

/// Writes row `t` of `k`/`v` to pool slot `slots[t]`.
pub fn paged_kv_write(
    k_pool: &mut [f32],
    v_pool: &mut [f32],
    k: &[f32],
    v: &[f32],
    slots: &[u32],
    s: PagedShape,
) {
    let (hd, kv_dim) = (s.head_dim, s.n_kv_heads * s.head_dim);
    let n = slots.len();
    assert!(
        k.len() >= n * kv_dim && v.len() >= n * kv_dim,
        "paged kv write: k and v must be [n, n_kv_heads, head_dim]"
    );
    assert_eq!(
        k_pool.len(),
        v_pool.len(),
        "paged kv write: pools differ in size"
    );
    assert!(
        k_pool.len().is_multiple_of(s.block_len()),
        "paged kv write: pool is not whole blocks"
    );
    let slots_in_pool = k_pool.len() / s.block_len() * s.block_size;
    for (t, &slot) in slots.iter().enumerate() {
        let slot = slot as usize;
        assert!(
            slot < slots_in_pool,
            "paged kv write: slot {slot} outside the pool"
        );
        for h in 0..s.n_kv_heads {
            let src = t * kv_dim + h * hd;
            let dst = s.offset(slot, h);
            k_pool[dst..dst + hd].copy_from_slice(&k[src..src + hd]);
            v_pool[dst..dst + hd].copy_from_slice(&v[src..src + hd]);
        }
    }
}

/// Causal GQA of every sequence's rows over its own cached positions
/// `0 ..= pos0 + t` (read through its block table).
pub fn paged_attention_forward(
    out: &mut [f32],
    q: &[f32],
    k_pool: &[f32],
    v_pool: &[f32],
    seqs: &[PagedSeq],
    s: PagedShape,
) {
    let PagedShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
        block_size: bs,
        window,
    } = s;
    assert!(
        n_heads.is_multiple_of(n_kv_heads),
        "paged attention: n_heads must be a multiple of n_kv_heads"
    );
    let rows: usize = seqs.iter().map(|q| q.row0 + q.n).max().unwrap_or(0);
    assert!(
        q.len() >= rows * n_heads * hd,
        "paged attention: q too short"
    );
    assert!(
        out.len() >= rows * n_heads * hd,
        "paged attention: out too short"
    );
    let pool_blocks = k_pool.len() / s.block_len();
    // Which sequence owns each row (rows not in any sequence are left alone).
    let mut owner = vec![usize::MAX; rows];
    for (i, sq) in seqs.iter().enumerate() {
        assert!(
            sq.blocks.len() * bs >= sq.pos0 + sq.n,
            "paged attention: block table too short for position {}",
            sq.pos0 + sq.n
        );
        assert!(
            sq.blocks.iter().all(|&b| (b as usize) < pool_blocks),
            "paged attention: block outside the pool"
        );
        owner[sq.row0..sq.row0 + sq.n].fill(i);
    }
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out[..rows * n_heads * hd]
        .par_chunks_mut(hd)
        .enumerate()
        .for_each_init(Vec::<f32>::new, |scores, (i, out_h)| {
            let (row, h) = (i / n_heads, i % n_heads);
            let Some(sq) = seqs.get(owner[row]) else {
                return;
            };
            let p = sq.pos0 + (row - sq.row0);
            let start = window.map_or(0, |w| (p + 1).saturating_sub(w));
            let q_h = &q[i * hd..(i + 1) * hd];
            let kvh = h / group;
            let slot = |j: usize| sq.blocks[j / bs] as usize * bs + j % bs;
            scores.clear();
            scores.extend((start..=p).map(|j| {
                let o = s.offset(slot(j), kvh);
                dot(&k_pool[o..o + hd], q_h) * scale
            }));
            softmax_weighted_sum(out_h, scores, |jj| {
                let o = s.offset(slot(start + jj), kvh);
                &v_pool[o..o + hd]
            });
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::ops::attention::{AttentionShape, attention_forward};
    use crate::backend::cpu::ops::kv_cache::kv_cache_write;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// Two sequences with scattered block tables, one decoding one row and
    /// one prefilling several after a cached prefix, match the contiguous
    /// cache attention of each sequence alone.
    #[test]
    fn matches_contiguous_attention_per_sequence() {
        let mut rng = Rng::new(7);
        for window in [None, Some(5)] {
            let s = PagedShape {
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 8,
                block_size: 4,
                window,
            };
            let kv_dim = s.n_kv_heads * s.head_dim;
            let q_dim = s.n_heads * s.head_dim;
            let num_blocks = 12;
            let mut k_pool = vec![0f32; num_blocks * s.block_len()];
            let mut v_pool = k_pool.clone();
            // (cached positions, new rows, block table)
            let specs: [(usize, usize, Vec<u32>); 2] =
                [(9, 1, vec![7, 2, 10]), (3, 6, vec![1, 11, 4])];
            let mut q_all = Vec::new();
            let mut expected = Vec::new();
            let mut seqs_owned = Vec::new();
            for (pos0, n, blocks) in &specs {
                let total = pos0 + n;
                let k = random(&mut rng, total * kv_dim);
                let v = random(&mut rng, total * kv_dim);
                let q = random(&mut rng, n * q_dim);
                // Paged: write all positions through the block table.
                let slots: Vec<u32> = (0..total)
                    .map(|j| {
                        blocks[j / s.block_size] * s.block_size as u32 + (j % s.block_size) as u32
                    })
                    .collect();
                paged_kv_write(&mut k_pool, &mut v_pool, &k, &v, &slots, s);
                // Contiguous oracle.
                let max_seq = 16;
                let mut kc = vec![0f32; s.n_kv_heads * max_seq * s.head_dim];
                let mut vc = kc.clone();
                kv_cache_write(
                    &mut kc,
                    &mut vc,
                    &k,
                    &v,
                    total,
                    0,
                    s.n_kv_heads,
                    s.head_dim,
                    max_seq,
                );
                let mut o = vec![0f32; n * q_dim];
                let shape = AttentionShape {
                    n: *n,
                    pos0: *pos0,
                    n_heads: s.n_heads,
                    n_kv_heads: s.n_kv_heads,
                    head_dim: s.head_dim,
                    max_seq,
                    window,
                };
                attention_forward(&mut o, &q, &kc, &vc, shape);
                seqs_owned.push((q_all.len() / q_dim, *n, *pos0, blocks.clone()));
                q_all.extend(q);
                expected.extend(o);
            }
            let seqs: Vec<PagedSeq> = seqs_owned
                .iter()
                .map(|(row0, n, pos0, b)| PagedSeq {
                    row0: *row0,
                    n: *n,
                    pos0: *pos0,
                    blocks: b,
                })
                .collect();
            let mut out = vec![0f32; q_all.len()];
            paged_attention_forward(&mut out, &q_all, &k_pool, &v_pool, &seqs, s);
            let err = out
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "window {window:?}: max error {err}");
        }
    }
}
