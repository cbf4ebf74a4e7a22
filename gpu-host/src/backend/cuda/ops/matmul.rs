//! Linear layers, `out = inp · weightᵀ + bias` (PyTorch layout); twin of
//! [`cpu::ops::matmul`](crate::backend::cpu::ops::matmul).
//!
//! One row (decode) is memory-bound: `matvec_forward` (kernels/matmul.cu)
//! reads each weight once with f32 input, as the CPU does. Several rows go
//! through cuBLASLt with f32 accumulation: bf16 weights take the input
//! rounded to bf16 (tensor cores, bf16 tolerance); f32 weights run in
//! plain f32 (no TF32), so the f32 path stays within f32 tolerance.

use super::cast::cast_f32_to_bf16;
use super::check_len;
use crate::backend::cuda::gpu::{DeviceElem, Gpu, to_i32};
use anyhow::{Context, Result};
use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use half::bf16;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

/// `out[oc] = inp[c] · weight[oc, c]ᵀ + bias[oc]` (one row).
pub fn matvec_forward<W: DeviceElem>(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    weight: &CudaSlice<W>,
    bias: Option<&CudaSlice<f32>>,
    c: usize,
    oc: usize,
) -> Result<()> {
    check_len("matvec out", out.len(), oc)?;
    check_len("matvec inp", inp.len(), c)?;
    check_len("matvec weight", weight.len(), oc * c)?;
    if let Some(b) = bias {
        check_len("matvec bias", b.len(), oc)?;
    }
    if oc == 0 {
        return Ok(());
    }
    let (c32, oc32) = (to_i32(c, "matvec width")?, to_i32(oc, "matvec outputs")?);
    const WARPS: usize = 8;
    let cfg = LaunchConfig {
        grid_dim: (oc.div_ceil(WARPS) as u32, 1, 1),
        block_dim: (32 * WARPS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let null: u64 = 0;
    let mut launch = gpu.launch(&format!("matvec_forward_{}", W::SUFFIX))?;
    launch.arg(out).arg(inp).arg(weight);
    match bias {
        Some(b) => launch.arg(b),
        None => launch.arg(&null),
    };
    launch.arg(&c32).arg(&oc32);
    // SAFETY: sizes checked above; a null bias is allowed by the kernel.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// `out[n, oc] = inp[n, c] · weight[oc, c]ᵀ + bias[oc]`: the matrix-vector
/// kernel for one row, cuBLASLt otherwise.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward<W: GemmWeight>(
    gpu: &Gpu,
    gemm: &Gemm,
    out: &mut CudaSlice<f32>,
    inp: &CudaSlice<f32>,
    weight: &CudaSlice<W>,
    bias: Option<&CudaSlice<f32>>,
    n: usize,
    c: usize,
    oc: usize,
) -> Result<()> {
    if n == 1 {
        return matvec_forward(gpu, out, inp, weight, bias, c, oc);
    }
    check_len("matmul out", out.len(), n * oc)?;
    check_len("matmul inp", inp.len(), n * c)?;
    check_len("matmul weight", weight.len(), oc * c)?;
    if let Some(b) = bias {
        check_len("matmul bias", b.len(), oc)?;
    }
    if n == 0 || oc == 0 {
        return Ok(());
    }
    W::gemm(gpu, gemm, out, inp, weight, bias, n, c, oc)
}

/// Weight types the GEMM path takes (how the input is presented to cuBLASLt).
pub trait GemmWeight: DeviceElem {
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        gpu: &Gpu,
        gemm: &Gemm,
        out: &mut CudaSlice<f32>,
        inp: &CudaSlice<f32>,
        weight: &CudaSlice<Self>,
        bias: Option<&CudaSlice<f32>>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()>;
}

impl GemmWeight for f32 {
    fn gemm(
        gpu: &Gpu,
        gemm: &Gemm,
        out: &mut CudaSlice<f32>,
        inp: &CudaSlice<f32>,
        weight: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        let stream = &gpu.stream;
        let (w, _w) = weight.device_ptr(stream);
        let (x, _x) = inp.device_ptr(stream);
        let bias_ptr = bias.map(|b| b.device_ptr(stream));
        let (y, _y) = out.device_ptr_mut(stream);
        let key = PlanKey {
            weights: sys::cudaDataType_t::CUDA_R_32F,
            n,
            c,
            oc,
            bias: bias.is_some(),
        };
        gemm.run(gpu, key, w, x, bias_ptr.as_ref().map(|b| b.0), y)
    }
}

impl GemmWeight for bf16 {
    fn gemm(
        gpu: &Gpu,
        gemm: &Gemm,
        out: &mut CudaSlice<f32>,
        inp: &CudaSlice<f32>,
        weight: &CudaSlice<bf16>,
        bias: Option<&CudaSlice<f32>>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        let stream = &gpu.stream;
        let mut scratch = gemm.input_bf16.lock().unwrap_or_else(|e| e.into_inner());
        if scratch.as_ref().is_none_or(|s| s.len() < n * c) {
            *scratch = Some(
                stream
                    .alloc_zeros::<bf16>(n * c)
                    .context("cannot allocate the GEMM input scratch")?,
            );
        }
        let xb = scratch.as_mut().expect("allocated above");
        cast_f32_to_bf16(gpu, xb, inp, n * c)?;
        gemm.linear_bf16_input(gpu, out, xb, weight, bias, n, c, oc)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    weights: sys::cudaDataType,
    n: usize,
    c: usize,
    oc: usize,
    bias: bool,
}

/// A cuBLASLt matmul for one shape: descriptors and the algorithm the
/// heuristic chose, made once and reused (decode repeats the same shapes
/// every token, and the heuristic query costs more than a small GEMM).
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: created in `Plan::new` and destroyed only here.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.d);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// The cuBLASLt handle of a backend, its workspace, its plans and the
/// bf16 copy of the input that bf16 GEMMs read.
pub struct Gemm {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: Mutex<HashMap<PlanKey, Plan>>,
    general: Mutex<HashMap<GeneralKey, Plan>>,
    input_bf16: Mutex<Option<CudaSlice<bf16>>>,
}

// SAFETY: the handle is used under the `plans` lock only, and cuBLASLt
// handles may be used from any thread.
unsafe impl Send for Gemm {}
unsafe impl Sync for Gemm {}

/// NVIDIA's recommended cuBLASLt workspace on Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

impl Gemm {
    /// `out[n, oc] = inp[n, c] · weight[oc, c]ᵀ + bias` with the input
    /// already in bf16 (the bf16 linear layer without its input cast).
    #[allow(clippy::too_many_arguments)]
    pub fn linear_bf16_input(
        &self,
        gpu: &Gpu,
        out: &mut CudaSlice<f32>,
        inp: &CudaSlice<bf16>,
        weight: &CudaSlice<bf16>,
        bias: Option<&CudaSlice<f32>>,
        n: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        check_len("linear out", out.len(), n * oc)?;
        check_len("linear inp", inp.len(), n * c)?;
        check_len("linear weight", weight.len(), oc * c)?;
        if let Some(b) = bias {
            check_len("linear bias", b.len(), oc)?;
        }
        let stream = &gpu.stream;
        let (w, _w) = weight.device_ptr(stream);
        let (x, _x) = inp.device_ptr(stream);
        let bias_ptr = bias.map(|b| b.device_ptr(stream));
        let (y, _y) = out.device_ptr_mut(stream);
        let key = PlanKey {
            weights: sys::cudaDataType_t::CUDA_R_16BF,
            n,
            c,
            oc,
            bias: bias.is_some(),
        };
        self.run(gpu, key, w, x, bias_ptr.as_ref().map(|b| b.0), y)
    }

    pub fn new(gpu: &Gpu) -> Result<Self> {
        gpu.ctx.bind_to_thread()?;
        let handle = lt::create_handle().context("cannot create a cuBLASLt handle")?;
        let workspace = gpu
            .stream
            .alloc_zeros::<u8>(WORKSPACE_BYTES)
            .context("cannot allocate the cuBLASLt workspace")?;
        Ok(Self {
            handle,
            workspace,
            plans: Mutex::new(HashMap::new()),
            general: Mutex::new(HashMap::new()),
            input_bf16: Mutex::new(None),
        })
    }

    /// `y[n, oc] = x[n, c] · w[oc, c]ᵀ (+ bias)`. Column-major, cuBLAS's
    /// view: `yᵀ (oc × n) = w (c × oc)ᵀ · xᵀ (c × n)`.
    fn run(
        &self,
        gpu: &Gpu,
        key: PlanKey,
        w: u64,
        x: u64,
        bias: Option<u64>,
        y: u64,
    ) -> Result<()> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let plan = match plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Plan::new(self.handle, key).with_context(|| {
                    format!(
                        "cuBLASLt has no algorithm for [{}, {}] x [{}, {}]ᵀ",
                        key.n, key.c, key.oc, key.c
                    )
                })?)
            }
        };
        let (alpha, beta) = (1f32, 0f32);
        let stream = &gpu.stream;
        let (ws, _ws) = self.workspace.device_ptr(stream);
        // SAFETY: the plan's layouts match the buffers the caller checked;
        // the bias pointer is set on the descriptor just before the call
        // that reads it, under the plans lock.
        unsafe {
            if let Some(b) = bias {
                set_desc_attribute(
                    plan.desc,
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &b,
                )?;
            }
            lt::matmul(
                self.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                w as *const c_void,
                plan.a,
                x as *const c_void,
                plan.b,
                y as *const c_void,
                plan.d,
                y as *mut c_void,
                plan.d,
                &plan.algo,
                ws as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as sys::cudaStream_t,
            )
            .context("cublasLtMatmul failed")?;
        }
        Ok(())
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.general
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // SAFETY: created in `new`, destroyed once.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

impl Plan {
    fn new(handle: sys::cublasLtHandle_t, key: PlanKey) -> Result<Self> {
        let f32t = sys::cudaDataType_t::CUDA_R_32F;
        let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, f32t)?;
        let (c, oc, n) = (key.c as u64, key.oc as u64, key.n as u64);
        let a = lt::create_matrix_layout(key.weights, c, oc, key.c as i64)?;
        let b = lt::create_matrix_layout(key.weights, c, n, key.c as i64)?;
        let d = lt::create_matrix_layout(f32t, oc, n, key.oc as i64)?;
        // The plan owns the descriptors from here on (Drop frees them).
        let mut plan = Plan {
            desc,
            a,
            b,
            d,
            algo: unsafe { std::mem::zeroed() },
        };
        let transpose: i32 = 1; // CUBLAS_OP_T
        let epilogue = if key.bias {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        // SAFETY: the descriptors were just created; attribute sizes match their C types.
        unsafe {
            set_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &transpose,
            )?;
            set_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                &epilogue,
            )?;
            plan.algo = best_algo(handle, desc, a, b, d)?;
        }
        Ok(plan)
    }
}

/// Element types [`Gemm::general`] multiplies (both operands the same
/// type; the result is always f32).
pub trait GemmInput: DeviceElem {
    const DATA_TYPE: sys::cudaDataType_t;
}

impl GemmInput for f32 {
    const DATA_TYPE: sys::cudaDataType_t = sys::cudaDataType_t::CUDA_R_32F;
}

impl GemmInput for bf16 {
    const DATA_TYPE: sys::cudaDataType_t = sys::cudaDataType_t::CUDA_R_16BF;
}

/// One operand of [`Gemm::general`]: a row-major matrix, used as stored
/// or transposed.
pub struct Operand<'a, T> {
    pub data: &'a CudaSlice<T>,
    pub transposed: bool,
}

/// `A` as stored.
pub fn plain<T>(data: &CudaSlice<T>) -> Operand<'_, T> {
    Operand {
        data,
        transposed: false,
    }
}

/// `Aᵀ`.
pub fn transposed<T>(data: &CudaSlice<T>) -> Operand<'_, T> {
    Operand {
        data,
        transposed: true,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct GeneralKey {
    data_type: sys::cudaDataType,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
}

impl Gemm {
    /// Row-major `C[m, n] = alpha · op(A) · op(B) + beta · C` with op(A)
    /// `[m, k]` and op(B) `[k, n]`, f32 accumulation and an f32 `C`: the
    /// training GEMMs (`x·Wᵀ`, `dY·W`, `dYᵀ·X`, and the LoRA shrink and
    /// expand). f32 operands run in plain f32 (no TF32), bf16 ones on
    /// tensor cores.
    #[allow(clippy::too_many_arguments)]
    pub fn general<T: GemmInput>(
        &self,
        gpu: &Gpu,
        a: Operand<'_, T>,
        b: Operand<'_, T>,
        c: &mut CudaSlice<f32>,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        check_len("gemm A", a.data.len(), m * k)?;
        check_len("gemm B", b.data.len(), k * n)?;
        check_len("gemm C", c.len(), m * n)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        anyhow::ensure!(k > 0, "gemm with an empty inner dimension");
        let key = GeneralKey {
            data_type: T::DATA_TYPE,
            m,
            n,
            k,
            trans_a: a.transposed,
            trans_b: b.transposed,
        };
        let mut plans = self.general.lock().unwrap_or_else(|e| e.into_inner());
        let plan = match plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Plan::general(self.handle, key).with_context(|| {
                    format!("cuBLASLt has no algorithm for a [{m}, {k}] x [{k}, {n}] product")
                })?)
            }
        };
        let stream = &gpu.stream;
        let (pa, _ga) = a.data.device_ptr(stream);
        let (pb, _gb) = b.data.device_ptr(stream);
        let (pc, _gc) = c.device_ptr_mut(stream);
        let (ws, _ws) = self.workspace.device_ptr(stream);
        // Column-major view: Cᵀ [n, m] = op(B)ᵀ · op(A)ᵀ, so cuBLAS's first
        // operand is B and its second A (see Plan::general).
        // SAFETY: the plan's layouts match the sizes checked above.
        unsafe {
            lt::matmul(
                self.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                pb as *const c_void,
                plan.a,
                pa as *const c_void,
                plan.b,
                pc as *const c_void,
                plan.d,
                pc as *mut c_void,
                plan.d,
                &plan.algo,
                ws as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as sys::cudaStream_t,
            )
            .context("cublasLtMatmul failed")?;
        }
        Ok(())
    }
}

impl Plan {
    /// The column-major problem behind a row-major [`Gemm::general`]:
    /// `D [n, m] = opB' · opA'` where the first operand is the row-major B
    /// buffer (`[n, k]` column-major, ld n, when B is not transposed; else
    /// `[k, n]`, ld k, transposed) and the second the A buffer (`[k, m]`,
    /// ld k, or `[m, k]`, ld m, transposed).
    fn general(handle: sys::cublasLtHandle_t, key: GeneralKey) -> Result<Self> {
        let f32t = sys::cudaDataType_t::CUDA_R_32F;
        let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, f32t)?;
        let (m, n, k) = (key.m as u64, key.n as u64, key.k as u64);
        let first = if key.trans_b {
            lt::create_matrix_layout(key.data_type, k, n, k as i64)?
        } else {
            lt::create_matrix_layout(key.data_type, n, k, n as i64)?
        };
        let second = if key.trans_a {
            lt::create_matrix_layout(key.data_type, m, k, m as i64)?
        } else {
            lt::create_matrix_layout(key.data_type, k, m, k as i64)?
        };
        let d = lt::create_matrix_layout(f32t, n, m, n as i64)?;
        let mut plan = Plan {
            desc,
            a: first,
            b: second,
            d,
            // SAFETY: a plain C struct; replaced by the heuristic's choice below.
            algo: unsafe { std::mem::zeroed() },
        };
        let op = |t: bool| -> i32 { i32::from(t) }; // CUBLAS_OP_N = 0, CUBLAS_OP_T = 1
        let (ta, tb) = (op(key.trans_b), op(key.trans_a));
        // SAFETY: the descriptors were just created; attribute sizes match their C types.
        unsafe {
            set_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &ta,
            )?;
            set_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                &tb,
            )?;
            plan.algo = best_algo(handle, desc, first, second, d)?;
        }
        Ok(plan)
    }
}

/// cuBLASLt's first choice of algorithm for a matmul of these layouts
/// within our workspace.
///
/// # Safety
/// The handle and descriptors must be valid.
unsafe fn best_algo(
    handle: sys::cublasLtHandle_t,
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
) -> Result<sys::cublasLtMatmulAlgo_t> {
    // SAFETY: the caller's handle and descriptors; the preference is made
    // and destroyed here, its attribute a usize.
    unsafe {
        let pref = lt::create_matmul_pref()?;
        let ws = WORKSPACE_BYTES;
        let heuristic = lt::set_matmul_pref_attribute(
            pref,
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            &ws as *const usize as *const c_void,
            std::mem::size_of::<usize>(),
        )
        .and_then(|_| lt::get_matmul_algo_heuristic(handle, desc, a, b, d, d, pref));
        let _ = lt::destroy_matmul_pref(pref);
        Ok(heuristic?.algo)
    }
}

/// Sets one attribute of a matmul descriptor from a value of its C type.
///
/// # Safety
/// `desc` must be a live descriptor and `T` the attribute's C type.
unsafe fn set_desc_attribute<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attribute: sys::cublasLtMatmulDescAttributes_t,
    value: &T,
) -> Result<()> {
    // SAFETY: as the caller promises; the pointer and size describe `value`.
    unsafe {
        lt::set_matmul_desc_attribute(
            desc,
            attribute,
            value as *const T as *const c_void,
            std::mem::size_of::<T>(),
        )
    }?;
    Ok(())
}
