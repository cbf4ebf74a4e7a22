//! A Hugging Face checkpoint directory: `config.json`, the safetensors
//! weights, and `generation_config.json`. The tokenizer files are read by
//! [`crate::tokenizer`].

pub mod config;
pub mod generation_config;
pub mod tensors;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use generation_config::GenerationDefaults;
pub use tensors::{TensorDtype, TensorRef, TensorStore};

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// An opened checkpoint: its parsed config and its mapped tensors.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub generation: GenerationDefaults,
    pub tensors: TensorStore,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("model directory {} does not exist", dir.display());
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let generation =
            GenerationDefaults::from_file_if_present(&dir.join("generation_config.json"))?;
        let tensors = TensorStore::open_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            generation,
            tensors,
        })
    }
}
