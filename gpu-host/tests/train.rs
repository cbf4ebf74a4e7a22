//! Training end to end on the tiny preset: the loss falls, a killed and
//! resumed run matches an uninterrupted one bit for bit, domain-supervised
//! routing sends each domain to its expert, the planner explains a window
//! nothing fits, and the deadline monitor ends a slowed-down run with its
//! final checkpoint inside a 60-second window.

use gpu_host::checkpoint::Architecture;
use gpu_host::data::prepare::{PrepareOptions, prepare};
use gpu_host::data::shards::Dataset;
use gpu_host::data::synth::write_synthetic;
use gpu_host::init_model::{InitSpec, Preset, write_checkpoint};
use gpu_host::train::config::{TrainArgs, TrainConfig};
use gpu_host::train::model::TrainModel;
use gpu_host::train::planner::plan_run;
use gpu_host::train::run::{Loader, evaluate, train};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    data: PathBuf,
}

fn fixture(conversations: usize, val_fraction: f64, seed: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model = root.join("tiny");
    write_checkpoint(&InitSpec::new(Preset::Tiny, Architecture::Llama), &model).unwrap();
    let input = root.join("synthetic.jsonl");
    write_synthetic(&input, conversations, seed).unwrap();
    let data = root.join("data");
    prepare(&PrepareOptions {
        inputs: vec![input],
        out: data.clone(),
        model: model.clone(),
        seq_len: 256,
        val_fraction,
        shard_sequences: 64,
    })
    .unwrap();
    Fixture {
        _dir: dir,
        root,
        model,
        data,
    }
}

fn config(f: &Fixture, out: &str, steps: usize) -> TrainConfig {
    TrainArgs {
        model: Some(f.model.clone()),
        data: Some(f.data.clone()),
        out: Some(f.root.join(out)),
        steps: Some(steps),
        lr: Some(4e-3),
        warmup_steps: Some(5),
        seq_len: Some(256),
        eval_every: Some(0),
        eval_batches: Some(0),
        threads: Some(2),
        // The CPU reference: resumed runs must match bit for bit, and the
        // GPU's gradient-norm reduction is not ordered.
        device: Some("cpu".into()),
        quiet: Some(true),
        ..Default::default()
    }
    .resolve()
}

fn metric_losses(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
        .map(f64::to_bits)
        .collect()
}

#[test]
fn tiny_model_loss_falls_by_half_on_a_fixed_synthetic_set() {
    let f = fixture(16, 0.0, 2);
    let cfg = TrainConfig {
        micro_batch: 2,
        ..config(&f, "run", 50)
    };
    let ds = Dataset::open(&f.data).unwrap();
    let loader = Loader::new(&ds.train, 256, 2, 0, 256);
    let fresh = TrainModel::<f32>::from_checkpoint(&f.model, cfg.moe(), cfg.seed).unwrap();
    let (before, _) = evaluate(&fresh, &loader, &ds.train, 0).unwrap();
    let summary = train(&cfg, false).unwrap();
    let mut trained = TrainModel::<f32>::from_checkpoint(&f.model, cfg.moe(), cfg.seed).unwrap();
    gpu_host::adapter::apply_adapter(&mut trained, &cfg.out.join("adapter")).unwrap();
    let (after, _) = evaluate(&trained, &loader, &ds.train, 0).unwrap();
    eprintln!(
        "loss on the training set: {before:.3} → {after:.3}; last step {:?}",
        summary.losses.last()
    );
    assert!(
        after <= 0.5 * before,
        "loss fell only from {before} to {after}"
    );
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit() {
    let f = fixture(16, 0.2, 3);
    let base = TrainConfig {
        accum: 2,
        eval_every: 4,
        eval_batches: 2,
        ..config(&f, "straight", 10)
    };
    let straight = train(&base, false).unwrap();
    assert_eq!(straight.steps, 10);

    let cfg = TrainConfig {
        out: f.root.join("killed"),
        ckpt_every: 4,
        kill_after_step: 7,
        ..base.clone()
    };
    let killed = train(&cfg, false).unwrap();
    assert_eq!(killed.steps, 7);
    assert!(killed.final_checkpoint.is_none());
    // Without --resume the directory is refused.
    let again = format!(
        "{:#}",
        train(
            &TrainConfig {
                kill_after_step: 0,
                ..cfg.clone()
            },
            false
        )
        .unwrap_err()
    );
    assert!(again.contains("--resume"), "{again}");
    let resumed = train(
        &TrainConfig {
            kill_after_step: 0,
            ..cfg.clone()
        },
        true,
    )
    .unwrap();
    assert_eq!(resumed.steps, 10);

    let (a, b) = (metric_losses(&base.out), metric_losses(&cfg.out));
    assert_eq!(a.len(), 10);
    assert_eq!(a, b, "loss curves differ");
    let weights =
        |out: &Path| std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(
        weights(&base.out) == weights(&cfg.out),
        "final adapters differ"
    );
}

#[test]
fn domain_supervised_routing_sends_each_domain_to_its_expert() {
    let f = fixture(200, 0.2, 5);
    let cfg = TrainConfig {
        micro_batch: 2,
        domain_coef: 2.0,
        ..config(&f, "routed", 60)
    };
    let summary = train(&cfg, false).unwrap();
    eprintln!(
        "validation top-1 routing per domain: {:?}",
        summary.val_domain_top1
    );
    assert_eq!(summary.val_domain_top1.len(), 4);
    for (d, frac) in summary.val_domain_top1.iter().enumerate() {
        assert!(
            *frac >= 0.8,
            "domain {d}: only {frac} of its validation tokens go to its expert"
        );
    }
}

#[test]
fn planner_says_why_a_window_cannot_fit_and_what_would() {
    let f = fixture(40, 0.1, 6);
    let cfg = TrainConfig {
        window: "20s".into(),
        margin: "10s".into(),
        epochs: 50.0,
        steps: 0,
        ..config(&f, "plan", 0)
    };
    let err = format!("{:#}", plan_run(&cfg, 1).unwrap_err());
    assert!(
        err.contains("no profile fits") && err.contains("--epochs") && err.contains("--window"),
        "{err}"
    );
    assert!(
        err.contains("balanced") && err.contains("memory-efficient") && err.contains("tok/s"),
        "{err}"
    );
    // The suggested window is one the flag accepts.
    let window = err
        .split("`--window ")
        .nth(1)
        .unwrap()
        .split('`')
        .next()
        .unwrap();
    gpu_host::train::config::parse_duration(window).unwrap();
    // A window long enough picks a profile.
    let roomy = TrainConfig {
        window: "12h".into(),
        margin: "30m".into(),
        epochs: 1.0,
        ..cfg
    };
    let (chosen, table) = plan_run(&roomy, 1).unwrap();
    assert_eq!(chosen.profile, "quality", "{table}");
}

#[test]
fn deadline_monitor_adapts_to_a_slowdown_and_checkpoints_before_a_60_second_window_closes() {
    let f = fixture(64, 0.2, 7);
    let start = Instant::now();
    // 400 steps at ~0.1 s fit easily; from step 10 each step sleeps 0.4 s
    // more, which would take ~3 minutes.
    let cfg = TrainConfig {
        window: "60s".into(),
        margin: "5s".into(),
        eval_every: 20,
        eval_batches: 2,
        ckpt_every: 25,
        slowdown_ms: 400,
        slowdown_after_step: 10,
        ..config(&f, "deadline", 400)
    };
    let summary = train(&cfg, false).unwrap();
    let took = summary.finished_at.duration_since(start);
    eprintln!(
        "{} of {} steps in {took:?}; adjustments: {:#?}",
        summary.steps, summary.planned_steps, summary.adjustments
    );
    assert!(
        summary.steps < 400 && summary.steps > 10,
        "{} steps",
        summary.steps
    );
    assert!(!summary.adjustments.is_empty());
    assert!(took < Duration::from_secs(60), "finished after {took:?}");
    let ckpt = summary.final_checkpoint.unwrap();
    assert!(
        ckpt.join("trainer_state.json").exists() && ckpt.join("adapter_model.safetensors").exists()
    );
    let metrics = std::fs::read_to_string(cfg.out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"replan\""));
}

#[test]
fn demo_pipeline_writes_a_servable_checkpoint_and_adapter() {
    use gpu_host::backend::cpu::CpuBackend;
    use gpu_host::model::{Llama, LoadOptions};
    use gpu_host::train::demo::{DemoOptions, write_demo};
    let dir = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        conversations: 40,
        seq_len: 128,
        pretrain_steps: 2,
        adapter_steps: 2,
        threads: 2,
        quiet: true,
        ..Default::default()
    };
    write_demo(dir.path(), &opts).unwrap();
    let engine = Llama::load(
        dir.path(),
        CpuBackend::new(2).unwrap(),
        &LoadOptions {
            dtype: None,
            max_seq: Some(64),
        },
    )
    .unwrap();
    let adapter =
        gpu_host::adapter::load_adapter(&dir.path().join("adapter"), engine.config()).unwrap();
    assert_eq!(adapter.layers.len(), engine.config().num_layers);
    assert_eq!(adapter.moe.expert_names[2], "bias_detection");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("demo.json")).unwrap())
            .unwrap();
    assert_eq!(info["synthetic_data"], true);
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".demo-work")
    }));
}

#[test]
fn bad_training_inputs_give_clear_errors() {
    let f = fixture(8, 0.0, 8);
    let err = |cfg: TrainConfig| format!("{:#}", train(&cfg, false).unwrap_err());
    let e = err(TrainConfig {
        model: PathBuf::new(),
        ..config(&f, "a", 2)
    });
    assert!(e.contains("`model` is required"), "{e}");
    let e = err(TrainConfig {
        data: f.root.join("nowhere"),
        ..config(&f, "b", 2)
    });
    assert!(e.contains("data prepare"), "{e}");
    let e = err(TrainConfig {
        attn_targets: vec!["x_proj".into()],
        ..config(&f, "c", 2)
    });
    assert!(e.contains("x_proj"), "{e}");
    let e = err(TrainConfig {
        top_k: 5,
        ..config(&f, "d", 2)
    });
    assert!(e.contains("top_k"), "{e}");
    let e = err(TrainConfig {
        window: "soon".into(),
        ..config(&f, "e", 2)
    });
    assert!(e.contains("soon"), "{e}");
    let qwen = f.root.join("qwen");
    write_checkpoint(&InitSpec::new(Preset::Tiny, Architecture::Qwen2), &qwen).unwrap();
    let e = err(TrainConfig {
        model: qwen,
        ..config(&f, "g", 2)
    });
    assert!(e.contains("qwen2"), "{e}");
    let e = format!("{:#}", train(&config(&f, "h", 1), true).unwrap_err());
    assert!(e.contains("no checkpoint"), "{e}");
}

/// The same through the command line, with a real SIGKILL at an arbitrary
/// point after the first checkpoint (possibly mid-step or mid-write).
#[test]
fn cli_run_killed_with_sigkill_resumes_to_the_same_loss_curve() {
    let f = fixture(16, 0.0, 9);
    let bin = env!("CARGO_BIN_EXE_gpu-host");
    let args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--steps",
            "24",
            "--lr",
            "0.004",
            "--seq-len",
            "256",
            "--ckpt-every",
            "4",
            "--eval-every",
            "0",
            "--threads",
            "2",
            "--quiet",
            "--slowdown-ms",
            "40",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (k, v) in [
            ("--model", &f.model),
            ("--data", &f.data),
            ("--out", &out.to_path_buf()),
        ] {
            a.push(k.into());
            a.push(v.display().to_string());
        }
        a
    };
    let straight = f.root.join("straight");
    let status = std::process::Command::new(bin)
        .args(args(&straight))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let killed = f.root.join("killed");
    let mut child = std::process::Command::new(bin)
        .args(args(&killed))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let latest = killed.join("checkpoints/latest");
    let t = Instant::now();
    while !latest.exists() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(70));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let losses_before = metric_losses(&killed).len();
    assert!(losses_before < 24, "the run finished before it was killed");
    let mut a = args(&killed);
    a.push("--resume".into());
    let out = std::process::Command::new(bin).args(&a).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(metric_losses(&straight), metric_losses(&killed));
    let weights =
        |out: &Path| std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(
        weights(&straight) == weights(&killed),
        "final adapters differ"
    );
}
