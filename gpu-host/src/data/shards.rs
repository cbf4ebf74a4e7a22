//! The prepared data on disk: binary shards of packed sequences and
//! `manifest.json`, and [`Dataset`], which reads them back.
//!
//! Shard layout (little endian): magic `MOELORA1`, `u32` sequence count;
//! per sequence a `u32` document count; per document a `u32` length `L`, a
//! `u8` domain (255: none), `L × u32` tokens, `L × u8` loss flags.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const MANIFEST: &str = "manifest.json";
const MAGIC: &[u8; 8] = b"MOELORA1";

/// One tokenized conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub tokens: Vec<u32>,
    /// Per token: part of an assistant turn (learned).
    pub loss: Vec<bool>,
    pub domain: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    pub shards: Vec<String>,
    pub sequences: usize,
    pub documents: usize,
    pub tokens: usize,
    pub loss_tokens: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub seq_len: usize,
    pub tokenizer: String,
    pub inputs: Vec<String>,
    pub duplicates_removed: usize,
    pub domains: Vec<String>,
    pub train: SplitInfo,
    pub validation: SplitInfo,
}

pub fn write_shard(path: &Path, seqs: &[Vec<Document>]) -> Result<()> {
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&(seqs.len() as u32).to_le_bytes());
    for s in seqs {
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        for d in s {
            b.extend_from_slice(&(d.tokens.len() as u32).to_le_bytes());
            b.push(d.domain);
            for t in &d.tokens {
                b.extend_from_slice(&t.to_le_bytes());
            }
            b.extend(d.loss.iter().map(|&l| u8::from(l)));
        }
    }
    crate::train::checkpoint::write_atomic(path, &b)
}

pub fn read_shard(path: &Path) -> Result<Vec<Vec<Document>>> {
    let b = std::fs::read(path).with_context(|| format!("cannot read shard {}", path.display()))?;
    let mut r = Reader { b: &b, at: 0, path };
    if r.take(8)? != MAGIC {
        bail!("{} is not a data shard (bad magic)", path.display());
    }
    let n = r.u32()? as usize;
    let mut seqs = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let nd = r.u32()? as usize;
        let mut s = Vec::with_capacity(nd.min(1 << 16));
        for _ in 0..nd {
            let len = r.u32()? as usize;
            let domain = r.take(1)?[0];
            let tokens = r
                .take(len * 4)?
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let loss = r.take(len)?.iter().map(|&x| x != 0).collect();
            s.push(Document {
                tokens,
                loss,
                domain,
            });
        }
        seqs.push(s);
    }
    if r.at != b.len() {
        bail!("{} has {} trailing bytes", path.display(), b.len() - r.at);
    }
    Ok(seqs)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.at + n > self.b.len() {
            bail!("{} is truncated", self.path.display());
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// A prepared data directory: the documents of each split, in order.
pub struct Dataset {
    pub manifest: Manifest,
    pub train: Vec<Document>,
    pub validation: Vec<Document>,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Self> {
        let mpath = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&mpath).with_context(|| {
            format!(
                "cannot read {} (run `gpu-host data prepare` first)",
                mpath.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid manifest", mpath.display()))?;
        let load = |info: &SplitInfo| -> Result<Vec<Document>> {
            let mut docs = Vec::new();
            for s in &info.shards {
                if s.contains('/') || s.contains('\\') || s.starts_with('.') {
                    bail!(
                        "{} names a shard outside its directory: `{s}`",
                        mpath.display()
                    );
                }
                for seq in read_shard(&dir.join(s))? {
                    docs.extend(seq);
                }
            }
            Ok(docs)
        };
        let train = load(&manifest.train)?;
        let validation = load(&manifest.validation)?;
        Ok(Self {
            manifest,
            train,
            validation,
        })
    }
}
