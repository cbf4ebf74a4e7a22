//! Every CUDA kernel against its CPU twin on fresh random inputs (llm.c's
//! habit): relative error ‖gpu − cpu‖ / ‖cpu‖ within 1e-5 for f32 kernels
//! and 1e-2 where bf16 rounding is part of the kernel. Outputs are
//! poisoned with NaN before each launch so an unwritten element fails.
//! Without a usable GPU each test prints why and passes.
#![cfg(feature = "cuda")]

use gpu_host::backend::AttentionShape;
use gpu_host::backend::cpu::ops as cpu;
use gpu_host::backend::cuda::ops::attention::attention_forward_with;
use gpu_host::backend::cuda::ops::{self as cuda, AttentionPlan, AttentionScratch, Gemm};
use gpu_host::rng::Rng;
use half::bf16;

mod cuda_support;
use cuda_support::*;

#[test]
fn cuda_embedding_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(1);
    for c in [67, 64] {
        // 67: one value per step; 64: the four-wide path.
        let (vocab, n) = (100, 13);
        let wte = normal(&mut rng, vocab * c, 1.0);
        let tokens: Vec<u32> = (0..n).map(|_| rng.below(vocab as u64) as u32).collect();
        let ids = up(g, &tokens);
        let mut want = vec![0f32; n * c];
        cpu::embedding_forward(&mut want, &tokens, &wte, c);
        let mut out = poisoned(g, n * c);
        cuda::embedding_forward(g, &mut out, &ids, n, &up(g, &wte), c).unwrap();
        assert_close("embedding f32", &down(g, &out), &want, 0.0);

        let wb = to_bf16(&wte);
        cpu::embedding_forward(&mut want, &tokens, &wb, c);
        let mut out = poisoned(g, n * c);
        cuda::embedding_forward(g, &mut out, &ids, n, &up(g, &wb), c).unwrap();
        assert_close("embedding bf16", &down(g, &out), &want, 0.0);
    }
}

#[test]
fn cuda_rmsnorm_and_fused_residual_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(2);
    for (n, c) in [(1, 64), (7, 1000), (3, 4099), (2, 10_000)] {
        let (inp, w) = (normal(&mut rng, n * c, 2.0), normal(&mut rng, c, 1.0));
        let mut want = vec![0f32; n * c];
        cpu::rmsnorm_forward(&mut want, &inp, &w, n, c, 1e-5);
        let (inp_d, w_d) = (up(g, &inp), up(g, &w));
        let mut out = poisoned(g, n * c);
        cuda::rmsnorm_forward(g, &mut out, &inp_d, &w_d, n, c, 1e-5).unwrap();
        assert_close(
            &format!("rmsnorm n={n} c={c}"),
            &down(g, &out),
            &want,
            F32_TOL,
        );

        // Fused: residual += inp; out = rmsnorm(residual).
        let res = normal(&mut rng, n * c, 1.0);
        let mut want_res = res.clone();
        cpu::residual_forward(&mut want_res, &inp);
        cpu::rmsnorm_forward(&mut want, &want_res, &w, n, c, 1e-5);
        let mut res_d = up(g, &res);
        let mut out = poisoned(g, n * c);
        cuda::residual_rmsnorm_forward(g, &mut out, &mut res_d, &inp_d, &w_d, n, c, 1e-5).unwrap();
        assert_close(
            &format!("residual+rmsnorm (sum) n={n} c={c}"),
            &down(g, &res_d),
            &want_res,
            0.0,
        );
        assert_close(
            &format!("residual+rmsnorm (norm) n={n} c={c}"),
            &down(g, &out),
            &want,
            F32_TOL,
        );
    }
}

#[test]
fn cuda_rope_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(3);
    for (n, nh, hd, pos0) in [(5, 3, 64, 7), (1, 8, 128, 1000), (33, 2, 32, 0)] {
        let max_pos = pos0 + n + 3;
        let angles: Vec<f64> = (0..max_pos * hd / 2)
            .map(|_| rng.next_f64() * 100.0)
            .collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos() as f32).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin() as f32).collect();
        let x = normal(&mut rng, n * nh * hd, 1.0);
        let mut want = x.clone();
        cpu::rope_forward(&mut want, &cos, &sin, n, nh, hd, pos0);
        let mut xd = up(g, &x);
        cuda::rope_forward(g, &mut xd, &up(g, &cos), &up(g, &sin), n, nh, hd, pos0).unwrap();
        assert_close(
            &format!("rope n={n} heads={nh} hd={hd} pos0={pos0}"),
            &down(g, &xd),
            &want,
            F32_TOL,
        );
    }
}

#[test]
fn cuda_swiglu_and_residual_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(4);
    let len = 100_003;
    let (gate, upv) = (normal(&mut rng, len, 4.0), normal(&mut rng, len, 1.0));
    let mut want = vec![0f32; len];
    cpu::swiglu_forward(&mut want, &gate, &upv);
    let mut out = poisoned(g, len);
    cuda::swiglu_forward(g, &mut out, &up(g, &gate), &up(g, &upv), len).unwrap();
    assert_close("swiglu", &down(g, &out), &want, F32_TOL);

    let mut want = gate.clone();
    cpu::residual_forward(&mut want, &upv);
    let mut out = up(g, &gate);
    cuda::residual_forward(g, &mut out, &up(g, &upv), len).unwrap();
    assert_close("residual", &down(g, &out), &want, 0.0);
}

#[test]
fn cuda_casts_round_like_half() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(5);
    let mut x = normal(&mut rng, 10_001, 3.0);
    // Ties, specials and subnormals at the front.
    let specials = [
        0.0,
        -0.0,
        1.0 + 2f32.powi(-8), // halfway between two bf16 values: to even (down)
        1.0 + 3.0 * 2f32.powi(-8), // halfway: to even (up)
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        -3.0e38,
        f32::MAX,
    ];
    x[..specials.len()].copy_from_slice(&specials);
    for offset in [0usize, 1] {
        // An odd offset takes the scalar path (no 16-byte alignment).
        let xs = &x[offset..];
        let len = xs.len();
        let xd = up(g, xs);
        let mut yd = up(g, &vec![bf16::from_f32(f32::NAN); len]);
        cuda::cast_f32_to_bf16(g, &mut yd, &xd, len).unwrap();
        let got = down(g, &yd);
        for (i, (a, b)) in got
            .iter()
            .zip(xs.iter().map(|v| bf16::from_f32(*v)))
            .enumerate()
        {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "cast of {} at {i}: {a} vs {b}",
                xs[i]
            );
        }
        let mut back = poisoned(g, len);
        cuda::cast_bf16_to_f32(g, &mut back, &yd, len).unwrap();
        let back = down(g, &back);
        for (a, b) in back.iter().zip(&got) {
            assert!(a.to_bits() == b.to_f32().to_bits() || (a.is_nan() && b.is_nan()));
        }
    }
}

#[test]
fn cuda_kv_cache_write_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(6);
    // head_dim 16: four values per thread; 6: one.
    for hd in [16, 6] {
        let (n, pos0, nkv, max_seq) = (3, 5, 2, 12);
        let (k, v) = (
            normal(&mut rng, n * nkv * hd, 1.0),
            normal(&mut rng, n * nkv * hd, 1.0),
        );
        let (kc0, vc0) = (
            normal(&mut rng, nkv * max_seq * hd, 1.0),
            normal(&mut rng, nkv * max_seq * hd, 1.0),
        );
        let (mut kw, mut vw) = (kc0.clone(), vc0.clone());
        cpu::kv_cache_write(&mut kw, &mut vw, &k, &v, n, pos0, nkv, hd, max_seq);
        let (kd, vd) = (up(g, &k), up(g, &v));
        let (mut kc, mut vc) = (up(g, &kc0), up(g, &vc0));
        cuda::kv_cache_write(g, &mut kc, &mut vc, &kd, &vd, n, pos0, nkv, hd, max_seq).unwrap();
        assert_close(
            &format!("kv cache k (f32, hd={hd})"),
            &down(g, &kc),
            &kw,
            0.0,
        );
        assert_close(
            &format!("kv cache v (f32, hd={hd})"),
            &down(g, &vc),
            &vw,
            0.0,
        );

        let (mut kc, mut vc) = (up(g, &to_bf16(&kc0)), up(g, &to_bf16(&vc0)));
        cuda::kv_cache_write(g, &mut kc, &mut vc, &kd, &vd, n, pos0, nkv, hd, max_seq).unwrap();
        let (kb, vb) = (widen(&to_bf16(&kw)), widen(&to_bf16(&vw)));
        assert_close(
            &format!("kv cache k (bf16, hd={hd})"),
            &widen(&down(g, &kc)),
            &kb,
            0.0,
        );
        assert_close(
            &format!("kv cache v (bf16, hd={hd})"),
            &widen(&down(g, &vc)),
            &vb,
            0.0,
        );
    }
}

#[test]
fn cuda_matvec_and_matmul_match_cpu() {
    let Some(g) = gpu() else { return };
    let gemm = Gemm::new(g).unwrap();
    let mut rng = Rng::new(7);
    // c = 37 takes the kernels' scalar path; the others the 16-byte one.
    for (n, c, oc) in [
        (1, 37, 70),
        (1, 64, 130),
        (1, 4096, 300),
        (5, 64, 130),
        (17, 96, 200),
        (64, 512, 1408),
    ] {
        let inp = normal(&mut rng, n * c, 1.0);
        let w = normal(&mut rng, oc * c, 0.1);
        let b = normal(&mut rng, oc, 1.0);
        let (inp_d, w_d, b_d) = (up(g, &inp), up(g, &w), up(g, &b));
        let wb = to_bf16(&w);
        let wb_d = up(g, &wb);
        for bias in [None, Some(&b)] {
            let bias_d = bias.map(|_| &b_d);
            let tag = format!("n={n} c={c} oc={oc} bias={}", bias.is_some());
            let mut want = vec![0f32; n * oc];
            cpu::matmul_forward(&mut want, &inp, &w, bias.map(|v| v.as_slice()), n, c, oc);
            let mut out = poisoned(g, n * oc);
            cuda::matmul_forward(g, &gemm, &mut out, &inp_d, &w_d, bias_d, n, c, oc).unwrap();
            assert_close(&format!("matmul f32 {tag}"), &down(g, &out), &want, F32_TOL);

            cpu::matmul_forward_bf16(&mut want, &inp, &wb, bias.map(|v| v.as_slice()), n, c, oc);
            let mut out = poisoned(g, n * oc);
            cuda::matmul_forward(g, &gemm, &mut out, &inp_d, &wb_d, bias_d, n, c, oc).unwrap();
            // One row keeps the f32 input (matvec); more rows round it to bf16.
            let tol = if n == 1 { F32_TOL } else { BF16_TOL };
            assert_close(&format!("matmul bf16 {tag}"), &down(g, &out), &want, tol);
        }
    }
}

struct AttnCase {
    n: usize,
    pos0: usize,
    nh: usize,
    nkv: usize,
    window: Option<usize>,
}

const ATTN_CASES: &[AttnCase] = &[
    AttnCase {
        n: 100,
        pos0: 0,
        nh: 4,
        nkv: 4,
        window: None,
    }, // prefill, MHA, ragged tile
    AttnCase {
        n: 70,
        pos0: 0,
        nh: 6,
        nkv: 2,
        window: None,
    }, // prefill, GQA
    AttnCase {
        n: 50,
        pos0: 37,
        nh: 6,
        nkv: 2,
        window: None,
    }, // a later prefill chunk
    AttnCase {
        n: 1,
        pos0: 300,
        nh: 6,
        nkv: 2,
        window: None,
    }, // decode (split keys)
    AttnCase {
        n: 3,
        pos0: 200,
        nh: 8,
        nkv: 2,
        window: None,
    }, // a few rows: one-warp blocks
    AttnCase {
        n: 90,
        pos0: 10,
        nh: 4,
        nkv: 2,
        window: Some(20),
    }, // sliding window
    AttnCase {
        n: 1,
        pos0: 500,
        nh: 4,
        nkv: 1,
        window: Some(130),
    },
];

/// CPU reference for one case: caches filled up to pos0 + n (NaN beyond,
/// which no kernel may read), q for the n new rows.
struct AttnData {
    shape: AttentionShape,
    q: Vec<f32>,
    kc: Vec<f32>,
    vc: Vec<f32>,
    want: Vec<f32>,
}

fn attn_data(rng: &mut Rng, case: &AttnCase, hd: usize, round_to_bf16: bool) -> AttnData {
    let max_seq = case.pos0 + case.n + 40;
    let shape = AttentionShape {
        n: case.n,
        pos0: case.pos0,
        n_heads: case.nh,
        n_kv_heads: case.nkv,
        head_dim: hd,
        max_seq,
        window: case.window,
    };
    let round = |v: Vec<f32>| {
        if round_to_bf16 {
            widen(&to_bf16(&v))
        } else {
            v
        }
    };
    let q = round(normal(rng, case.n * case.nh * hd, 1.0));
    let mut kc = round(normal(rng, case.nkv * max_seq * hd, 1.0));
    let mut vc = round(normal(rng, case.nkv * max_seq * hd, 1.0));
    for h in 0..case.nkv {
        for j in case.pos0 + case.n..max_seq {
            let at = (h * max_seq + j) * hd;
            kc[at..at + hd].fill(f32::NAN);
            vc[at..at + hd].fill(f32::NAN);
        }
    }
    let mut want = vec![0f32; q.len()];
    cpu::attention_forward(&mut want, &q, &kc, &vc, shape);
    AttnData {
        shape,
        q,
        kc,
        vc,
        want,
    }
}

fn case_tag(c: &AttnCase, hd: usize, plan: &AttentionPlan) -> String {
    format!(
        "n={} pos0={} heads={}/{} hd={hd} window={:?} warps={}{}{} splits={}",
        c.n,
        c.pos0,
        c.nh,
        c.nkv,
        c.window,
        plan.warps,
        if plan.q_in_smem { " (Q in smem)" } else { "" },
        if plan.double_buffer {
            " (double-buffered)"
        } else {
            ""
        },
        plan.splits
    )
}

#[test]
fn cuda_flash_attention_f32_storage_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(8);
    let mut scratch = AttentionScratch::default();
    for hd in [32, 64, 128] {
        for case in ATTN_CASES {
            let d = attn_data(&mut rng, case, hd, false);
            let (q, kc, vc) = (up(g, &d.q), up(g, &d.kc), up(g, &d.vc));
            // The automatic plan, then forced block shapes and splits.
            let plans = [
                AttentionPlan::for_storage(&d.shape, g.info.multiprocessors, 4),
                AttentionPlan::new(&d.shape, g.info.multiprocessors, Some(1), Some(1)),
                AttentionPlan::new(&d.shape, g.info.multiprocessors, Some(4), Some(3)),
            ];
            for plan in &plans {
                let mut out = poisoned(g, d.q.len());
                attention_forward_with(g, &mut scratch, &mut out, &q, &kc, &vc, d.shape, plan)
                    .unwrap();
                assert_close(
                    &format!("flash f32 {}", case_tag(case, hd, plan)),
                    &down(g, &out),
                    &d.want,
                    BF16_TOL,
                );
            }
        }
    }
}

#[test]
fn cuda_flash_attention_bf16_storage_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(9);
    let mut scratch = AttentionScratch::default();
    for hd in [32, 64, 128] {
        for case in ATTN_CASES {
            let d = attn_data(&mut rng, case, hd, true);
            let (q, kc, vc) = (
                up(g, &to_bf16(&d.q)),
                up(g, &to_bf16(&d.kc)),
                up(g, &to_bf16(&d.vc)),
            );
            let mut plans = vec![
                AttentionPlan::for_storage(&d.shape, g.info.multiprocessors, 2),
                AttentionPlan::new(&d.shape, g.info.multiprocessors, None, None),
                AttentionPlan::new(&d.shape, g.info.multiprocessors, Some(4), Some(2)),
            ];
            let sms = g.info.multiprocessors;
            if hd == 128 {
                plans.push(AttentionPlan::new(&d.shape, sms, Some(8), None));
                let w4 = AttentionPlan::new(&d.shape, sms, Some(4), None);
                plans.push(AttentionPlan {
                    q_in_smem: true,
                    ..w4.clone()
                });
                plans.push(AttentionPlan {
                    double_buffer: true,
                    ..w4.clone()
                });
                plans.push(AttentionPlan {
                    q_in_smem: true,
                    double_buffer: true,
                    ..w4
                });
                let w1 = AttentionPlan::new(&d.shape, sms, Some(1), None);
                plans.push(AttentionPlan {
                    double_buffer: true,
                    ..w1
                });
            }
            if hd == 64 {
                let w4 = AttentionPlan::new(&d.shape, sms, Some(4), Some(2));
                plans.push(AttentionPlan {
                    double_buffer: true,
                    ..w4
                });
            }
            for plan in &plans {
                let mut out = up(g, &vec![bf16::from_f32(f32::NAN); d.q.len()]);
                attention_forward_with(g, &mut scratch, &mut out, &q, &kc, &vc, d.shape, plan)
                    .unwrap();
                let got = widen(&down(g, &out));
                assert_close(
                    &format!("flash bf16 {}", case_tag(case, hd, plan)),
                    &got,
                    &d.want,
                    BF16_TOL,
                );
            }
        }
    }
}

#[test]
fn cuda_exact_attention_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(10);
    let mut scratch = AttentionScratch::default();
    for hd in [80, 64, 256] {
        for case in ATTN_CASES {
            let d = attn_data(&mut rng, case, hd, false);
            let (q, kc, vc) = (up(g, &d.q), up(g, &d.kc), up(g, &d.vc));
            let mut out = poisoned(g, d.q.len());
            cuda::attention_forward_naive(g, &mut out, &q, &kc, &vc, d.shape).unwrap();
            let tag = format!(
                "n={} pos0={} heads={}/{} hd={hd} window={:?}",
                case.n, case.pos0, case.nh, case.nkv, case.window
            );
            assert_close(
                &format!("exact attention {tag}"),
                &down(g, &out),
                &d.want,
                F32_TOL,
            );
            if hd == 80 {
                // The automatic path falls back to the exact kernel for this head size.
                let mut out = poisoned(g, d.q.len());
                cuda::attention_forward(g, &mut scratch, &mut out, &q, &kc, &vc, d.shape).unwrap();
                assert_close(
                    &format!("attention fallback {tag}"),
                    &down(g, &out),
                    &d.want,
                    F32_TOL,
                );
            }
        }
    }
}

/// Serving's paged ops: RoPE at per-row positions, the pool write and the
/// paged attention of a mixed batch (a decode row and a prefill chunk over
/// scattered block tables, with and without a sliding window).
#[test]
fn paged_ops_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(41);
    for (head_dim, window) in [(64usize, None), (128, Some(7))] {
        let s = cpu::PagedShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim,
            block_size: 4,
            window,
        };
        let kv_dim = s.n_kv_heads * head_dim;
        let q_dim = s.n_heads * head_dim;
        let num_blocks = 16;
        // RoPE at scattered positions.
        let positions: Vec<u32> = vec![3, 17, 0, 9, 30];
        let half = head_dim / 2;
        let cos = normal(&mut rng, 32 * half, 1.0);
        let sin = normal(&mut rng, 32 * half, 1.0);
        let x = normal(&mut rng, positions.len() * q_dim, 1.0);
        let mut want = x.clone();
        cpu::rope_forward_positions(&mut want, &cos, &sin, &positions, s.n_heads, head_dim);
        let mut xd = up(gpu, &x);
        cuda::rope_forward_positions(
            gpu,
            &mut xd,
            &up(gpu, &cos),
            &up(gpu, &sin),
            &positions,
            s.n_heads,
            head_dim,
        )
        .unwrap();
        let e = rel_err(&down(gpu, &xd), &want);
        assert!(e < F32_TOL, "rope_forward_positions hd{head_dim}: {e}");

        // Fill two sequences' caches through the pool write.
        let blocks_a: Vec<u32> = vec![9, 2, 14, 5];
        let blocks_b: Vec<u32> = vec![0, 11, 7];
        let (len_a, len_b) = (13usize, 10usize);
        let mut k_pool = vec![0f32; num_blocks * s.block_len()];
        let mut v_pool = k_pool.clone();
        let mut kd = up(gpu, &k_pool);
        let mut vd = up(gpu, &v_pool);
        for (blocks, len) in [(&blocks_a, len_a), (&blocks_b, len_b)] {
            let k = normal(&mut rng, len * kv_dim, 1.0);
            let v = normal(&mut rng, len * kv_dim, 1.0);
            let slots: Vec<u32> = (0..len)
                .map(|j| blocks[j / 4] * 4 + (j % 4) as u32)
                .collect();
            cpu::paged_kv_write(&mut k_pool, &mut v_pool, &k, &v, &slots, s);
            cuda::paged_kv_write(gpu, &mut kd, &mut vd, &up(gpu, &k), &up(gpu, &v), &slots, s)
                .unwrap();
        }
        assert!(
            rel_err(&down(gpu, &kd), &k_pool) < F32_TOL
                && rel_err(&down(gpu, &vd), &v_pool) < F32_TOL
        );

        // a: decode its last position; b: a 6-row chunk at positions 4..10.
        let seqs = [
            cpu::PagedSeq {
                row0: 0,
                n: 1,
                pos0: len_a - 1,
                blocks: &blocks_a,
            },
            cpu::PagedSeq {
                row0: 1,
                n: 6,
                pos0: len_b - 6,
                blocks: &blocks_b,
            },
        ];
        let q = normal(&mut rng, 7 * q_dim, 1.0);
        let mut want = vec![0f32; q.len()];
        cpu::paged_attention_forward(&mut want, &q, &k_pool, &v_pool, &seqs, s);
        let mut out = poisoned(gpu, q.len());
        cuda::paged_attention_forward(gpu, &mut out, &up(gpu, &q), &kd, &vd, &seqs, s).unwrap();
        let e = rel_err(&down(gpu, &out), &want);
        assert!(
            e < F32_TOL,
            "paged_attention_forward hd{head_dim} window {window:?}: {e}"
        );
    }
}
