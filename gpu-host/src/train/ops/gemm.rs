//! Row-major matrix products over [`Float`] slices, the three shapes that
//! forward and backward passes need. A large product is split over the
//! rayon threads into one block per thread, along output rows or output
//! columns, whichever repeats less operand packing (each sgemm call packs
//! the parts of A and B it reads). matrixmultiply's blocking along k is
//! fixed by the kernel, so every output element is summed in the same
//! order however the product is split: results are bit-identical from run
//! to run and across thread counts.

use crate::train::float::{Float, SendPtr};
use rayon::prelude::*;

/// Work (m·k·n multiply-adds) below which a product stays on one thread.
const PAR_MIN_WORK: usize = 1 << 18;

/// Which operand is transposed: `out[m, n] = op(a) · op(b)`.
#[derive(Clone, Copy)]
enum Layout {
    /// `a[m, k] · b[n, k]ᵀ` (a linear layer's forward).
    ABt,
    /// `a[m, k] · b[k, n]` (gradient w.r.t. a linear layer's input).
    AB,
    /// `a[k, m]ᵀ · b[k, n]` (gradient w.r.t. a linear layer's weight).
    AtB,
}

/// `out[m, n] = a[m, k] · b[n, k]ᵀ + beta · out`.
pub fn mm_abt<T: Float>(out: &mut [T], a: &[T], b: &[T], m: usize, k: usize, n: usize, beta: T) {
    mm(Layout::ABt, out, a, b, m, k, n, beta)
}

/// `out[m, n] = a[m, k] · b[k, n] + beta · out`.
pub fn mm_ab<T: Float>(out: &mut [T], a: &[T], b: &[T], m: usize, k: usize, n: usize, beta: T) {
    mm(Layout::AB, out, a, b, m, k, n, beta)
}

/// `out[m, n] = a[k, m]ᵀ · b[k, n] + beta · out`.
pub fn mm_atb<T: Float>(out: &mut [T], a: &[T], b: &[T], m: usize, k: usize, n: usize, beta: T) {
    mm(Layout::AtB, out, a, b, m, k, n, beta)
}

#[allow(clippy::too_many_arguments)]
fn mm<T: Float>(
    layout: Layout,
    out: &mut [T],
    a: &[T],
    b: &[T],
    m: usize,
    k: usize,
    n: usize,
    beta: T,
) {
    assert_eq!(out.len(), m * n, "gemm: out must be [m, n]");
    assert_eq!(a.len(), m * k, "gemm: a has the wrong size");
    assert_eq!(b.len(), k * n, "gemm: b has the wrong size");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for o in out.iter_mut() {
            *o *= beta;
        }
        return;
    }
    // (row stride, column stride) of a's m×k view and b's k×n view.
    let (rsa, csa) = match layout {
        Layout::ABt | Layout::AB => (k as isize, 1),
        Layout::AtB => (1, m as isize),
    };
    let (rsb, csb) = match layout {
        Layout::ABt => (1, k as isize),
        Layout::AB | Layout::AtB => (n as isize, 1),
    };
    let threads = rayon::current_num_threads().max(1);
    let parts = if m * k * n < PAR_MIN_WORK { 1 } else { threads };
    // Splitting rows repacks B (k·n) per block; splitting columns repacks A (m·k).
    let by_rows = n <= m;
    let len = if by_rows { m } else { n };
    let block = len.div_ceil(parts).next_multiple_of(16).min(len).max(1);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let a_ptr = SendPtr(a.as_ptr() as *mut T);
    let b_ptr = SendPtr(b.as_ptr() as *mut T);
    let run = |start: usize| {
        let size = block.min(len - start);
        // SAFETY: each block writes its own rows (or columns) of out and
        // reads inside a and b; sizes were checked above.
        unsafe {
            if by_rows {
                T::gemm(
                    size,
                    k,
                    n,
                    T::ONE,
                    a_ptr.get().offset(start as isize * rsa),
                    rsa,
                    csa,
                    b_ptr.get(),
                    rsb,
                    csb,
                    beta,
                    out_ptr.get().add(start * n),
                    n as isize,
                    1,
                )
            } else {
                T::gemm(
                    m,
                    k,
                    size,
                    T::ONE,
                    a_ptr.get(),
                    rsa,
                    csa,
                    b_ptr.get().offset(start as isize * csb),
                    rsb,
                    csb,
                    beta,
                    out_ptr.get().add(start),
                    n as isize,
                    1,
                )
            }
        }
    };
    if block >= len {
        run(0);
    } else {
        (0..len.div_ceil(block))
            .into_par_iter()
            .for_each(|bi| run(bi * block));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(layout: Layout, a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let av = match layout {
                        Layout::AtB => a[p * m + i],
                        _ => a[i * k + p],
                    };
                    let bv = match layout {
                        Layout::ABt => b[j * k + p],
                        _ => b[p * n + j],
                    };
                    out[i * n + j] += av * bv;
                }
            }
        }
        out
    }

    #[test]
    fn all_layouts_match_a_naive_product_small_and_parallel() {
        let mut rng = crate::rng::Rng::new(3);
        for &(m, k, n) in &[(3usize, 5usize, 4usize), (200, 70, 90), (90, 70, 200)] {
            let a: Vec<f64> = (0..m * k).map(|_| rng.next_normal()).collect();
            let b: Vec<f64> = (0..k * n).map(|_| rng.next_normal()).collect();
            for layout in [Layout::ABt, Layout::AB, Layout::AtB] {
                let want = naive(layout, &a, &b, m, k, n);
                let mut out = vec![1.0; m * n];
                mm(layout, &mut out, &a, &b, m, k, n, 1.0);
                for (o, w) in out.iter().zip(&want) {
                    assert!((o - (w + 1.0)).abs() < 1e-9);
                }
            }
        }
    }
}
