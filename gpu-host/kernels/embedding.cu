// Token embedding lookup; twin of cpu::ops::embedding.
//
// embedding_forward_{f32,bf16}(out [n, c] f32, tokens [n] u32, wte [vocab, c], c)
//   out[i, :] = wte[tokens[i], :] widened to f32. The host checks the ids.
//   Launch: grid (n), block 256; each block copies one row, four values per
//   thread per step (16-byte stores) when c % 4 == 0.

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const bf16_t* p) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                       __uint_as_float(u.y & 0xffff0000u));
}

template <typename W>
__device__ __forceinline__ void embedding_row(float* out, const unsigned* tokens, const W* wte, int c) {
    const size_t i = blockIdx.x;
    const W* src = wte + (size_t)tokens[i] * c;
    float* dst = out + i * c;
    if (c % 4 == 0) {
        for (int j = threadIdx.x * 4; j < c; j += blockDim.x * 4) *reinterpret_cast<float4*>(dst + j) = load4(src + j);
    } else {
        for (int j = threadIdx.x; j < c; j += blockDim.x) dst[j] = load_f32(src + j);
    }
}

extern "C" __global__ void embedding_forward_f32(float* out, const unsigned* tokens, const float* wte, int c) {
    embedding_row(out, tokens, wte, c);
}

extern "C" __global__ void embedding_forward_bf16(float* out, const unsigned* tokens, const bf16_t* wte, int c) {
    embedding_row(out, tokens, wte, c);
}

// embedding_backward(dwte [vocab, c] (+=), dout [n, c], tokens [n] u32, n, c)
//   dwte[tokens[i], :] += dout[i, :] (atomics: repeated tokens share a row;
//   only full fine-tuning trains the embedding). Launch: grid-stride, block 256.
extern "C" __global__ void embedding_backward(float* dwte, const float* dout, const unsigned* tokens, int n, int c) {
    const size_t total = (size_t)n * c;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / c, j = i % c;
        atomicAdd(dwte + (size_t)tokens[t] * c + j, dout[i]);
    }
}
