//! `gpu-host generate`: load a checkpoint on the CPU backend and stream a
//! completion of a prompt (or a chat rendered with the model's template).

use super::device::{DeviceArgs, load_model, with_model};
use anyhow::{Context, Result};
use clap::Args;
use gpu_host::backend::Backend;
use gpu_host::checkpoint::GenerationDefaults;
use gpu_host::generate::{GenerateParams, Generator};
use gpu_host::model::Llama;
use gpu_host::tokenizer::{ChatMessage, TextTokenizer};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["prompt", "chat"]))]
pub struct GenerateArgs {
    /// Checkpoint directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Plain text to continue (a BOS is added if the tokenizer adds one).
    #[arg(long)]
    prompt: Option<String>,
    /// A JSON chat: `[{"role": "user", "content": "..."}]` (or
    /// `{"messages": [...]}`), rendered with the model's chat template.
    #[arg(long, value_name = "FILE.json")]
    chat: Option<PathBuf>,
    /// Most tokens to generate (default: generation_config.json's
    /// max_new_tokens, else 256).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy (default: generation_config.json).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample only among the k most likely tokens (0: no limit).
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: the smallest set of tokens with this much probability.
    #[arg(long)]
    top_p: Option<f32>,
    /// Penalise tokens already in the context (1.0: off).
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Random seed: the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the output contains this text (repeatable; not printed).
    #[arg(long = "stop", value_name = "TEXT")]
    stop: Vec<String>,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let tokenizer = TextTokenizer::from_dir(&args.model)?;
    let prompt_ids = match (&args.prompt, &args.chat) {
        (Some(text), _) => tokenizer.encode(text, true)?,
        (None, Some(path)) => {
            let messages = read_chat(path)?;
            let (text, ids) = tokenizer.encode_chat(&messages)?;
            tracing::debug!(prompt = %text, "rendered chat");
            ids
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let model = load_model(&args.model, args.device, None)?;
    with_model!(model, |model| generate_on(
        &model,
        &tokenizer,
        &prompt_ids,
        &args
    ))
}

fn generate_on<B: Backend>(
    model: &Llama<B>,
    tokenizer: &TextTokenizer,
    prompt_ids: &[u32],
    args: &GenerateArgs,
) -> Result<()> {
    let defaults =
        GenerationDefaults::from_file_if_present(&args.model.join("generation_config.json"))?;
    let mut params =
        GenerateParams::from_defaults(&defaults, &model.config().eos_token_ids, tokenizer);
    if let Some(n) = args.max_tokens {
        params.max_new_tokens = n;
    }
    if let Some(t) = args.temperature {
        params.sampling.temperature = t;
    }
    if let Some(k) = args.top_k {
        params.sampling.top_k = k;
    }
    if let Some(p) = args.top_p {
        params.sampling.top_p = p;
    }
    if let Some(r) = args.repetition_penalty {
        params.sampling.repetition_penalty = r;
    }
    params.sampling.seed = args.seed;
    params.stop_strings = args.stop.clone();

    let mut generator = Generator::new(model, tokenizer)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = generator.generate(prompt_ids, &params, |text| {
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    })?;
    writeln!(out)?;
    let decode_s = result.decode_time.as_secs_f64();
    tracing::info!(
        prompt_tokens = result.prompt_tokens,
        generated_tokens = result.tokens.len(),
        stop = ?result.stop_reason,
        prefill_tok_s = format!("{:.1}", result.prompt_tokens as f64 / result.prefill_time.as_secs_f64()),
        decode_tok_s = format!("{:.1}", result.tokens.len() as f64 / decode_s.max(1e-9)),
        "done"
    );
    Ok(())
}

fn read_chat(path: &Path) -> Result<Vec<ChatMessage>> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum ChatFile {
        List(Vec<ChatMessage>),
        Object { messages: Vec<ChatMessage> },
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let chat: ChatFile = serde_json::from_str(&text).with_context(|| {
        format!("{} must be a JSON list of {{\"role\", \"content\"}} messages (or {{\"messages\": [...]}})", path.display())
    })?;
    let messages = match chat {
        ChatFile::List(m) | ChatFile::Object { messages: m } => m,
    };
    if messages.is_empty() {
        anyhow::bail!("{} holds no messages", path.display());
    }
    Ok(messages)
}
