//! What the CUDA test files share: the device (or the printed reason it
//! is skipped), host/device copies, NaN-poisoned outputs and the relative
//! error every comparison with the CPU uses.
#![allow(dead_code)]

use cudarc::driver::CudaSlice;
use gpu_host::backend::cuda::{Gpu, cuda_available};
use gpu_host::rng::Rng;
use half::bf16;
use std::sync::OnceLock;

pub const F32_TOL: f64 = 1e-5;
pub const BF16_TOL: f64 = 1e-2;

pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    let g = GPU.get_or_init(|| match cuda_available() {
        Ok(()) => Some(Gpu::new(0).expect("CUDA is present but device 0 cannot be opened")),
        Err(why) => {
            require_cuda(&why);
            eprintln!("skipped: {why}");
            None
        }
    });
    if g.is_none() {
        eprintln!("skipped: no usable GPU");
    }
    g.as_ref()
}

/// On the GPU machine the suite must not skip: `GPU_HOST_REQUIRE_CUDA=1`
/// turns "no usable GPU" into a failure.
pub fn require_cuda(why: &str) {
    assert!(
        std::env::var_os("GPU_HOST_REQUIRE_CUDA").is_none(),
        "GPU_HOST_REQUIRE_CUDA is set but {why}"
    );
}

pub fn normal(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.next_normal() as f32 * scale).collect()
}

pub fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|x| bf16::from_f32(*x)).collect()
}

pub fn widen(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

pub fn up<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, v: &[T]) -> CudaSlice<T> {
    gpu.stream.clone_htod(v).unwrap()
}

pub fn down<T: cudarc::driver::DeviceRepr + Default + Clone>(
    gpu: &Gpu,
    v: &CudaSlice<T>,
) -> Vec<T> {
    let out = gpu.stream.clone_dtoh(v).unwrap();
    gpu.synchronize().unwrap();
    gpu.ctx.check_err().unwrap();
    out
}

/// A buffer of NaN: an element the kernel fails to write stays NaN.
pub fn poisoned(gpu: &Gpu, len: usize) -> CudaSlice<f32> {
    up(gpu, &vec![f32::NAN; len])
}

pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    if got.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    eprintln!("{what}: relative error {e:.2e}");
    assert!(e <= tol, "{what}: relative error {e:.3e} exceeds {tol:e}");
}
