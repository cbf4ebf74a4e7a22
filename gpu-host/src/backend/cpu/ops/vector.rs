//! Vector kernels shared by the ops: dot products and `y += a·x`, over f32
//! or bf16 weights. Each is written once as plain loops with independent
//! accumulators and compiled three times — AVX-512, AVX2+FMA and baseline —
//! with the widest one the CPU supports picked at run time, so the binary
//! runs on any x86-64 and uses AVX-512 where present.

use half::bf16;

/// An element type weights may be stored in; compute is always f32.
pub trait WeightElem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
}

impl WeightElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl WeightElem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // bf16 is the top half of an f32: widening is a shift (vectorises).
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

const LANES: usize = 16;

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    // `mul_add` is one instruction with FMA and a slow libm call without.
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn dot_impl<W: WeightElem, const FMA: bool>(w: &[W], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (w, x) = (&w[..n], &x[..n]);
    let mut acc = [0f32; LANES];
    let mut wc = w.chunks_exact(LANES);
    let mut xc = x.chunks_exact(LANES);
    for (wb, xb) in (&mut wc).zip(&mut xc) {
        for l in 0..LANES {
            acc[l] = fmadd::<FMA>(wb[l].to_f32(), xb[l], acc[l]);
        }
    }
    let mut tail = 0f32;
    for (a, b) in wc.remainder().iter().zip(xc.remainder()) {
        tail = fmadd::<FMA>(a.to_f32(), *b, tail);
    }
    // Pairwise reduction of the lanes.
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

#[inline(always)]
fn axpy_impl<W: WeightElem, const FMA: bool>(y: &mut [f32], a: f32, x: &[W]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = fmadd::<FMA>(a, xi.to_f32(), *yi);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub fn dot_avx512<W: WeightElem>(w: &[W], x: &[f32]) -> f32 {
        dot_impl::<W, true>(w, x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn dot_avx2<W: WeightElem>(w: &[W], x: &[f32]) -> f32 {
        dot_impl::<W, true>(w, x)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub fn axpy_avx512<W: WeightElem>(y: &mut [f32], a: f32, x: &[W]) {
        axpy_impl::<W, true>(y, a, x)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn axpy_avx2<W: WeightElem>(y: &mut [f32], a: f32, x: &[W]) {
        axpy_impl::<W, true>(y, a, x)
    }
}

/// The SIMD level picked for this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    Avx512,
    Avx2,
    Baseline,
}

pub fn simd_level() -> SimdLevel {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("fma")
            {
                return SimdLevel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Baseline
    })
}

/// `Σ w[i]·x[i]` over the shorter of the two.
#[inline]
pub fn dot<W: WeightElem>(w: &[W], x: &[f32]) -> f32 {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::dot_avx512(w, x) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::dot_avx2(w, x) },
        _ => dot_impl::<W, false>(w, x),
    }
}

/// `y[i] += a·x[i]` over the shorter of the two.
#[inline]
pub fn axpy<W: WeightElem>(y: &mut [f32], a: f32, x: &[W]) {
    match simd_level() {
        // SAFETY: the level was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::axpy_avx512(y, a, x) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::axpy_avx2(y, a, x) },
        _ => axpy_impl::<W, false>(y, a, x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_match_scalar_on_odd_lengths() {
        let mut rng = crate::rng::Rng::new(3);
        for n in [0usize, 1, 15, 16, 17, 100, 257] {
            let w: Vec<f32> = (0..n).map(|_| rng.next_normal() as f32).collect();
            let x: Vec<f32> = (0..n).map(|_| rng.next_normal() as f32).collect();
            let want: f64 = w
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            assert!((f64::from(dot(&w, &x)) - want).abs() < 1e-4, "n={n}");
            let wb: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
            let want_b: f64 = wb
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from(a.to_f32()) * f64::from(*b))
                .sum();
            assert!(
                (f64::from(dot(&wb, &x)) - want_b).abs() < 1e-4,
                "bf16 n={n}"
            );
            // Every level this CPU can run, not only the one picked.
            assert!(
                (f64::from(dot_impl::<_, false>(&wb, &x)) - want_b).abs() < 1e-4,
                "baseline n={n}"
            );
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: features checked just above.
                assert!(
                    (f64::from(unsafe { x86::dot_avx2(&wb, &x) }) - want_b).abs() < 1e-4,
                    "avx2 n={n}"
                );
            }
            let mut y = x.clone();
            axpy(&mut y, 0.5, &wb);
            for i in 0..n {
                assert!((y[i] - (x[i] + 0.5 * wb[i].to_f32())).abs() < 1e-6);
            }
        }
    }
}
