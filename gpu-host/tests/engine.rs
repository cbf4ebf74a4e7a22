//! The engine on generated tiny checkpoints: KV-cache decoding against
//! recomputation, bf16 and sharded checkpoints, generation behaviour, and
//! clear errors for bad input.

use gpu_host::backend::WeightDtype;
use gpu_host::backend::cpu::CpuBackend;
use gpu_host::checkpoint::Architecture;
use gpu_host::generate::{GenerateParams, Generator, SamplingParams, StopReason};
use gpu_host::init_model::{InitSpec, Preset, write_checkpoint};
use gpu_host::model::{Llama, LoadOptions, Logits};
use gpu_host::rng::Rng;
use gpu_host::tokenizer::TextTokenizer;
use std::collections::HashMap;
use std::path::Path;

fn tiny(arch: Architecture, seed: u64) -> (tempfile::TempDir, InitSpec) {
    let dir = tempfile::tempdir().unwrap();
    let spec = InitSpec {
        seed,
        ..InitSpec::new(Preset::Tiny, arch)
    };
    write_checkpoint(&spec, dir.path()).unwrap();
    (dir, spec)
}

fn load(dir: &Path, dtype: Option<WeightDtype>) -> Llama<CpuBackend> {
    Llama::load(
        dir,
        CpuBackend::new(2).unwrap(),
        &LoadOptions {
            dtype,
            max_seq: Some(256),
        },
    )
    .unwrap()
}

fn load_err(dir: &Path) -> String {
    match Llama::load(dir, CpuBackend::new(1).unwrap(), &LoadOptions::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}

fn all_logits(model: &Llama<CpuBackend>, tokens: &[u32], chunk: usize) -> Vec<f32> {
    let mut act = model.new_activations(chunk, true).unwrap();
    let mut cache = model.new_cache().unwrap();
    let mut out = Vec::new();
    model
        .forward(&mut act, &mut cache, tokens, Logits::All, &mut out)
        .unwrap();
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn kv_cache_decoding_matches_recomputing_without_it() {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let (dir, _) = tiny(arch, 11);
        let model = load(dir.path(), None);
        let vocab = model.config().vocab_size;
        let tokens = random_tokens(40, vocab, 5);
        // Reference: for each length t, a fresh cache and the whole prefix.
        let mut act = model.new_activations(64, false).unwrap();
        let mut reference = Vec::new();
        let mut out = Vec::new();
        for t in 1..=tokens.len() {
            let mut fresh = model.new_cache().unwrap();
            model
                .forward(&mut act, &mut fresh, &tokens[..t], Logits::Last, &mut out)
                .unwrap();
            reference.extend_from_slice(&out);
        }
        // Prefill 10, then decode one at a time over the cache.
        let mut cache = model.new_cache().unwrap();
        let mut incremental = Vec::new();
        let mut all = model.new_activations(64, true).unwrap();
        model
            .forward(&mut all, &mut cache, &tokens[..10], Logits::All, &mut out)
            .unwrap();
        incremental.extend_from_slice(&out);
        for &t in &tokens[10..] {
            model
                .forward(&mut act, &mut cache, &[t], Logits::Last, &mut out)
                .unwrap();
            incremental.extend_from_slice(&out);
        }
        assert_eq!(cache.len(), tokens.len());
        let err = max_abs_diff(&incremental, &reference);
        assert!(
            err < 1e-4,
            "{arch:?}: cached decode differs from recomputation by {err}"
        );
        // Chunked prefill (chunks of 7) gives the same logits as one pass.
        let err = max_abs_diff(
            &all_logits(&model, &tokens, 7),
            &all_logits(&model, &tokens, 64),
        );
        assert!(err < 1e-4, "{arch:?}: chunked prefill differs by {err}");
    }
}

#[test]
fn bf16_checkpoint_matches_f32_compute_of_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let spec = InitSpec {
        seed: 4,
        dtype: "bf16".into(),
        ..InitSpec::new(Preset::Tiny, Architecture::Llama)
    };
    write_checkpoint(&spec, dir.path()).unwrap();
    let as_bf16 = load(dir.path(), None);
    assert_eq!(as_bf16.weight_dtype(), WeightDtype::Bf16, "auto keeps bf16");
    let as_f32 = load(dir.path(), Some(WeightDtype::F32));
    let tokens = random_tokens(20, as_f32.config().vocab_size, 9);
    let err = max_abs_diff(
        &all_logits(&as_bf16, &tokens, 32),
        &all_logits(&as_f32, &tokens, 32),
    );
    assert!(
        err < 1e-4,
        "bf16 storage vs f32 storage of the same values: {err}"
    );
    // Decode (the one-row bf16 path) too.
    let mut act = as_bf16.new_activations(32, false).unwrap();
    let mut cache = as_bf16.new_cache().unwrap();
    let mut a = Vec::new();
    as_bf16
        .forward(&mut act, &mut cache, &tokens[..19], Logits::Last, &mut a)
        .unwrap();
    as_bf16
        .forward(&mut act, &mut cache, &tokens[19..], Logits::Last, &mut a)
        .unwrap();
    let b = all_logits(&as_f32, &tokens, 32);
    let v = as_f32.config().vocab_size;
    assert!(max_abs_diff(&a, &b[19 * v..]) < 1e-4);
}

/// Splits `model.safetensors` into two shards with an index, as HF does.
fn shard(dir: &Path) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
}

#[test]
fn sharded_checkpoint_loads_the_same_model() {
    let (dir, _) = tiny(Architecture::Qwen2, 6);
    let single = load(dir.path(), None);
    let tokens = random_tokens(12, single.config().vocab_size, 1);
    let want = all_logits(&single, &tokens, 16);
    shard(dir.path());
    let sharded = load(dir.path(), None);
    assert_eq!(all_logits(&sharded, &tokens, 16), want);
}

fn greedy_params(max: usize) -> GenerateParams {
    GenerateParams {
        max_new_tokens: max,
        sampling: SamplingParams::default(),
        stop_strings: vec![],
        eos_token_ids: vec![],
    }
}

#[test]
fn generation_is_seeded_and_stops_on_eos_stop_strings_and_limits() {
    let (dir, _) = tiny(Architecture::Llama, 3);
    let model = load(dir.path(), None);
    let tokenizer = TextTokenizer::from_dir(dir.path()).unwrap();
    let prompt = tokenizer
        .encode("How are you feeling today?", true)
        .unwrap();
    let mut generator = Generator::new(&model, &tokenizer).unwrap();
    let sampled = |generator: &mut Generator<CpuBackend>, seed| {
        let mut p = greedy_params(24);
        p.sampling = SamplingParams {
            temperature: 1.0,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.1,
            seed,
        };
        generator.generate(&prompt, &p, |_| Ok(())).unwrap().tokens
    };
    let a = sampled(&mut generator, 7);
    assert_eq!(a.len(), 24);
    assert_eq!(a, sampled(&mut generator, 7), "same seed, same tokens");
    assert_ne!(a, sampled(&mut generator, 8), "another seed, other tokens");

    // Streamed pieces add up to the text; the limit is the limit.
    let mut streamed = String::new();
    let out = generator.generate(&prompt, &greedy_params(16), |t| {
        streamed.push_str(t);
        Ok(())
    });
    let out = out.unwrap();
    assert_eq!(out.stop_reason, StopReason::MaxTokens);
    assert_eq!(out.tokens.len(), 16);
    assert_eq!(streamed, out.text);
    assert_eq!(out.text, tokenizer.decode(&out.tokens, true).unwrap());

    // EOS: make the greedy first token an EOS token.
    let mut p = greedy_params(16);
    p.eos_token_ids = vec![out.tokens[0]];
    let eos = generator.generate(&prompt, &p, |_| Ok(())).unwrap();
    assert_eq!((eos.stop_reason, eos.tokens.len()), (StopReason::Eos, 0));

    // A stop string taken from the middle of the greedy text.
    let text = &out.text;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let (start, end) = (
        chars[chars.len() / 2].0,
        chars[(chars.len() / 2 + 2).min(chars.len() - 1)].0,
    );
    let stop = text[start..end].to_string();
    let cut = text.find(&stop).unwrap();
    let mut p = greedy_params(16);
    p.stop_strings = vec![stop.clone()];
    let mut streamed = String::new();
    let stopped = generator
        .generate(&prompt, &p, |t| {
            streamed.push_str(t);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        stopped.stop_reason,
        StopReason::StopString,
        "stop {stop:?} in {text:?}"
    );
    assert_eq!(stopped.text, text[..cut]);
    assert_eq!(
        streamed, stopped.text,
        "nothing past the stop string is streamed"
    );
}

#[test]
fn generated_checkpoints_are_deterministic_and_sized_as_documented() {
    let (a, spec) = tiny(Architecture::Llama, 1);
    let b = tempfile::tempdir().unwrap();
    write_checkpoint(&spec, b.path()).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        let (x, y) = (
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
        );
        assert!(x == y, "{f} differs between two runs of the same spec");
    }
    let model = load(a.path(), None);
    let params = model.config().num_parameters();
    assert!(
        (1_000_000..=2_000_000).contains(&params),
        "tiny has {params} parameters"
    );
    // Another seed changes the weights, not the tokenizer.
    let (c, _) = tiny(Architecture::Llama, 2);
    assert_ne!(
        std::fs::read(a.path().join("model.safetensors")).unwrap(),
        std::fs::read(c.path().join("model.safetensors")).unwrap()
    );
    assert_eq!(
        std::fs::read(a.path().join("tokenizer.json")).unwrap(),
        std::fs::read(c.path().join("tokenizer.json")).unwrap()
    );
}

// ---- Bad input: clear errors naming the file and the tensor, no panics.

#[test]
fn missing_weights_file_is_named() {
    let (dir, _) = tiny(Architecture::Llama, 1);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn truncated_safetensors_is_an_error_naming_the_file() {
    let (dir, _) = tiny(Architecture::Llama, 1);
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() - 1, bytes.len() / 2, 100, 4, 0] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains(&path.display().to_string()),
            "keep {keep}: {err}"
        );
        assert!(err.contains("truncated"), "keep {keep}: {err}");
    }
}

#[test]
fn missing_shard_is_named() {
    let (dir, _) = tiny(Architecture::Llama, 1);
    shard(dir.path());
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("model-00002-of-00002.safetensors") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let (dir, _) = tiny(Architecture::Llama, 1);
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"llama\"", "\"gpt_neox\"");
    std::fs::write(&path, text).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("unsupported architecture")
            && err.contains("gpt_neox")
            && err.contains("config.json"),
        "{err}"
    );
}

/// Rewrites `model.safetensors` with `edit` applied to its tensors.
fn rewrite_tensors(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (shape, data))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn wrong_shape_names_file_and_tensor() {
    let (dir, _) = tiny(Architecture::Llama, 1);
    let name = "model.layers.1.self_attn.k_proj.weight";
    rewrite_tensors(dir.path(), |t| {
        let (shape, data) = t.get_mut(name).unwrap();
        // Same bytes, transposed shape.
        shape.swap(0, 1);
        assert_eq!(data.len(), shape.iter().product::<usize>() * 4);
    });
    let err = load_err(dir.path());
    assert!(
        err.contains(name) && err.contains("model.safetensors") && err.contains("shape"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let (dir, _) = tiny(Architecture::Qwen2, 1);
    let name = "model.layers.0.self_attn.q_proj.bias";
    rewrite_tensors(dir.path(), |t| {
        t.remove(name);
    });
    let err = load_err(dir.path());
    assert!(
        err.contains(name) && err.contains("missing") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn bad_config_fields_are_named() {
    let (dir, _) = tiny(Architecture::Llama, 1);
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"hidden_size\"", "\"hidden_sise\"");
    std::fs::write(&path, text).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("hidden_size") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn out_of_range_tokens_and_full_context_are_errors() {
    let (dir, _) = tiny(Architecture::Llama, 1);
    let model = Llama::load(
        dir.path(),
        CpuBackend::new(1).unwrap(),
        &LoadOptions {
            dtype: None,
            max_seq: Some(8),
        },
    )
    .unwrap();
    let mut act = model.new_activations(8, false).unwrap();
    let mut cache = model.new_cache().unwrap();
    let mut out = Vec::new();
    let vocab = model.config().vocab_size as u32;
    let err = model
        .forward(&mut act, &mut cache, &[1, vocab], Logits::Last, &mut out)
        .unwrap_err();
    assert!(format!("{err:#}").contains("out of range"), "{err:#}");
    model
        .forward(&mut act, &mut cache, &[1; 8], Logits::Last, &mut out)
        .unwrap();
    let err = model
        .forward(&mut act, &mut cache, &[1], Logits::Last, &mut out)
        .unwrap_err();
    assert!(format!("{err:#}").contains("exceed the context"), "{err:#}");
}

/// Continuous batching's forward step: two sequences with scattered,
/// interleaved block tables — one prefilled in two chunks while the other
/// decodes — give the logits each gets alone with a contiguous cache.
#[test]
fn batched_paged_steps_match_each_sequence_alone() {
    use gpu_host::model::{BatchOutput, BatchSeq, SeqOutput};
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let (dir, _) = tiny(arch, 11);
        let model = load(dir.path(), None);
        let vocab = model.config().vocab_size;
        let a = random_tokens(23, vocab, 1);
        let b = random_tokens(9, vocab, 2);
        let want_a = all_logits(&model, &a, 64);
        let want_b = all_logits(&model, &b, 64);

        let bs = 4;
        let mut cache = model.new_paged_cache(bs, 32).unwrap();
        let mut act = model.new_batch_activations(32, 4).unwrap();
        let blocks_a: Vec<u32> = vec![5, 0, 9, 2, 30, 7];
        let blocks_b: Vec<u32> = vec![1, 31, 4];
        let mut out = BatchOutput::default();
        let row = |v: &[f32], t: usize| v[t * vocab..(t + 1) * vocab].to_vec();
        // Step 1: a's first 10 prompt tokens (no output) + b's whole prompt.
        let step = [
            BatchSeq {
                tokens: &a[..10],
                pos0: 0,
                blocks: &blocks_a,
                output: SeqOutput::None,
                adapter: None,
            },
            BatchSeq {
                tokens: &b[..8],
                pos0: 0,
                blocks: &blocks_b,
                output: SeqOutput::LastLogits,
                adapter: None,
            },
        ];
        model
            .forward_batch(&mut act, &mut cache, &step, &mut out)
            .unwrap();
        assert!(max_abs_diff(&out.logits, &row(&want_b, 7)) < 1e-4);
        // Step 2: b decodes its 9th token while a finishes its prompt.
        let step = [
            BatchSeq {
                tokens: &b[8..9],
                pos0: 8,
                blocks: &blocks_b,
                output: SeqOutput::LastLogits,
                adapter: None,
            },
            BatchSeq {
                tokens: &a[10..22],
                pos0: 10,
                blocks: &blocks_a,
                output: SeqOutput::LastLogits,
                adapter: None,
            },
        ];
        model
            .forward_batch(&mut act, &mut cache, &step, &mut out)
            .unwrap();
        assert!(max_abs_diff(&out.logits[..vocab], &row(&want_b, 8)) < 1e-4);
        assert!(max_abs_diff(&out.logits[vocab..], &row(&want_a, 21)) < 1e-4);
        // Step 3: a decodes alone.
        let step = [BatchSeq {
            tokens: &a[22..23],
            pos0: 22,
            blocks: &blocks_a,
            output: SeqOutput::LastLogits,
            adapter: None,
        }];
        model
            .forward_batch(&mut act, &mut cache, &step, &mut out)
            .unwrap();
        assert!(max_abs_diff(&out.logits, &row(&want_a, 22)) < 1e-4);

        // A block table too short for the positions is an error, not a panic.
        let bad = [BatchSeq {
            tokens: &a[..10],
            pos0: 0,
            blocks: &blocks_a[..2],
            output: SeqOutput::None,
            adapter: None,
        }];
        let err = model
            .forward_batch(&mut act, &mut cache, &bad, &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("block table"), "{err}");
    }
}
