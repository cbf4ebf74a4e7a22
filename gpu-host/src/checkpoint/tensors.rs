//! Memory-mapped safetensors files, single or sharded, behind one lookup
//! by tensor name. Every file is checked (length, header, offsets) before
//! any tensor is read, so a truncated file is an error, never a SIGBUS.

use anyhow::{Context, Result, bail};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Element types we can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorDtype {
    F32,
    F16,
    Bf16,
}

impl TensorDtype {
    pub fn size(self) -> usize {
        match self {
            TensorDtype::F32 => 4,
            TensorDtype::F16 | TensorDtype::Bf16 => 2,
        }
    }
}

/// One tensor inside a mapped file.
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub file: &'a Path,
    pub dtype: TensorDtype,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

impl TensorRef<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Fails, naming the file and the tensor, unless the shape is `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            bail!(
                "tensor `{}` in {} has shape {:?}, expected {:?}",
                self.name,
                self.file.display(),
                self.shape,
                expected
            );
        }
        Ok(())
    }

    /// The values widened to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            TensorDtype::F32 => self
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            TensorDtype::Bf16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
            TensorDtype::F16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
        }
    }

    /// The values as bf16 (rounded to nearest even from f32/f16).
    pub fn to_bf16(&self) -> Vec<bf16> {
        match self.dtype {
            TensorDtype::Bf16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            _ => self.to_f32().into_iter().map(bf16::from_f32).collect(),
        }
    }
}

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    /// name -> (dtype, shape, byte range inside `mmap`)
    tensors: HashMap<String, (TensorDtype, Vec<usize>, std::ops::Range<usize>)>,
}

/// All tensors of a checkpoint, possibly spread over shards.
pub struct TensorStore {
    files: Vec<MappedFile>,
    /// tensor name -> index into `files`
    index: BTreeMap<String, usize>,
}

impl TensorStore {
    /// Opens `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`, or failing both every `*.safetensors`
    /// file in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if index_path.exists() {
            shard_files(&index_path)?
        } else if single.exists() {
            vec![single]
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot list checkpoint directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            found.sort();
            if found.is_empty() {
                bail!(
                    "no weights in {}: expected model.safetensors or model.safetensors.index.json",
                    dir.display()
                );
            }
            found
        };
        Self::open_files(&files)
    }

    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut index = BTreeMap::new();
        for path in paths {
            let mapped = map_file(path)?;
            for name in mapped.tensors.keys() {
                if let Some(prev) = index.insert(name.clone(), files.len()) {
                    let prev: &MappedFile = &files[prev];
                    bail!(
                        "tensor `{name}` appears in both {} and {}",
                        prev.path.display(),
                        path.display()
                    );
                }
            }
            files.push(mapped);
        }
        Ok(Self { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The tensor `name`, or an error naming it and the files searched.
    pub fn get(&self, name: &str) -> Result<TensorRef<'_>> {
        let Some(&fi) = self.index.get(name) else {
            let files: Vec<String> = self
                .files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect();
            bail!(
                "tensor `{name}` is missing from the checkpoint (searched {})",
                files.join(", ")
            );
        };
        let file = &self.files[fi];
        let (name, (dtype, shape, range)) = file.tensors.get_key_value(name).expect("indexed");
        Ok(TensorRef {
            name,
            file: &file.path,
            dtype: *dtype,
            shape: shape.clone(),
            bytes: &file.mmap[range.clone()],
        })
    }

    /// The dtype most of the weights are stored in (for `--dtype auto`).
    pub fn dominant_dtype(&self) -> Option<TensorDtype> {
        let mut bytes: HashMap<TensorDtype, usize> = HashMap::new();
        for f in &self.files {
            for (dtype, _, range) in f.tensors.values() {
                *bytes.entry(*dtype).or_default() += range.len();
            }
        }
        bytes.into_iter().max_by_key(|(_, n)| *n).map(|(d, _)| d)
    }
}

fn shard_files(index_path: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index_path)
        .with_context(|| format!("cannot read {}", index_path.display()))?;
    let idx: Index = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid safetensors index (needs `weight_map`)",
            index_path.display()
        )
    })?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<&String> = idx.weight_map.values().collect();
    shards.sort();
    shards.dedup();
    let mut out = Vec::new();
    for shard in shards {
        if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
            bail!(
                "{} names a shard outside its directory: `{shard}`",
                index_path.display()
            );
        }
        let p = dir.join(shard);
        if !p.exists() {
            bail!(
                "shard {} listed in {} does not exist",
                p.display(),
                index_path.display()
            );
        }
        out.push(p);
    }
    Ok(out)
}

fn map_file(path: &Path) -> Result<MappedFile> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    if len < 8 {
        bail!(
            "{} is truncated: {len} bytes, too short for a safetensors header",
            path.display()
        );
    }
    // SAFETY: the file is opened read-only and its length was checked; if
    // another process truncates it while mapped, reads could fault, as with
    // any mapped file — checkpoints are not modified while being served.
    let mmap = unsafe { Mmap::map(&file) }
        .with_context(|| format!("cannot memory-map {}", path.display()))?;
    let header_len = u64::from_le_bytes(mmap[..8].try_into().expect("8 bytes"));
    if header_len > len - 8 {
        bail!(
            "{} is truncated or not safetensors: header claims {header_len} bytes but the file has {len}",
            path.display()
        );
    }
    let st = SafeTensors::deserialize(&mmap).map_err(|e| {
        anyhow::anyhow!(
            "{} is truncated or corrupt (safetensors: {e})",
            path.display()
        )
    })?;
    let base = 8 + header_len as usize;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            Dtype::F32 => TensorDtype::F32,
            Dtype::F16 => TensorDtype::F16,
            Dtype::BF16 => TensorDtype::Bf16,
            other => bail!(
                "tensor `{name}` in {} has unsupported dtype {other:?} (supported: F32, F16, BF16)",
                path.display()
            ),
        };
        let data = view.data();
        // The view borrows `mmap`; recover its offset to keep a range.
        let start = data.as_ptr() as usize - mmap.as_ptr() as usize;
        debug_assert!(start >= base);
        tensors.insert(
            name.clone(),
            (dtype, view.shape().to_vec(), start..start + data.len()),
        );
    }
    drop(st);
    Ok(MappedFile {
        path: path.to_path_buf(),
        mmap,
        tensors,
    })
}
