//! Text ⇄ tokens for a checkpoint: `tokenizer.json` through the
//! `tokenizers` crate, plus `tokenizer_config.json` (chat template and
//! named special tokens).

pub mod chat_template;

pub use chat_template::{ChatMessage, ChatTemplate};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<ChatTemplate>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and, if present, `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("model directory {} does not exist", dir.display());
        }
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            bail!("{} is missing", path.display());
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", path.display()))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.exists() {
            let text = std::fs::read_to_string(&config_path)
                .with_context(|| format!("cannot read {}", config_path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", config_path.display()))?
        } else {
            Value::Null
        };
        Self::new(inner, &config).with_context(|| format!("in {}", config_path.display()))
    }

    /// From a loaded tokenizer and the parsed `tokenizer_config.json`.
    pub fn new(inner: tokenizers::Tokenizer, config: &Value) -> Result<Self> {
        let mut special = BTreeMap::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            if let Some(text) = config.get(key).and_then(token_text) {
                special.insert(key.to_string(), text);
            }
        }
        let template_source = match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(str::to_string),
            _ => None,
        };
        let chat_template = template_source
            .map(|s| ChatTemplate::new(&s, special.clone()))
            .transpose()?;
        Ok(Self {
            inner,
            chat_template,
            bos_token: special.get("bos_token").cloned(),
            eos_token: special.get("eos_token").cloned(),
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's
    /// post-processor (e.g. a leading BOS), as for a plain prompt.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow::anyhow!("tokenization failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow::anyhow!("detokenization failed: {e}"))
    }

    /// The id of a token written out (e.g. `<|im_end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Renders a conversation with the chat template (ending with the
    /// assistant prompt) and tokenizes it without adding special tokens,
    /// as `apply_chat_template(..., tokenize=True)` does.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<(String, Vec<u32>)> {
        let Some(template) = &self.chat_template else {
            bail!("this model's tokenizer_config.json has no `chat_template`; use a plain prompt");
        };
        let text = template.render(messages, true)?;
        let ids = self.encode(&text, false)?;
        Ok((text, ids))
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// A special token is written either as a string or as an AddedToken
/// object `{"content": "...", ...}`.
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}
