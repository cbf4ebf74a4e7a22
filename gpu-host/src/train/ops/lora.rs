//! A LoRA update added to a frozen linear layer's output, optionally gated
//! per row (a routed expert's top-k weight):
//! `out[i] += scale · gate[i] · B · (A · inp[i])`.
//! Layouts: `inp`, `dinp`: `[m, c]`; `a`, `da`: `[r, c]` (PEFT `lora_A`);
//! `b`, `db`: `[oc, r]` (PEFT `lora_B`); `xa`: `[m, r]` (`inp · Aᵀ`, saved
//! by the forward); `out`, `dout`: `[m, oc]`; `gate`, `dgate`: `[m]`.

use super::gemm::{mm_ab, mm_abt, mm_atb};
use crate::train::float::Float;

#[allow(clippy::too_many_arguments)]
pub fn lora_forward<T: Float>(
    out: &mut [T],
    xa: &mut [T],
    inp: &[T],
    a: &[T],
    b: &[T],
    gate: Option<&[T]>,
    scale: T,
    m: usize,
    c: usize,
    r: usize,
    oc: usize,
) {
    mm_abt(xa, inp, a, m, c, r, T::ZERO);
    let scaled = scale_rows(xa, gate, scale, r);
    mm_abt(out, &scaled, b, m, r, oc, T::ONE);
}

/// `dinp += ∂/∂inp`, `da += ∂/∂A`, `db += ∂/∂B`, `dgate += ∂/∂gate` (when
/// given).
#[allow(clippy::too_many_arguments)]
pub fn lora_backward<T: Float>(
    dinp: &mut [T],
    da: Option<&mut [T]>,
    db: Option<&mut [T]>,
    dgate: Option<&mut [T]>,
    dout: &[T],
    inp: &[T],
    xa: &[T],
    a: &[T],
    b: &[T],
    gate: Option<&[T]>,
    scale: T,
    m: usize,
    c: usize,
    r: usize,
    oc: usize,
) {
    // u = dout · B: the gradient w.r.t. the (gated, scaled) rank-r activation.
    let mut u = vec![T::ZERO; m * r];
    mm_ab(&mut u, dout, b, m, oc, r, T::ZERO);
    if let Some(dgate) = dgate {
        for ((dg, u), xa) in dgate
            .iter_mut()
            .zip(u.chunks_exact(r))
            .zip(xa.chunks_exact(r))
        {
            let d: T = u.iter().zip(xa).map(|(u, x)| *u * *x).sum();
            *dg += scale * d;
        }
    }
    if let Some(db) = db {
        let scaled = scale_rows(xa, gate, scale, r);
        mm_atb(db, dout, &scaled, oc, m, r, T::ONE);
    }
    let dxa = scale_rows(&u, gate, scale, r);
    if let Some(da) = da {
        mm_atb(da, &dxa, inp, r, m, c, T::ONE);
    }
    mm_ab(dinp, &dxa, a, m, r, c, T::ONE);
}

/// `x[i, :] · scale · gate[i]`.
fn scale_rows<T: Float>(x: &[T], gate: Option<&[T]>, scale: T, r: usize) -> Vec<T> {
    match gate {
        None => x.iter().map(|v| *v * scale).collect(),
        Some(g) => x
            .chunks_exact(r)
            .zip(g)
            .flat_map(|(row, g)| row.iter().map(move |v| *v * scale * *g))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops::gradcheck::*;

    #[test]
    fn lora_gradient_matches_finite_differences() {
        let mut rng = crate::rng::Rng::new(6);
        let (m, c, r, oc) = (5, 7, 3, 4);
        let rr = randn(&mut rng, m * oc, 1.0);
        let mut inputs = vec![
            randn(&mut rng, m * c, 1.0),
            randn(&mut rng, r * c, 1.0),
            randn(&mut rng, oc * r, 1.0),
            randn(&mut rng, m, 1.0),
        ];
        let fwd = |x: &[Vec<f64>]| {
            let (mut out, mut xa) = (vec![0.0; m * oc], vec![0.0; m * r]);
            lora_forward(
                &mut out,
                &mut xa,
                &x[0],
                &x[1],
                &x[2],
                Some(&x[3]),
                2.0,
                m,
                c,
                r,
                oc,
            );
            (out, xa)
        };
        let (_, xa) = fwd(&inputs);
        let mut g = vec![
            vec![0.0; m * c],
            vec![0.0; r * c],
            vec![0.0; oc * r],
            vec![0.0; m],
        ];
        let [dx, da, db, dg] = &mut g[..] else {
            unreachable!()
        };
        lora_backward(
            dx,
            Some(da),
            Some(db),
            Some(dg),
            &rr,
            &inputs[0],
            &xa,
            &inputs[1],
            &inputs[2],
            Some(&inputs[3]),
            2.0,
            m,
            c,
            r,
            oc,
        );
        check_gradients(
            "lora",
            &mut inputs,
            &g,
            &["inp", "a", "b", "gate"],
            100,
            1e-7,
            |x| project(&fwd(x).0, &rr),
        );
    }
}
