//! Residual connection, in place: `out[i] += inp[i]`. Layouts: `[n·c]`.

use rayon::prelude::*;

const MIN_PER_TASK: usize = 16 * 1024;

pub fn residual_forward(out: &mut [f32], inp: &[f32]) {
    assert_eq!(
        out.len(),
        inp.len(),
        "residual: out and inp must have the same length"
    );
    out.par_iter_mut()
        .zip(inp)
        .with_min_len(MIN_PER_TASK)
        .for_each(|(o, x)| *o += x);
}
