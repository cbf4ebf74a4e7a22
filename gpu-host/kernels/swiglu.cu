// SwiGLU gate of the Llama MLP; twin of cpu::ops::swiglu.
//
// swiglu_forward(out [len], gate [len], up [len], len)
//   out = silu(gate) * up with silu(x) = x / (1 + exp(-x)) (precise expf).
//   Four elements per thread per step (16-byte accesses) when all three
//   pointers are 16-byte aligned, else one. Launch: grid-stride, block 256.

__device__ __forceinline__ float swiglu(float g, float u) { return g / (1.f + expf(-g)) * u; }

extern "C" __global__ void swiglu_forward(float* out, const float* gate, const float* up, size_t len) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t start = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t done = 0;
    if (((((size_t)out) | ((size_t)gate) | ((size_t)up)) & 15) == 0) {
        const size_t quads = len / 4;
        for (size_t i = start; i < quads; i += stride) {
            const float4 g = reinterpret_cast<const float4*>(gate)[i];
            const float4 u = reinterpret_cast<const float4*>(up)[i];
            reinterpret_cast<float4*>(out)[i] = make_float4(swiglu(g.x, u.x), swiglu(g.y, u.y), swiglu(g.z, u.z), swiglu(g.w, u.w));
        }
        done = quads * 4;
    }
    for (size_t i = done + start; i < len; i += stride) out[i] = swiglu(gate[i], up[i]);
}

// swiglu_backward(dgate [len] (+=), dup [len] (+=), dout [len], gate [len], up [len], len)
//   With s = sigmoid(gate): dup += dout*gate*s; dgate += dout*up*s*(1 + gate*(1 - s))
//   (twin of train::ops::swiglu::swiglu_backward). Launch: grid-stride, block 256.
extern "C" __global__ void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t len) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += (size_t)gridDim.x * blockDim.x) {
        const float g = gate[i], d = dout[i];
        const float s = 1.f / (1.f + expf(-g));
        dup[i] += d * (g * s);
        dgate[i] += d * up[i] * s * (1.f + g * (1.f - s));
    }
}
