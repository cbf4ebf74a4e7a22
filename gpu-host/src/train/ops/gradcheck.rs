//! Finite-difference gradient checks in f64, shared by the op tests and
//! the whole-model test.

use crate::rng::Rng;

/// `n` standard-normal values.
pub fn randn(rng: &mut Rng, n: usize, std: f64) -> Vec<f64> {
    (0..n).map(|_| std * rng.next_normal()).collect()
}

/// `Σ out · r`: a scalar loss whose gradient w.r.t. `out` is `r`.
pub fn project(out: &[f64], r: &[f64]) -> f64 {
    out.iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Compares `analytic[i]` with central differences of `loss` w.r.t.
/// `inputs[i]` at up to `max_checks` positions per input (every position
/// when fewer). Panics with the worst mismatch over `tol` (relative to
/// max(1, |numeric|)).
pub fn check_gradients(
    op: &str,
    inputs: &mut [Vec<f64>],
    analytic: &[Vec<f64>],
    names: &[&str],
    max_checks: usize,
    tol: f64,
    loss: impl Fn(&[Vec<f64>]) -> f64,
) {
    let eps = 1e-5;
    let mut rng = Rng::new(99);
    for i in 0..inputs.len() {
        let len = inputs[i].len();
        let positions: Vec<usize> = if len <= max_checks {
            (0..len).collect()
        } else {
            (0..max_checks)
                .map(|_| rng.below(len as u64) as usize)
                .collect()
        };
        for j in positions {
            let orig = inputs[i][j];
            inputs[i][j] = orig + eps;
            let lp = loss(inputs);
            inputs[i][j] = orig - eps;
            let lm = loss(inputs);
            inputs[i][j] = orig;
            let numeric = (lp - lm) / (2.0 * eps);
            let a = analytic[i][j];
            let err = (numeric - a).abs() / numeric.abs().max(1.0);
            assert!(
                err < tol,
                "{op}: d/d{}[{j}]: analytic {a:e}, numeric {numeric:e} (error {err:e})",
                names[i]
            );
        }
    }
}
