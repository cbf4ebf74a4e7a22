// Appending keys and values to a layer's cache; twin of cpu::ops::kv_cache.
//
// kv_cache_write_{f32,bf16}(k_cache, v_cache [n_kv_heads, max_seq, head_dim] (f32 or bf16),
//                           k, v [n, n_kv_heads, head_dim] f32, n, pos0, n_kv_heads, head_dim, max_seq)
//   Row t of k/v goes to position pos0 + t of its head; the bf16 variant
//   rounds to nearest even (a bf16 cache halves decode's memory traffic).
//   One thread per four values of a head row (head_dim % 4 == 0, as every
//   real head size is) or per value otherwise.
//   Launch: grid-stride over n * n_kv_heads * head_dim / (4 or 1), block 256.

__device__ __forceinline__ void store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ void store4(bf16_t* p, float4 v) {
    *reinterpret_cast<uint2*>(p) = make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
}

template <typename C>
__device__ __forceinline__ void kv_write(C* k_cache, C* v_cache, const float* k, const float* v, int n, int pos0, int n_kv_heads,
                                         int head_dim, int max_seq) {
    const size_t total = (size_t)n * n_kv_heads * head_dim;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t start = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vec = head_dim % 4 == 0;
    const int step = vec ? 4 : 1;
    for (size_t idx = start * step; idx < total; idx += stride * step) {
        const int d = (int)(idx % head_dim);
        const size_t th = idx / head_dim;
        const int h = (int)(th % n_kv_heads);
        const int t = (int)(th / n_kv_heads);
        const size_t dst = ((size_t)h * max_seq + pos0 + t) * head_dim + d;
        if (vec) {
            store4(k_cache + dst, *reinterpret_cast<const float4*>(k + idx));
            store4(v_cache + dst, *reinterpret_cast<const float4*>(v + idx));
        } else {
            store_f32(k_cache + dst, k[idx]);
            store_f32(v_cache + dst, v[idx]);
        }
    }
}

extern "C" __global__ void kv_cache_write_f32(float* k_cache, float* v_cache, const float* k, const float* v, int n, int pos0,
                                              int n_kv_heads, int head_dim, int max_seq) {
    kv_write(k_cache, v_cache, k, v, n, pos0, n_kv_heads, head_dim, max_seq);
}

extern "C" __global__ void kv_cache_write_bf16(bf16_t* k_cache, bf16_t* v_cache, const float* k, const float* v, int n, int pos0,
                                               int n_kv_heads, int head_dim, int max_seq) {
    kv_write(k_cache, v_cache, k, v, n, pos0, n_kv_heads, head_dim, max_seq);
}
