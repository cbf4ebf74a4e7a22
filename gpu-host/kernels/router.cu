// The MoE router: softmax over the experts, top-k, renormalised weights;
// twin of train::ops::router. f32, one thread per token (E <= 64, small).
//
// router_forward(probs [n, E], topk_idx [n, k] u32, topk_w [n, k], logits [n, E], n, E, k)
//   probs = softmax(logits); topk_idx = the k largest probabilities, best
//   first (ties to the lower index, as the CPU); topk_w = their
//   probabilities divided by their sum.
// router_backward(dlogits [n, E] (+=), dtopk_w [n, k], dprobs [n, E] (may be null),
//                 probs, topk_idx, topk_w, n, E, k)
//   Through the renormalisation (dp_j += (dw - Σ w·dw) / Σ p_topk for each
//   chosen j) and the softmax (dl = p * (dp - Σ p·dp)); dprobs carries the
//   auxiliary losses' gradient w.r.t. the probabilities.
//   Launch (both): grid ceil(n / 128), block 128.

extern "C" __global__ void router_forward(float* probs, unsigned* topk_idx, float* topk_w, const float* logits, int n, int e, int k) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const float* l = logits + (size_t)t * e;
    float* p = probs + (size_t)t * e;
    float mx = NEG_INF;
    for (int j = 0; j < e; j++) mx = fmaxf(mx, l[j]);
    float sum = 0.f;
    for (int j = 0; j < e; j++) {
        const float x = expf(l[j] - mx);
        p[j] = x;
        sum += x;
    }
    const float inv = 1.f / sum;
    for (int j = 0; j < e; j++) p[j] *= inv;
    unsigned long long chosen = 0;
    unsigned* idx = topk_idx + (size_t)t * k;
    float wsum = 0.f;
    for (int slot = 0; slot < k; slot++) {
        int best = -1;
        for (int j = 0; j < e; j++) {
            if (!((chosen >> j) & 1ull) && (best < 0 || p[j] > p[best])) best = j;
        }
        chosen |= 1ull << best;
        idx[slot] = (unsigned)best;
        wsum += p[best];
    }
    for (int slot = 0; slot < k; slot++) topk_w[(size_t)t * k + slot] = p[idx[slot]] / wsum;
}

// dp_j without a local array: the auxiliary part plus the chosen slots'.
__device__ __forceinline__ float router_dp(const float* dprobs, int t, int j, int e, int k, const unsigned* idx, const float* dw, float wdw,
                                           float sum) {
    float d = dprobs ? dprobs[(size_t)t * e + j] : 0.f;
    for (int s = 0; s < k; s++)
        if ((int)idx[s] == j) d += (dw[s] - wdw) / sum;
    return d;
}

extern "C" __global__ void router_backward(float* dlogits, const float* dtopk_w, const float* dprobs, const float* probs,
                                           const unsigned* topk_idx, const float* topk_w, int n, int e, int k) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const float* p = probs + (size_t)t * e;
    const unsigned* idx = topk_idx + (size_t)t * k;
    const float *w = topk_w + (size_t)t * k, *dw = dtopk_w + (size_t)t * k;
    float sum = 0.f, wdw = 0.f;
    for (int slot = 0; slot < k; slot++) {
        sum += p[idx[slot]];
        wdw += w[slot] * dw[slot];
    }
    float dot = 0.f;
    for (int j = 0; j < e; j++) dot += p[j] * router_dp(dprobs, t, j, e, k, idx, dw, wdw, sum);
    float* dl = dlogits + (size_t)t * e;
    for (int j = 0; j < e; j++) dl[j] += p[j] * (router_dp(dprobs, t, j, e, k, idx, dw, wdw, sum) - dot);
}
