// The one-row linear layer of decode (a matrix-vector product); twin of the
// n == 1 path of cpu::ops::matmul. Larger batches go through cuBLASLt.
//
// matvec_forward_{f32,bf16}(out [oc] f32, inp [c] f32, weight [oc, c], bias [oc] f32 or null, c, oc)
//   out[j] = dot(weight[j, :], inp) + bias[j], f32 accumulation.
//   Memory-bound: each weight is read once, 16 bytes per lane per load,
//   four loads in flight per lane; the input row is small and stays in
//   L1 (read through the read-only path). The input is not rounded, so
//   the result matches the CPU's f32-input reference.
//   Launch: block 256 (8 warps), one warp per output row, grid ceil(oc / 8).
//   The 16-byte path needs c to be a multiple of the vector width
//   (4 for f32, 8 for bf16); other widths take a scalar loop.

#define MATVEC_UNROLL 4

__device__ __forceinline__ float dot8(uint4 w, const float* x) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(x));
    const float4 b = __ldg(reinterpret_cast<const float4*>(x + 4));
    float s = __uint_as_float(w.x << 16) * a.x;
    s = fmaf(__uint_as_float(w.x & 0xffff0000u), a.y, s);
    s = fmaf(__uint_as_float(w.y << 16), a.z, s);
    s = fmaf(__uint_as_float(w.y & 0xffff0000u), a.w, s);
    s = fmaf(__uint_as_float(w.z << 16), b.x, s);
    s = fmaf(__uint_as_float(w.z & 0xffff0000u), b.y, s);
    s = fmaf(__uint_as_float(w.w << 16), b.z, s);
    s = fmaf(__uint_as_float(w.w & 0xffff0000u), b.w, s);
    return s;
}

__device__ __forceinline__ float dot4(float4 w, const float* x) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(x));
    return fmaf(w.w, a.w, fmaf(w.z, a.z, fmaf(w.y, a.y, w.x * a.x)));
}

template <typename W>
__device__ __forceinline__ void matvec_row(float* out, const float* inp, const W* weight, const float* bias, int c, int oc) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int j = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (j >= oc) return;
    const W* row = weight + (size_t)j * c;
    // Elements per 16-byte load.
    constexpr int VEC = sizeof(W) == 2 ? 8 : 4;
    float acc = 0.f;
    if (c % VEC == 0) {
        const int nvec = c / VEC;
        const uint4* w16 = reinterpret_cast<const uint4*>(row);
        int v = lane;
        // Issue MATVEC_UNROLL independent loads before using any of them.
        for (; v + (MATVEC_UNROLL - 1) * WARP_SIZE < nvec; v += MATVEC_UNROLL * WARP_SIZE) {
            uint4 w[MATVEC_UNROLL];
#pragma unroll
            for (int u = 0; u < MATVEC_UNROLL; u++) w[u] = __ldcs(w16 + v + u * WARP_SIZE);  // streamed once
#pragma unroll
            for (int u = 0; u < MATVEC_UNROLL; u++) {
                const float* x = inp + (size_t)(v + u * WARP_SIZE) * VEC;
                if (VEC == 8) {
                    acc += dot8(w[u], x);
                } else {
                    acc += dot4(*reinterpret_cast<float4*>(&w[u]), x);
                }
            }
        }
        for (; v < nvec; v += WARP_SIZE) {
            const uint4 w = __ldcs(w16 + v);
            const float* x = inp + (size_t)v * VEC;
            if (VEC == 8) {
                acc += dot8(w, x);
            } else {
                acc += dot4(*reinterpret_cast<const float4*>(&w), x);
            }
        }
    } else {
        for (int k = lane; k < c; k += WARP_SIZE) acc = fmaf(load_f32(row + k), inp[k], acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) out[j] = acc + (bias != nullptr ? bias[j] : 0.f);
}

extern "C" __global__ void matvec_forward_f32(float* out, const float* inp, const float* weight, const float* bias, int c, int oc) {
    matvec_row(out, inp, weight, bias, c, oc);
}

extern "C" __global__ void matvec_forward_bf16(float* out, const float* inp, const bf16_t* weight, const float* bias, int c, int oc) {
    matvec_row(out, inp, weight, bias, c, oc);
}
