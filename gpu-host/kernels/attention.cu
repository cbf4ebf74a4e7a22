// Causal grouped-query attention over a KV cache; twin of cpu::ops::attention.
//
// Layouts (as the CPU op): q, out [n, n_heads, head_dim]; k_cache, v_cache
// [n_kv_heads, max_seq, head_dim]. Row t of q sits at position p = pos0 + t
// and sees keys max(0, p - window + 1) ..= p (window 0: from 0). Query head
// h reads kv head h / (n_heads / n_kv_heads).
//
// attention_flash_{f32,bf16}_hd{32,64,128}_w{1,4,8}
//   FlashAttention-2 on bf16 tensor cores (mma.sync m16n8k16, f32
//   accumulators) with an online softmax in f32 (exp2 domain). The f32
//   variants read f32 q/k/v and round them to bf16 on the way into shared
//   memory (same math, bf16 tolerance); the bf16 variants copy with cp.async.
//   - Rows of a tile are (query row, head-in-group) pairs of one kv head, so
//     a K/V tile loaded once serves every query head that shares it (GQA).
//   - Each warp owns 16 rows; a block of W warps owns 16*W rows and streams
//     the keys in tiles of 64: V(i) loads while S = Q K(i)^T is computed,
//     K(i+1) loads while P V(i) is computed.
//   - Shared tiles are [rows][head_dim] bf16 with the 16-byte chunks XOR-
//     swizzled by row so that ldmatrix reads hit 8 distinct bank groups.
//   - The key range can be split across blockIdx.z (flash-decoding): with
//     gridDim.z > 1 each block writes unnormalised partial sums and its row
//     max / sum to part_o / part_ml, and attention_combine_* merges them.
//     Decode (one row, a few heads per kv head) runs with W = 1 and many
//     splits so the whole GPU streams the cache.
//   Launch: grid (ceil(n * group / (16 W)), n_kv_heads, splits), block 32 W,
//   static shared memory (max(16 W, 64) + 64) * head_dim * 2 bytes (<= 48 KiB).
//
// attention_combine_{f32,bf16}(out, part_o [splits, n*n_heads, hd], part_ml [splits, n*n_heads, 2], rows, hd, splits)
//   out[r] = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s. Launch: grid (rows), block 128.
//
// attention_forward_naive(out, q, k_cache, v_cache, n, pos0, n_heads, n_kv_heads, head_dim, max_seq, window, scale)
//   Any head_dim <= 256, f32 CUDA cores, one warp per (row, head) walking the
//   keys with an online softmax: the fallback for head sizes the flash
//   kernels are not built for. Launch: block 128, grid ceil(n * n_heads / 4).

#define ATT_BC 64  // keys per tile

// Byte offset of 16-byte chunk `c` of row `r` in a swizzled [rows][HD] bf16 tile.
template <int HD>
__device__ __forceinline__ int tile_off(int r, int c) {
    constexpr int CPR = HD / 8;  // chunks per row
    constexpr int SHIFT = CPR >= 8 ? 0 : (CPR == 4 ? 1 : 2);
    constexpr int MASK = CPR >= 8 ? 7 : CPR - 1;
    return r * (HD * 2) + ((c ^ ((r >> SHIFT) & MASK)) << 4);
}

// Copies ROWS rows of HD elements into a swizzled bf16 tile. `row_ptr(r)`
// gives row r's source or nullptr (zero-filled). bf16 sources go through
// cp.async (the caller commits and waits); f32 sources are loaded, rounded
// and stored synchronously.
template <int HD, int ROWS, int THREADS, typename RowPtr>
__device__ __forceinline__ void load_tile_bf16(char* tile, const bf16_t* any_valid, RowPtr row_ptr) {
    constexpr int CPR = HD / 8;
#pragma unroll
    for (int i = threadIdx.x; i < ROWS * CPR; i += THREADS) {
        const int r = i / CPR, c = i % CPR;
        const bf16_t* src = row_ptr(r);
        const unsigned dst = smem_addr(tile + tile_off<HD>(r, c));
        if (src != nullptr) {
            cp_async_16(dst, src + c * 8, 16);
        } else {
            cp_async_16(dst, any_valid, 0);
        }
    }
}

template <int HD, int ROWS, int THREADS, typename RowPtr>
__device__ __forceinline__ void load_tile_f32(char* tile, const float* /*any_valid*/, RowPtr row_ptr) {
    constexpr int CPR = HD / 8;
#pragma unroll 4
    for (int i = threadIdx.x; i < ROWS * CPR; i += THREADS) {
        const int r = i / CPR, c = i % CPR;
        const float* src = row_ptr(r);
        uint4 v = make_uint4(0, 0, 0, 0);
        if (src != nullptr) {
            const float4 a = *reinterpret_cast<const float4*>(src + c * 8);
            const float4 b = *reinterpret_cast<const float4*>(src + c * 8 + 4);
            v = make_uint4(pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w), pack_bf16x2(b.x, b.y), pack_bf16x2(b.z, b.w));
        }
        *reinterpret_cast<uint4*>(tile + tile_off<HD>(r, c)) = v;
    }
}

template <int HD, int ROWS, int THREADS, typename RowPtr>
__device__ __forceinline__ void load_tile(char* tile, const bf16_t* any_valid, RowPtr row_ptr) {
    load_tile_bf16<HD, ROWS, THREADS>(tile, any_valid, row_ptr);
}
template <int HD, int ROWS, int THREADS, typename RowPtr>
__device__ __forceinline__ void load_tile(char* tile, const float* any_valid, RowPtr row_ptr) {
    load_tile_f32<HD, ROWS, THREADS>(tile, any_valid, row_ptr);
}

__device__ __forceinline__ void store2(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }
__device__ __forceinline__ void store2(bf16_t* p, float a, float b) { *reinterpret_cast<unsigned*>(p) = pack_bf16x2(a, b); }

struct AttnArgs {
    int n, pos0, n_heads, n_kv_heads, max_seq, window;
    float scale_log2;  // log2(e) / sqrt(head_dim)
    int tiles_per_split;
};

// Dynamic shared memory of the double-buffered kernels (the others use
// static arrays, at most 48 KiB).
extern __shared__ __align__(128) char attention_dyn_smem[];

template <int BYTES>
__device__ __forceinline__ char* static_smem() {
    __shared__ __align__(128) char buf[BYTES];
    return buf;
}

// ---- per-warp tile math, shared by both pipelines --------------------------

// Q fragment (rows 16w.., k-step kk) from the swizzled Q tile.
template <int HD>
__device__ __forceinline__ void q_fragment(unsigned a[4], const char* smem_q, int warp, int lane, int kk) {
    const int r = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
    ldmatrix_x4(a, smem_addr(smem_q + tile_off<HD>(r, 2 * kk + (lane >> 4))));
}

// s = Q K^T for the warp's 16 rows and the 64 keys of the tile.
template <int HD, bool Q_SMEM>
__device__ __forceinline__ void tile_scores(float s[ATT_BC / 8][4], const unsigned qf[][4], const char* smem_q, const char* k_tile,
                                            int warp, int lane) {
#pragma unroll
    for (int j = 0; j < ATT_BC / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        unsigned a[4];
        if constexpr (Q_SMEM) {
            q_fragment<HD>(a, smem_q, warp, lane, kk);
        } else {
            a[0] = qf[kk][0], a[1] = qf[kk][1], a[2] = qf[kk][2], a[3] = qf[kk][3];
        }
#pragma unroll
        for (int j2 = 0; j2 < ATT_BC / 16; j2++) {
            unsigned b[4];
            const int r = 16 * j2 + (lane & 7) + (lane >> 4) * 8;
            ldmatrix_x4(b, smem_addr(k_tile + tile_off<HD>(r, 2 * kk + ((lane >> 3) & 1))));
            mma_bf16_16816(s[2 * j2], a, b[0], b[1]);
            mma_bf16_16816(s[2 * j2 + 1], a, b[2], b[3]);
        }
    }
}

// Masks keys outside [first_key, pos] (and at or past hi), then the online
// softmax: new row maxima, probabilities in s, rescaled o and row sums.
template <int HD>
__device__ __forceinline__ void tile_softmax(float s[ATT_BC / 8][4], float o[HD / 8][4], float row_max[2], float row_sum[2], bool masked,
                                             int kv0, int hi, const int pos[2], const int first_key[2], float scale_log2, int lane) {
    if (masked) {
#pragma unroll
        for (int j = 0; j < ATT_BC / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = kv0 + 8 * j + 2 * (lane % 4) + (e & 1);
                const int i = e >> 1;
                if (key >= hi || key > pos[i] || key < first_key[i]) s[j][e] = NEG_INF;
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float mx = NEG_INF;
#pragma unroll
        for (int j = 0; j < ATT_BC / 8; j++) mx = fmaxf(mx, fmaxf(s[j][2 * i], s[j][2 * i + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(row_max[i], mx * scale_log2);
        // A row with no visible key yet keeps max -inf: use 0 as the base so
        // that exp2 gives 0 rather than NaN (-inf - -inf).
        const float base = m_new == NEG_INF ? 0.f : m_new;
        const float corr = exp2f(row_max[i] - base);
        row_max[i] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < ATT_BC / 8; j++) {
            s[j][2 * i] = exp2f(fmaf(s[j][2 * i], scale_log2, -base));
            s[j][2 * i + 1] = exp2f(fmaf(s[j][2 * i + 1], scale_log2, -base));
            sum += s[j][2 * i] + s[j][2 * i + 1];
        }
        row_sum[i] = row_sum[i] * corr + sum;
#pragma unroll
        for (int j = 0; j < HD / 8; j++) {
            o[j][2 * i] *= corr;
            o[j][2 * i + 1] *= corr;
        }
    }
}

// o += P V: the probabilities, rounded to bf16, are the A fragments.
template <int HD>
__device__ __forceinline__ void tile_pv(float o[HD / 8][4], const float s[ATT_BC / 8][4], const char* v_tile, int lane) {
#pragma unroll
    for (int kk = 0; kk < ATT_BC / 16; kk++) {
        unsigned p[4];
        p[0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
        p[1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
        p[2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        p[3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int d2 = 0; d2 < HD / 16; d2++) {
            unsigned b[4];
            const int r = 16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8;
            ldmatrix_x4_trans(b, smem_addr(v_tile + tile_off<HD>(r, 2 * d2 + (lane >> 4))));
            mma_bf16_16816(o[2 * d2], p, b[0], b[1]);
            mma_bf16_16816(o[2 * d2 + 1], p, b[2], b[3]);
        }
    }
}

// ---- the kernel -----------------------------------------------------------

// STAGES 1: one K and one V buffer in static shared memory; V(i) loads
//   during S(i), K(i+1) during softmax and P V(i).
// STAGES 2: two K/V buffers in dynamic shared memory; K(i+1) and V(i+1)
//   load during all of tile i (a whole tile of time to hide the latency),
//   and two barriers per tile instead of four.
template <typename T, typename OutT, int HD, int W, bool Q_SMEM, int STAGES>
__device__ __forceinline__ void attention_flash(OutT* __restrict__ out, float* __restrict__ part_o, float* __restrict__ part_ml,
                                                const T* __restrict__ q, const T* __restrict__ k_cache,
                                                const T* __restrict__ v_cache, const AttnArgs a) {
    constexpr int THREADS = 32 * W;
    constexpr int BM = 16 * W;          // rows per block
    constexpr int DT = HD / 8;          // 8-wide column tiles of O
    constexpr int Q_BYTES = BM * HD * 2, KV_BYTES = ATT_BC * HD * 2;
    // Single-buffered: Q gets its own region when Q, K and V fit the 48 KiB
    // of static shared memory (then V(0) loads with Q and K(0)); otherwise Q
    // shares V's region and V(0) waits until Q is in registers.
    constexpr bool SEPARATE_Q = STAGES == 2 || Q_BYTES + 2 * KV_BYTES <= 48 * 1024;
    static_assert(SEPARATE_Q || !Q_SMEM, "Q can stay in shared memory only in its own region");
    constexpr int STATIC_SMEM = SEPARATE_Q ? Q_BYTES + 2 * KV_BYTES : KV_BYTES + (Q_BYTES > KV_BYTES ? Q_BYTES : KV_BYTES);
    // Layout: [K | V] per stage, then Q (or Q aliased onto V).
    char* smem;
    if constexpr (STAGES == 2) {
        smem = attention_dyn_smem;
    } else {
        smem = static_smem<STATIC_SMEM>();
    }
    char* const smem_q = SEPARATE_Q ? smem + STAGES * 2 * KV_BYTES : smem + KV_BYTES;
    auto k_tile = [&](int stage) { return smem + stage * 2 * KV_BYTES; };
    auto v_tile = [&](int stage) { return smem + stage * 2 * KV_BYTES + KV_BYTES; };

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int group = a.n_heads / a.n_kv_heads;
    const int kvh = blockIdx.y;
    const int splits = gridDim.z, split = blockIdx.z;
    // Heaviest (latest) row tiles first: causal blocks near the end see the most keys.
    const int mt = gridDim.x - 1 - blockIdx.x;
    const int m_total = a.n * group;
    const int m0 = mt * BM;

    // Keys this block visits: its rows' causal/window range, cut to its split.
    const int t_first = m0 / group, t_last = (min(m0 + BM, m_total) - 1) / group;
    const int p_first = a.pos0 + t_first, p_last = a.pos0 + t_last;
    const int g_lo = a.window > 0 ? max(0, a.pos0 - a.window + 1) : 0;
    const int s_lo = g_lo + split * a.tiles_per_split * ATT_BC;
    const int s_hi = min(a.pos0 + a.n, s_lo + a.tiles_per_split * ATT_BC);
    const int lo = max(s_lo, a.window > 0 ? max(0, p_first - a.window + 1) : 0);
    const int hi = min(s_hi, p_last + 1);
    const int ntiles = hi > lo ? (hi - lo + ATT_BC - 1) / ATT_BC : 0;

    const size_t head_stride = (size_t)a.max_seq * HD;
    const T* k_base = k_cache + kvh * head_stride;
    const T* v_base = v_cache + kvh * head_stride;
    auto q_row = [&](int r) -> const T* {
        const int m = m0 + r;
        if (m >= m_total) return nullptr;
        const int t = m / group, h = kvh * group + m % group;
        return q + ((size_t)t * a.n_heads + h) * HD;
    };
    auto kv_row = [&](const T* base, int kv0) {
        return [=](int r) -> const T* { return kv0 + r < hi ? base + (size_t)(kv0 + r) * HD : nullptr; };
    };
    auto load_k = [&](int stage, int kv0) { load_tile<HD, ATT_BC, THREADS>(k_tile(stage), k_base, kv_row(k_base, kv0)); };
    auto load_v = [&](int stage, int kv0) { load_tile<HD, ATT_BC, THREADS>(v_tile(stage), v_base, kv_row(v_base, kv0)); };

    // This thread's two rows (lane/4 and lane/4 + 8 of the warp's 16).
    const int wm0 = m0 + warp * 16;
    int pos[2], first_key[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int m = wm0 + lane / 4 + 8 * i;
        pos[i] = m < m_total ? a.pos0 + m / group : -1;  // -1: padding row, sees nothing
        first_key[i] = a.window > 0 ? pos[i] - a.window + 1 : 0;
    }
    // The warp's tightest bounds: interior tiles need no mask.
    const bool warp_full = wm0 + 15 < m_total;
    const int warp_pmin = a.pos0 + wm0 / group;
    const int warp_pmax = a.pos0 + (min(wm0 + 15, m_total - 1)) / group;
    auto needs_mask = [&](int kv0) {
        return !(warp_full && kv0 + ATT_BC <= hi && kv0 + ATT_BC - 1 <= warp_pmin &&
                 (a.window <= 0 || kv0 >= warp_pmax - a.window + 1));
    };

    // Prologue: Q, K(0) and (when Q has its own region) V(0) in flight together.
    load_tile<HD, BM, THREADS>(smem_q, q, q_row);
    if (ntiles > 0) load_k(0, lo);
    cp_async_commit();
    if constexpr (SEPARATE_Q) {
        if (ntiles > 0) load_v(0, lo);
        cp_async_commit();
    }
    if constexpr (STAGES == 1) {
        // Q and K(0) must land; V(0) may stay in flight. An empty group counts
        // as complete, so with no V(0) wait for everything.
        if (SEPARATE_Q && ntiles > 0) {
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
    }

    // Q fragments: in registers for the whole loop, or re-read from shared
    // memory at each tile (Q_SMEM: 32 fewer registers at head_dim 128).
    unsigned qf[Q_SMEM ? 1 : HD / 16][4];
    if constexpr (STAGES == 1) {
        if constexpr (!Q_SMEM) {
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) q_fragment<HD>(qf[kk], smem_q, warp, lane, kk);
        }
        if constexpr (!SEPARATE_Q) {
            __syncthreads();  // V(0) overwrites Q's region
            if (ntiles > 0) load_v(0, lo);
            cp_async_commit();
        }
    }

    float o[DT][4];
#pragma unroll
    for (int j = 0; j < DT; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float row_max[2] = {NEG_INF, NEG_INF};  // in log2 units (scores * scale_log2)
    float row_sum[2] = {0.f, 0.f};          // this thread's columns only; quad-summed at the end
    float s[ATT_BC / 8][4];

    if constexpr (STAGES == 2) {
        for (int it = 0; it < ntiles; it++) {
            const int kv0 = lo + it * ATT_BC, stage = it & 1;
            const bool more = it + 1 < ntiles;
            // Tile it+1 into the other stage, last read in tile it-1 (the
            // barrier that ended it-1 makes the overwrite safe).
            if (more) {
                load_k(stage ^ 1, kv0 + ATT_BC);
                load_v(stage ^ 1, kv0 + ATT_BC);
            }
            cp_async_commit();
            // Everything but tile it+1 has landed (empty groups count as complete).
            if (more) {
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            if (it == 0 && !Q_SMEM) {
#pragma unroll
                for (int kk = 0; kk < HD / 16; kk++) q_fragment<HD>(qf[kk], smem_q, warp, lane, kk);
            }
            tile_scores<HD, Q_SMEM>(s, qf, smem_q, k_tile(stage), warp, lane);
            tile_softmax<HD>(s, o, row_max, row_sum, needs_mask(kv0), kv0, hi, pos, first_key, a.scale_log2, lane);
            tile_pv<HD>(o, s, v_tile(stage), lane);
            __syncthreads();  // everyone is done with this stage
        }
    } else {
        // Each iteration starts with K(it) in shared memory and V(it) in flight.
        for (int it = 0; it < ntiles; it++) {
            const int kv0 = lo + it * ATT_BC;
            const bool more = it + 1 < ntiles;
            tile_scores<HD, Q_SMEM>(s, qf, smem_q, k_tile(0), warp, lane);
            __syncthreads();  // everyone is done with K(it)
            if (more) load_k(0, kv0 + ATT_BC);
            cp_async_commit();
            tile_softmax<HD>(s, o, row_max, row_sum, needs_mask(kv0), kv0, hi, pos, first_key, a.scale_log2, lane);
            // V(it) must land; K(it+1) may stay in flight.
            if (more) {
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            tile_pv<HD>(o, s, v_tile(0), lane);
            __syncthreads();  // everyone is done with V(it)
            if (more) {
                load_v(0, kv0 + ATT_BC);
                cp_async_commit();
                cp_async_wait<1>();  // K(it+1) has landed; V(it+1) streams in during S
                __syncthreads();
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 2; i++) {
        row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
        row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
    }
    const size_t rows_total = (size_t)a.n * a.n_heads;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int m = wm0 + lane / 4 + 8 * i;
        if (m >= m_total) continue;
        const size_t row = (size_t)(m / group) * a.n_heads + kvh * group + m % group;
        const int col = 2 * (lane % 4);
        if (splits == 1) {
            const float inv = 1.f / row_sum[i];
            OutT* dst = out + row * HD;
#pragma unroll
            for (int j = 0; j < DT; j++) store2(dst + 8 * j + col, o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
        } else {
            const size_t prow = (size_t)split * rows_total + row;
            float* dst = part_o + prow * HD;
#pragma unroll
            for (int j = 0; j < DT; j++) store2(dst + 8 * j + col, o[j][2 * i], o[j][2 * i + 1]);
            if (lane % 4 == 0) store2(part_ml + prow * 2, row_max[i], row_sum[i]);
        }
    }
}

// MINB: blocks per SM the register allocation must allow (launch bounds).
#define ATTENTION_FLASH_VARIANT(NAME, T, OUT, HD, W, Q_SMEM, STAGES, MINB)                                                \
    extern "C" __global__ void __launch_bounds__(32 * W, MINB) NAME(OUT* out, float* part_o, float* part_ml, const T* q, \
                                                                    const T* k_cache, const T* v_cache, AttnArgs args) { \
        attention_flash<T, OUT, HD, W, Q_SMEM, STAGES>(out, part_o, part_ml, q, k_cache, v_cache, args);                \
    }
#define ATTENTION_FLASH(NAME, T, OUT, HD, W) ATTENTION_FLASH_VARIANT(NAME, T, OUT, HD, W, false, 1, 1)

ATTENTION_FLASH(attention_flash_f32_hd32_w1, float, float, 32, 1)
ATTENTION_FLASH(attention_flash_f32_hd32_w4, float, float, 32, 4)
ATTENTION_FLASH(attention_flash_f32_hd64_w1, float, float, 64, 1)
ATTENTION_FLASH(attention_flash_f32_hd64_w4, float, float, 64, 4)
ATTENTION_FLASH(attention_flash_f32_hd128_w1, float, float, 128, 1)
ATTENTION_FLASH(attention_flash_f32_hd128_w4, float, float, 128, 4)
ATTENTION_FLASH(attention_flash_bf16_hd32_w1, bf16_t, bf16_t, 32, 1)
ATTENTION_FLASH(attention_flash_bf16_hd32_w4, bf16_t, bf16_t, 32, 4)
ATTENTION_FLASH(attention_flash_bf16_hd64_w1, bf16_t, bf16_t, 64, 1)
ATTENTION_FLASH(attention_flash_bf16_hd64_w4, bf16_t, bf16_t, 64, 4)
ATTENTION_FLASH(attention_flash_bf16_hd128_w1, bf16_t, bf16_t, 128, 1)
ATTENTION_FLASH(attention_flash_bf16_hd128_w4, bf16_t, bf16_t, 128, 4)
ATTENTION_FLASH(attention_flash_bf16_hd128_w8, bf16_t, bf16_t, 128, 8)
ATTENTION_FLASH_VARIANT(attention_flash_bf16_hd128_w4_qs, bf16_t, bf16_t, 128, 4, true, 1, 3)
// Double-buffered (dynamic shared memory: (16 W + 4 * 64) * head_dim * 2 bytes).
ATTENTION_FLASH_VARIANT(attention_flash_bf16_hd128_w4_db, bf16_t, bf16_t, 128, 4, false, 2, 1)
ATTENTION_FLASH_VARIANT(attention_flash_bf16_hd128_w4_qs_db, bf16_t, bf16_t, 128, 4, true, 2, 2)
ATTENTION_FLASH_VARIANT(attention_flash_bf16_hd128_w1_db, bf16_t, bf16_t, 128, 1, false, 2, 1)
ATTENTION_FLASH_VARIANT(attention_flash_bf16_hd64_w4_db, bf16_t, bf16_t, 64, 4, false, 2, 1)

template <typename OutT>
__device__ __forceinline__ void attention_combine(OutT* out, const float* part_o, const float* part_ml, int rows, int hd,
                                                  int splits) {
    const size_t row = blockIdx.x;
    float m = NEG_INF;
    for (int s = 0; s < splits; s++) m = fmaxf(m, part_ml[((size_t)s * rows + row) * 2]);
    float l = 0.f;
    for (int s = 0; s < splits; s++) {
        const float* ml = part_ml + ((size_t)s * rows + row) * 2;
        l += exp2f(ml[0] - m) * ml[1];  // splits that saw no key have max -inf: weight 0
    }
    const float inv = 1.f / l;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.f;
        for (int s = 0; s < splits; s++) {
            const size_t pr = (size_t)s * rows + row;
            acc += exp2f(part_ml[pr * 2] - m) * part_o[pr * hd + d];
        }
        store_f32(out + row * hd + d, acc * inv);
    }
}

extern "C" __global__ void attention_combine_f32(float* out, const float* part_o, const float* part_ml, int rows, int hd, int splits) {
    attention_combine(out, part_o, part_ml, rows, hd, splits);
}

extern "C" __global__ void attention_combine_bf16(bf16_t* out, const float* part_o, const float* part_ml, int rows, int hd,
                                                  int splits) {
    attention_combine(out, part_o, part_ml, rows, hd, splits);
}

#define NAIVE_MAX_PER_LANE 8  // head_dim <= 256

extern "C" __global__ void attention_forward_naive(float* out, const float* q, const float* k_cache, const float* v_cache, int n,
                                                   int pos0, int n_heads, int n_kv_heads, int head_dim, int max_seq, int window,
                                                   float scale) {
    const int lane = threadIdx.x % 32;
    const int id = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (id >= n * n_heads) return;
    const int t = id / n_heads, h = id % n_heads;
    const int p = pos0 + t;
    const int start = window > 0 ? max(0, p - window + 1) : 0;
    const size_t kv = (size_t)(h / (n_heads / n_kv_heads)) * max_seq * head_dim;
    float qv[NAIVE_MAX_PER_LANE], acc[NAIVE_MAX_PER_LANE];
#pragma unroll
    for (int i = 0; i < NAIVE_MAX_PER_LANE; i++) {
        const int d = lane + 32 * i;
        qv[i] = d < head_dim ? q[(size_t)id * head_dim + d] : 0.f;
        acc[i] = 0.f;
    }
    float m = NEG_INF, l = 0.f;
    for (int j = start; j <= p; j++) {
        const float* kr = k_cache + kv + (size_t)j * head_dim;
        const float* vr = v_cache + kv + (size_t)j * head_dim;
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < NAIVE_MAX_PER_LANE; i++) {
            const int d = lane + 32 * i;
            if (d < head_dim) dot = fmaf(qv[i], kr[d], dot);
        }
        const float sc = warp_sum(dot) * scale;
        const float m_new = fmaxf(m, sc);
        const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
        const float pj = expf(sc - m_new);
        l = l * corr + pj;
#pragma unroll
        for (int i = 0; i < NAIVE_MAX_PER_LANE; i++) {
            const int d = lane + 32 * i;
            if (d < head_dim) acc[i] = fmaf(pj, vr[d], acc[i] * corr);
        }
        m = m_new;
    }
    const float inv = 1.f / l;
#pragma unroll
    for (int i = 0; i < NAIVE_MAX_PER_LANE; i++) {
        const int d = lane + 32 * i;
        if (d < head_dim) out[(size_t)id * head_dim + d] = acc[i] * inv;
    }
}
