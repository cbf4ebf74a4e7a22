// Residual connection in place; twin of cpu::ops::residual. (Inside the
// model the add is fused into the next RMSNorm: see rmsnorm.cu.)
//
// residual_forward(out [len], inp [len], len): out += inp.
//   Launch: grid-stride, block 256.

extern "C" __global__ void residual_forward(float* out, const float* inp, size_t len) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < len; i += (size_t)gridDim.x * blockDim.x) {
        out[i] += inp[i];
    }
}
