//! Training checkpoints, written atomically: everything goes into a
//! temporary directory beside the target, is flushed to disk, and appears
//! under its final name by one rename, so a run killed mid-write leaves
//! the previous checkpoint intact and never a half-written one.
//!
//! `OUT/checkpoints/step-NNNNNNN/`: the adapter (`adapter_model.safetensors`,
//! `adapter_config.json`), in `--full` mode the base weights as a Hugging
//! Face checkpoint, `state.safetensors` (trainable weights and AdamW
//! moments by parameter name) and `trainer_state.json` (step, data
//! position, schedule); `OUT/checkpoints/latest` names the newest.

use crate::train::model::{Params, TrainModel};
use crate::train::optim::AdamW;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot flush {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Serialises f32 tensors `(name, shape, values)` as safetensors.
pub fn safetensors_bytes(
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .with_context(|| format!("tensor {name}"))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, Some(metadata)).context("cannot serialise safetensors")
}

/// Where the data loader stands: epoch and index into its shuffled order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    pub epoch: u64,
    pub cursor: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps completed.
    pub step: usize,
    pub total_steps: usize,
    pub eval_every: usize,
    pub data: DataPosition,
    pub tokens_seen: u64,
    pub adam_t: u64,
    pub seed: u64,
    /// The resolved configuration the run started with.
    pub config: serde_json::Value,
    /// End of the `--window` (seconds since the Unix epoch), fixed when the
    /// run first starts.
    #[serde(default)]
    pub window_end_unix_s: Option<f64>,
}

pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// The newest complete checkpoint of a run, if any.
pub fn latest_checkpoint(out: &Path) -> Result<Option<PathBuf>> {
    let latest = checkpoints_dir(out).join("latest");
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest)
        .with_context(|| format!("cannot read {}", latest.display()))?;
    let dir = checkpoints_dir(out).join(name.trim());
    if !dir.join("trainer_state.json").exists() {
        bail!(
            "{} names {}, which is not a complete checkpoint",
            latest.display(),
            dir.display()
        );
    }
    Ok(Some(dir))
}

/// Writes a checkpoint for `state.step` and points `latest` at it; keeps
/// the `keep` newest checkpoints.
pub fn save_checkpoint(
    out: &Path,
    model: &TrainModel<f32>,
    opt: &AdamW,
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf> {
    let root = checkpoints_dir(out);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    // Leftovers of a run killed while writing: never complete, never named
    // by `latest`.
    for entry in std::fs::read_dir(&root)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            std::fs::remove_dir_all(entry.path()).ok();
        }
    }
    let name = format!("step-{:07}", state.step);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    crate::adapter::write_adapter(&tmp, model)?;
    if model.train_base {
        crate::adapter::write_base_checkpoint(&tmp.join("base"), model)?;
    }
    let p = &model.params;
    let mut tensors = Vec::new();
    for i in 0..p.len() {
        if model.is_trainable(i) {
            tensors.push((
                format!("param.{}", p.names[i]),
                p.shapes[i].clone(),
                &p.data[i][..],
            ));
            tensors.push((
                format!("adam_m.{}", p.names[i]),
                p.shapes[i].clone(),
                &opt.m[i][..],
            ));
            tensors.push((
                format!("adam_v.{}", p.names[i]),
                p.shapes[i].clone(),
                &opt.v[i][..],
            ));
        }
    }
    write_atomic(
        &tmp.join("state.safetensors"),
        &safetensors_bytes(&tensors, HashMap::new())?,
    )?;
    let text = serde_json::to_string_pretty(state).expect("state serialises");
    write_atomic(&tmp.join("trainer_state.json"), text.as_bytes())?;
    let dir = root.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    sync_dir(&root);
    write_atomic(&root.join("latest"), name.as_bytes())?;
    // Older checkpoints go only after the new one is complete.
    let mut all: Vec<PathBuf> = std::fs::read_dir(&root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    all.sort();
    if all.len() > keep.max(1) {
        for old in &all[..all.len() - keep.max(1)] {
            std::fs::remove_dir_all(old).ok();
        }
    }
    Ok(dir)
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        f.sync_all().ok();
    }
}

/// Restores trainable weights and AdamW moments from a checkpoint; returns
/// its trainer state.
pub fn load_checkpoint(
    dir: &Path,
    model: &mut TrainModel<f32>,
    opt: &mut AdamW,
) -> Result<TrainerState> {
    let text = std::fs::read_to_string(dir.join("trainer_state.json"))
        .with_context(|| format!("cannot read {}/trainer_state.json", dir.display()))?;
    let state: TrainerState = serde_json::from_str(&text)
        .with_context(|| format!("{}/trainer_state.json is invalid", dir.display()))?;
    let store = crate::checkpoint::TensorStore::open_files(&[dir.join("state.safetensors")])?;
    let trainable = model.trainable_mask();
    let p: &mut Params<f32> = &mut model.params;
    for (i, &t) in trainable.iter().enumerate() {
        if !t {
            continue;
        }
        for (prefix, dst) in [
            ("param", &mut p.data[i]),
            ("adam_m", &mut opt.m[i]),
            ("adam_v", &mut opt.v[i]),
        ] {
            let t = store.get(&format!("{prefix}.{}", p.names[i]))?;
            t.expect_shape(&p.shapes[i])?;
            *dst = t.to_f32();
        }
    }
    opt.t = state.adam_t;
    Ok(state)
}
