//! Rotary position embedding, Hugging Face "rotate half" convention (pairs
//! `(i, i + head_dim/2)`), with an explicit position per row so that
//! packed documents each start at position 0.
//! Layouts: `x`, `dx`: `[n, n_heads, head_dim]`, in place; `positions`:
//! `[n]`; `cos`, `sin`: `[max_pos, head_dim/2]` (`model::rope` tables).

use crate::train::float::Float;
use rayon::prelude::*;

#[allow(clippy::too_many_arguments)]
pub fn rope_forward<T: Float>(
    x: &mut [T],
    cos: &[T],
    sin: &[T],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
) {
    rotate(x, cos, sin, positions, n_heads, head_dim, false)
}

/// The rotation is orthogonal: its backward rotates `dx` by minus the angle.
pub fn rope_backward<T: Float>(
    dx: &mut [T],
    cos: &[T],
    sin: &[T],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
) {
    rotate(dx, cos, sin, positions, n_heads, head_dim, true)
}

fn rotate<T: Float>(
    x: &mut [T],
    cos: &[T],
    sin: &[T],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    inverse: bool,
) {
    let half = head_dim / 2;
    assert_eq!(
        x.len(),
        positions.len() * n_heads * head_dim,
        "rope: x must be [n, n_heads, head_dim]"
    );
    x.par_chunks_mut(n_heads * head_dim)
        .zip(positions.par_iter())
        .for_each(|(row, &p)| {
            let p = p as usize;
            assert!(
                (p + 1) * half <= cos.len(),
                "rope: position {p} is past the table"
            );
            let (c, s) = (
                &cos[p * half..(p + 1) * half],
                &sin[p * half..(p + 1) * half],
            );
            for head in row.chunks_exact_mut(head_dim) {
                let (lo, hi) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (lo[i], hi[i]);
                    let s = if inverse { -s[i] } else { s[i] };
                    lo[i] = a * c[i] - b * s;
                    hi[i] = b * c[i] + a * s;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops::gradcheck::*;

    #[test]
    fn rope_gradient_matches_finite_differences() {
        let mut rng = crate::rng::Rng::new(3);
        let (h, d, max_pos) = (2, 6, 5);
        let positions = [0u32, 3, 1, 4];
        let n = positions.len();
        let angles: Vec<f64> = (0..max_pos * d / 2).map(|i| 0.37 * i as f64).collect();
        let cos: Vec<f64> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f64> = angles.iter().map(|a| a.sin()).collect();
        let r = randn(&mut rng, n * h * d, 1.0);
        let mut inputs = vec![randn(&mut rng, n * h * d, 1.0)];
        let mut dx = r.clone();
        rope_backward(&mut dx, &cos, &sin, &positions, h, d);
        check_gradients("rope", &mut inputs, &[dx], &["x"], 100, 1e-7, |x| {
            let mut y = x[0].clone();
            rope_forward(&mut y, &cos, &sin, &positions, h, d);
            project(&y, &r)
        });
    }
}
