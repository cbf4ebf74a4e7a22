//! End to end: the tiny generated model's logits on the CUDA backend match
//! the CPU backend's, for a chunked prefill and for token-by-token decode
//! over the KV cache, with f32 and bf16 weights and both architectures
//! (qwen2 adds the q/k/v biases). Attention runs on bf16 tensor cores, so
//! the tolerance is bf16's: ‖cuda − cpu‖ / ‖cpu‖ ≤ 1e-2 per step.
//! Without a usable GPU the test prints why and passes.
#![cfg(feature = "cuda")]

use gpu_host::backend::cpu::CpuBackend;
use gpu_host::backend::cuda::{CudaBackend, cuda_available};
use gpu_host::backend::{Backend, WeightDtype};
use gpu_host::checkpoint::Architecture;
use gpu_host::init_model::{InitSpec, Preset, write_checkpoint};
use gpu_host::model::{Llama, LoadOptions, Logits};
use gpu_host::rng::Rng;

const TOL: f64 = 1e-2;

mod cuda_support;
use cuda_support::rel_err;

/// Logits of a chunked prefill (`Logits::All`) followed by greedy decode
/// steps (`Logits::Last`), all concatenated, plus the tokens decoded.
fn run<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    chunk: usize,
    steps: usize,
    forced: Option<&[u32]>,
) -> (Vec<f32>, Vec<u32>) {
    let mut act = model.new_activations(chunk, true).unwrap();
    let mut cache = model.new_cache().unwrap();
    let (mut all, mut out) = (Vec::new(), Vec::new());
    model
        .forward(&mut act, &mut cache, prompt, Logits::All, &mut out)
        .unwrap();
    all.extend_from_slice(&out);
    let vocab = model.config().vocab_size;
    let mut next = gpu_host::generate::sampling::argmax(&out[out.len() - vocab..]);
    let mut decoded = Vec::new();
    for step in 0..steps {
        // Feed the CPU's choices to both, so one near-tie cannot fork the runs.
        if let Some(f) = forced {
            next = f[step];
        }
        decoded.push(next);
        model
            .forward(&mut act, &mut cache, &[next], Logits::Last, &mut out)
            .unwrap();
        all.extend_from_slice(&out);
        next = gpu_host::generate::sampling::argmax(&out);
    }
    (all, decoded)
}

#[test]
fn cuda_tiny_model_logits_match_cpu() {
    if let Err(why) = cuda_available() {
        assert!(
            std::env::var_os("GPU_HOST_REQUIRE_CUDA").is_none(),
            "GPU_HOST_REQUIRE_CUDA is set but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        for dtype in [WeightDtype::F32, WeightDtype::Bf16] {
            let dir = tempfile::tempdir().unwrap();
            write_checkpoint(
                &InitSpec {
                    seed: 3,
                    ..InitSpec::new(Preset::Tiny, arch)
                },
                dir.path(),
            )
            .unwrap();
            let options = LoadOptions {
                dtype: Some(dtype),
                max_seq: Some(256),
            };
            let cpu = Llama::load(dir.path(), CpuBackend::new(0).unwrap(), &options).unwrap();
            let gpu = Llama::load(dir.path(), CudaBackend::new(0).unwrap(), &options).unwrap();
            let vocab = cpu.config().vocab_size;
            let mut rng = Rng::new(17);
            let prompt: Vec<u32> = (0..90).map(|_| rng.below(vocab as u64) as u32).collect();
            // Chunks of 32: the later chunks attend to cached keys (pos0 > 0).
            let (want, tokens) = run(&cpu, &prompt, 32, 12, None);
            let (got, _) = run(&gpu, &prompt, 32, 12, Some(&tokens));
            let prefill = prompt.len() * vocab;
            let e_prefill = rel_err(&got[..prefill], &want[..prefill]);
            let e_decode: f64 = (0..12)
                .map(|s| {
                    let at = prefill + s * vocab;
                    rel_err(&got[at..at + vocab], &want[at..at + vocab])
                })
                .fold(0.0, f64::max);
            eprintln!(
                "{arch:?} {dtype:?}: prefill logits relative error {e_prefill:.2e}, worst decode step {e_decode:.2e}"
            );
            assert!(
                e_prefill <= TOL && e_decode <= TOL,
                "{arch:?} {dtype:?}: {e_prefill:e} / {e_decode:e} exceed {TOL:e}"
            );
        }
    }
}

/// Serving's batched step over the paged KV cache on the GPU matches the
/// CPU's: two sequences, one prefilled in two chunks while the other
/// decodes, with scattered block tables.
#[test]
fn cuda_batched_paged_steps_match_cpu() {
    use gpu_host::model::{BatchOutput, BatchSeq, SeqOutput};
    if let Err(why) = cuda_available() {
        assert!(
            std::env::var_os("GPU_HOST_REQUIRE_CUDA").is_none(),
            "GPU_HOST_REQUIRE_CUDA is set but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(
        &InitSpec {
            seed: 5,
            ..InitSpec::new(Preset::Tiny, Architecture::Qwen2)
        },
        dir.path(),
    )
    .unwrap();
    let options = LoadOptions {
        dtype: Some(WeightDtype::F32),
        max_seq: Some(256),
    };
    let cpu = Llama::load(dir.path(), CpuBackend::new(0).unwrap(), &options).unwrap();
    let gpu = Llama::load(dir.path(), CudaBackend::new(0).unwrap(), &options).unwrap();
    let vocab = cpu.config().vocab_size;
    let mut rng = Rng::new(9);
    let a: Vec<u32> = (0..23).map(|_| rng.below(vocab as u64) as u32).collect();
    let b: Vec<u32> = (0..9).map(|_| rng.below(vocab as u64) as u32).collect();
    let (blocks_a, blocks_b) = (vec![5u32, 0, 9, 2, 30, 7], vec![1u32, 31, 4]);
    fn steps<B: Backend>(m: &Llama<B>, a: &[u32], b: &[u32], ba: &[u32], bb: &[u32]) -> Vec<f32> {
        let mut cache = m.new_paged_cache(4, 32).unwrap();
        let mut act = m.new_batch_activations(32, 4).unwrap();
        let mut out = BatchOutput::default();
        let mut all = Vec::new();
        let plan: [Vec<BatchSeq>; 3] = [
            vec![
                BatchSeq {
                    tokens: &a[..10],
                    pos0: 0,
                    blocks: ba,
                    output: SeqOutput::None,
                    adapter: None,
                },
                BatchSeq {
                    tokens: &b[..8],
                    pos0: 0,
                    blocks: bb,
                    output: SeqOutput::LastLogits,
                    adapter: None,
                },
            ],
            vec![
                BatchSeq {
                    tokens: &b[8..9],
                    pos0: 8,
                    blocks: bb,
                    output: SeqOutput::LastLogits,
                    adapter: None,
                },
                BatchSeq {
                    tokens: &a[10..22],
                    pos0: 10,
                    blocks: ba,
                    output: SeqOutput::LastLogits,
                    adapter: None,
                },
            ],
            vec![BatchSeq {
                tokens: &a[22..23],
                pos0: 22,
                blocks: ba,
                output: SeqOutput::HiddenSum,
                adapter: None,
            }],
        ];
        for step in plan {
            m.forward_batch(&mut act, &mut cache, &step, &mut out)
                .unwrap();
            all.extend_from_slice(&out.logits);
            all.extend_from_slice(&out.hidden_sums);
        }
        all
    }
    let want = steps(&cpu, &a, &b, &blocks_a, &blocks_b);
    let got = steps(&gpu, &a, &b, &blocks_a, &blocks_b);
    let e = rel_err(&got, &want);
    eprintln!("batched paged steps: relative error {e:.2e}");
    assert!(e <= TOL, "{e:e} exceeds {TOL:e}");
}
