//! The training window: four profiles, a calibration run that measures
//! each on this machine and backend, the plan that picks the best profile
//! whose projected time plus a safety margin fits the window, and the
//! [`DeadlineMonitor`] that, during training, re-projects the finish from
//! measured speed and trims evaluations and steps so that the run always
//! ends with a complete final checkpoint before the deadline.

use crate::data::shards::Dataset;
use crate::train::config::{TrainConfig, parse_duration};
use crate::train::engine::StepEngine;
use crate::train::model::{ATTN_TARGETS, TrainModel};
use crate::train::run::Loader;
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What a profile fixes.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub seq_len: usize,
    pub micro_batch: usize,
    pub accum: usize,
    pub checkpointing: bool,
    pub attn_targets: &'static [&'static str],
    pub eval_every: usize,
    pub eval_batches: usize,
    /// Higher is better at equal cost.
    pub quality_rank: u8,
}

pub const PROFILES: [Profile; 4] = [
    Profile {
        name: "quality",
        seq_len: 4096,
        micro_batch: 1,
        accum: 16,
        checkpointing: false,
        attn_targets: &ATTN_TARGETS,
        eval_every: 50,
        eval_batches: 16,
        quality_rank: 3,
    },
    Profile {
        name: "balanced",
        seq_len: 2048,
        micro_batch: 1,
        accum: 8,
        checkpointing: false,
        attn_targets: &ATTN_TARGETS,
        eval_every: 100,
        eval_batches: 8,
        quality_rank: 2,
    },
    Profile {
        name: "memory-efficient",
        seq_len: 2048,
        micro_batch: 1,
        accum: 8,
        checkpointing: true,
        attn_targets: &ATTN_TARGETS,
        eval_every: 100,
        eval_batches: 8,
        quality_rank: 1,
    },
    Profile {
        name: "fast",
        seq_len: 1024,
        micro_batch: 1,
        accum: 4,
        checkpointing: false,
        attn_targets: &["q_proj", "v_proj"],
        eval_every: 200,
        eval_batches: 4,
        quality_rank: 0,
    },
];

pub fn profile(name: &str) -> Result<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name).ok_or_else(|| {
        anyhow::anyhow!("unknown profile `{name}` (fast, balanced, quality, memory-efficient)")
    })
}

impl Profile {
    /// `cfg` with this profile's settings (the sequence length capped at
    /// the model's context).
    pub fn apply(&self, cfg: &TrainConfig, max_pos: usize) -> TrainConfig {
        TrainConfig {
            seq_len: self.seq_len.min(max_pos),
            micro_batch: self.micro_batch,
            accum: self.accum,
            checkpointing: self.checkpointing,
            attn_targets: self.attn_targets.iter().map(|s| s.to_string()).collect(),
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            profile: self.name.to_string(),
            ..cfg.clone()
        }
    }
}

/// One profile's measurement.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub profile: &'static Profile,
    pub seq_len: usize,
    pub tokens_per_s: f64,
    /// Peak resident memory during the measurement (bytes), where the OS
    /// reports it.
    pub peak_bytes: Option<u64>,
}

/// Measures `micro_batches` forward+backward passes of each profile on
/// the training data (after one warm-up pass).
pub fn calibrate(cfg: &TrainConfig, micro_batches: usize) -> Result<Vec<Calibration>> {
    let ds = Dataset::open(&cfg.data)?;
    let mut out = Vec::new();
    let max_pos = crate::checkpoint::ModelConfig::from_file(&cfg.model.join("config.json"))?
        .max_position_embeddings;
    for p in &PROFILES {
        let c = p.apply(cfg, max_pos);
        let mut model = TrainModel::<f32>::from_checkpoint(&cfg.model, c.moe(), cfg.seed)?;
        model.train_base = cfg.full;
        model.checkpointing = c.checkpointing;
        let mut loader = Loader::new(&ds.train, c.seq_len, c.micro_batch, cfg.seed, c.seq_len);
        let mut engine = StepEngine::open(&cfg.device, &cfg.dtype, &model)?;
        let mut pos = Default::default();
        let warm = loader.next(&mut pos, &ds.train);
        engine.forward_backward(&model, &warm, 1.0)?;
        reset_peak_rss();
        let t = Instant::now();
        let mut tokens = 0;
        for _ in 0..micro_batches.max(1) {
            let b = loader.next(&mut pos, &ds.train);
            tokens += engine.forward_backward(&model, &b, 1.0)?.n_tokens;
        }
        let tok_s = tokens as f64 / t.elapsed().as_secs_f64().max(1e-9);
        out.push(Calibration {
            profile: p,
            seq_len: c.seq_len,
            tokens_per_s: tok_s,
            peak_bytes: peak_rss(),
        });
    }
    Ok(out)
}

fn reset_peak_rss() {
    // Linux: writing 5 to clear_refs resets VmHWM.
    std::fs::write("/proc/self/clear_refs", b"5").ok();
}

fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The work to plan for.
#[derive(Clone, Debug)]
pub struct Workload {
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub epochs: f64,
}

/// One row of the plan table.
#[derive(Clone, Debug)]
pub struct PlanRow {
    pub calibration: Calibration,
    pub train_s: f64,
    pub eval_s: f64,
    pub total_s: f64,
    pub fits: bool,
    pub fits_memory: bool,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub rows: Vec<PlanRow>,
    pub window: Duration,
    pub margin: Duration,
    pub chosen: Option<usize>,
}

/// Projects each calibrated profile over the workload and picks the best
/// (highest quality rank) whose time plus `margin` fits `window` and whose
/// peak memory fits `memory_limit` (when given).
pub fn plan(
    cal: &[Calibration],
    work: &Workload,
    window: Duration,
    margin: Duration,
    memory_limit: Option<u64>,
) -> Plan {
    let rows: Vec<PlanRow> = cal
        .iter()
        .map(|c| {
            let tokens = work.train_tokens as f64 * work.epochs;
            let train_s = tokens / c.tokens_per_s.max(1e-9);
            // Steps ≈ tokens / (seq_len · micro · accum); each evaluation is
            // forward-only, about a third of a training pass per token.
            let p = c.profile;
            let steps = tokens / (c.seq_len * p.micro_batch * p.accum) as f64;
            let evals = (steps / p.eval_every as f64).floor() + 1.0;
            let eval_tokens =
                (work.val_tokens as f64).min((p.eval_batches * c.seq_len * p.micro_batch) as f64);
            let eval_s = evals * eval_tokens / (3.0 * c.tokens_per_s.max(1e-9));
            let total_s = train_s + eval_s;
            let fits_memory = match (memory_limit, c.peak_bytes) {
                (Some(limit), Some(peak)) => peak <= limit,
                _ => true,
            };
            PlanRow {
                calibration: c.clone(),
                train_s,
                eval_s,
                total_s,
                fits: total_s + margin.as_secs_f64() <= window.as_secs_f64() && fits_memory,
                fits_memory,
            }
        })
        .collect();
    let chosen = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.fits)
        .max_by_key(|(_, r)| r.calibration.profile.quality_rank)
        .map(|(i, _)| i);
    Plan {
        rows,
        window,
        margin,
        chosen,
    }
}

pub fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec:02}s"),
        (h, m, _) => format!("{h}h {m:02}m"),
    }
}

/// A duration as `--window` accepts it (`14m3s`, `13h5m`), rounded up.
fn duration_flag(s: f64) -> String {
    let s = s.max(0.0).ceil() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, _) => format!("{h}h{}m", m + 1),
    }
}

impl Plan {
    /// The plan table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        writeln!(
            t,
            "{:<17} {:>7} {:>12} {:>5} {:<28} {:>9} {:>10} {:>10} {:>5}",
            "profile",
            "seq",
            "micro×accum",
            "ckpt",
            "lora targets",
            "tok/s",
            "peak mem",
            "projected",
            "fits"
        )
        .ok();
        for (i, r) in self.rows.iter().enumerate() {
            let p = r.calibration.profile;
            let mem = r
                .calibration
                .peak_bytes
                .map(|b| format!("{:.0} MiB", b as f64 / (1 << 20) as f64))
                .unwrap_or_else(|| "?".into());
            writeln!(
                t,
                "{:<17} {:>7} {:>12} {:>5} {:<28} {:>9.0} {:>10} {:>10} {:>5}{}",
                p.name,
                r.calibration.seq_len,
                format!("{}×{}", p.micro_batch, p.accum),
                if p.checkpointing { "yes" } else { "no" },
                p.attn_targets.join(","),
                r.calibration.tokens_per_s,
                mem,
                format_duration(r.total_s),
                if r.fits { "yes" } else { "no" },
                if Some(i) == self.chosen {
                    "  ← chosen"
                } else {
                    ""
                },
            )
            .ok();
        }
        writeln!(
            t,
            "window {} with a {} safety margin",
            format_duration(self.window.as_secs_f64()),
            format_duration(self.margin.as_secs_f64())
        )
        .ok();
        t
    }

    /// Why nothing fits, and what would.
    pub fn explain_no_fit(&self, work: &Workload) -> String {
        let Some(fastest) = self
            .rows
            .iter()
            .filter(|r| r.fits_memory)
            .min_by(|a, b| a.total_s.total_cmp(&b.total_s))
        else {
            return "no profile fits in memory on this machine".into();
        };
        let avail = self.window.as_secs_f64() - self.margin.as_secs_f64();
        let epochs = work.epochs * avail.max(0.0) / fastest.total_s.max(1e-9);
        format!(
            "no profile fits: the fastest, `{}`, needs {} for {} epoch(s) plus the {} margin, but the window is {}. \
             What would fit: `--epochs {:.2}` with profile {} in this window, or `--window {}` for the full run",
            fastest.calibration.profile.name,
            format_duration(fastest.total_s),
            work.epochs,
            format_duration(self.margin.as_secs_f64()),
            format_duration(self.window.as_secs_f64()),
            (epochs * 100.0).floor() / 100.0,
            fastest.calibration.profile.name,
            duration_flag(fastest.total_s + self.margin.as_secs_f64() + 60.0),
        )
    }
}

/// Calibrates, plans and returns the chosen profile's configuration and
/// the printed plan; an error explains a window nothing fits.
pub fn plan_run(cfg: &TrainConfig, calib_batches: usize) -> Result<(TrainConfig, String)> {
    let window = parse_duration(if cfg.window.is_empty() {
        "12h"
    } else {
        &cfg.window
    })?;
    let margin = parse_duration(&cfg.margin)?;
    let ds = Dataset::open(&cfg.data)?;
    let work = Workload {
        train_tokens: ds.manifest.train.tokens as u64,
        val_tokens: ds.manifest.validation.tokens as u64,
        epochs: cfg.epochs,
    };
    let cal = calibrate(cfg, calib_batches)?;
    let p = plan(&cal, &work, window, margin, None);
    let table = p.table();
    let Some(i) = p.chosen else {
        bail!("{}\n{}", table, p.explain_no_fit(&work));
    };
    let model = crate::checkpoint::ModelConfig::from_file(&cfg.model.join("config.json"))?;
    let chosen = p.rows[i]
        .calibration
        .profile
        .apply(cfg, model.max_position_embeddings);
    Ok((
        TrainConfig {
            window: window_string(window),
            ..chosen
        },
        table,
    ))
}

fn window_string(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Re-projects the end of the run from measured speed and trims it to end,
/// final evaluation and checkpoint included, by `deadline − margin`.
pub struct DeadlineMonitor {
    deadline: Instant,
    step_s: Option<f64>,
    last_step_s: f64,
    eval_s: f64,
    ckpt_s: f64,
    /// Human-readable record of every adjustment.
    pub adjustments: Vec<String>,
}

impl DeadlineMonitor {
    pub fn new(start: Instant, window: Duration, margin: Duration) -> Self {
        Self {
            deadline: start + window.saturating_sub(margin),
            step_s: None,
            last_step_s: 0.0,
            eval_s: 0.0,
            ckpt_s: 0.5,
            adjustments: Vec::new(),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn observe_step(&mut self, s: f64) {
        self.last_step_s = s;
        self.step_s = Some(match self.step_s {
            None => s,
            Some(e) => 0.7 * e + 0.3 * s,
        });
    }

    pub fn observe_eval(&mut self, s: f64) {
        self.eval_s = self.eval_s.max(s);
    }

    pub fn observe_checkpoint(&mut self, s: f64) {
        self.ckpt_s = self.ckpt_s.max(s);
    }

    /// Before step `step`: lowers `total` and `eval_every` when the
    /// projection overruns; false when no further step fits.
    pub fn plan(
        &mut self,
        step: usize,
        total: &mut usize,
        eval_every: &mut usize,
        ckpt_every: usize,
    ) -> bool {
        let now = Instant::now();
        let left = self.deadline.saturating_duration_since(now).as_secs_f64();
        // Pessimistic: the slower of the average and the latest step.
        let step_s = self.step_s.map_or(0.0, |e| e.max(self.last_step_s));
        // The end: a final evaluation and checkpoint, with room to spare.
        let final_s = 1.5 * (self.eval_s + self.ckpt_s) + 0.5;
        // Evaluations (or checkpoints) strictly between `from` and the last step.
        let count = |every: usize, from: usize, to: usize| {
            to.saturating_sub(1)
                .checked_div(every)
                .map_or(0, |n| n.saturating_sub(from / every))
        };
        let need = |total: usize, eval_every: usize| {
            let steps = total.saturating_sub(step) as f64;
            steps * step_s
                + count(eval_every, step, total) as f64 * self.eval_s
                + count(ckpt_every, step, total) as f64 * self.ckpt_s
                + final_s
        };
        if need(*total, *eval_every) <= left {
            return true;
        }
        if *eval_every > 0 && self.eval_s > 0.0 {
            // Fewer evaluations first.
            let mut every = *eval_every;
            while every < *total && need(*total, every) > left {
                every *= 2;
            }
            let every = if need(*total, every) > left { 0 } else { every };
            if every != *eval_every {
                self.adjustments.push(format!(
                    "step {step}: evaluations every {} steps instead of {} to meet the deadline",
                    if every == 0 {
                        "∞".to_string()
                    } else {
                        every.to_string()
                    },
                    eval_every
                ));
                *eval_every = every;
            }
            if need(*total, *eval_every) <= left {
                return true;
            }
        }
        // Then fewer steps.
        let per_step = step_s
            + if ckpt_every > 0 {
                self.ckpt_s / ckpt_every as f64
            } else {
                0.0
            };
        let fit = ((left - final_s).max(0.0) / per_step.max(1e-9)).floor() as usize;
        let new_total = (step + fit).min(*total);
        if new_total != *total {
            self.adjustments.push(format!(
                "step {step}: {new_total} steps instead of {} (measured {:.2} s/step, {} left before the deadline)",
                *total,
                step_s,
                format_duration(left)
            ));
            *total = new_total;
        }
        step < *total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(name: &str, tok_s: f64) -> Calibration {
        Calibration {
            profile: profile(name).unwrap(),
            seq_len: profile(name).unwrap().seq_len,
            tokens_per_s: tok_s,
            peak_bytes: Some(1 << 30),
        }
    }

    #[test]
    fn planner_picks_the_best_profile_that_fits_or_says_what_would() {
        let cals = vec![
            cal("quality", 1000.0),
            cal("balanced", 2000.0),
            cal("memory-efficient", 1500.0),
            cal("fast", 4000.0),
        ];
        let work = Workload {
            train_tokens: 50_000_000,
            val_tokens: 100_000,
            epochs: 1.0,
        };
        let h = |x: f64| Duration::from_secs_f64(x * 3600.0);
        // 50M tokens: quality 13.9 h, balanced 6.9 h, fast 3.5 h.
        let p = plan(&cals, &work, h(12.0), h(0.5), None);
        assert_eq!(
            p.rows[p.chosen.unwrap()].calibration.profile.name,
            "balanced"
        );
        assert!(p.table().contains("← chosen"));
        let p = plan(&cals, &work, h(20.0), h(0.5), None);
        assert_eq!(
            p.rows[p.chosen.unwrap()].calibration.profile.name,
            "quality"
        );
        // A memory limit rules profiles out.
        let mut small = cals.clone();
        small[1].peak_bytes = Some(8 << 30);
        let p = plan(&small, &work, h(12.0), h(0.5), Some(4 << 30));
        assert_eq!(
            p.rows[p.chosen.unwrap()].calibration.profile.name,
            "memory-efficient"
        );
        let p = plan(&cals, &work, h(2.0), h(0.5), None);
        assert!(p.chosen.is_none());
        let why = p.explain_no_fit(&work);
        assert!(
            why.contains("`fast`") && why.contains("--epochs 0.4") && why.contains("--window"),
            "{why}"
        );
    }

    #[test]
    fn monitor_trims_steps_when_a_slowdown_would_overrun() {
        let start = Instant::now();
        let mut m = DeadlineMonitor::new(start, Duration::from_secs(60), Duration::from_secs(5));
        let (mut total, mut every) = (100, 10);
        m.observe_step(0.1);
        m.observe_eval(0.2);
        assert!(m.plan(1, &mut total, &mut every, 0));
        assert_eq!((total, every), (100, 10));
        // Steps now take 1 s: 99 steps cannot fit in 55 s.
        m.observe_step(1.0);
        assert!(m.plan(1, &mut total, &mut every, 0));
        assert!(total < 60 && total > 30, "{total}");
        assert!(!m.adjustments.is_empty());
    }
}
