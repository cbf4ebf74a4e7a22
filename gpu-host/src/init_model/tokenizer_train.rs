//! A byte-level BPE tokenizer trained, with the `tokenizers` crate's
//! trainer, on the corpus that ships in `assets/corpus.txt`. Training is
//! deterministic (checked by a test), so generated checkpoints are too.

use anyhow::{Result, anyhow};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::processors::sequence::Sequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

/// The training text: original prose and therapy-style dialogue written for
/// this repository.
pub const CORPUS: &str = include_str!("../../assets/corpus.txt");

pub const BOS: &str = "<|begin_of_text|>";
pub const EOS: &str = "<|end_of_text|>";
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
/// In id order: 0, 1, 2, 3.
pub const SPECIAL_TOKENS: [&str; 4] = [BOS, EOS, IM_START, IM_END];

/// ChatML turns behind a BOS, as Hugging Face renders them.
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}\
{% for message in messages %}\
{% if message['role'] not in ['system', 'user', 'assistant'] %}\
{{ raise_exception('Unknown role: ' + message['role']) }}\
{% endif %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Trains a tokenizer of at most `vocab_size` entries (special tokens
/// included; a small corpus may stop short of it).
pub fn train_tokenizer(vocab_size: usize) -> Result<Tokenizer> {
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let bos_then_text = TemplateProcessing::builder()
        .try_single(format!("{BOS} $A"))
        .map_err(|e| anyhow!("template: {e}"))?
        .try_pair(format!("{BOS} $A {BOS}:1 $B:1"))
        .map_err(|e| anyhow!("template: {e}"))?
        .special_tokens(vec![(BOS, 0u32)])
        .build()
        .map_err(|e| anyhow!("template: {e}"))?;
    let post = Sequence::new(vec![
        PostProcessorWrapper::ByteLevel(ByteLevel::default().trim_offsets(false)),
        PostProcessorWrapper::Template(bos_then_text),
    ]);
    let mut tokenizer = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_post_processor(Some(PostProcessorWrapper::Sequence(post)))
        .with_decoder(Some(ByteLevelDecoder::default()))
        .build()
        .map_err(|e| anyhow!("cannot build the tokenizer: {e}"))?;
    tokenizer
        .train(
            &mut trainer,
            CORPUS.lines().filter(|l| !l.trim().is_empty()),
        )
        .map_err(|e| anyhow!("tokenizer training failed: {e}"))?;
    let tokenizer: Tokenizer = tokenizer.into();
    for (id, t) in SPECIAL_TOKENS.iter().enumerate() {
        if tokenizer.token_to_id(t) != Some(id as u32) {
            return Err(anyhow!("special token {t} did not get id {id}"));
        }
    }
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_is_deterministic_and_round_trips_text() {
        let a = train_tokenizer(512).unwrap().to_string(true).unwrap();
        let b = train_tokenizer(512).unwrap().to_string(true).unwrap();
        assert!(a == b, "two trainings differ");
        let tok = train_tokenizer(512).unwrap();
        assert_eq!(tok.get_vocab_size(true), 512);
        let text = "How have you been sleeping this week? Ünïcödé ✓";
        let enc = tok.encode(text, true).unwrap();
        assert_eq!(enc.get_ids()[0], 0, "BOS first");
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), text);
        // Special tokens are single tokens inside text.
        let enc = tok.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap();
        assert_eq!(enc.get_ids()[0], 2);
        assert!(enc.get_ids().contains(&3));
    }
}
