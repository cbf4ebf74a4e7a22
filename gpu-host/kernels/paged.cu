// Serving over a paged KV cache; twins of cpu::ops::paged and
// cpu::ops::rope::rope_forward_positions. f32 throughout (exact against
// the CPU up to summation order).
//
// rope_forward_positions(x [n, n_heads, head_dim] in place, cos, sin [max_pos, head_dim/2],
//                        positions [n] (int), n, n_heads, head_dim)
//   Row t is at positions[t]. One thread per rotated pair.
//   Launch: grid-stride, block 256.
//
// paged_kv_write(k_pool, v_pool [num_blocks, n_kv_heads, block_size, head_dim],
//                k, v [n, n_kv_heads, head_dim], slots [n] (int), n, n_kv_heads, block_size, head_dim)
//   Row t goes to pool slot slots[t] = block * block_size + offset. One thread per value.
//   Launch: grid-stride, block 256.
//
// paged_attention_forward(out, q [rows, n_heads, head_dim], k_pool, v_pool,
//                         row_pos [rows] (int: position of the row, -1: not in any sequence),
//                         row_table [rows] (int: offset of the row's block table in `tables`),
//                         tables (int), rows, n_heads, n_kv_heads, head_dim, block_size, window)
//   Causal GQA of each row over positions max(0, p - window + 1) ..= p of its
//   sequence, read through the block table. One warp per (row, head): each
//   lane holds head_dim/32 (at most 8) dimensions of q and of the output;
//   scores are reduced across the warp and the softmax is online (running
//   maximum and sum), so any context length works in registers.
//   Launch: grid rows * n_heads, block 32. head_dim <= 256 and a multiple of 32.

extern "C" __global__ void rope_forward_positions(float* x, const float* cos_t, const float* sin_t, const int* positions,
                                                  int n, int n_heads, int head_dim) {
    const int half = head_dim / 2;
    const size_t total = (size_t)n * n_heads * half;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const size_t row = idx / half;  // t * n_heads + h
        const int t = (int)(row / n_heads);
        float* head = x + row * head_dim;
        const size_t tab = (size_t)positions[t] * half + i;
        const float c = cos_t[tab], s = sin_t[tab];
        const float a = head[i], b = head[i + half];
        head[i] = a * c - b * s;
        head[i + half] = b * c + a * s;
    }
}

// rope_backward_positions(dx [n, n_heads, head_dim] in place, cos, sin, positions [n] (int), n, n_heads, head_dim)
//   The transpose of rope_forward_positions: each pair rotated by -angle
//   (twin of train::ops::rope::rope_backward). Launch: grid-stride, block 256.
extern "C" __global__ void rope_backward_positions(float* x, const float* cos_t, const float* sin_t, const int* positions,
                                                   int n, int n_heads, int head_dim) {
    const int half = head_dim / 2;
    const size_t total = (size_t)n * n_heads * half;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const size_t row = idx / half;
        const int t = (int)(row / n_heads);
        float* head = x + row * head_dim;
        const size_t tab = (size_t)positions[t] * half + i;
        const float c = cos_t[tab], s = -sin_t[tab];
        const float a = head[i], b = head[i + half];
        head[i] = a * c - b * s;
        head[i + half] = b * c + a * s;
    }
}

extern "C" __global__ void paged_kv_write(float* k_pool, float* v_pool, const float* k, const float* v, const int* slots,
                                          int n, int n_kv_heads, int block_size, int head_dim) {
    const size_t kv_dim = (size_t)n_kv_heads * head_dim;
    const size_t total = (size_t)n * kv_dim;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(idx / kv_dim);
        const int h = (int)((idx % kv_dim) / head_dim);
        const int d = (int)(idx % head_dim);
        const int slot = slots[t];
        const size_t block = slot / block_size, off = slot % block_size;
        const size_t dst = ((block * n_kv_heads + h) * block_size + off) * head_dim + d;
        k_pool[dst] = k[idx];
        v_pool[dst] = v[idx];
    }
}

#define PAGED_MAX_PER_LANE 8

extern "C" __global__ void paged_attention_forward(float* out, const float* q, const float* k_pool, const float* v_pool,
                                                   const int* row_pos, const int* row_table, const int* tables, int rows,
                                                   int n_heads, int n_kv_heads, int head_dim, int block_size, int window) {
    const int row = blockIdx.x / n_heads;
    const int h = blockIdx.x % n_heads;
    const int lane = threadIdx.x;
    if (row >= rows) return;
    const int p = row_pos[row];
    if (p < 0) return;
    const int per_lane = head_dim / WARP_SIZE;
    const int kvh = h / (n_heads / n_kv_heads);
    const int* table = tables + row_table[row];
    const float scale = rsqrtf((float)head_dim);
    const float* q_h = q + ((size_t)row * n_heads + h) * head_dim;
    float qr[PAGED_MAX_PER_LANE], acc[PAGED_MAX_PER_LANE];
    // Fully unrolled with a guard so the arrays stay in registers.
#pragma unroll
    for (int i = 0; i < PAGED_MAX_PER_LANE; ++i) {
        qr[i] = i < per_lane ? q_h[lane + i * WARP_SIZE] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    const int start = window > 0 ? max(0, p - window + 1) : 0;
    for (int j = start; j <= p; ++j) {
        const size_t block = table[j / block_size], off = j % block_size;
        const size_t base = ((block * n_kv_heads + kvh) * block_size + off) * head_dim;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < PAGED_MAX_PER_LANE; ++i)
            if (i < per_lane) s += qr[i] * k_pool[base + lane + i * WARP_SIZE];
        for (int o = WARP_SIZE / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        s *= scale;
        const float m_new = fmaxf(m, s);
        const float correction = __expf(m - m_new);
        const float w = __expf(s - m_new);
        l = l * correction + w;
#pragma unroll
        for (int i = 0; i < PAGED_MAX_PER_LANE; ++i)
            if (i < per_lane) acc[i] = acc[i] * correction + w * v_pool[base + lane + i * WARP_SIZE];
        m = m_new;
    }
    float* o_h = out + ((size_t)row * n_heads + h) * head_dim;
    const float inv = 1.0f / l;
#pragma unroll
    for (int i = 0; i < PAGED_MAX_PER_LANE; ++i)
        if (i < per_lane) o_h[lane + i * WARP_SIZE] = acc[i] * inv;
}
