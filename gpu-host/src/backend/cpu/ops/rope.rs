//! Rotary position embedding, Hugging Face "rotate half" convention: the
//! pairs rotated together are `(i, i + head_dim/2)`, not neighbours.
//! Layouts:
//! - `x`: `[n, n_heads, head_dim]`, rotated in place; row `t` is at
//!   position `pos0 + t`
//! - `cos`, `sin`: `[max_pos, head_dim/2]` (see `model::rope` for the tables)

use rayon::prelude::*;

pub fn rope_forward(
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    n: usize,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
) {
    let half = head_dim / 2;
    assert_eq!(
        x.len(),
        n * n_heads * head_dim,
        "rope: x must be [n, n_heads, head_dim]"
    );
    assert!(
        cos.len() >= (pos0 + n) * half && sin.len() == cos.len(),
        "rope: tables too short for position {}",
        pos0 + n
    );
    x.par_chunks_mut(n_heads * head_dim)
        .enumerate()
        .for_each(|(t, row)| rotate_row(row, cos, sin, pos0 + t, head_dim));
}

/// Like [`rope_forward`], with each row at its own position: row `t` of
/// `x [n, n_heads, head_dim]` at `positions[t]` (a batch of sequences).
pub fn rope_forward_positions(
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
) {
    let half = head_dim / 2;
    assert_eq!(
        x.len(),
        positions.len() * n_heads * head_dim,
        "rope: x must be [n, n_heads, head_dim]"
    );
    let max = positions.iter().copied().max().unwrap_or(0) as usize;
    assert!(
        cos.len() > max * half && sin.len() == cos.len(),
        "rope: tables too short for position {max}"
    );
    x.par_chunks_mut(n_heads * head_dim)
        .zip(positions.par_iter())
        .for_each(|(row, &p)| rotate_row(row, cos, sin, p as usize, head_dim));
}

/// Rotates every head of one row (`[n_heads, head_dim]`) to position `p`.
fn rotate_row(row: &mut [f32], cos: &[f32], sin: &[f32], p: usize, head_dim: usize) {
    let half = head_dim / 2;
    let (c, s) = (
        &cos[p * half..(p + 1) * half],
        &sin[p * half..(p + 1) * half],
    );
    for head in row.chunks_exact_mut(head_dim) {
        let (lo, hi) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * c[i] - b * s[i];
            hi[i] = b * c[i] + a * s[i];
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rotates_half_pairs_by_the_table_angle() {
        // One head of dim 4 at position 1 with angles (pi/2, 0).
        let cos = [1.0, 1.0, 0.0, 1.0];
        let sin = [0.0, 0.0, 1.0, 0.0];
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        super::rope_forward(&mut x, &cos, &sin, 1, 1, 4, 1);
        // pair (x0, x2) rotated by 90°: (1, 3) -> (-3, 1); pair (x1, x3) unchanged.
        assert_eq!(x, [-3.0, 2.0, 1.0, 4.0]);
    }

    #[test]
    fn per_row_positions_match_consecutive_positions() {
        let (cos, sin) = (
            (0..40).map(|i| (i as f32 * 0.37).cos()).collect::<Vec<_>>(),
            (0..40).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
        );
        let x: Vec<f32> = (0..3 * 2 * 4).map(|i| i as f32 * 0.1 - 1.0).collect();
        let mut a = x.clone();
        super::rope_forward(&mut a, &cos, &sin, 3, 2, 4, 5);
        let mut b = x;
        super::rope_forward_positions(&mut b, &cos, &sin, &[5, 6, 7], 2, 4);
        assert_eq!(a, b);
    }
}
