//! `data prepare`: records → validated, de-duplicated conversations → a
//! deterministic train/validation split → chat-templated token documents
//! whose loss mask covers assistant tokens only → sequences packed up to
//! `seq_len` tokens (documents stay whole; attention never crosses them) →
//! binary shards plus `manifest.json`.

use super::records::{Conversation, read_jsonl};
use super::shards::{Document, MANIFEST, Manifest, SplitInfo, write_shard};
use crate::tokenizer::{ChatMessage, TextTokenizer};
use anyhow::{Context, Result, bail};
use std::collections::HashSet;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Checkpoint directory whose tokenizer and chat template are used.
    pub model: PathBuf,
    pub seq_len: usize,
    /// Fraction of conversations held out for validation.
    pub val_fraction: f64,
    /// Sequences per shard file.
    pub shard_sequences: usize,
}

/// What `prepare` did, for the command's summary.
#[derive(Debug)]
pub struct PrepareReport {
    pub records: usize,
    pub duplicates: usize,
    pub truncated: usize,
    pub manifest: Manifest,
}

pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    if opts.inputs.is_empty() {
        bail!("no input files (--input FILE.jsonl …)");
    }
    if opts.seq_len < 16 {
        bail!("--seq-len must be at least 16, not {}", opts.seq_len);
    }
    if !(0.0..1.0).contains(&opts.val_fraction) {
        bail!(
            "--val-fraction must be in [0, 1), not {}",
            opts.val_fraction
        );
    }
    let tokenizer = TextTokenizer::from_dir(&opts.model)?;
    let mut records = Vec::new();
    for path in &opts.inputs {
        records.extend(read_jsonl(path)?);
    }
    let total = records.len();
    let mut seen = HashSet::new();
    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut duplicates = 0;
    for rec in records {
        let key = rec.canonical();
        if !seen.insert(key.clone()) {
            duplicates += 1;
            continue;
        }
        // The split depends on the record alone, never on file order.
        let bucket = fnv1a(key.as_bytes()) % 10_000;
        if (bucket as f64) < opts.val_fraction * 10_000.0 {
            val.push(rec);
        } else {
            train.push(rec);
        }
    }
    if train.is_empty() {
        bail!("no training conversations left after de-duplication and the validation split");
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let mut truncated = 0;
    let mut split = |name: &str, recs: &[Conversation]| -> Result<SplitInfo> {
        let mut docs = Vec::with_capacity(recs.len());
        for rec in recs {
            let mut doc = tokenize_conversation(&tokenizer, rec)?;
            if doc.tokens.len() > opts.seq_len {
                truncated += 1;
                doc.tokens.truncate(opts.seq_len);
                doc.loss.truncate(opts.seq_len);
            }
            docs.push(doc);
        }
        let seqs = pack(docs, opts.seq_len);
        let mut info = SplitInfo::default();
        for (si, chunk) in seqs.chunks(opts.shard_sequences.max(1)).enumerate() {
            let file = format!("{name}-{si:05}.bin");
            write_shard(&opts.out.join(&file), chunk)?;
            info.shards.push(file);
        }
        for s in &seqs {
            info.sequences += 1;
            info.documents += s.len();
            info.tokens += s.iter().map(|d| d.tokens.len()).sum::<usize>();
            info.loss_tokens += s
                .iter()
                .map(|d| d.loss.iter().filter(|&&b| b).count())
                .sum::<usize>();
        }
        Ok(info)
    };
    let train_info = split("train", &train)?;
    let val_info = split("validation", &val)?;
    let manifest = Manifest {
        format: "moe-lora-shards-v1".into(),
        seq_len: opts.seq_len,
        tokenizer: opts.model.display().to_string(),
        inputs: opts
            .inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        duplicates_removed: duplicates,
        domains: crate::train::model::DOMAINS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        train: train_info,
        validation: val_info,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    crate::train::checkpoint::write_atomic(&opts.out.join(MANIFEST), text.as_bytes())?;
    Ok(PrepareReport {
        records: total,
        duplicates,
        truncated,
        manifest,
    })
}

/// The chat-templated tokens of a conversation and, per token, whether it
/// belongs to an assistant turn (its content and closing `<|im_end|>`).
pub fn tokenize_conversation(tok: &TextTokenizer, conv: &Conversation) -> Result<Document> {
    let Some(template) = tok.chat_template() else {
        bail!("the model's tokenizer_config.json has no chat_template");
    };
    let msgs: &[ChatMessage] = &conv.messages;
    let full = template.render(msgs, false)?;
    // Byte ranges of assistant text: from where the generation prompt
    // ends to where the turn's rendering ends (less its trailing newline).
    let mut ranges = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let start = template.render(&msgs[..i], true)?;
        let end = template.render(&msgs[..=i], false)?;
        if !full.starts_with(&start) || !full.starts_with(&end) || end.len() < start.len() {
            bail!(
                "the chat template does not render conversations prefix by prefix; cannot mask the loss to assistant turns"
            );
        }
        let end_len = end.trim_end_matches('\n').len();
        ranges.push(start.len()..end_len);
    }
    let enc = tok
        .inner()
        .encode(full.as_str(), false)
        .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
    let tokens = enc.get_ids().to_vec();
    let loss = enc
        .get_offsets()
        .iter()
        .map(|&(s, _)| ranges.iter().any(|r| r.contains(&s)))
        .collect();
    Ok(Document {
        tokens,
        loss,
        domain: conv.domain.unwrap_or(255),
    })
}

/// Greedy packing in order: a sequence is closed when the next document
/// does not fit.
pub fn pack(docs: Vec<Document>, seq_len: usize) -> Vec<Vec<Document>> {
    let mut out = Vec::new();
    let mut cur: Vec<Document> = Vec::new();
    let mut len = 0;
    for d in docs {
        if len + d.tokens.len() > seq_len && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            len = 0;
        }
        len += d.tokens.len();
        cur.push(d);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shards::Dataset;

    #[test]
    fn prepare_dedups_splits_masks_and_packs() {
        let model = crate::train::model::tests::tiny_checkpoint();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        crate::data::synth::write_synthetic(&input, 60, 1).unwrap();
        // Append an exact duplicate of the first line.
        let text = std::fs::read_to_string(&input).unwrap();
        let first = text.lines().next().unwrap().to_string();
        std::fs::write(&input, format!("{text}{first}\n")).unwrap();
        let opts = PrepareOptions {
            inputs: vec![input.clone()],
            out: dir.path().join("data"),
            model: model.path().to_path_buf(),
            seq_len: 256,
            val_fraction: 0.2,
            shard_sequences: 4,
        };
        let report = prepare(&opts).unwrap();
        assert_eq!(report.records, 61);
        // The appended copy, and any the templates happened to repeat.
        let natural = crate::data::synth::synth_conversations(60, 1)
            .iter()
            .map(|r| r.to_string())
            .collect::<HashSet<_>>()
            .len();
        assert_eq!(report.duplicates, 1 + 60 - natural);
        let m = &report.manifest;
        assert_eq!(m.train.documents + m.validation.documents, natural);
        assert!(
            m.validation.documents > 3 && m.validation.documents < 25,
            "{m:?}"
        );
        assert!(m.train.shards.len() > 1);
        // Same input, same bytes.
        let again = PrepareOptions {
            out: dir.path().join("data2"),
            ..opts.clone()
        };
        prepare(&again).unwrap();
        for s in &m.train.shards {
            assert_eq!(
                std::fs::read(opts.out.join(s)).unwrap(),
                std::fs::read(again.out.join(s)).unwrap()
            );
        }
        let ds = Dataset::open(&opts.out).unwrap();
        assert_eq!(ds.train.len(), m.train.documents);
        let tok = TextTokenizer::from_dir(model.path()).unwrap();
        let im_end = tok.token_id("<|im_end|>").unwrap();
        for d in &ds.train {
            assert!(d.tokens.len() <= 256);
            // Loss only on assistant text: decode the masked tokens.
            let assistant: Vec<u32> = d
                .tokens
                .iter()
                .zip(&d.loss)
                .filter(|(_, l)| **l)
                .map(|(t, _)| *t)
                .collect();
            let text = tok.decode(&assistant, false).unwrap();
            assert!(
                !text.contains("[synthetic]") && !text.contains("<|im_start|>"),
                "{text}"
            );
            assert!(assistant.contains(&im_end));
        }
        // A malformed record names file:line and the field.
        std::fs::write(
            &input,
            format!("{first}\n{{\"messages\":[{{\"role\":\"user\",\"content\":5}}]}}\n"),
        )
        .unwrap();
        let err = format!("{:#}", prepare(&opts).unwrap_err());
        assert!(
            err.contains("in.jsonl:2") && err.contains("messages[0].content"),
            "{err}"
        );
    }

    #[test]
    fn packing_keeps_documents_whole_and_in_order() {
        let doc = |n: usize| Document {
            tokens: vec![1; n],
            loss: vec![true; n],
            domain: 0,
        };
        let packed = pack(vec![doc(5), doc(4), doc(3), doc(9), doc(1)], 10);
        let lens: Vec<Vec<usize>> = packed
            .iter()
            .map(|s| s.iter().map(|d| d.tokens.len()).collect())
            .collect();
        assert_eq!(lens, vec![vec![5, 4], vec![3], vec![9, 1]]);
    }
}
