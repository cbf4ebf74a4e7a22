//! MoE-LoRA adapters at inference: the rows of a batch that belong to a
//! sequence served with an adapter get its attention LoRA and its mixture
//! of LoRA experts in the MLP, exactly as training computes them
//! ([`crate::train::model`]; the same `lora_forward` / `router_forward`
//! ops run here, so training is this path's oracle):
//!
//! ```text
//! q,k,v,o += scale · B · (A · x)                       (attention LoRA)
//! w = top-k renormalised softmax(router · x)            (per token)
//! h_e = silu(gate(x) + ΔG_e(x)) · (up(x) + ΔU_e(x))     (each chosen expert)
//! out = down(Σ_e w_e · h_e) + Σ_e w_e · ΔD_e(h_e)
//! ```
//!
//! The frozen projections run on the backend for every row; the low-rank
//! parts run on the host over the adapter rows only (rank 16: a few
//! percent of the layer's work), through the backend's download and
//! upload, so every backend serves adapters. A fused device kernel is the
//! CUDA backend's to add.

use crate::adapter::{LoraPair, MoeLoraAdapter};
use crate::backend::Backend;
use crate::train::ops::lora::lora_forward;
use crate::train::ops::matmul::matmul_forward;
use crate::train::ops::router::router_forward;
use crate::train::ops::swiglu::swiglu_forward;
use anyhow::Result;

/// Rows `row0 .. row0 + n` of a batch are served with `adapter`.
#[derive(Clone, Copy)]
pub struct AdapterSpan<'a> {
    pub row0: usize,
    pub n: usize,
    pub adapter: &'a MoeLoraAdapter,
}

fn get_rows<B: Backend>(
    b: &B,
    buf: &B::Buffer,
    row0: usize,
    n: usize,
    width: usize,
) -> Result<Vec<f32>> {
    let mut out = vec![0f32; n * width];
    b.download(buf, row0 * width, &mut out)?;
    Ok(out)
}

fn put_rows<B: Backend>(
    b: &B,
    buf: &mut B::Buffer,
    row0: usize,
    width: usize,
    data: &[f32],
) -> Result<()> {
    let tmp = b.upload(data)?;
    b.copy(buf, row0 * width, &tmp, 0, data.len())
}

/// `scale · B · (A · x)` for `n` rows of `x`.
fn lora_delta(
    x: &[f32],
    pair: &LoraPair,
    rank: usize,
    scale: f32,
    gate: Option<&[f32]>,
    n: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; n * pair.out_dim];
    let mut xa = vec![0f32; n * rank];
    lora_forward(
        &mut out,
        &mut xa,
        x,
        &pair.a,
        &pair.b,
        gate,
        scale,
        n,
        pair.in_dim,
        rank,
        pair.out_dim,
    );
    out
}

/// Adds attention LoRA `which` (0 q, 1 k, 2 v, 3 o) of layer `l` to the
/// span's rows of `out` (width `out_w`), from the same rows of `x`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_lora<B: Backend>(
    b: &B,
    span: &AdapterSpan,
    l: usize,
    which: usize,
    x: &B::Buffer,
    x_w: usize,
    out: &mut B::Buffer,
    out_w: usize,
) -> Result<()> {
    let a = span.adapter;
    let Some(pair) = &a.layers[l].attn[which] else {
        return Ok(());
    };
    let xs = get_rows(b, x, span.row0, span.n, x_w)?;
    let delta = lora_delta(&xs, pair, a.rank, a.scale, None, span.n);
    let mut rows = get_rows(b, out, span.row0, span.n, out_w)?;
    rows.iter_mut().zip(&delta).for_each(|(o, d)| *o += d);
    put_rows(b, out, span.row0, out_w, &rows)
}

/// The mixture of experts for the span's rows of layer `l`: replaces their
/// rows of `hidden` with `Σ_e w_e · h_e` (so the frozen down projection
/// that follows computes `down(Σ_e w_e · h_e)`) and returns the experts'
/// down-LoRA sum `[n, c]`, to be added to the down projection's output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn moe_mlp<B: Backend>(
    b: &B,
    span: &AdapterSpan,
    l: usize,
    normed: &B::Buffer,
    gate: &B::Buffer,
    up: &B::Buffer,
    hidden: &mut B::Buffer,
    c: usize,
    f: usize,
) -> Result<Vec<f32>> {
    let a = span.adapter;
    let layer = &a.layers[l];
    let (n, e, k) = (span.n, a.moe.num_experts, a.moe.top_k);
    let x = get_rows(b, normed, span.row0, n, c)?;
    let g0 = get_rows(b, gate, span.row0, n, f)?;
    let u0 = get_rows(b, up, span.row0, n, f)?;
    let mut logits = vec![0f32; n * e];
    matmul_forward(&mut logits, &x, &layer.router, n, c, e);
    let (mut probs, mut idx, mut w) = (vec![0f32; n * e], vec![0u32; n * k], vec![0f32; n * k]);
    router_forward(&mut probs, &mut idx, &mut w, &logits, n, e, k);
    let mut hbar = vec![0f32; n * f];
    let mut down = vec![0f32; n * c];
    for (ei, expert) in layer.experts.iter().enumerate() {
        // The rows routed to this expert and their weights.
        let (mut rows, mut weights) = (Vec::new(), Vec::new());
        for t in 0..n {
            for s in 0..k {
                if idx[t * k + s] as usize == ei {
                    rows.push(t);
                    weights.push(w[t * k + s]);
                }
            }
        }
        let m = rows.len();
        if m == 0 {
            continue;
        }
        let gather = |v: &[f32], width: usize| -> Vec<f32> {
            rows.iter()
                .flat_map(|&t| v[t * width..(t + 1) * width].iter().copied())
                .collect()
        };
        let xe = gather(&x, c);
        let mut g = gather(&g0, f);
        let mut u = gather(&u0, f);
        g.iter_mut()
            .zip(lora_delta(&xe, &expert.gate_proj, a.rank, a.scale, None, m))
            .for_each(|(o, d)| *o += d);
        u.iter_mut()
            .zip(lora_delta(&xe, &expert.up_proj, a.rank, a.scale, None, m))
            .for_each(|(o, d)| *o += d);
        let mut h = vec![0f32; m * f];
        swiglu_forward(&mut h, &g, &u);
        let d = lora_delta(&h, &expert.down_proj, a.rank, a.scale, Some(&weights), m);
        for (i, &t) in rows.iter().enumerate() {
            let wt = weights[i];
            hbar[t * f..(t + 1) * f]
                .iter_mut()
                .zip(&h[i * f..(i + 1) * f])
                .for_each(|(hb, h)| *hb += wt * h);
            down[t * c..(t + 1) * c]
                .iter_mut()
                .zip(&d[i * c..(i + 1) * c])
                .for_each(|(o, d)| *o += d);
        }
    }
    put_rows(b, hidden, span.row0, f, &hbar)?;
    Ok(down)
}

/// Adds `delta [n, width]` to the span's rows of `buf`.
pub(crate) fn add_rows<B: Backend>(
    b: &B,
    buf: &mut B::Buffer,
    span: &AdapterSpan,
    width: usize,
    delta: &[f32],
) -> Result<()> {
    let mut rows = get_rows(b, buf, span.row0, span.n, width)?;
    rows.iter_mut().zip(delta).for_each(|(o, d)| *o += d);
    put_rows(b, buf, span.row0, width, &rows)
}

#[cfg(test)]
mod tests {
    use crate::adapter::{load_adapter, write_adapter};
    use crate::backend::cpu::CpuBackend;
    use crate::model::{BatchOutput, BatchSeq, Llama, LoadOptions, SeqOutput};
    use crate::rng::Rng;
    use crate::train::model::{Batch, MoeConfig, TrainModel, tests::tiny_checkpoint};

    /// The engine with a trained-looking adapter (random LoRA B, a lively
    /// router, attention LoRA on q/k/v/o) gives the training model's logits,
    /// while a base-model sequence in the same batch is untouched by it.
    #[test]
    fn serving_with_an_adapter_matches_the_training_forward() {
        let ck = tiny_checkpoint();
        let moe = MoeConfig {
            attn_targets: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
            ..MoeConfig::default()
        };
        let mut model = TrainModel::<f32>::from_checkpoint(ck.path(), moe, 3).unwrap();
        let mut rng = Rng::new(8);
        for i in 0..model.params.len() {
            if !model.params.base[i] {
                let amp = if model.params.names[i].ends_with("router.weight") {
                    0.5
                } else {
                    0.05
                };
                model.params.data[i]
                    .iter_mut()
                    .for_each(|x| *x = amp * rng.next_normal() as f32);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        write_adapter(dir.path(), &model).unwrap();
        let adapter = load_adapter(dir.path(), &model.config).unwrap();

        let vocab = model.config.vocab_size;
        let tokens: Vec<u32> = (0..19).map(|_| rng.below(vocab as u64) as u32).collect();
        let want = model
            .logits(&Batch::from_documents(&[(&tokens, &[true; 19], 255)]))
            .unwrap();
        let base = TrainModel::<f32>::from_checkpoint(ck.path(), MoeConfig::default(), 3).unwrap();
        let want_base = base
            .logits(&Batch::from_documents(&[(&tokens, &[true; 19], 255)]))
            .unwrap();

        let engine = Llama::load(
            ck.path(),
            CpuBackend::new(2).unwrap(),
            &LoadOptions {
                dtype: None,
                max_seq: Some(64),
            },
        )
        .unwrap();
        let mut cache = engine.new_paged_cache(4, 16).unwrap();
        let mut act = engine.new_batch_activations(64, 4).unwrap();
        let mut out = BatchOutput::default();
        let (blocks_a, blocks_b) = ([3u32, 0, 7, 9, 1], [2u32, 4, 5, 6, 8]);
        // Prefill 11 tokens then 7 more; the base sequence rides along.
        let mut check = |range: std::ops::Range<usize>| {
            let step = [
                BatchSeq {
                    tokens: &tokens[range.clone()],
                    pos0: range.start,
                    blocks: &blocks_b,
                    output: SeqOutput::LastLogits,
                    adapter: None,
                },
                BatchSeq {
                    tokens: &tokens[range.clone()],
                    pos0: range.start,
                    blocks: &blocks_a,
                    output: SeqOutput::LastLogits,
                    adapter: Some(&adapter),
                },
            ];
            engine
                .forward_batch(&mut act, &mut cache, &step, &mut out)
                .unwrap();
            let t = range.end - 1;
            let row = |v: &[f32]| v[t * vocab..(t + 1) * vocab].to_vec();
            let diff = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max)
            };
            let (base_err, adapter_err) = (
                diff(&out.logits[..vocab], &row(&want_base)),
                diff(&out.logits[vocab..], &row(&want)),
            );
            assert!(base_err < 1e-3, "base row {t}: {base_err}");
            assert!(adapter_err < 1e-3, "adapter row {t}: {adapter_err}");
            assert!(
                diff(&row(&want), &row(&want_base)) > 1e-2,
                "the adapter changes the logits"
            );
        };
        check(0..11);
        check(11..18);
    }
}
