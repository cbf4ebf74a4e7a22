// AdamW with global-norm clipping; twin of train::optim (AdamW::step,
// clip_grad_norm). f32 master weights and moments.
//
// grad_sumsq(out [1] f64 (+=), g [len], len)
//   out += Σ g^2 in f64 (one atomic per block); summed over every trainable
//   tensor, its square root is the global norm the host clips with.
//   Launch: grid-stride, block 256.
// adamw_step(p, g, m, v [len], len, clip_scale, beta1, beta2, eps, step, inv_bc2, decay)
//   g' = g * clip_scale; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
//   p -= step * m / (sqrt(v * inv_bc2) + eps) + decay * p, with
//   step = lr / (1 - b1^t) and inv_bc2 = 1 / (1 - b2^t) from the host.
//   Launch: grid-stride, block 256.

extern "C" __global__ void grad_sumsq(double* out, const float* g, size_t len) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += (size_t)gridDim.x * blockDim.x) {
        const double x = (double)g[i];
        s += x * x;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    if (lane == 0) scratch[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < (int)(blockDim.x / WARP_SIZE) ? scratch[lane] : 0.0;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) atomicAdd(out, s);
    }
}

extern "C" __global__ void adamw_step(float* p, const float* g, float* m, float* v, size_t len, float clip_scale, float b1, float b2,
                                      float eps, float step, float inv_bc2, float decay) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += (size_t)gridDim.x * blockDim.x) {
        const float gi = clip_scale == 1.f ? g[i] : g[i] * clip_scale;
        const float mi = b1 * m[i] + (1.f - b1) * gi;
        const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi * inv_bc2) + eps;
        p[i] -= step * mi / denom + decay * p[i];
    }
}
