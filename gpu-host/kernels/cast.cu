// Precision casts between f32 activations and bf16 (GEMM inputs, bf16 KV
// caches). Rounding is to nearest even, as half::bf16::from_f32 on the host.
//
// cast_f32_to_bf16(out [len] bf16, inp [len] f32, len)
// cast_bf16_to_f32(out [len] f32, inp [len] bf16, len)
//   Four elements per thread per step (16-byte f32 / 8-byte bf16 accesses)
//   when both pointers allow it, else one. Launch: grid-stride, block 256.

extern "C" __global__ void cast_f32_to_bf16(bf16_t* out, const float* inp, size_t len) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t start = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vec = ((((size_t)out) | ((size_t)inp)) & 15) == 0;
    size_t done = 0;
    if (vec) {
        const size_t quads = len / 4;
        for (size_t i = start; i < quads; i += stride) {
            const float4 v = reinterpret_cast<const float4*>(inp)[i];
            uint2 p;
            p.x = pack_bf16x2(v.x, v.y);
            p.y = pack_bf16x2(v.z, v.w);
            reinterpret_cast<uint2*>(out)[i] = p;
        }
        done = quads * 4;
    }
    for (size_t i = done + start; i < len; i += stride) out[i] = f32_to_bf16(inp[i]);
}

extern "C" __global__ void cast_bf16_to_f32(float* out, const bf16_t* inp, size_t len) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t start = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool vec = ((((size_t)out) | ((size_t)inp)) & 15) == 0;
    size_t done = 0;
    if (vec) {
        const size_t quads = len / 4;
        for (size_t i = start; i < quads; i += stride) {
            const uint2 p = reinterpret_cast<const uint2*>(inp)[i];
            float4 v;
            v.x = __uint_as_float(p.x << 16);
            v.y = __uint_as_float(p.x & 0xffff0000u);
            v.z = __uint_as_float(p.y << 16);
            v.w = __uint_as_float(p.y & 0xffff0000u);
            reinterpret_cast<float4*>(out)[i] = v;
        }
        done = quads * 4;
    }
    for (size_t i = done + start; i < len; i += stride) out[i] = bf16_to_f32(inp[i]);
}
