//! Token embedding lookup.
//! Layouts: `tokens`: `[n]`; `wte`: `[vocab, c]`; `out`, `dout`: `[n, c]`.

use crate::train::float::Float;

/// `out[t, :] = wte[tokens[t], :]`.
pub fn embedding_forward<T: Float>(out: &mut [T], tokens: &[u32], wte: &[T], c: usize) {
    assert_eq!(out.len(), tokens.len() * c, "embedding: out must be [n, c]");
    for (o, &tok) in out.chunks_exact_mut(c).zip(tokens) {
        let t = tok as usize;
        o.copy_from_slice(&wte[t * c..(t + 1) * c]);
    }
}

/// `dwte[tokens[t], :] += dout[t, :]`, in token order (deterministic).
pub fn embedding_backward<T: Float>(dwte: &mut [T], dout: &[T], tokens: &[u32], c: usize) {
    assert_eq!(
        dout.len(),
        tokens.len() * c,
        "embedding: dout must be [n, c]"
    );
    for (d, &tok) in dout.chunks_exact(c).zip(tokens) {
        let t = tok as usize;
        for (w, g) in dwte[t * c..(t + 1) * c].iter_mut().zip(d) {
            *w += *g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops::gradcheck::*;

    #[test]
    fn embedding_gradient_matches_finite_differences() {
        let mut rng = crate::rng::Rng::new(1);
        let (v, c) = (5, 3);
        let tokens = [1u32, 4, 1, 0];
        let r = randn(&mut rng, tokens.len() * c, 1.0);
        let mut inputs = vec![randn(&mut rng, v * c, 1.0)];
        let mut dwte = vec![0.0; v * c];
        embedding_backward(&mut dwte, &r, &tokens, c);
        check_gradients(
            "embedding",
            &mut inputs,
            &[dwte],
            &["wte"],
            100,
            1e-7,
            |x| {
                let mut out = vec![0.0; tokens.len() * c];
                embedding_forward(&mut out, &tokens, &x[0], c);
                project(&out, &r)
            },
        );
    }
}
