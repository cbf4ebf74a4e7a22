// Flash attention for training over packed documents; twin of
// train::ops::attention (causal GQA, a row attends only to earlier rows of
// its own document). f32 throughout. Like flash attention, no [n, n]
// probability matrix is ever stored: the forward keeps the log-sum-exp of
// each (row, head), and the backward recomputes each probability from it.
//
// Layouts: q, out, dout, dq: [n, n_heads, head_dim]; k, v, dk, dv:
// [n, n_kv_heads, head_dim]; lse, dsum: [n, n_heads]; doc_start, doc_end:
// [n] (int), the first row and one past the last row of each row's
// document. Query head h reads kv head h / (n_heads / n_kv_heads); scores
// are scaled by `scale` (1/sqrt(head_dim)). head_dim <= 256.
//
// Every kernel gives one warp one (row, head) and walks the other side in
// chunks of 32 rows: in the score phase each lane takes one row of the
// chunk and computes its whole dot product against the warp's own row,
// kept in shared memory (no shuffle per score); in the accumulation phase
// each lane owns head_dim/32 dimensions and the chunk's weights are
// broadcast with shuffles. One max and one sum reduction per chunk.
//
// attention_train_forward(out, lse, q, k, v, doc_start, n, n_heads, n_kv_heads, head_dim, scale)
//   Per (row, head): keys doc_start..=row with the online softmax
//   (running max and sum per chunk).
// attention_train_dsum(dsum, dout, out, n, n_heads, head_dim)
//   dsum = Σ_d dout·out per (row, head): the softmax backward's row term.
// attention_train_backward_dq(dq, dout, q, k, v, lse, dsum, doc_start, ...)
//   Per (row i, head): dq_i = scale · Σ_j p_ij (dout_i·v_j − dsum_i) k_j.
// attention_train_backward_dkdv(dk, dv, dout, q, k, v, lse, dsum, doc_end, ...)
//   Per (row j, kv head): over the query heads of its group and the rows
//   i in j..doc_end: dv_j = Σ p_ij dout_i, dk_j = scale · Σ p_ij
//   (dout_i·v_j − dsum_i) q_i. No atomics.
//   Launch (all): grid ceil(n·heads / 4), block 128 (heads = n_kv_heads
//   for dkdv, n_heads otherwise); 8 KiB of shared memory.

#define AT_WARPS 4
#define AT_PER_LANE 8  // head_dim <= 256
#define AT_MAX_D 256
#define AT_FULL 0xffffffffu

// Copies a row of d values into the warp's shared buffer.
__device__ __forceinline__ void at_stage(float* dst, const float* src, int d, int lane) {
    for (int x = lane; x < d; x += WARP_SIZE) dst[x] = src[x];
    __syncwarp();
}

// a (shared, the warp's row) · b (global, this lane's row), d values.
__device__ __forceinline__ float at_row_dot(const float* a, const float* b, int d) {
    float s = 0.f;
    if ((d & 3) == 0) {
        for (int x = 0; x < d; x += 4) {
            const float4 u = *reinterpret_cast<const float4*>(a + x);
            const float4 w = *reinterpret_cast<const float4*>(b + x);
            s += u.x * w.x + u.y * w.y + u.z * w.z + u.w * w.w;
        }
    } else {
        for (int x = 0; x < d; x++) s += a[x] * b[x];
    }
    return s;
}

__device__ __forceinline__ void at_zero(float r[AT_PER_LANE]) {
#pragma unroll
    for (int i = 0; i < AT_PER_LANE; i++) r[i] = 0.f;
}

// r[x] += w * row[x] over this lane's dimensions.
__device__ __forceinline__ void at_axpy(float r[AT_PER_LANE], float w, const float* row, int d, int lane) {
#pragma unroll
    for (int i = 0; i < AT_PER_LANE; i++) {
        const int x = lane + i * WARP_SIZE;
        if (x < d) r[i] += w * row[x];
    }
}

__device__ __forceinline__ void at_store(float* dst, const float r[AT_PER_LANE], float scale, int d, int lane) {
#pragma unroll
    for (int i = 0; i < AT_PER_LANE; i++) {
        const int x = lane + i * WARP_SIZE;
        if (x < d) dst[x] = r[i] * scale;
    }
}

extern "C" __global__ void __launch_bounds__(AT_WARPS * WARP_SIZE)
    attention_train_forward(float* out, float* lse, const float* q, const float* k, const float* v, const int* doc_start, int n, int nh,
                            int nkv, int d, float scale) {
    __shared__ __align__(16) float stage[AT_WARPS][AT_MAX_D];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int idx = blockIdx.x * AT_WARPS + warp;
    if (idx >= n * nh) return;  // whole warps leave together
    const int t = idx / nh, h = idx % nh, kh = h / (nh / nkv);
    float* qs = stage[warp];
    at_stage(qs, q + (size_t)idx * d, d, lane);
    float acc[AT_PER_LANE];
    at_zero(acc);
    float m = NEG_INF, l = 0.f;
    for (int j0 = doc_start[t]; j0 <= t; j0 += WARP_SIZE) {
        const int j = j0 + lane;
        const float s = j <= t ? at_row_dot(qs, k + ((size_t)j * nkv + kh) * d, d) * scale : NEG_INF;
        const float mn = fmaxf(m, warp_max(s));  // finite: row j0 <= t is always there
        const float p = j <= t ? expf(s - mn) : 0.f;
        const float corr = expf(m - mn);
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < AT_PER_LANE; i++) acc[i] *= corr;
        const int count = min(WARP_SIZE, t - j0 + 1);
        for (int jj = 0; jj < count; jj++) {
            const float pj = __shfl_sync(AT_FULL, p, jj);
            at_axpy(acc, pj, v + ((size_t)(j0 + jj) * nkv + kh) * d, d, lane);
        }
        m = mn;
    }
    at_store(out + (size_t)idx * d, acc, 1.f / l, d, lane);
    if (lane == 0) lse[idx] = m + logf(l);
}

extern "C" __global__ void __launch_bounds__(AT_WARPS * WARP_SIZE)
    attention_train_dsum(float* dsum, const float* dout, const float* out, int n, int nh, int d) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int idx = blockIdx.x * AT_WARPS + threadIdx.x / WARP_SIZE;
    if (idx >= n * nh) return;
    const float *a = dout + (size_t)idx * d, *b = out + (size_t)idx * d;
    float s = 0.f;
    for (int x = lane; x < d; x += WARP_SIZE) s += a[x] * b[x];
    s = warp_sum(s);
    if (lane == 0) dsum[idx] = s;
}

extern "C" __global__ void __launch_bounds__(AT_WARPS * WARP_SIZE)
    attention_train_backward_dq(float* dq, const float* dout, const float* q, const float* k, const float* v, const float* lse,
                                const float* dsum, const int* doc_start, int n, int nh, int nkv, int d, float scale) {
    __shared__ __align__(16) float stage[AT_WARPS][2][AT_MAX_D];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int idx = blockIdx.x * AT_WARPS + warp;
    if (idx >= n * nh) return;
    const int t = idx / nh, h = idx % nh, kh = h / (nh / nkv);
    float *qs = stage[warp][0], *dos = stage[warp][1];
    at_stage(qs, q + (size_t)idx * d, d, lane);
    at_stage(dos, dout + (size_t)idx * d, d, lane);
    float acc[AT_PER_LANE];
    at_zero(acc);
    const float L = lse[idx], D = dsum[idx];
    for (int j0 = doc_start[t]; j0 <= t; j0 += WARP_SIZE) {
        const int j = j0 + lane;
        float ds = 0.f;
        if (j <= t) {
            const size_t kv = ((size_t)j * nkv + kh) * d;
            const float p = expf(at_row_dot(qs, k + kv, d) * scale - L);
            ds = p * (at_row_dot(dos, v + kv, d) - D);
        }
        const int count = min(WARP_SIZE, t - j0 + 1);
        for (int jj = 0; jj < count; jj++) {
            const float w = __shfl_sync(AT_FULL, ds, jj);
            at_axpy(acc, w, k + ((size_t)(j0 + jj) * nkv + kh) * d, d, lane);
        }
    }
    at_store(dq + (size_t)idx * d, acc, scale, d, lane);
}

extern "C" __global__ void __launch_bounds__(AT_WARPS * WARP_SIZE)
    attention_train_backward_dkdv(float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v, const float* lse,
                                  const float* dsum, const int* doc_end, int n, int nh, int nkv, int d, float scale) {
    __shared__ __align__(16) float stage[AT_WARPS][2][AT_MAX_D];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int idx = blockIdx.x * AT_WARPS + warp;
    if (idx >= n * nkv) return;
    const int j = idx / nkv, kh = idx % nkv, group = nh / nkv;
    float *ks = stage[warp][0], *vs = stage[warp][1];
    at_stage(ks, k + (size_t)idx * d, d, lane);
    at_stage(vs, v + (size_t)idx * d, d, lane);
    float dk_acc[AT_PER_LANE], dv_acc[AT_PER_LANE];
    at_zero(dk_acc);
    at_zero(dv_acc);
    const int end = doc_end[j];
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        for (int i0 = j; i0 < end; i0 += WARP_SIZE) {
            const int i = i0 + lane;
            float p = 0.f, ds = 0.f;
            if (i < end) {
                const size_t row = (size_t)i * nh + h;
                p = expf(at_row_dot(ks, q + row * d, d) * scale - lse[row]);
                ds = p * (at_row_dot(vs, dout + row * d, d) - dsum[row]);
            }
            const int count = min(WARP_SIZE, end - i0);
            for (int ii = 0; ii < count; ii++) {
                const float pw = __shfl_sync(AT_FULL, p, ii), dw = __shfl_sync(AT_FULL, ds, ii);
                const size_t row = (size_t)(i0 + ii) * nh + h;
                const float *dr = dout + row * d, *qr = q + row * d;
#pragma unroll
                for (int e = 0; e < AT_PER_LANE; e++) {
                    const int x = lane + e * WARP_SIZE;
                    if (x < d) {
                        dv_acc[e] += pw * dr[x];
                        dk_acc[e] += dw * qr[x];
                    }
                }
            }
        }
    }
    at_store(dk + (size_t)idx * d, dk_acc, scale, d, lane);
    at_store(dv + (size_t)idx * d, dv_acc, 1.f, d, lane);
}
