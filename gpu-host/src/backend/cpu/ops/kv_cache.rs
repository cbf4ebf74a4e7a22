//! Appending keys and values to a layer's cache.
//! Layouts:
//! - `k`, `v`: `[n, n_kv_heads, head_dim]` (the projections' output rows)
//! - `k_cache`, `v_cache`: `[n_kv_heads, max_seq, head_dim]`, head-major so
//!   that one head's keys are contiguous for attention
//!
//! Row `t` of `k`/`v` goes to position `pos0 + t`.

#[allow(clippy::too_many_arguments)]
pub fn kv_cache_write(
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    pos0: usize,
    n_kv_heads: usize,
    head_dim: usize,
    max_seq: usize,
) {
    let kv_dim = n_kv_heads * head_dim;
    assert!(
        pos0 + n <= max_seq,
        "kv cache: positions {pos0}..{} exceed capacity {max_seq}",
        pos0 + n
    );
    assert!(
        k.len() == n * kv_dim && v.len() == n * kv_dim,
        "kv cache: k and v must be [n, n_kv_heads, head_dim]"
    );
    assert!(
        k_cache.len() == n_kv_heads * max_seq * head_dim && v_cache.len() == k_cache.len(),
        "kv cache: bad cache size"
    );
    for t in 0..n {
        for h in 0..n_kv_heads {
            let src = t * kv_dim + h * head_dim;
            let dst = (h * max_seq + pos0 + t) * head_dim;
            k_cache[dst..dst + head_dim].copy_from_slice(&k[src..src + head_dim]);
            v_cache[dst..dst + head_dim].copy_from_slice(&v[src..src + head_dim]);
        }
    }
}
