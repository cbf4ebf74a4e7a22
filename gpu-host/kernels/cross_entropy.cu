// Fused next-token cross-entropy over the vocabulary; twin of
// train::ops::losses::cross_entropy_forward and _backward.
//
// cross_entropy_fused(losses [n], logits [n, V] -> dlogits in place, targets [n] u32, dloss, V, write_grad)
//   losses[t] = logsumexp(logits[t]) - logits[t, targets[t]], 0 where the
//   target is IGNORE (0xffffffff). With write_grad, logits[t] is replaced by
//   dloss * (softmax(logits[t]) - onehot(targets[t])), zero for ignored rows:
//   the [n, V] gradient never needs a second buffer.
//   Launch: grid (n), block 512; one block per row, block-wide max and sum.

#define CE_THREADS 512
#define CE_IGNORE 0xffffffffu

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = blockDim.x / WARP_SIZE;
    v = lane < warps ? scratch[lane] : NEG_INF;
    return warp_max(v);
}

extern "C" __global__ void __launch_bounds__(CE_THREADS)
    cross_entropy_fused(float* losses, float* logits, const unsigned* targets, float dloss, int v, int write_grad) {
    __shared__ float scratch[32];
    const unsigned target = targets[blockIdx.x];
    float* l = logits + (size_t)blockIdx.x * v;
    if (target == CE_IGNORE) {
        if (threadIdx.x == 0) losses[blockIdx.x] = 0.f;
        if (write_grad)
            for (int j = threadIdx.x; j < v; j += blockDim.x) l[j] = 0.f;
        return;
    }
    float mx = NEG_INF;
    for (int j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, l[j]);
    mx = block_max(mx, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) sum += expf(l[j] - mx);
    sum = block_sum(sum, scratch);
    const float picked = l[target];
    if (threadIdx.x == 0) losses[blockIdx.x] = (mx + logf(sum)) - picked;
    if (!write_grad) return;
    __syncthreads();  // every thread has read l[target] before it is overwritten
    const float inv = 1.f / sum;
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        float p = expf(l[j] - mx) * inv;
        if (j == (int)target) p -= 1.f;
        l[j] = p * dloss;
    }
}
