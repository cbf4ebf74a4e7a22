// The MoE-LoRA expert path's data movement; the shrink (x·Aᵀ) and expand
// (·Bᵀ) products are cuBLASLt GEMMs on each expert's gathered rows. Twins
// of the gather/scatter steps of train::model::moe_mlp_forward and of
// lora_forward/lora_backward's per-row gate.
//
// gather_rows(out [m, w], src [n, w], rows [m] u32, m, w): out[i] = src[rows[i]].
// scatter_add_rows(dst [n, w] (+=), src [m, w], rows [m] u32, row_scale [m] (may be null), scale, m, w)
//   dst[rows[i]] += scale * row_scale[i] * src[i]. The rows of one call are
//   distinct (one expert's tokens), so no two threads add to one element.
// scale_rows(out [m, w], src [m, w], row_scale [m] (may be null), scale, m, w)
//   out[i] = scale * row_scale[i] * src[i] (the gate-weighted LoRA input).
//   Launch (these three): grid-stride, block 256.
// row_dot(out [m], a [m, w], b [m, w], scale, accumulate, m, w)
//   out[i] = (accumulate ? out[i] : 0) + scale * Σ_j a[i, j] * b[i, j].
//   Launch: grid ceil(m / 4), block 128, one warp per row.
// scatter_slots(dst [n, k] (+=), vals [m], rows [m] u32, slots [m] u32, k, m)
//   dst[rows[i] * k + slots[i]] += vals[i] (an expert's gate gradients back
//   to the top-k slots that chose it). Launch: grid-stride, block 256.

extern "C" __global__ void gather_rows(float* out, const float* src, const unsigned* rows, int m, int w) {
    const size_t total = (size_t)m * w;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / w, j = i % w;
        out[i] = src[(size_t)rows[r] * w + j];
    }
}

extern "C" __global__ void scatter_add_rows(float* dst, const float* src, const unsigned* rows, const float* row_scale, float scale, int m,
                                            int w) {
    const size_t total = (size_t)m * w;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / w, j = i % w;
        const float s = row_scale ? scale * row_scale[r] : scale;
        dst[(size_t)rows[r] * w + j] += s * src[i];
    }
}

extern "C" __global__ void scale_rows(float* out, const float* src, const float* row_scale, float scale, int m, int w) {
    const size_t total = (size_t)m * w;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / w;
        out[i] = row_scale ? src[i] * scale * row_scale[r] : src[i] * scale;
    }
}

extern "C" __global__ void row_dot(float* out, const float* a, const float* b, float scale, int accumulate, int m, int w) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int r = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (r >= m) return;
    const float *x = a + (size_t)r * w, *y = b + (size_t)r * w;
    float s = 0.f;
    for (int j = lane; j < w; j += WARP_SIZE) s += x[j] * y[j];
    s = warp_sum(s);
    if (lane == 0) out[r] = (accumulate ? out[r] : 0.f) + scale * s;
}

extern "C" __global__ void scatter_slots(float* dst, const float* vals, const unsigned* rows, const unsigned* slots, int k, int m) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < m; i += gridDim.x * blockDim.x) {
        dst[(size_t)rows[i] * k + slots[i]] += vals[i];
    }
}
