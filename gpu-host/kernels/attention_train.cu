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
// attention_train_forward(out, lse, q, k, v, doc_start, n, n_heads, n_kv_heads, head_dim, scale)
//   One warp per (row, head), rows over keys doc_start..=row with the
//   online softmax (running max and sum); each lane holds head_dim/32
//   dimensions of q and of the output.
// attention_train_dsum(dsum, dout, out, n, n_heads, head_dim)
//   dsum = Σ_d dout·out per (row, head): the softmax backward's row term.
// attention_train_backward_dq(dq, dout, q, k, v, lse, dsum, doc_start, ...)
//   One warp per (row, head): dq = scale · Σ_j p_ij (dout_i·v_j − dsum_i) k_j.
// attention_train_backward_dkdv(dk, dv, dout, q, k, v, lse, dsum, doc_end, ...)
//   One warp per (row j, kv head): over the query heads of its group and
//   the rows i in j..doc_end: dv_j = Σ p_ij dout_i,
//   dk_j = scale · Σ p_ij (dout_i·v_j − dsum_i) q_i. No atomics.
//   Launch (all): grid ceil(n·heads / 4), block 128 (heads = n_kv_heads
//   for dkdv, n_heads otherwise).

#define AT_WARPS 4
#define AT_PER_LANE 8  // head_dim <= 256

__device__ __forceinline__ void at_load(float r[AT_PER_LANE], const float* src, int d, int lane) {
#pragma unroll
    for (int i = 0; i < AT_PER_LANE; i++) {
        const int x = lane + i * WARP_SIZE;
        r[i] = x < d ? src[x] : 0.f;
    }
}

__device__ __forceinline__ float at_dot(const float r[AT_PER_LANE], const float* src, int d, int lane) {
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < AT_PER_LANE; i++) {
        const int x = lane + i * WARP_SIZE;
        if (x < d) s += r[i] * src[x];
    }
    return warp_sum(s);
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
    const int lane = threadIdx.x % WARP_SIZE;
    const int idx = blockIdx.x * AT_WARPS + threadIdx.x / WARP_SIZE;
    if (idx >= n * nh) return;
    const int t = idx / nh, h = idx % nh, kh = h / (nh / nkv);
    float qr[AT_PER_LANE], acc[AT_PER_LANE];
    at_load(qr, q + (size_t)idx * d, d, lane);
#pragma unroll
    for (int i = 0; i < AT_PER_LANE; i++) acc[i] = 0.f;
    float m = NEG_INF, l = 0.f;
    for (int j = doc_start[t]; j <= t; j++) {
        const size_t kv = ((size_t)j * nkv + kh) * d;
        const float s = at_dot(qr, k + kv, d, lane) * scale;
        const float mn = fmaxf(m, s);
        const float corr = expf(m - mn), p = expf(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < AT_PER_LANE; i++) {
            const int x = lane + i * WARP_SIZE;
            acc[i] = acc[i] * corr + (x < d ? p * v[kv + x] : 0.f);
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
    float r[AT_PER_LANE];
    at_load(r, dout + (size_t)idx * d, d, lane);
    const float s = at_dot(r, out + (size_t)idx * d, d, lane);
    if (lane == 0) dsum[idx] = s;
}

extern "C" __global__ void __launch_bounds__(AT_WARPS * WARP_SIZE)
    attention_train_backward_dq(float* dq, const float* dout, const float* q, const float* k, const float* v, const float* lse,
                                const float* dsum, const int* doc_start, int n, int nh, int nkv, int d, float scale) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int idx = blockIdx.x * AT_WARPS + threadIdx.x / WARP_SIZE;
    if (idx >= n * nh) return;
    const int t = idx / nh, h = idx % nh, kh = h / (nh / nkv);
    float qr[AT_PER_LANE], dor[AT_PER_LANE], acc[AT_PER_LANE];
    at_load(qr, q + (size_t)idx * d, d, lane);
    at_load(dor, dout + (size_t)idx * d, d, lane);
#pragma unroll
    for (int i = 0; i < AT_PER_LANE; i++) acc[i] = 0.f;
    const float L = lse[idx], D = dsum[idx];
    for (int j = doc_start[t]; j <= t; j++) {
        const size_t kv = ((size_t)j * nkv + kh) * d;
        const float p = expf(at_dot(qr, k + kv, d, lane) * scale - L);
        const float ds = p * (at_dot(dor, v + kv, d, lane) - D);
#pragma unroll
        for (int i = 0; i < AT_PER_LANE; i++) {
            const int x = lane + i * WARP_SIZE;
            if (x < d) acc[i] += ds * k[kv + x];
        }
    }
    at_store(dq + (size_t)idx * d, acc, scale, d, lane);
}

extern "C" __global__ void __launch_bounds__(AT_WARPS * WARP_SIZE)
    attention_train_backward_dkdv(float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v, const float* lse,
                                  const float* dsum, const int* doc_end, int n, int nh, int nkv, int d, float scale) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int idx = blockIdx.x * AT_WARPS + threadIdx.x / WARP_SIZE;
    if (idx >= n * nkv) return;
    const int j = idx / nkv, kh = idx % nkv, group = nh / nkv;
    float kr[AT_PER_LANE], vr[AT_PER_LANE], dk_acc[AT_PER_LANE], dv_acc[AT_PER_LANE];
    at_load(kr, k + (size_t)idx * d, d, lane);
    at_load(vr, v + (size_t)idx * d, d, lane);
#pragma unroll
    for (int i = 0; i < AT_PER_LANE; i++) dk_acc[i] = dv_acc[i] = 0.f;
    const int end = doc_end[j];
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        for (int i = j; i < end; i++) {
            const size_t row = (size_t)i * nh + h;
            const float* qi = q + row * d;
            const float* doi = dout + row * d;
            const float p = expf(at_dot(kr, qi, d, lane) * scale - lse[row]);
            const float ds = p * (at_dot(vr, doi, d, lane) - dsum[row]);
#pragma unroll
            for (int x4 = 0; x4 < AT_PER_LANE; x4++) {
                const int x = lane + x4 * WARP_SIZE;
                if (x < d) {
                    dv_acc[x4] += p * doi[x];
                    dk_acc[x4] += ds * qi[x];
                }
            }
        }
    }
    at_store(dk + (size_t)idx * d, dk_acc, scale, d, lane);
    at_store(dv + (size_t)idx * d, dv_acc, 1.f, d, lane);
}
