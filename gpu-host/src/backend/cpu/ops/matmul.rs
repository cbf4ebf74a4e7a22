//! Linear layers: `out = inp · weightᵀ + bias`, the PyTorch `nn.Linear`
//! layout. Layouts (row-major):
//! - `inp`: `[n, c]` (n rows of c inputs)
//! - `weight`: `[oc, c]` (as stored in the checkpoint)
//! - `bias`: `[oc]`
//! - `out`: `[n, oc]`
//!
//! One row (decode) is a matrix–vector product, memory-bound: rows of the
//! weight are dotted with the input in parallel, reading each weight once
//! in its stored dtype. Several rows go through `matrixmultiply`'s sgemm,
//! one call per block of output columns, the blocks spread over rayon;
//! bf16 weights are widened to f32 a block at a time first. (Measured on
//! this project's AVX-512 EPYC: sgemm reached 125–140 GFLOP/s on these
//! shapes with the weight in its stored `[oc, c]` layout, the `gemm` crate
//! 62, as it repacks that layout on every call.)

use super::vector::{WeightElem, dot};
use half::bf16;
use rayon::prelude::*;

/// Output columns per parallel task in the one-row path.
const MATVEC_CHUNK: usize = 32;
/// Up to this many rows, each weight row is read once and dotted with every
/// input row (a batch of decoding sequences stays memory-bound); more rows
/// go through sgemm, whose packing would cost more than it saves here.
const FEW_ROWS: usize = 8;
/// Most weight rows widened to f32 at once in the bf16 many-row path.
const BF16_BLOCK: usize = 128;

/// `out[n, oc] = inp[n, c] · weight[oc, c]ᵀ + bias[oc]` with f32 weights.
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
) {
    check_shapes(out, inp, weight.len(), bias, n, c, oc);
    if matmul_few_rows(out, inp, weight, bias, n, c, oc) {
        return;
    }
    fill_bias(out, bias, oc);
    let block = column_block(oc, usize::MAX);
    let out_ptr = SendPtr(out.as_mut_ptr());
    weight
        .par_chunks(block * c)
        .enumerate()
        .for_each(|(b, rows)| {
            // SAFETY: block b writes only columns b·block.. of `out`, disjoint
            // from every other block; the strides stay inside the slices.
            unsafe {
                sgemm_columns(
                    out_ptr.get().add(b * block),
                    oc,
                    inp,
                    rows,
                    n,
                    c,
                    bias.is_some(),
                )
            };
        });
}

/// As [`matmul_forward`] with bf16 weights (f32 compute).
pub fn matmul_forward_bf16(
    out: &mut [f32],
    inp: &[f32],
    weight: &[bf16],
    bias: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
) {
    check_shapes(out, inp, weight.len(), bias, n, c, oc);
    if matmul_few_rows(out, inp, weight, bias, n, c, oc) {
        return;
    }
    fill_bias(out, bias, oc);
    let block = column_block(oc, BF16_BLOCK);
    let out_ptr = SendPtr(out.as_mut_ptr());
    weight.par_chunks(block * c).enumerate().for_each_init(
        || Vec::<f32>::with_capacity(block * c),
        |wide, (b, rows)| {
            wide.clear();
            wide.extend(rows.iter().map(|w| w.to_f32()));
            // SAFETY: as in `matmul_forward`.
            unsafe {
                sgemm_columns(
                    out_ptr.get().add(b * block),
                    oc,
                    inp,
                    wide,
                    n,
                    c,
                    bias.is_some(),
                )
            };
        },
    );
}

/// The memory-bound paths shared by both weight dtypes: one row, or up to
/// [`FEW_ROWS`]. False when `n` rows go through sgemm instead.
fn matmul_few_rows<W: WeightElem>(
    out: &mut [f32],
    inp: &[f32],
    weight: &[W],
    bias: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
) -> bool {
    match n {
        1 => matvec(out, inp, weight, bias, c),
        _ if n <= FEW_ROWS => matvec_rows(out, inp, weight, bias, n, c, oc),
        _ => return false,
    }
    true
}

/// One input row: `out[j] = dot(weight[j, :], inp) + bias[j]`.
fn matvec<W: WeightElem>(
    out: &mut [f32],
    inp: &[f32],
    weight: &[W],
    bias: Option<&[f32]>,
    c: usize,
) {
    out.par_chunks_mut(MATVEC_CHUNK)
        .enumerate()
        .for_each(|(chunk, outs)| {
            let j0 = chunk * MATVEC_CHUNK;
            for (jj, o) in outs.iter_mut().enumerate() {
                let j = j0 + jj;
                let b = bias.map_or(0.0, |b| b[j]);
                *o = dot(&weight[j * c..(j + 1) * c], inp) + b;
            }
        });
}

/// A few input rows: `out[t, j] = dot(weight[j, :], inp[t, :]) + bias[j]`,
/// each weight row read once for all rows.
fn matvec_rows<W: WeightElem>(
    out: &mut [f32],
    inp: &[f32],
    weight: &[W],
    bias: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
) {
    let chunks = oc.div_ceil(MATVEC_CHUNK);
    let results: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let (j0, j1) = (chunk * MATVEC_CHUNK, ((chunk + 1) * MATVEC_CHUNK).min(oc));
            let mut vals = Vec::with_capacity((j1 - j0) * n);
            for j in j0..j1 {
                let w = &weight[j * c..(j + 1) * c];
                let b = bias.map_or(0.0, |b| b[j]);
                vals.extend((0..n).map(|t| dot(w, &inp[t * c..(t + 1) * c]) + b));
            }
            vals
        })
        .collect();
    for (chunk, vals) in results.iter().enumerate() {
        let j0 = chunk * MATVEC_CHUNK;
        for (jj, row) in vals.chunks_exact(n).enumerate() {
            for (t, v) in row.iter().enumerate() {
                out[t * oc + j0 + jj] = *v;
            }
        }
    }
}

/// Columns per task: the outputs split evenly over the pool's threads (in
/// multiples of 16), at most `cap`.
fn column_block(oc: usize, cap: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    oc.div_ceil(threads).next_multiple_of(16).min(cap).max(1)
}

fn fill_bias(out: &mut [f32], bias: Option<&[f32]>, oc: usize) {
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(oc) {
            row.copy_from_slice(b);
        }
    }
}

/// `dst[n, cols] (row stride ld_dst) (+)= inp[n, c] · rows[cols, c]ᵀ`
/// where `cols = rows.len() / c`.
///
/// # Safety
/// `dst` must address `n` rows of stride `ld_dst` with `cols` writable
/// columns each, not written by anyone else during the call.
unsafe fn sgemm_columns(
    dst: *mut f32,
    ld_dst: usize,
    inp: &[f32],
    rows: &[f32],
    n: usize,
    c: usize,
    accumulate: bool,
) {
    let cols = rows.len() / c;
    unsafe {
        matrixmultiply::sgemm(
            n,
            c,
            cols,
            1.0,
            inp.as_ptr(),
            c as isize,
            1,
            rows.as_ptr(),
            1,
            c as isize,
            if accumulate { 1.0 } else { 0.0 },
            dst,
            ld_dst as isize,
            1,
        );
    }
}

fn check_shapes(
    out: &[f32],
    inp: &[f32],
    weight_len: usize,
    bias: Option<&[f32]>,
    n: usize,
    c: usize,
    oc: usize,
) {
    assert_eq!(out.len(), n * oc, "matmul: out must be [n, oc]");
    assert_eq!(inp.len(), n * c, "matmul: inp must be [n, c]");
    assert_eq!(weight_len, oc * c, "matmul: weight must be [oc, c]");
    if let Some(b) = bias {
        assert_eq!(b.len(), oc, "matmul: bias must be [oc]");
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint column ranges to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(
        inp: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; n * oc];
        for i in 0..n {
            for j in 0..oc {
                let mut s = bias.map_or(0.0, |b| f64::from(b[j]));
                for k in 0..c {
                    s += f64::from(inp[i * c + k]) * f64::from(w[j * c + k]);
                }
                out[i * oc + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn f32_and_bf16_match_naive_for_one_and_many_rows() {
        let mut rng = Rng::new(11);
        for &(n, c, oc) in &[(1usize, 37usize, 70usize), (5, 64, 130), (17, 96, 200)] {
            let inp: Vec<f32> = (0..n * c).map(|_| rng.next_normal() as f32).collect();
            let w: Vec<f32> = (0..oc * c).map(|_| rng.next_normal() as f32).collect();
            let b: Vec<f32> = (0..oc).map(|_| rng.next_normal() as f32).collect();
            for bias in [None, Some(b.as_slice())] {
                let want = naive(&inp, &w, bias, n, c, oc);
                let mut out = vec![0f32; n * oc];
                matmul_forward(&mut out, &inp, &w, bias, n, c, oc);
                let err = out
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(err < 1e-3, "f32 n={n} err={err}");

                let wb: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
                let wr: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
                let want = naive(&inp, &wr, bias, n, c, oc);
                let mut out = vec![0f32; n * oc];
                matmul_forward_bf16(&mut out, &inp, &wb, bias, n, c, oc);
                let err = out
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(err < 1e-3, "bf16 n={n} err={err}");
            }
        }
    }
}
