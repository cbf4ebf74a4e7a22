//! RMSNorm: `out = inp · rstd · weight` with `rstd = 1/sqrt(mean(inp²) + eps)`.
//! Layouts: `inp`, `out`, `dout`, `dinp`: `[n, c]`; `weight`, `dweight`:
//! `[c]`; `rstd`: `[n]` (saved by the forward for the backward).

use crate::train::float::Float;
use rayon::prelude::*;

pub fn rmsnorm_forward<T: Float>(
    out: &mut [T],
    rstd: &mut [T],
    inp: &[T],
    weight: &[T],
    n: usize,
    c: usize,
    eps: f32,
) {
    assert_eq!(out.len(), n * c, "rmsnorm: out must be [n, c]");
    assert_eq!(inp.len(), n * c, "rmsnorm: inp must be [n, c]");
    assert_eq!(rstd.len(), n, "rmsnorm: rstd must be [n]");
    out.par_chunks_mut(c)
        .zip(inp.par_chunks(c))
        .zip(rstd.par_iter_mut())
        .for_each(|((o, x), r)| {
            // Sum of squares in f64, as the inference reference does.
            let ss: f64 = x.iter().map(|v| v.to_f64() * v.to_f64()).sum();
            let rs = T::from_f64(1.0 / (ss / c as f64 + f64::from(eps)).sqrt());
            *r = rs;
            for ((o, x), w) in o.iter_mut().zip(x).zip(weight) {
                *o = (*x * rs) * *w;
            }
        });
}

/// `dinp += ∂/∂inp`, `dweight += ∂/∂weight` (when given).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward<T: Float>(
    dinp: &mut [T],
    dweight: Option<&mut [T]>,
    dout: &[T],
    inp: &[T],
    weight: &[T],
    rstd: &[T],
    n: usize,
    c: usize,
) {
    assert_eq!(dinp.len(), n * c, "rmsnorm: dinp must be [n, c]");
    dinp.par_chunks_mut(c)
        .zip(dout.par_chunks(c))
        .zip(inp.par_chunks(c))
        .zip(rstd.par_iter())
        .for_each(|(((dx, dy), x), &rs)| {
            // xhat = x·rstd; dx = rstd·(dxhat − xhat·mean(dxhat·xhat)).
            let mut dot = T::ZERO;
            for ((dy, x), w) in dy.iter().zip(x).zip(weight) {
                dot += *dy * *w * *x * rs;
            }
            let mean = dot / T::from_f64(c as f64);
            for (((dx, dy), x), w) in dx.iter_mut().zip(dy).zip(x).zip(weight) {
                *dx += rs * (*dy * *w - *x * rs * mean);
            }
        });
    if let Some(dw) = dweight {
        for ((dy, x), &rs) in dout.chunks_exact(c).zip(inp.chunks_exact(c)).zip(rstd) {
            for ((dw, dy), x) in dw.iter_mut().zip(dy).zip(x) {
                *dw += *dy * *x * rs;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops::gradcheck::*;

    #[test]
    fn rmsnorm_gradient_matches_finite_differences() {
        let mut rng = crate::rng::Rng::new(2);
        let (n, c) = (3, 7);
        let r = randn(&mut rng, n * c, 1.0);
        let mut inputs = vec![randn(&mut rng, n * c, 1.0), randn(&mut rng, c, 1.0)];
        let fwd = |x: &[Vec<f64>]| {
            let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
            rmsnorm_forward(&mut out, &mut rstd, &x[0], &x[1], n, c, 1e-5);
            (out, rstd)
        };
        let (_, rstd) = fwd(&inputs);
        let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
        rmsnorm_backward(
            &mut dx,
            Some(&mut dw),
            &r,
            &inputs[0],
            &inputs[1],
            &rstd,
            n,
            c,
        );
        check_gradients(
            "rmsnorm",
            &mut inputs,
            &[dx, dw],
            &["inp", "weight"],
            100,
            1e-7,
            |x| project(&fwd(x).0, &r),
        );
    }
}
