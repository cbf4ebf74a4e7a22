//! The CUDA training path against the CPU training reference: each
//! training kernel on random inputs (relative error within 1e-5 in f32),
//! then the whole tiny model: one step's gradients, and ten AdamW steps'
//! losses with f32 weights (1e-4) and bf16 frozen weights (bf16 tolerance,
//! 2e-2). Without a usable GPU each test prints why and passes.
#![cfg(feature = "cuda")]

use gpu_host::backend::WeightDtype;
use gpu_host::backend::cuda::ops::adamw::{AdamWStep, adamw_step, grad_sumsq};
use gpu_host::backend::cuda::ops::attention_train::{
    DocRows, attention_train_backward, attention_train_forward,
};
use gpu_host::backend::cuda::ops::cross_entropy::cross_entropy_fused;
use gpu_host::backend::cuda::ops::embedding::embedding_backward;
use gpu_host::backend::cuda::ops::matmul::{Gemm, Operand, plain, transposed};
use gpu_host::backend::cuda::ops::moe::{
    gather_rows, row_dot, scale_rows, scatter_add_rows, scatter_slots,
};
use gpu_host::backend::cuda::ops::paged::rope_backward_positions;
use gpu_host::backend::cuda::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward_rstd};
use gpu_host::backend::cuda::ops::router::{router_backward, router_forward};
use gpu_host::backend::cuda::ops::swiglu::swiglu_backward;
use gpu_host::checkpoint::Architecture;
use gpu_host::init_model::{InitSpec, Preset, write_checkpoint};
use gpu_host::rng::Rng;
use gpu_host::train::cuda::CudaTrainer;
use gpu_host::train::model::{Batch, MoeConfig, TrainModel};
use gpu_host::train::ops as cpu;
use gpu_host::train::ops::attention::AttnShape;
use gpu_host::train::ops::losses::IGNORE;
use gpu_host::train::optim::{AdamW, AdamWConfig, clip_grad_norm};

mod cuda_support;
use cuda_support::*;

/// Row-major `alpha · op(A) · op(B) + beta · C` by the definition.
#[allow(clippy::too_many_arguments)]
fn gemm_ref(
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    c: &[f32],
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                let x = if ta { a[p * m + i] } else { a[i * k + p] };
                let y = if tb { b[j * k + p] } else { b[p * n + j] };
                s += f64::from(x) * f64::from(y);
            }
            out[i * n + j] = alpha * s as f32 + beta * c[i * n + j];
        }
    }
    out
}

fn op<T>(data: &cudarc::driver::CudaSlice<T>, t: bool) -> Operand<'_, T> {
    if t { transposed(data) } else { plain(data) }
}

#[test]
fn cuda_training_gemm_matches_cpu_for_every_transpose() {
    let Some(g) = gpu() else { return };
    let gemm = Gemm::new(g).unwrap();
    let mut rng = Rng::new(11);
    let (m, n, k) = (37, 29, 19);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a = normal(&mut rng, m * k, 1.0);
        let b = normal(&mut rng, k * n, 1.0);
        let c0 = normal(&mut rng, m * n, 1.0);
        let want = gemm_ref(&a, ta, &b, tb, &c0, m, n, k, 0.7, 0.5);
        let (ad, bd) = (up(g, &a), up(g, &b));
        let mut cd = up(g, &c0);
        gemm.general(g, op(&ad, ta), op(&bd, tb), &mut cd, m, n, k, 0.7, 0.5)
            .unwrap();
        assert_close(
            &format!("gemm f32 ta={ta} tb={tb}"),
            &down(g, &cd),
            &want,
            F32_TOL,
        );

        let (ab, bb) = (to_bf16(&a), to_bf16(&b));
        let want = gemm_ref(&widen(&ab), ta, &widen(&bb), tb, &c0, m, n, k, 0.7, 0.5);
        let (ad, bd): (_, _) = (up(g, &ab), up(g, &bb));
        let mut cd = up(g, &c0);
        gemm.general(g, op(&ad, ta), op(&bd, tb), &mut cd, m, n, k, 0.7, 0.5)
            .unwrap();
        assert_close(
            &format!("gemm bf16 ta={ta} tb={tb}"),
            &down(g, &cd),
            &want,
            1e-5,
        );
    }
}

#[test]
fn cuda_rmsnorm_training_forward_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(12);
    let (n, c) = (7, 200);
    let x = normal(&mut rng, n * c, 1.0);
    let w = normal(&mut rng, c, 1.0);
    let (mut out, mut rstd) = (vec![0f32; n * c], vec![0f32; n]);
    cpu::rmsnorm::rmsnorm_forward(&mut out, &mut rstd, &x, &w, n, c, 1e-5);
    let (mut od, mut rd) = (poisoned(g, n * c), poisoned(g, n));
    let (xd, wd) = (up(g, &x), up(g, &w));
    rmsnorm_forward_rstd(g, &mut od, &mut rd, &xd, &wd, n, c, 1e-5).unwrap();
    assert_close("rmsnorm out", &down(g, &od), &out, F32_TOL);
    assert_close("rmsnorm rstd", &down(g, &rd), &rstd, F32_TOL);

    let dy = normal(&mut rng, n * c, 1.0);
    let dx0 = normal(&mut rng, n * c, 1.0);
    let dw0 = normal(&mut rng, c, 1.0);
    let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
    cpu::rmsnorm::rmsnorm_backward(&mut dx, Some(&mut dw), &dy, &x, &w, &rstd, n, c);
    let (mut dxd, mut dwd) = (up(g, &dx0), up(g, &dw0));
    rmsnorm_backward(
        g,
        &mut dxd,
        Some(&mut dwd),
        &up(g, &dy),
        &xd,
        &wd,
        &up(g, &rstd),
        n,
        c,
    )
    .unwrap();
    assert_close("rmsnorm dinp", &down(g, &dxd), &dx, F32_TOL);
    assert_close("rmsnorm dweight", &down(g, &dwd), &dw, F32_TOL);
}

#[test]
fn cuda_rope_swiglu_and_embedding_backwards_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(13);
    let (h, d, max_pos) = (3, 40, 50);
    let positions: Vec<u32> = vec![0, 7, 1, 49, 3, 3];
    let n = positions.len();
    let cos = normal(&mut rng, max_pos * d / 2, 1.0);
    let sin = normal(&mut rng, max_pos * d / 2, 1.0);
    let dx0 = normal(&mut rng, n * h * d, 1.0);
    let mut want = dx0.clone();
    cpu::rope::rope_backward(&mut want, &cos, &sin, &positions, h, d);
    let mut dxd = up(g, &dx0);
    rope_backward_positions(g, &mut dxd, &up(g, &cos), &up(g, &sin), &positions, h, d).unwrap();
    assert_close("rope backward", &down(g, &dxd), &want, F32_TOL);

    let len = 1000;
    let (gate, upv, dout) = (
        normal(&mut rng, len, 2.0),
        normal(&mut rng, len, 1.0),
        normal(&mut rng, len, 1.0),
    );
    let (dg0, du0) = (normal(&mut rng, len, 1.0), normal(&mut rng, len, 1.0));
    let (mut dg, mut du) = (dg0.clone(), du0.clone());
    cpu::swiglu::swiglu_backward(&mut dg, &mut du, &dout, &gate, &upv);
    let (mut dgd, mut dud) = (up(g, &dg0), up(g, &du0));
    swiglu_backward(
        g,
        &mut dgd,
        &mut dud,
        &up(g, &dout),
        &up(g, &gate),
        &up(g, &upv),
        len,
    )
    .unwrap();
    assert_close("swiglu dgate", &down(g, &dgd), &dg, F32_TOL);
    assert_close("swiglu dup", &down(g, &dud), &du, F32_TOL);

    let (vocab, c) = (11, 24);
    let tokens: Vec<u32> = vec![3, 5, 3, 0, 10, 3, 5];
    let dout = normal(&mut rng, tokens.len() * c, 1.0);
    let dwte0 = normal(&mut rng, vocab * c, 1.0);
    let mut want = dwte0.clone();
    cpu::embedding::embedding_backward(&mut want, &dout, &tokens, c);
    let mut dwd = up(g, &dwte0);
    embedding_backward(g, &mut dwd, &up(g, &dout), &up(g, &tokens), tokens.len(), c).unwrap();
    assert_close("embedding backward", &down(g, &dwd), &want, F32_TOL);
}

#[test]
fn cuda_router_forward_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(14);
    for (n, e, k) in [(50, 4, 2), (33, 7, 3), (9, 64, 2)] {
        let logits = normal(&mut rng, n * e, 2.0);
        let (mut probs, mut idx, mut w) = (vec![0f32; n * e], vec![0u32; n * k], vec![0f32; n * k]);
        cpu::router::router_forward(&mut probs, &mut idx, &mut w, &logits, n, e, k);
        let (mut pd, mut id, mut wd) = (
            poisoned(g, n * e),
            up(g, &vec![u32::MAX; n * k]),
            poisoned(g, n * k),
        );
        router_forward(g, &mut pd, &mut id, &mut wd, &up(g, &logits), n, e, k).unwrap();
        assert_close(
            &format!("router probs E={e}"),
            &down(g, &pd),
            &probs,
            F32_TOL,
        );
        assert_eq!(down(g, &id), idx, "router top-k choices, E={e}");
        assert_close(&format!("router weights E={e}"), &down(g, &wd), &w, F32_TOL);

        let dtopk = normal(&mut rng, n * k, 1.0);
        let dprobs = normal(&mut rng, n * e, 1.0);
        let dl0 = normal(&mut rng, n * e, 1.0);
        let mut dl = dl0.clone();
        cpu::router::router_backward(&mut dl, &dtopk, Some(&dprobs), &probs, &idx, &w, n, e, k);
        let mut dld = up(g, &dl0);
        router_backward(
            g,
            &mut dld,
            &up(g, &dtopk),
            Some(&up(g, &dprobs)),
            &pd,
            &id,
            &wd,
            n,
            e,
            k,
        )
        .unwrap();
        assert_close(
            &format!("router dlogits E={e}"),
            &down(g, &dld),
            &dl,
            F32_TOL,
        );
    }
}

#[test]
fn cuda_training_flash_attention_forward_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(15);
    let docs = [(0usize, 5usize), (5, 70), (75, 9), (84, 1)];
    let n: usize = docs.iter().map(|d| d.1).sum();
    for (h, kvh, d) in [(4, 2, 40), (2, 2, 64), (6, 1, 128)] {
        let s = AttnShape {
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: d,
        };
        let q = normal(&mut rng, n * h * d, 1.0);
        let k = normal(&mut rng, n * kvh * d, 1.0);
        let v = normal(&mut rng, n * kvh * d, 1.0);
        let mut out = vec![0f32; n * h * d];
        let mut probs = vec![0f32; cpu::attention::probs_len(&docs, h)];
        cpu::attention::attention_forward(&mut out, &mut probs, &q, &k, &v, &docs, s);
        let rows = DocRows::new(g, &docs).unwrap();
        let (qd, kd, vd) = (up(g, &q), up(g, &k), up(g, &v));
        let (mut od, mut lse) = (poisoned(g, n * h * d), poisoned(g, n * h));
        attention_train_forward(g, &mut od, &mut lse, &qd, &kd, &vd, &rows, s).unwrap();
        let tag = format!("h={h} kv={kvh} d={d}");
        assert_close(
            &format!("attention forward {tag}"),
            &down(g, &od),
            &out,
            F32_TOL,
        );

        let dout = normal(&mut rng, n * h * d, 1.0);
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; n * h * d],
            vec![0f32; n * kvh * d],
            vec![0f32; n * kvh * d],
        );
        cpu::attention::attention_backward(
            &mut dq, &mut dk, &mut dv, &dout, &q, &k, &v, &probs, &docs, s,
        );
        let (mut dqd, mut dkd, mut dvd) = (
            poisoned(g, n * h * d),
            poisoned(g, n * kvh * d),
            poisoned(g, n * kvh * d),
        );
        let mut dsum = poisoned(g, n * h);
        attention_train_backward(
            g,
            &mut dqd,
            &mut dkd,
            &mut dvd,
            &mut dsum,
            &up(g, &dout),
            &od,
            &qd,
            &kd,
            &vd,
            &lse,
            &rows,
            s,
        )
        .unwrap();
        assert_close(&format!("attention dq {tag}"), &down(g, &dqd), &dq, F32_TOL);
        assert_close(&format!("attention dk {tag}"), &down(g, &dkd), &dk, F32_TOL);
        assert_close(&format!("attention dv {tag}"), &down(g, &dvd), &dv, F32_TOL);
    }
}

#[test]
fn cuda_fused_cross_entropy_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(16);
    let (n, v) = (9, 3001);
    let logits = normal(&mut rng, n * v, 3.0);
    let targets: Vec<u32> = (0..n)
        .map(|t| {
            if t % 4 == 1 {
                IGNORE
            } else {
                rng.below(v as u64) as u32
            }
        })
        .collect();
    let mut losses = vec![0f32; n];
    cpu::losses::cross_entropy_forward(&mut losses, &logits, &targets, v);
    let mut dl = vec![0f32; n * v];
    cpu::losses::cross_entropy_backward(&mut dl, &logits, &targets, 0.125, v);
    let mut ld = up(g, &logits);
    let mut lossd = poisoned(g, n);
    cross_entropy_fused(g, &mut lossd, &mut ld, &up(g, &targets), 0.125, n, v, true).unwrap();
    assert_close("cross-entropy losses", &down(g, &lossd), &losses, F32_TOL);
    assert_close("cross-entropy dlogits", &down(g, &ld), &dl, F32_TOL);
}

#[test]
fn cuda_expert_row_movement_matches_its_definition() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(17);
    let (n, w, k) = (20, 33, 2);
    let rows: Vec<u32> = vec![3, 0, 19, 7, 8];
    let slots: Vec<u32> = vec![1, 0, 1, 1, 0];
    let m = rows.len();
    let src = normal(&mut rng, n * w, 1.0);
    let scale_v = normal(&mut rng, m, 1.0);
    let rd = up(g, &rows);

    let mut gathered = poisoned(g, m * w);
    gather_rows(g, &mut gathered, &up(g, &src), &rd, m, w).unwrap();
    let want: Vec<f32> = rows
        .iter()
        .flat_map(|&r| src[r as usize * w..(r as usize + 1) * w].to_vec())
        .collect();
    assert_close("gather_rows", &down(g, &gathered), &want, 0.0);

    let part = normal(&mut rng, m * w, 1.0);
    let mut want = src.clone();
    for (i, &r) in rows.iter().enumerate() {
        for j in 0..w {
            want[r as usize * w + j] += 0.5 * scale_v[i] * part[i * w + j];
        }
    }
    let mut dst = up(g, &src);
    scatter_add_rows(
        g,
        &mut dst,
        &up(g, &part),
        &rd,
        Some(&up(g, &scale_v)),
        0.5,
        m,
        w,
    )
    .unwrap();
    assert_close("scatter_add_rows", &down(g, &dst), &want, F32_TOL);

    let want: Vec<f32> = part
        .iter()
        .enumerate()
        .map(|(i, x)| x * 2.0 * scale_v[i / w])
        .collect();
    let mut out = poisoned(g, m * w);
    scale_rows(
        g,
        &mut out,
        &up(g, &part),
        Some(&up(g, &scale_v)),
        2.0,
        m,
        w,
    )
    .unwrap();
    assert_close("scale_rows", &down(g, &out), &want, F32_TOL);

    let other = normal(&mut rng, m * w, 1.0);
    let want: Vec<f32> = (0..m)
        .map(|i| {
            scale_v[i]
                + 3.0
                    * (0..w)
                        .map(|j| part[i * w + j] * other[i * w + j])
                        .sum::<f32>()
        })
        .collect();
    let mut out = up(g, &scale_v);
    row_dot(g, &mut out, &up(g, &part), &up(g, &other), 3.0, true, m, w).unwrap();
    assert_close("row_dot", &down(g, &out), &want, F32_TOL);

    let base = normal(&mut rng, n * k, 1.0);
    let mut want = base.clone();
    for i in 0..m {
        want[rows[i] as usize * k + slots[i] as usize] += scale_v[i];
    }
    let mut dst = up(g, &base);
    scatter_slots(g, &mut dst, &up(g, &scale_v), &rd, &up(g, &slots), k, m).unwrap();
    assert_close("scatter_slots", &down(g, &dst), &want, 0.0);
}

#[test]
fn cuda_adamw_with_clipping_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(18);
    let shapes = [vec![5, 7], vec![13]];
    let mut params = gpu_host::train::model::Params::<f32> {
        names: vec!["w".into(), "norm".into()],
        shapes: shapes.to_vec(),
        data: shapes
            .iter()
            .map(|s| normal(&mut rng, s.iter().product(), 1.0))
            .collect(),
        base: vec![false, false],
    };
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = AdamW::new(cfg.clone(), &params, &[true, true]);
    let mut pd: Vec<_> = params.data.iter().map(|p| up(g, p)).collect();
    let mut md: Vec<_> = params
        .data
        .iter()
        .map(|p| up(g, &vec![0f32; p.len()]))
        .collect();
    let mut vd: Vec<_> = params
        .data
        .iter()
        .map(|p| up(g, &vec![0f32; p.len()]))
        .collect();
    for t in 1..=4u64 {
        let mut grads = params.zeros_like();
        for gr in &mut grads.data {
            *gr = normal(&mut rng, gr.len(), 3.0);
        }
        let gd: Vec<_> = grads.data.iter().map(|x| up(g, x)).collect();
        let max_norm = 2.0;
        let lr = 0.01 * t as f64;
        let mut sum = up(g, &[0f64]);
        for x in &gd {
            grad_sumsq(g, &mut sum, x).unwrap();
        }
        let norm = down(g, &sum)[0].sqrt();
        let want_norm = clip_grad_norm(&mut grads, &[true, true], max_norm);
        assert!(
            (norm - want_norm).abs() <= 1e-9 * want_norm,
            "grad norm {norm} vs {want_norm}"
        );
        opt.step(&mut params, &grads, lr);
        let (bc1, bc2) = (
            1.0 - cfg.beta1.powi(t as i32),
            1.0 - cfg.beta2.powi(t as i32),
        );
        for i in 0..2 {
            let step = AdamWStep {
                clip_scale: if norm > max_norm {
                    (max_norm / norm) as f32
                } else {
                    1.0
                },
                beta1: cfg.beta1 as f32,
                beta2: cfg.beta2 as f32,
                eps: cfg.eps as f32,
                step: (lr / bc1) as f32,
                inv_bc2: (1.0 / bc2) as f32,
                decay: if shapes[i].len() >= 2 {
                    (lr * cfg.weight_decay) as f32
                } else {
                    0.0
                },
            };
            adamw_step(g, &mut pd[i], &gd[i], &mut md[i], &mut vd[i], step).unwrap();
            assert_close(
                &format!("adamw step {t} param {i}"),
                &down(g, &pd[i]),
                &params.data[i],
                F32_TOL,
            );
        }
    }
}

// ---- the whole model ----------------------------------------------------------

fn tiny_model(moe: MoeConfig) -> (tempfile::TempDir, TrainModel<f32>) {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(
        &InitSpec::new(Preset::Tiny, Architecture::Llama),
        dir.path(),
    )
    .unwrap();
    let mut model = TrainModel::<f32>::from_checkpoint(dir.path(), moe, 7).unwrap();
    // LoRA B starts at zero (the adapted model equals the base), which would
    // leave every A gradient zero: give B values so every path is exercised.
    let mut rng = Rng::new(99);
    for i in 0..model.params.len() {
        if model.params.names[i].ends_with("lora_B.weight") {
            let len = model.params.data[i].len();
            model.params.data[i] = normal(&mut rng, len, 0.02);
        }
    }
    (dir, model)
}

fn moe_config() -> MoeConfig {
    // The auxiliary losses on, so their gradients are compared too.
    MoeConfig {
        aux_coef: 0.01,
        z_coef: 0.001,
        domain_coef: 0.05,
        ..Default::default()
    }
}

/// A micro-batch of packed documents of different lengths and domains,
/// with the loss on part of each.
fn batch(rng: &mut Rng, vocab: usize) -> Batch {
    let lens = [31usize, 64, 7, 90];
    let docs: Vec<(Vec<u32>, Vec<bool>, u8)> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let tokens = (0..len).map(|_| rng.below(vocab as u64) as u32).collect();
            let loss = (0..len).map(|t| t >= len / 3).collect();
            (tokens, loss, (i % 5) as u8) // domain 4: none
        })
        .collect();
    let refs: Vec<(&[u32], &[bool], u8)> =
        docs.iter().map(|(t, l, d)| (&t[..], &l[..], *d)).collect();
    Batch::from_documents(&refs)
}

#[test]
fn cuda_training_step_gradients_match_cpu() {
    let Some(_) = gpu() else { return };
    let (_dir, model) = tiny_model(moe_config());
    let mut rng = Rng::new(5);
    let b = batch(&mut rng, model.config.vocab_size);
    let mut want = model.params.zeros_like();
    let cpu_stats = model.forward_backward(&b, &mut want, 0.5).unwrap();
    let mut trainer = CudaTrainer::new(&model, 0, WeightDtype::F32).unwrap();
    let stats = trainer.forward_backward(&b, 0.5).unwrap();
    eprintln!(
        "objective: cpu {:.6} cuda {:.6}",
        cpu_stats.total, stats.total
    );
    assert!((stats.total - cpu_stats.total).abs() <= 1e-5 * cpu_stats.total.abs());
    assert!((stats.aux - cpu_stats.aux).abs() <= 1e-5 * cpu_stats.aux.abs().max(1e-6));
    assert_eq!(
        stats.expert_slots, cpu_stats.expert_slots,
        "routing differs"
    );
    let mut got = model.params.zeros_like();
    trainer.download_grads(&mut got).unwrap();
    let trainable = model.trainable_mask();
    let mut worst = (0.0, String::new());
    for i in (0..got.len()).filter(|&i| trainable[i]) {
        let e = rel_err(&got.data[i], &want.data[i]);
        if e > worst.0 {
            worst = (e, got.names[i].clone());
        }
    }
    eprintln!(
        "worst gradient relative error {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= 1e-4,
        "gradient of {} differs: {:.3e}",
        worst.1,
        worst.0
    );
}

/// Ten AdamW steps from the same start on the same batches: the CUDA
/// losses follow the CPU's within `tol` (relative).
fn ten_steps_match(dtype: WeightDtype, tol: f64) {
    let (_dir, mut model) = tiny_model(moe_config());
    let mut rng = Rng::new(6);
    let batches: Vec<Batch> = (0..10)
        .map(|_| batch(&mut rng, model.config.vocab_size))
        .collect();
    let cfg = AdamWConfig {
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut trainer = CudaTrainer::new(&model, 0, dtype).unwrap();
    let trainable = model.trainable_mask();
    let mut opt = AdamW::new(cfg.clone(), &model.params, &trainable);
    let lr = 3e-3;
    let mut worst: f64 = 0.0;
    for (step, b) in batches.iter().enumerate() {
        let mut grads = model.params.zeros_like();
        let want = model.forward_backward(b, &mut grads, 1.0).unwrap();
        let want_norm = clip_grad_norm(&mut grads, &trainable, 1.0);
        opt.step(&mut model.params, &grads, lr);

        trainer.zero_grads().unwrap();
        let got = trainer.forward_backward(b, 1.0).unwrap();
        let norm = trainer.clip_and_step(1.0, lr, &cfg).unwrap();
        let rel = (got.total - want.total).abs() / want.total.abs();
        worst = worst.max(rel);
        eprintln!(
            "{dtype:?} step {step}: loss cpu {:.6} cuda {:.6} (rel {rel:.1e}); grad norm cpu {want_norm:.4} cuda {norm:.4}",
            want.total, got.total
        );
        assert!(
            rel <= tol,
            "{dtype:?} step {step}: loss {} vs cpu {} (rel {rel:.2e} > {tol:e})",
            got.total,
            want.total
        );
    }
    if dtype != WeightDtype::F32 {
        return; // bf16 weights: the losses are the comparison
    }
    // And the adapters they trained are the same.
    let mut params = model.params.clone();
    trainer.download(&mut params, None).unwrap();
    let i = model
        .params
        .names
        .iter()
        .position(|n| n.ends_with("lora_B.weight"))
        .unwrap();
    let e = rel_err(&params.data[i], &model.params.data[i]);
    eprintln!(
        "{dtype:?}: worst loss rel diff {worst:.2e}; {} after 10 steps rel err {e:.2e}",
        model.params.names[i]
    );
    assert!(e <= 1e-3, "{}: {e:.2e}", model.params.names[i]);
}

#[test]
fn cuda_ten_training_steps_match_cpu_with_f32_weights() {
    let Some(_) = gpu() else { return };
    ten_steps_match(WeightDtype::F32, 1e-4);
}

#[test]
fn cuda_ten_training_steps_match_cpu_with_bf16_weights() {
    let Some(_) = gpu() else { return };
    ten_steps_match(WeightDtype::Bf16, 2e-2);
}

/// `gpu-host train --device cuda` end to end on the tiny model: the loss
/// falls as on the CPU (the reference run's own test), checkpoints and the
/// adapter are written from the GPU's tensors, and a killed run resumes
/// from its checkpoint on the GPU and finishes. (Bit-identical resumption
/// is the CPU reference's property: the GPU's gradient-norm reduction is
/// not ordered.)
#[test]
fn cuda_train_command_learns_checkpoints_and_resumes() {
    let Some(_) = gpu() else { return };
    use gpu_host::data::prepare::{PrepareOptions, prepare};
    use gpu_host::data::synth::write_synthetic;
    use gpu_host::train::config::{TrainArgs, TrainConfig};
    use gpu_host::train::run::train;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let model = root.join("tiny");
    write_checkpoint(&InitSpec::new(Preset::Tiny, Architecture::Llama), &model).unwrap();
    let input = root.join("synthetic.jsonl");
    write_synthetic(&input, 16, 2).unwrap();
    let data = root.join("data");
    prepare(&PrepareOptions {
        inputs: vec![input],
        out: data.clone(),
        model: model.clone(),
        seq_len: 256,
        val_fraction: 0.2,
        shard_sequences: 64,
    })
    .unwrap();
    let cfg = |out: &str, steps: usize| -> TrainConfig {
        TrainArgs {
            model: Some(model.clone()),
            data: Some(data.clone()),
            out: Some(root.join(out)),
            steps: Some(steps),
            lr: Some(4e-3),
            warmup_steps: Some(5),
            seq_len: Some(256),
            micro_batch: Some(2),
            eval_every: Some(10),
            eval_batches: Some(2),
            ckpt_every: Some(10),
            device: Some("cuda".into()),
            quiet: Some(true),
            ..Default::default()
        }
        .resolve()
    };
    let run = train(&cfg("run", 50), false).unwrap();
    let (first, last) = (run.losses[0], *run.losses.last().unwrap());
    eprintln!(
        "cuda train: loss {first:.3} → {last:.3}, {:.0} tok/s, val {:?}",
        run.tokens_per_s, run.val_loss
    );
    assert!(last <= 0.6 * first, "loss fell only from {first} to {last}");
    assert!(root.join("run/adapter/adapter_model.safetensors").exists());

    let killed = TrainConfig {
        kill_after_step: 15,
        ..cfg("killed", 30)
    };
    assert_eq!(train(&killed, false).unwrap().steps, 15);
    let resumed = train(
        &TrainConfig {
            kill_after_step: 0,
            ..killed
        },
        true,
    )
    .unwrap();
    assert_eq!(resumed.steps, 30);
    let last = *resumed.losses.last().unwrap();
    assert!(
        last.is_finite() && last < first,
        "resumed run ended at loss {last}"
    );
}
