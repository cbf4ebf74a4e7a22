//! The demo model (`init-model --preset demo`): the small base shape,
//! pretrained from random weights with `--full` on the synthetic corpus,
//! then a MoE-LoRA adapter with domain-supervised routing trained on top,
//! in a few minutes on two cores. It is a demonstration of the pipeline,
//! not a useful therapist: it has seen only templated synthetic dialogue.
//!
//! Layout of the output directory: a Hugging Face checkpoint (the
//! pretrained base), `adapter/` (the MoE-LoRA adapter) and `demo.json`
//! (how it was made).

use crate::checkpoint::Architecture;
use crate::data::prepare::{PrepareOptions, prepare};
use crate::data::synth::write_synthetic;
use crate::init_model::{InitSpec, Preset, write_checkpoint};
use crate::train::config::{TrainArgs, TrainConfig};
use crate::train::run::train;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub seed: u64,
    pub conversations: usize,
    pub seq_len: usize,
    pub pretrain_steps: usize,
    pub adapter_steps: usize,
    /// 0: one per core.
    pub threads: usize,
    pub quiet: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            conversations: 2000,
            seq_len: 512,
            pretrain_steps: 80,
            adapter_steps: 30,
            threads: 0,
            quiet: false,
        }
    }
}

pub fn write_demo(out: &Path, opts: &DemoOptions) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let work = tempfile_dir(out)?;
    let random = work.join("random");
    let spec = InitSpec {
        seed: opts.seed,
        ..InitSpec::new(Preset::Small, Architecture::Llama)
    };
    write_checkpoint(&spec, &random)?;
    let corpus = work.join("synthetic.jsonl");
    write_synthetic(&corpus, opts.conversations, opts.seed)?;
    let data = work.join("data");
    prepare(&PrepareOptions {
        inputs: vec![corpus],
        out: data.clone(),
        model: random.clone(),
        seq_len: opts.seq_len,
        val_fraction: 0.05,
        shard_sequences: 1024,
    })?;
    let base = |model: &Path, run: &str, steps: usize| -> TrainConfig {
        TrainArgs {
            model: Some(model.to_path_buf()),
            data: Some(data.clone()),
            out: Some(work.join(run)),
            steps: Some(steps),
            seq_len: Some(opts.seq_len),
            warmup_steps: Some((steps / 10).max(1)),
            eval_every: Some(0),
            ckpt_every: Some(0),
            eval_batches: Some(4),
            threads: Some(opts.threads),
            quiet: Some(opts.quiet),
            seed: Some(opts.seed),
            ..Default::default()
        }
        .resolve()
    };
    tracing::info!("demo: pretraining the base on the synthetic corpus");
    let pre = train(
        &TrainConfig {
            full: true,
            lr: 2e-3,
            ..base(&random, "pretrain", opts.pretrain_steps)
        },
        false,
    )?;
    let pretrained = work.join("pretrain").join("base");
    tracing::info!("demo: training the MoE-LoRA adapter");
    let ada = train(
        &TrainConfig {
            lr: 2e-3,
            domain_coef: 0.5,
            ..base(&pretrained, "adapter", opts.adapter_steps)
        },
        false,
    )?;
    // Move the results into place: the base checkpoint files, then the adapter.
    for entry in std::fs::read_dir(&pretrained)? {
        let entry = entry?;
        std::fs::rename(entry.path(), out.join(entry.file_name())).with_context(|| {
            format!(
                "cannot move {} into {}",
                entry.path().display(),
                out.display()
            )
        })?;
    }
    let adapter_out = out.join("adapter");
    if adapter_out.exists() {
        std::fs::remove_dir_all(&adapter_out).ok();
    }
    std::fs::rename(work.join("adapter").join("adapter"), &adapter_out)?;
    let info = json!({
        "preset": "demo",
        "synthetic_data": true,
        "note": "pretrained only on templated synthetic dialogue; a pipeline demonstration, not a clinical model",
        "seed": opts.seed,
        "conversations": opts.conversations,
        "seq_len": opts.seq_len,
        "pretrain": {"steps": pre.steps, "first_loss": pre.losses.first(), "last_loss": pre.losses.last(), "val_loss": pre.val_loss},
        "adapter": {"steps": ada.steps, "first_loss": ada.losses.first(), "last_loss": ada.losses.last(), "val_loss": ada.val_loss, "val_domain_top1": ada.val_domain_top1},
    });
    crate::train::checkpoint::write_atomic(
        &out.join("demo.json"),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

fn tempfile_dir(out: &Path) -> Result<std::path::PathBuf> {
    let dir = out.join(format!(".demo-work-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).ok();
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
