// Rotary position embedding, Hugging Face "rotate half" pairs (i, i + d/2);
// twin of cpu::ops::rope.
//
// rope_forward(x [n, n_heads, head_dim] in place, cos, sin [max_pos, head_dim/2],
//              n, n_heads, head_dim, pos0)
//   Row t is at position pos0 + t. One thread per rotated pair.
//   Launch: grid-stride, block 256, grid ceil(n * n_heads * head_dim/2 / 256).

extern "C" __global__ void rope_forward(float* x, const float* cos_t, const float* sin_t, int n, int n_heads, int head_dim, int pos0) {
    const int half = head_dim / 2;
    const size_t total = (size_t)n * n_heads * half;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const size_t row = idx / half;  // t * n_heads + h
        const int t = (int)(row / n_heads);
        float* head = x + row * head_dim;
        const size_t tab = (size_t)(pos0 + t) * half + i;
        const float c = cos_t[tab], s = sin_t[tab];
        const float a = head[i], b = head[i + half];
        head[i] = a * c - b * s;
        head[i + half] = b * c + a * s;
    }
}
