//! Where training steps run: the CPU reference ([`TrainModel`] with host
//! gradients and [`AdamW`]) or the GPU ([`CudaTrainer`](crate::train::cuda::CudaTrainer)),
//! chosen by `--device` (`auto`: the first GPU when one is usable). The
//! run loop, the planner's calibration and evaluation talk to this, so
//! they read the same on both. The host [`TrainModel`] and [`AdamW`] stay
//! the source of truth for checkpoints: a GPU engine copies its adapter
//! and moments back with [`StepEngine::sync_to_host`] before each save.

use crate::train::model::{Batch, Params, StepStats, TrainModel};
use crate::train::optim::{AdamW, AdamWConfig, clip_grad_norm};
use anyhow::{Result, bail};

/// A parsed `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainDevice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl TrainDevice {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" | "" => TrainDevice::Auto,
            "cpu" => TrainDevice::Cpu,
            "cuda" => TrainDevice::Cuda(0),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => TrainDevice::Cuda(n),
                _ => bail!("`device`: `{s}` is not a device; use auto, cpu, cuda or cuda:N"),
            },
        })
    }
}

/// The precision of the frozen base on the GPU (`--dtype`; the CPU
/// reference is always f32).
pub fn parse_dtype(s: &str) -> Result<crate::backend::WeightDtype> {
    use crate::backend::WeightDtype;
    Ok(match s {
        "bf16" => WeightDtype::Bf16,
        "f32" => WeightDtype::F32,
        _ => bail!("`dtype`: `{s}` is not a weight precision; use bf16 or f32"),
    })
}

pub enum StepEngine {
    Cpu {
        grads: Params<f32>,
    },
    #[cfg(feature = "cuda")]
    Cuda(Box<crate::train::cuda::CudaTrainer>),
}

impl StepEngine {
    /// Opens the engine for `device` with `model`'s current parameters.
    pub fn open(device: &str, dtype: &str, model: &TrainModel<f32>) -> Result<Self> {
        let dtype = parse_dtype(dtype)?;
        let device = match TrainDevice::parse(device)? {
            TrainDevice::Auto => {
                #[cfg(feature = "cuda")]
                match crate::backend::cuda::cuda_available() {
                    Ok(()) if !model.train_base => {
                        tracing::info!("device auto: a GPU is usable, training on cuda:0");
                        TrainDevice::Cuda(0)
                    }
                    Ok(()) => {
                        tracing::info!("device auto: full fine-tuning runs on the CPU backend");
                        TrainDevice::Cpu
                    }
                    Err(why) => {
                        tracing::info!("device auto: no usable GPU ({why}); training on the CPU");
                        TrainDevice::Cpu
                    }
                }
                #[cfg(not(feature = "cuda"))]
                TrainDevice::Cpu
            }
            d => d,
        };
        match device {
            TrainDevice::Cpu | TrainDevice::Auto => Ok(StepEngine::Cpu {
                grads: model.params.zeros_like(),
            }),
            #[cfg(feature = "cuda")]
            TrainDevice::Cuda(n) => {
                if let Err(why) = crate::backend::cuda::cuda_available() {
                    bail!("device cuda:{n}: {why}");
                }
                let t = crate::train::cuda::CudaTrainer::new(model, n, dtype)?;
                tracing::info!(device = %t.describe(), ?dtype, "training on the GPU");
                Ok(StepEngine::Cuda(Box::new(t)))
            }
            #[cfg(not(feature = "cuda"))]
            TrainDevice::Cuda(n) => {
                let _ = dtype;
                bail!("device cuda:{n}: this gpu-host was built without the `cuda` feature")
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            StepEngine::Cpu { .. } => "cpu".into(),
            #[cfg(feature = "cuda")]
            StepEngine::Cuda(t) => t.describe(),
        }
    }

    /// Per-phase timing on the GPU engine (`bench train --profile`).
    pub fn set_profiling(&mut self, on: bool) {
        match self {
            StepEngine::Cpu { .. } => {
                let _ = on;
            }
            #[cfg(feature = "cuda")]
            StepEngine::Cuda(t) => t.set_profiling(on),
        }
    }

    /// Seconds per phase since profiling was turned on (empty on the CPU).
    pub fn phase_times(&self) -> Vec<(&'static str, f64)> {
        match self {
            StepEngine::Cpu { .. } => Vec::new(),
            #[cfg(feature = "cuda")]
            StepEngine::Cuda(t) => t.phase_times(),
        }
    }

    pub fn zero_grads(&mut self) -> Result<()> {
        match self {
            StepEngine::Cpu { grads } => {
                grads.fill_zero();
                Ok(())
            }
            #[cfg(feature = "cuda")]
            StepEngine::Cuda(t) => t.zero_grads(),
        }
    }

    /// Forward and backward of one micro-batch; gradients accumulate.
    pub fn forward_backward(
        &mut self,
        model: &TrainModel<f32>,
        batch: &Batch,
        grad_scale: f64,
    ) -> Result<StepStats> {
        match self {
            StepEngine::Cpu { grads } => model.forward_backward(batch, grads, grad_scale),
            #[cfg(feature = "cuda")]
            StepEngine::Cuda(t) => t.forward_backward(batch, grad_scale),
        }
    }

    /// The objective without gradients (evaluation).
    pub fn forward(&mut self, model: &TrainModel<f32>, batch: &Batch) -> Result<StepStats> {
        match self {
            StepEngine::Cpu { .. } => model.forward(batch),
            #[cfg(feature = "cuda")]
            StepEngine::Cuda(t) => t.forward(batch),
        }
    }

    /// Clipping (`clip ≤ 0`: none) and one AdamW update at `lr`. Returns
    /// the gradient norm before clipping; `opt.t` counts the update.
    pub fn step(
        &mut self,
        model: &mut TrainModel<f32>,
        opt: &mut AdamW,
        clip: f64,
        lr: f64,
    ) -> Result<f64> {
        match self {
            StepEngine::Cpu { grads } => {
                let norm = clip_grad_norm(grads, &model.trainable_mask(), clip);
                opt.step(&mut model.params, grads, lr);
                Ok(norm)
            }
            #[cfg(feature = "cuda")]
            StepEngine::Cuda(t) => {
                let cfg: AdamWConfig = opt.config.clone();
                let norm = t.clip_and_step(clip, lr, &cfg)?;
                opt.t = t.t;
                Ok(norm)
            }
        }
    }

    /// Brings the host model's adapter and the optimiser's moments up to
    /// date (before a checkpoint or an adapter export).
    pub fn sync_to_host(&mut self, model: &mut TrainModel<f32>, opt: &mut AdamW) -> Result<()> {
        match self {
            StepEngine::Cpu { .. } => {
                let _ = (model, opt);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            StepEngine::Cuda(t) => t.download(&mut model.params, Some(opt)),
        }
    }

    /// Loads the optimiser's state (a resumed run) into the engine.
    pub fn load_optimizer(&mut self, model: &TrainModel<f32>, opt: &AdamW) -> Result<()> {
        match self {
            StepEngine::Cpu { .. } => {
                let _ = (model, opt);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            StepEngine::Cuda(t) => t.upload(&model.params, opt),
        }
    }
}
