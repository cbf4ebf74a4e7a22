// RMSNorm, alone and fused with the residual add that precedes it in every
// Llama block; twin of cpu::ops::rmsnorm (and cpu::ops::residual).
//
// rmsnorm_forward(out [n, c], inp [n, c], weight [c], c, eps)
//   out = inp / sqrt(mean(inp^2) + eps) * weight, row by row.
// residual_rmsnorm_forward(out [n, c], residual [n, c], inp [n, c], weight [c], c, eps)
//   residual += inp, then out = rmsnorm(residual): one pass over the
//   stream instead of two.
//   Launch (both): grid (n), block 256 (RMS_THREADS); one block per row,
//   f32 throughout, the sum of squares reduced in a block tree. Rows of up
//   to 8192 values with c % 4 == 0 are held in registers as float4 between
//   the two passes (each input read once); others re-read their row.

#define RMS_THREADS 256
#define RMS_VEC_PER_THREAD 8  // float4s a thread keeps: rows up to 8192

template <bool RESIDUAL>
__device__ __forceinline__ void rmsnorm_row(float* out, float* residual, const float* inp, const float* weight, int c, float eps) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * c;
    float ss = 0.f;
    if (c % 4 == 0 && c <= 4 * RMS_THREADS * RMS_VEC_PER_THREAD) {
        const int nv = c / 4;
        const float4* x4 = reinterpret_cast<const float4*>(inp + base);
        float4* r4 = reinterpret_cast<float4*>(residual + base);
        float4 v[RMS_VEC_PER_THREAD];
#pragma unroll
        for (int k = 0; k < RMS_VEC_PER_THREAD; k++) {
            const int i = threadIdx.x + k * RMS_THREADS;
            if (i < nv) {
                v[k] = x4[i];
                if (RESIDUAL) {
                    const float4 r = r4[i];
                    v[k] = make_float4(r.x + v[k].x, r.y + v[k].y, r.z + v[k].z, r.w + v[k].w);
                    r4[i] = v[k];
                }
                ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
            }
        }
        ss = block_sum(ss, scratch);
        const float rstd = 1.f / sqrtf(ss / (float)c + eps);
        const float4* w4 = reinterpret_cast<const float4*>(weight);
        float4* y4 = reinterpret_cast<float4*>(out + base);
#pragma unroll
        for (int k = 0; k < RMS_VEC_PER_THREAD; k++) {
            const int i = threadIdx.x + k * RMS_THREADS;
            if (i < nv) {
                const float4 w = w4[i];
                y4[i] = make_float4((v[k].x * rstd) * w.x, (v[k].y * rstd) * w.y, (v[k].z * rstd) * w.z, (v[k].w * rstd) * w.w);
            }
        }
        return;
    }
    const float* x = inp + base;
    if (RESIDUAL) {
        float* r = residual + base;
        for (int j = threadIdx.x; j < c; j += blockDim.x) {
            const float v = r[j] + x[j];
            r[j] = v;
            ss += v * v;
        }
        x = r;  // normalise the sum; each thread re-reads only what it wrote
    } else {
        for (int j = threadIdx.x; j < c; j += blockDim.x) ss += x[j] * x[j];
    }
    ss = block_sum(ss, scratch);
    const float rstd = 1.f / sqrtf(ss / (float)c + eps);
    float* y = out + base;
    for (int j = threadIdx.x; j < c; j += blockDim.x) y[j] = (x[j] * rstd) * weight[j];
}

extern "C" __global__ void __launch_bounds__(RMS_THREADS) rmsnorm_forward(float* out, const float* inp, const float* weight, int c, float eps) {
    rmsnorm_row<false>(out, nullptr, inp, weight, c, eps);
}

extern "C" __global__ void __launch_bounds__(RMS_THREADS)
    residual_rmsnorm_forward(float* out, float* residual, const float* inp, const float* weight, int c, float eps) {
    rmsnorm_row<true>(out, residual, inp, weight, c, eps);
}

// ---- training ---------------------------------------------------------------
// rmsnorm_forward_rstd(out [n, c], rstd [n], inp [n, c], weight [c], c, eps)
//   As rmsnorm_forward, and saves rstd = 1/sqrt(mean(inp^2) + eps) per row
//   for the backward (twin of train::ops::rmsnorm::rmsnorm_forward).
// rmsnorm_backward(dinp [n, c] (+=), dweight [c] (+=, may be null), dout [n, c],
//                  inp [n, c], weight [c], rstd [n], c)
//   dinp += rstd * (dout*w - x*rstd*mean(dout*w*x*rstd)); dweight += dout*x*rstd
//   (atomics: only full fine-tuning asks for it).
//   Launch (both): grid (n), block 256; one block per row.

extern "C" __global__ void __launch_bounds__(RMS_THREADS)
    rmsnorm_forward_rstd(float* out, float* rstd, const float* inp, const float* weight, int c, float eps) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * c;
    const float* x = inp + base;
    float ss = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) ss += x[j] * x[j];
    ss = block_sum(ss, scratch);
    const float rs = 1.f / sqrtf(ss / (float)c + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
    float* y = out + base;
    for (int j = threadIdx.x; j < c; j += blockDim.x) y[j] = (x[j] * rs) * weight[j];
}

extern "C" __global__ void __launch_bounds__(RMS_THREADS) rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                                                                          const float* weight, const float* rstd, int c) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * c;
    const float rs = rstd[blockIdx.x];
    const float *dy = dout + base, *x = inp + base;
    float dot = 0.f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) dot += dy[j] * weight[j] * x[j] * rs;
    dot = block_sum(dot, scratch);
    const float mean = dot / (float)c;
    float* dx = dinp + base;
    for (int j = threadIdx.x; j < c; j += blockDim.x) {
        dx[j] += rs * (dy[j] * weight[j] - x[j] * rs * mean);
        if (dweight) atomicAdd(dweight + j, dy[j] * x[j] * rs);
    }
}
