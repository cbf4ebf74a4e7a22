//! Token embedding lookup (llm.c's `encoder_forward`, without positions:
//! Llama encodes positions with RoPE inside attention).
//! Layouts: `tokens`: `[n]`; `wte`: `[vocab, c]`; `out`: `[n, c]`.

use super::vector::WeightElem;

/// Copies row `tokens[i]` of `wte` to row `i` of `out`. Token ids must be
/// below `vocab` (the model checks them before calling).
pub fn embedding_forward<W: WeightElem>(out: &mut [f32], tokens: &[u32], wte: &[W], c: usize) {
    assert_eq!(out.len(), tokens.len() * c, "embedding: out must be [n, c]");
    for (row, &t) in out.chunks_exact_mut(c).zip(tokens) {
        let t = t as usize;
        let src = &wte[t * c..(t + 1) * c];
        for (o, w) in row.iter_mut().zip(src) {
            *o = w.to_f32();
        }
    }
}
