//! Linear layers without bias: `out = inp · weightᵀ` (`nn.Linear` layout).
//! Layouts: `inp`, `dinp`: `[n, c]`; `weight`, `dweight`: `[oc, c]`;
//! `out`, `dout`: `[n, oc]`.

use super::gemm::{mm_ab, mm_abt, mm_atb};
use crate::train::float::Float;

pub fn matmul_forward<T: Float>(
    out: &mut [T],
    inp: &[T],
    weight: &[T],
    n: usize,
    c: usize,
    oc: usize,
) {
    mm_abt(out, inp, weight, n, c, oc, T::ZERO);
}

/// `dinp += dout · weight`, `dweight += doutᵀ · inp` (each when given; a
/// frozen weight passes `None` and costs nothing).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward<T: Float>(
    dinp: Option<&mut [T]>,
    dweight: Option<&mut [T]>,
    dout: &[T],
    inp: &[T],
    weight: &[T],
    n: usize,
    c: usize,
    oc: usize,
) {
    if let Some(dinp) = dinp {
        mm_ab(dinp, dout, weight, n, oc, c, T::ONE);
    }
    if let Some(dweight) = dweight {
        mm_atb(dweight, dout, inp, oc, n, c, T::ONE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::ops::gradcheck::*;

    #[test]
    fn matmul_gradient_matches_finite_differences() {
        let mut rng = crate::rng::Rng::new(5);
        let (n, c, oc) = (4, 6, 5);
        let r = randn(&mut rng, n * oc, 1.0);
        let mut inputs = vec![randn(&mut rng, n * c, 1.0), randn(&mut rng, oc * c, 1.0)];
        let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; oc * c]);
        matmul_backward(
            Some(&mut dx),
            Some(&mut dw),
            &r,
            &inputs[0],
            &inputs[1],
            n,
            c,
            oc,
        );
        check_gradients(
            "matmul",
            &mut inputs,
            &[dx, dw],
            &["inp", "weight"],
            100,
            1e-7,
            |x| {
                let mut out = vec![0.0; n * oc];
                matmul_forward(&mut out, &x[0], &x[1], n, c, oc);
                project(&out, &r)
            },
        );
    }
}
