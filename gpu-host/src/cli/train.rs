//! `gpu-host train`: MoE-LoRA (or, with `--full`, full) training on the GPU
//! or the CPU reference (`--device`), from a TOML config whose every field
//! is also a flag.

use anyhow::Result;
use clap::Args;
use gpu_host::train::config::TrainArgs;
use gpu_host::train::planner::{plan_run, profile};
use gpu_host::train::run::train;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainCommand {
    /// TOML file with any of the options below (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// With --window: calibrate every profile, print the plan and stop.
    #[arg(long)]
    plan_only: bool,
    /// Micro-batches measured per profile when calibrating.
    #[arg(long, default_value_t = 2)]
    calibration_batches: usize,
    #[command(flatten)]
    options: TrainArgs,
}

pub fn run(cmd: TrainCommand) -> Result<()> {
    let file = match &cmd.config {
        Some(p) => TrainArgs::from_toml_file(p)?,
        None => TrainArgs::default(),
    };
    let mut cfg = cmd.options.over(file).resolve();
    cfg.validate()?;
    if !cfg.profile.is_empty() {
        let max_pos = gpu_host::checkpoint::ModelConfig::from_file(&cfg.model.join("config.json"))?
            .max_position_embeddings;
        cfg = profile(&cfg.profile)?.apply(&cfg, max_pos);
    } else if !cfg.window.is_empty() || cmd.plan_only {
        let threads = cfg.threads;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let (chosen, table) = pool.install(|| plan_run(&cfg, cmd.calibration_batches))?;
        println!("{table}");
        if cmd.plan_only {
            return Ok(());
        }
        cfg = chosen;
    }
    let summary = train(&cfg, cmd.resume)?;
    for a in &summary.adjustments {
        eprintln!("deadline: {a}");
    }
    println!(
        "trained {} steps (planned {}); last loss {:.4}; {}; {:.0} tok/s; trainable {} of {} parameters ({:.2}%)",
        summary.steps,
        summary.planned_steps,
        summary.losses.last().copied().unwrap_or(f64::NAN),
        summary
            .val_loss
            .map(|v| format!("val loss {v:.4}, ppl {:.2}", v.exp()))
            .unwrap_or_else(|| "no validation".into()),
        summary.tokens_per_s,
        summary.trainable_params,
        summary.total_params,
        100.0 * summary.trainable_params as f64 / summary.total_params as f64,
    );
    if let Some(dir) = &summary.final_checkpoint {
        println!("{}", dir.display());
    }
    Ok(())
}
