//! SwiGLU gating of the Llama MLP: `out = silu(gate) · up`, where
//! `silu(x) = x · sigmoid(x)`. Layouts: `gate`, `up`, `out`: `[n, hidden]`
//! flattened to one length.

use rayon::prelude::*;

const MIN_PER_TASK: usize = 16 * 1024;

pub fn swiglu_forward(out: &mut [f32], gate: &[f32], up: &[f32]) {
    assert!(
        out.len() == gate.len() && out.len() == up.len(),
        "swiglu: out, gate and up must have the same length"
    );
    out.par_iter_mut()
        .zip(gate.par_iter().zip(up))
        .with_min_len(MIN_PER_TASK)
        .for_each(|(o, (g, u))| *o = g / (1.0 + (-g).exp()) * u);
}

#[cfg(test)]
mod tests {
    #[test]
    fn silu_times_up() {
        let mut out = [0f32; 3];
        super::swiglu_forward(&mut out, &[0.0, 1.0, -2.0], &[5.0, 2.0, 1.0]);
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 2.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
        assert!((out[2] - (-2.0 / (1.0 + 2f32.exp()))).abs() < 1e-6);
    }
}
