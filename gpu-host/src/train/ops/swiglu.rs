//! SwiGLU: `out = silu(gate) · up`, `silu(x) = x·σ(x)`.
//! Layouts: all `[n·f]` elementwise.

use crate::train::float::Float;
use rayon::prelude::*;

const CHUNK: usize = 4096;

fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
}

pub fn swiglu_forward<T: Float>(out: &mut [T], gate: &[T], up: &[T]) {
    assert!(
        out.len() == gate.len() && gate.len() == up.len(),
        "swiglu: sizes differ"
    );
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| {
            for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                *o = *g * sigmoid(*g) * *u;
            }
        });
}

/// `dgate += ∂/∂gate`, `dup += ∂/∂up`.
pub fn swiglu_backward<T: Float>(dgate: &mut [T], dup: &mut [T], dout: &[T], gate: &[T], up: &[T]) {
    assert!(
        dgate.len() == dout.len() && dup.len() == dout.len(),
        "swiglu: sizes differ"
    );
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(
            dout.par_chunks(CHUNK)
                .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))),
        )
        .for_each(|((dg, du), (d, (g, u)))| {
            for i in 0..d.len() {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                du[i] += d[i] * silu;
                dg[i] += d[i] * u[i] * s * (T::ONE + g[i] * (T::ONE - s));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops::gradcheck::*;

    #[test]
    fn swiglu_gradient_matches_finite_differences() {
        let mut rng = crate::rng::Rng::new(4);
        let n = 20;
        let r = randn(&mut rng, n, 1.0);
        let mut inputs = vec![randn(&mut rng, n, 2.0), randn(&mut rng, n, 1.0)];
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        swiglu_backward(&mut dg, &mut du, &r, &inputs[0], &inputs[1]);
        check_gradients(
            "swiglu",
            &mut inputs,
            &[dg, du],
            &["gate", "up"],
            100,
            1e-7,
            |x| {
                let mut out = vec![0.0; n];
                swiglu_forward(&mut out, &x[0], &x[1]);
                project(&out, &r)
            },
        );
    }
}
