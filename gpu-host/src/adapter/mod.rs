//! The MoE-LoRA adapter on disk: `adapter_model.safetensors` with PEFT's
//! tensor names plus the router and expert tensors, and
//! `adapter_config.json` with PEFT's keys plus a `moe` section.
//!
//! Tensor names (prefix `base_model.model.` as PEFT writes them):
//! - `…model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight` (plain LoRA)
//! - `…model.layers.{i}.mlp.router.weight` `[E, hidden]`
//! - `…model.layers.{i}.mlp.experts.{e}.{gate,up,down}_proj.lora_{A,B}.weight`
//!
//! `lora_A` is `[r, in]`, `lora_B` is `[out, r]`, and the update is
//! `(lora_alpha / r) · B · A`. [`load_adapter`] returns the tensors in a
//! plain per-layer struct for the inference engine; [`export_expert`]
//! writes one expert (with the attention LoRA) as an ordinary PEFT adapter.

use crate::checkpoint::{ModelConfig, TensorStore};
use crate::train::checkpoint::{safetensors_bytes, write_atomic};
use crate::train::model::{
    ATTN_TARGETS, EXPERT_TARGETS, MoeConfig, MoeMlp, TrainModel, moe_mlp_forward,
};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
const PEFT_PREFIX: &str = "base_model.model.";

/// The `moe` section of `adapter_config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoeSection {
    #[serde(rename = "type")]
    pub kind: String,
    pub num_experts: usize,
    pub top_k: usize,
    pub expert_names: Vec<String>,
    pub expert_target_modules: Vec<String>,
    pub attention_target_modules: Vec<String>,
    pub router_aux_loss_coef: f64,
    pub router_z_loss_coef: f64,
    pub domain_routing_loss_coef: f64,
}

/// The parts of `adapter_config.json` we read back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub moe: Option<MoeSection>,
}

impl AdapterConfig {
    pub fn scale(&self) -> f32 {
        (self.lora_alpha / self.r as f64) as f32
    }
}

fn write_config(
    dir: &Path,
    moe: &MoeConfig,
    base: &str,
    moe_section: bool,
    experts_as_plain: bool,
) -> Result<()> {
    let mut targets: Vec<String> = moe.attn_targets.clone();
    if experts_as_plain || moe_section {
        targets.extend(EXPERT_TARGETS.iter().map(|s| s.to_string()));
    }
    let mut cfg = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": moe.rank,
        "lora_alpha": moe.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": targets,
        "base_model_name_or_path": base,
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "revision": null,
    });
    if moe_section {
        cfg["moe"] = serde_json::to_value(MoeSection {
            kind: "mixlora".into(),
            num_experts: moe.num_experts,
            top_k: moe.top_k,
            expert_names: moe.expert_names.clone(),
            expert_target_modules: EXPERT_TARGETS.iter().map(|s| s.to_string()).collect(),
            attention_target_modules: moe.attn_targets.clone(),
            router_aux_loss_coef: moe.aux_coef,
            router_z_loss_coef: moe.z_coef,
            domain_routing_loss_coef: moe.domain_coef,
        })?;
    }
    let text = serde_json::to_string_pretty(&cfg).expect("json");
    write_atomic(&dir.join(ADAPTER_CONFIG), text.as_bytes())
}

/// Writes the model's adapter (all non-base parameters) into `dir`.
pub fn write_adapter(dir: &Path, model: &TrainModel<f32>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let p = &model.params;
    let tensors: Vec<_> = (0..p.len())
        .filter(|&i| !p.base[i])
        .map(|i| {
            (
                format!("{PEFT_PREFIX}{}", p.names[i]),
                p.shapes[i].clone(),
                &p.data[i][..],
            )
        })
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_atomic(
        &dir.join(ADAPTER_WEIGHTS),
        &safetensors_bytes(&tensors, meta)?,
    )?;
    let base = model
        .base_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    write_config(dir, &model.moe, &base, true, false)
}

/// Writes the (trained) base weights as a Hugging Face checkpoint, with the
/// config and tokenizer files of the checkpoint the model was loaded from.
pub fn write_base_checkpoint(dir: &Path, model: &TrainModel<f32>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let Some(src) = &model.base_dir else {
        bail!("internal: the model has no source checkpoint directory")
    };
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        let from = src.join(f);
        if from.exists() {
            let bytes =
                std::fs::read(&from).with_context(|| format!("cannot read {}", from.display()))?;
            write_atomic(&dir.join(f), &bytes)?;
        }
    }
    let p = &model.params;
    let tensors: Vec<_> = (0..p.len())
        .filter(|&i| p.base[i])
        .map(|i| (p.names[i].clone(), p.shapes[i].clone(), &p.data[i][..]))
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_atomic(
        &dir.join("model.safetensors"),
        &safetensors_bytes(&tensors, meta)?,
    )
}

pub fn read_config(dir: &Path) -> Result<AdapterConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let cfg: AdapterConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid adapter config", path.display()))?;
    if cfg.peft_type != "LORA" {
        bail!(
            "{}: `peft_type` is `{}`, expected LORA",
            path.display(),
            cfg.peft_type
        );
    }
    if cfg.r == 0 {
        bail!("{}: `r` must be positive", path.display());
    }
    Ok(cfg)
}

/// The MoE config an adapter directory describes.
pub fn moe_config(cfg: &AdapterConfig) -> Result<MoeConfig> {
    let Some(m) = &cfg.moe else {
        bail!("adapter_config.json has no `moe` section: not a MoE-LoRA adapter")
    };
    Ok(MoeConfig {
        rank: cfg.r,
        alpha: cfg.lora_alpha,
        num_experts: m.num_experts,
        top_k: m.top_k,
        expert_names: m.expert_names.clone(),
        attn_targets: m.attention_target_modules.clone(),
        aux_coef: m.router_aux_loss_coef,
        z_coef: m.router_z_loss_coef,
        domain_coef: m.domain_routing_loss_coef,
    })
}

/// One LoRA pair: `delta = scale · B · A`.
#[derive(Clone, Debug)]
pub struct LoraPair {
    /// `[rank, in_dim]`
    pub a: Vec<f32>,
    /// `[out_dim, rank]`
    pub b: Vec<f32>,
    pub in_dim: usize,
    pub out_dim: usize,
}

#[derive(Clone, Debug)]
pub struct ExpertLora {
    pub gate_proj: LoraPair,
    pub up_proj: LoraPair,
    pub down_proj: LoraPair,
}

#[derive(Clone, Debug)]
pub struct AdapterLayer {
    /// `[num_experts, hidden]`, no bias.
    pub router: Vec<f32>,
    pub experts: Vec<ExpertLora>,
    /// q_proj, k_proj, v_proj, o_proj (None where not targeted).
    pub attn: [Option<LoraPair>; 4],
}

/// A loaded MoE-LoRA adapter, for the inference engine: per token and
/// layer, route with `softmax(router · x)`, keep the top-k renormalised,
/// and add each chosen expert's LoRA to gate/up/down (see
/// [`crate::train::model`] for the exact forward).
#[derive(Clone, Debug)]
pub struct MoeLoraAdapter {
    pub config: AdapterConfig,
    pub moe: MoeConfig,
    pub rank: usize,
    pub scale: f32,
    pub layers: Vec<AdapterLayer>,
}

/// Loads and shape-checks an adapter directory against the base model's config.
pub fn load_adapter(dir: &Path, model: &ModelConfig) -> Result<MoeLoraAdapter> {
    let config = read_config(dir)?;
    let moe = moe_config(&config)?;
    moe.validate()?;
    let store = TensorStore::open_files(&[dir.join(ADAPTER_WEIGHTS)])?;
    let (c, q, kv, f, r) = (
        model.hidden_size,
        model.q_dim(),
        model.kv_dim(),
        model.intermediate_size,
        config.r,
    );
    let pair = |prefix: &str, in_dim: usize, out_dim: usize| -> Result<LoraPair> {
        let a = store.get(&format!("{PEFT_PREFIX}{prefix}.lora_A.weight"))?;
        a.expect_shape(&[r, in_dim])?;
        let b = store.get(&format!("{PEFT_PREFIX}{prefix}.lora_B.weight"))?;
        b.expect_shape(&[out_dim, r])?;
        Ok(LoraPair {
            a: a.to_f32(),
            b: b.to_f32(),
            in_dim,
            out_dim,
        })
    };
    let mut layers = Vec::new();
    for i in 0..model.num_layers {
        let pre = format!("model.layers.{i}");
        let router = store.get(&format!("{PEFT_PREFIX}{pre}.mlp.router.weight"))?;
        router.expect_shape(&[moe.num_experts, c])?;
        let mut attn: [Option<LoraPair>; 4] = Default::default();
        for (j, t) in ATTN_TARGETS.iter().enumerate() {
            if moe.attn_targets.iter().any(|x| x == t) {
                let (i_d, o_d) = match j {
                    0 => (c, q),
                    1 | 2 => (c, kv),
                    _ => (q, c),
                };
                attn[j] = Some(pair(&format!("{pre}.self_attn.{t}"), i_d, o_d)?);
            }
        }
        let experts = (0..moe.num_experts)
            .map(|e| {
                let ep = format!("{pre}.mlp.experts.{e}");
                Ok(ExpertLora {
                    gate_proj: pair(&format!("{ep}.gate_proj"), c, f)?,
                    up_proj: pair(&format!("{ep}.up_proj"), c, f)?,
                    down_proj: pair(&format!("{ep}.down_proj"), f, c)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        layers.push(AdapterLayer {
            router: router.to_f32(),
            experts,
            attn,
        });
    }
    Ok(MoeLoraAdapter {
        scale: config.scale(),
        rank: r,
        config,
        moe,
        layers,
    })
}

/// The MoE-LoRA MLP of one layer at inference, on the CPU: `x [n, hidden]`
/// are the post-attention-normed hidden states, `gate_proj`, `up_proj`,
/// `down_proj` the frozen weights (`nn.Linear` layout, f32); returns the
/// MLP output `[n, hidden]` (add it to the residual). The engine's backends
/// are tested against this.
pub fn moe_lora_mlp_forward(
    adapter: &MoeLoraAdapter,
    layer: usize,
    x: &[f32],
    n: usize,
    gate_proj: &[f32],
    up_proj: &[f32],
    down_proj: &[f32],
) -> Result<Vec<f32>> {
    let Some(l) = adapter.layers.get(layer) else {
        bail!(
            "the adapter has {} layers, not {}",
            adapter.layers.len(),
            layer + 1
        );
    };
    let Some(e0) = l.experts.first() else {
        bail!("the adapter has no experts")
    };
    let (c, f) = (e0.gate_proj.in_dim, e0.gate_proj.out_dim);
    if x.len() != n * c
        || gate_proj.len() != f * c
        || up_proj.len() != f * c
        || down_proj.len() != c * f
    {
        bail!("moe_lora_mlp_forward: sizes do not match hidden {c}, intermediate {f}, {n} rows");
    }
    let mlp = MoeMlp {
        gate_proj,
        up_proj,
        down_proj,
        router: &l.router,
        experts: l
            .experts
            .iter()
            .map(|e| [&e.gate_proj, &e.up_proj, &e.down_proj].map(|p| (&p.a[..], &p.b[..])))
            .collect(),
        hidden: c,
        intermediate: f,
        rank: adapter.rank,
        top_k: adapter.moe.top_k,
        scale: adapter.scale,
    };
    Ok(moe_mlp_forward(&mlp, x, n).1)
}

/// Copies an adapter's tensors into a model built with the same MoE config.
pub fn apply_adapter(model: &mut TrainModel<f32>, dir: &Path) -> Result<()> {
    let store = TensorStore::open_files(&[dir.join(ADAPTER_WEIGHTS)])?;
    let p = &mut model.params;
    for i in 0..p.len() {
        if p.base[i] {
            continue;
        }
        let t = store.get(&format!("{PEFT_PREFIX}{}", p.names[i]))?;
        t.expect_shape(&p.shapes[i])?;
        p.data[i] = t.to_f32();
    }
    Ok(())
}

/// Writes expert `expert` (a name or an index) of the MoE-LoRA adapter in
/// `adapter` as a plain PEFT LoRA adapter in `out`: its gate/up/down LoRA
/// become `mlp.{gate,up,down}_proj`, and the attention LoRA is kept. It is
/// the MoE model with every token routed to that expert alone.
pub fn export_expert(adapter: &Path, expert: &str, out: &Path) -> Result<()> {
    let config = read_config(adapter)?;
    let moe = moe_config(&config)?;
    let e = match moe.expert_names.iter().position(|n| n == expert) {
        Some(e) => e,
        None => match expert.parse::<usize>() {
            Ok(e) if e < moe.num_experts => e,
            _ => bail!(
                "no expert `{expert}` in {} (experts: {})",
                adapter.display(),
                moe.expert_names.join(", ")
            ),
        },
    };
    let store = TensorStore::open_files(&[adapter.join(ADAPTER_WEIGHTS)])?;
    let marker = format!(".mlp.experts.{e}.");
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for name in store.names() {
        let keep = if name.contains(".self_attn.") {
            Some(name.to_string())
        } else {
            name.contains(&marker)
                .then(|| name.replace(&marker, ".mlp."))
        };
        if let Some(new_name) = keep {
            let t = store.get(name)?;
            tensors.push((new_name, t.shape.clone(), t.to_f32()));
        }
    }
    if tensors.is_empty() {
        bail!(
            "{} holds no tensors for expert `{expert}`",
            adapter.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let refs: Vec<_> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), &v[..]))
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_atomic(&out.join(ADAPTER_WEIGHTS), &safetensors_bytes(&refs, meta)?)?;
    write_config(
        out,
        &moe,
        config.base_model_name_or_path.as_deref().unwrap_or(""),
        false,
        true,
    )
}

/// Logits `[tokens, vocab]` of the base model in `model` with the adapter
/// in `adapter` applied: a MoE-LoRA adapter as trained, or a plain PEFT
/// LoRA adapter (e.g. an exported expert) as a single expert every token
/// is routed to. For comparisons with PEFT.
pub fn adapter_logits(model: &Path, adapter: &Path, tokens: &[u32]) -> Result<Vec<f32>> {
    let config = read_config(adapter)?;
    let batch =
        crate::train::model::Batch::from_documents(&[(tokens, &vec![false; tokens.len()], 255)]);
    if config.moe.is_some() {
        let mut m = TrainModel::<f32>::from_checkpoint(model, moe_config(&config)?, 0)?;
        apply_adapter(&mut m, adapter)?;
        return m.logits(&batch);
    }
    let moe = MoeConfig {
        rank: config.r,
        alpha: config.lora_alpha,
        num_experts: 1,
        top_k: 1,
        expert_names: vec!["lora".into()],
        attn_targets: ATTN_TARGETS
            .iter()
            .filter(|t| config.target_modules.iter().any(|x| x == *t))
            .map(|s| s.to_string())
            .collect(),
        aux_coef: 0.0,
        z_coef: 0.0,
        domain_coef: 0.0,
    };
    let mut m = TrainModel::<f32>::from_checkpoint(model, moe, 0)?;
    let store = TensorStore::open_files(&[adapter.join(ADAPTER_WEIGHTS)])?;
    let p = &mut m.params;
    for i in 0..p.len() {
        if p.base[i] || p.names[i].ends_with("router.weight") {
            continue;
        }
        let name = format!(
            "{PEFT_PREFIX}{}",
            p.names[i].replace(".mlp.experts.0.", ".mlp.")
        );
        if store.contains(&name) {
            let t = store.get(&name)?;
            t.expect_shape(&p.shapes[i])?;
            p.data[i] = t.to_f32();
        } else if name.ends_with("lora_B.weight") {
            // Not targeted: a zero update.
            p.data[i].fill(0.0);
        }
    }
    m.logits(&batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::train::model::{Batch, tests::tiny_checkpoint};

    #[test]
    fn adapter_round_trips_and_an_exported_expert_equals_its_merged_lora() {
        let ck = tiny_checkpoint();
        let mut model =
            TrainModel::<f32>::from_checkpoint(ck.path(), MoeConfig::default(), 3).unwrap();
        let mut rng = Rng::new(4);
        for i in 0..model.params.len() {
            if !model.params.base[i] {
                model.params.data[i]
                    .iter_mut()
                    .for_each(|x| *x = 0.05 * rng.next_normal() as f32);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        write_adapter(dir.path(), &model).unwrap();
        let loaded = load_adapter(dir.path(), &model.config).unwrap();
        assert_eq!(loaded.layers.len(), model.config.num_layers);
        assert_eq!(loaded.scale, 2.0);
        let mut fresh =
            TrainModel::<f32>::from_checkpoint(ck.path(), MoeConfig::default(), 99).unwrap();
        apply_adapter(&mut fresh, dir.path()).unwrap();
        assert_eq!(fresh.params.data, model.params.data);

        // Export expert 2 as plain LoRA; load it as a one-expert MoE (every
        // token routed to it with weight 1) and compare with the base model
        // whose weights have the LoRA merged in.
        let out = dir.path().join("expert");
        export_expert(dir.path(), "bias_detection", &out).unwrap();
        let cfg = read_config(&out).unwrap();
        assert!(cfg.moe.is_none() && cfg.target_modules.contains(&"down_proj".to_string()));
        let one = MoeConfig {
            num_experts: 1,
            top_k: 1,
            expert_names: vec!["x".into()],
            ..MoeConfig::default()
        };
        let mut single = TrainModel::<f32>::from_checkpoint(ck.path(), one, 0).unwrap();
        let store = TensorStore::open_files(&[out.join(ADAPTER_WEIGHTS)]).unwrap();
        let mut merged = TrainModel::<f32>::from_checkpoint(
            ck.path(),
            MoeConfig {
                attn_targets: vec![],
                ..MoeConfig::default()
            },
            0,
        )
        .unwrap();
        for i in 0..single.params.len() {
            let name = single.params.names[i].clone();
            if single.params.base[i] || name.ends_with("router.weight") {
                continue;
            }
            let peft = format!("{PEFT_PREFIX}{}", name.replace(".mlp.experts.0.", ".mlp."));
            single.params.data[i] = store.get(&peft).unwrap().to_f32();
            if name.ends_with("lora_A.weight") {
                let a = store.get(&peft).unwrap();
                let b = store.get(&peft.replace("lora_A", "lora_B")).unwrap();
                let (r, inp) = (a.shape[0], a.shape[1]);
                let outd = b.shape[0];
                let (a, b) = (a.to_f32(), b.to_f32());
                let base_name = name
                    .replace(".mlp.experts.0.", ".mlp.")
                    .replace(".lora_A", "");
                let bi = merged.params.index(&base_name).unwrap();
                for o in 0..outd {
                    for k in 0..inp {
                        let d: f32 = (0..r).map(|j| b[o * r + j] * a[j * inp + k]).sum();
                        merged.params.data[bi][o * inp + k] += 2.0 * d;
                    }
                }
            }
        }
        let tokens: Vec<u32> = (0..24).map(|i| (i * 53 % 500) as u32).collect();
        let batch = Batch::from_documents(&[(&tokens, &[true; 24], 255)]);
        let (a, b) = (
            single.logits(&batch).unwrap(),
            merged.logits(&batch).unwrap(),
        );
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "max |diff| {diff}");
        let base = TrainModel::<f32>::from_checkpoint(ck.path(), MoeConfig::default(), 0)
            .unwrap()
            .logits(&batch)
            .unwrap();
        let moved = a
            .iter()
            .zip(&base)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(moved > 1e-2, "the adapter changes the logits ({moved})");
        assert!(export_expert(dir.path(), "astrology", &out).is_err());
    }

    /// The MixLoRA MLP against a scalar oracle written from its definition:
    /// `Σ_{e ∈ top-2} w_e · (W_d + s·B_d·A_d)(silu((W_g + s·B_g·A_g)x) ⊙ (W_u + s·B_u·A_u)x)`.
    #[test]
    fn inference_mlp_matches_a_scalar_oracle() {
        let (n, c, f, r, e) = (5usize, 8usize, 12usize, 2usize, 4usize);
        let mut rng = Rng::new(21);
        let mut rand = |len: usize| {
            (0..len)
                .map(|_| rng.next_normal() as f32)
                .collect::<Vec<f32>>()
        };
        let pair = |a: Vec<f32>, b: Vec<f32>, i: usize, o: usize| LoraPair {
            a,
            b,
            in_dim: i,
            out_dim: o,
        };
        let layer = AdapterLayer {
            router: rand(e * c),
            experts: (0..e)
                .map(|_| ExpertLora {
                    gate_proj: pair(rand(r * c), rand(f * r), c, f),
                    up_proj: pair(rand(r * c), rand(f * r), c, f),
                    down_proj: pair(rand(r * f), rand(c * r), f, c),
                })
                .collect(),
            attn: Default::default(),
        };
        let moe = MoeConfig {
            rank: r,
            alpha: 1.0,
            ..MoeConfig::default()
        };
        let config = AdapterConfig {
            peft_type: "LORA".into(),
            r,
            lora_alpha: 1.0,
            target_modules: vec![],
            base_model_name_or_path: None,
            moe: None,
        };
        let adapter = MoeLoraAdapter {
            config,
            moe,
            rank: r,
            scale: 0.5,
            layers: vec![layer],
        };
        let (x, wg, wu, wd) = (rand(n * c), rand(f * c), rand(f * c), rand(c * f));
        let got = moe_lora_mlp_forward(&adapter, 0, &x, n, &wg, &wu, &wd).unwrap();
        let l = &adapter.layers[0];
        // y = (W + s·B·A) v, in f64.
        let lin = |w: &[f32], p: &LoraPair, v: &[f64]| -> Vec<f64> {
            let (i, o) = (p.in_dim, p.out_dim);
            (0..o)
                .map(|row| {
                    let mut y: f64 = (0..i).map(|k| w[row * i + k] as f64 * v[k]).sum();
                    for j in 0..r {
                        let av: f64 = (0..i).map(|k| p.a[j * i + k] as f64 * v[k]).sum();
                        y += 0.5 * p.b[row * r + j] as f64 * av;
                    }
                    y
                })
                .collect()
        };
        for t in 0..n {
            let xv: Vec<f64> = x[t * c..(t + 1) * c].iter().map(|v| *v as f64).collect();
            let logits: Vec<f64> = (0..e)
                .map(|j| (0..c).map(|k| l.router[j * c + k] as f64 * xv[k]).sum())
                .collect();
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|a, b| logits[*b].partial_cmp(&logits[*a]).unwrap());
            let top = &order[..2];
            let z: f64 = top.iter().map(|&j| logits[j].exp()).sum();
            let mut want = vec![0.0f64; c];
            for &j in top {
                let w = logits[j].exp() / z;
                let ex = &l.experts[j];
                let g = lin(&wg, &ex.gate_proj, &xv);
                let u = lin(&wu, &ex.up_proj, &xv);
                let h: Vec<f64> = g
                    .iter()
                    .zip(&u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                for (o, y) in want.iter_mut().zip(lin(&wd, &ex.down_proj, &h)) {
                    *o += w * y;
                }
            }
            for (a, b) in got[t * c..(t + 1) * c].iter().zip(&want) {
                assert!(
                    (*a as f64 - b).abs() < 1e-3 * b.abs().max(1.0),
                    "row {t}: {a} vs {b}"
                );
            }
        }
    }
}
