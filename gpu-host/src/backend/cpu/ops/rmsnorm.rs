//! RMSNorm (Llama): `out = inp / sqrt(mean(inp²) + eps) · weight`, row by row.
//! Layouts: `inp`, `out`: `[n, c]`; `weight`: `[c]`.
//! The mean is accumulated in f64 so the reference is tighter than the
//! f32 implementations it is compared with.

use rayon::prelude::*;

/// Rows per parallel task, so short calls (decode) stay on one thread.
const ROWS_PER_TASK: usize = 4;

pub fn rmsnorm_forward(out: &mut [f32], inp: &[f32], weight: &[f32], n: usize, c: usize, eps: f32) {
    assert_eq!(out.len(), n * c, "rmsnorm: out must be [n, c]");
    assert_eq!(inp.len(), n * c, "rmsnorm: inp must be [n, c]");
    assert_eq!(weight.len(), c, "rmsnorm: weight must be [c]");
    out.par_chunks_mut(c)
        .zip(inp.par_chunks(c))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(o, x)| {
            let ss: f64 = x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
            let rstd = (1.0 / (ss / c as f64 + f64::from(eps)).sqrt()) as f32;
            for ((o, x), w) in o.iter_mut().zip(x).zip(weight) {
                *o = (x * rstd) * w;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_each_row_to_unit_rms_times_weight() {
        let inp = [3.0f32, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let weight = [1.0f32, 2.0, 1.0, 1.0];
        let mut out = [0f32; 8];
        rmsnorm_forward(&mut out, &inp, &weight, 2, 4, 0.0);
        // row 0: rms = sqrt(25/4) = 2.5
        assert!((out[0] - 1.2).abs() < 1e-6 && (out[1] - 3.2).abs() < 1e-6);
        assert_eq!(&out[4..], &[1.0, 2.0, 1.0, 1.0]);
    }
}
