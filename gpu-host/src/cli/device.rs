//! `--device` and `--dtype`: which backend a command runs on, and loading a
//! checkpoint onto it. `auto` takes the first GPU when one is usable and
//! the CPU otherwise, and says which in the log.

use anyhow::{Result, bail};
use clap::ValueEnum;
use gpu_host::backend::WeightDtype;
use gpu_host::backend::cpu::CpuBackend;
#[cfg(feature = "cuda")]
use gpu_host::backend::cuda::CudaBackend;
use gpu_host::model::{Llama, LoadOptions};
use std::path::Path;
use std::str::FromStr;

/// Where and how a command loads its model.
#[derive(clap::Args, Clone, Copy)]
pub struct DeviceArgs {
    /// auto, cpu, cuda or cuda:N (auto: the GPU when one is usable).
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Weight precision in memory (auto keeps the checkpoint's).
    #[arg(long, value_enum, default_value = "auto")]
    pub dtype: DtypeChoice,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DtypeChoice {
    /// The checkpoint's own (bf16 stays bf16; f16 and f32 become f32).
    Auto,
    F32,
    Bf16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(format!(
                    "`{s}` is not a device: use auto, cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

/// A model on whichever backend was chosen.
// One per process: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum AnyModel {
    Cpu(Llama<CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(Llama<CudaBackend>),
}

/// Runs `$body` with `$model` bound to the concrete `Llama<B>`.
macro_rules! with_model {
    ($any:expr, |$model:ident| $body:expr) => {
        match $any {
            $crate::cli::device::AnyModel::Cpu($model) => $body,
            #[cfg(feature = "cuda")]
            $crate::cli::device::AnyModel::Cuda($model) => $body,
        }
    };
}
pub(crate) use with_model;

fn resolve(device: Device) -> Result<Device> {
    match device {
        Device::Auto => {
            #[cfg(feature = "cuda")]
            match gpu_host::backend::cuda::cuda_available() {
                Ok(()) => {
                    tracing::info!("--device auto: a GPU is usable, using cuda:0");
                    return Ok(Device::Cuda(0));
                }
                Err(why) => {
                    tracing::info!("--device auto: no usable GPU ({why}); using the CPU backend")
                }
            }
            Ok(Device::Cpu)
        }
        Device::Cuda(n) => {
            #[cfg(feature = "cuda")]
            if let Err(why) = gpu_host::backend::cuda::cuda_available() {
                bail!("--device cuda:{n}: {why}");
            }
            #[cfg(not(feature = "cuda"))]
            bail!("--device cuda:{n}: this gpu-host was built without the `cuda` feature");
            #[cfg(feature = "cuda")]
            Ok(Device::Cuda(n))
        }
        Device::Cpu => Ok(Device::Cpu),
    }
}

pub fn load_model(dir: &Path, d: DeviceArgs, max_seq: Option<usize>) -> Result<AnyModel> {
    let DeviceArgs {
        device,
        threads,
        dtype,
    } = d;
    let options = LoadOptions {
        dtype: match dtype {
            DtypeChoice::Auto => None,
            DtypeChoice::F32 => Some(WeightDtype::F32),
            DtypeChoice::Bf16 => Some(WeightDtype::Bf16),
        },
        max_seq,
    };
    Ok(match resolve(device)? {
        Device::Cpu | Device::Auto => {
            AnyModel::Cpu(Llama::load(dir, CpuBackend::new(threads)?, &options)?)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => AnyModel::Cuda(Llama::load(dir, CudaBackend::new(n)?, &options)?),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => unreachable!("resolve refuses cuda without the feature"),
    })
}
