//! Rendering `tokenizer_config.json`'s `chat_template` the way Hugging Face
//! `apply_chat_template` does: Jinja with `trim_blocks` and `lstrip_blocks`,
//! loop controls, `raise_exception`, `strftime_now`, Python string methods
//! (`.strip()`, `.startswith()`, ...), and the variables `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token` and the other special
//! tokens.

use anyhow::{Context, Result};
use minijinja::{Environment, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One chat turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

const TEMPLATE_NAME: &str = "chat_template";

pub struct ChatTemplate {
    env: Environment<'static>,
    /// bos_token, eos_token, ... as strings, passed to every render.
    special_tokens: BTreeMap<String, String>,
}

impl ChatTemplate {
    /// Compiles `source`. `special_tokens` maps names such as `bos_token`
    /// to their text.
    pub fn new(source: &str, special_tokens: BTreeMap<String, String>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |format: String| -> String {
            strftime_now(&format)
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .context("the chat template does not compile")?;
        Ok(Self {
            env,
            special_tokens,
        })
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends
    /// where the assistant's reply begins.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).expect("added in new");
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            ..Value::from_serialize(&self.special_tokens)
        };
        template
            .render(ctx)
            .map_err(|e| anyhow::anyhow!("chat template failed: {e:#}"))
    }
}

/// Only the UTC date parts templates use (`%d %b %Y`, `%Y-%m-%d`); no
/// timezone database is needed for a date stamp in a system prompt.
fn strftime_now(format: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format
        .replace("%Y", &year.to_string())
        .replace("%m", &format!("{month:02}"))
        .replace("%d", &format!("{day:02}"))
        .replace("%b", MONTHS[(month - 1) as usize])
        .replace("%H", &format!("{:02}", (secs / 3600) % 24))
        .replace("%M", &format!("{:02}", (secs / 60) % 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("bos_token".into(), "<s>".into()),
            ("eos_token".into(), "</s>".into()),
        ])
    }

    #[test]
    fn renders_hf_style_template_with_python_methods_and_trimmed_blocks() {
        // Expected strings checked against Python jinja2 with HF's settings.
        let src = "{{ bos_token }}{% for m in messages %}\n  {% if m['role'] == 'system' %}{{ '[S]' + m['content'].strip() }}\n  {% else %}{{ '[' + m.role.upper() + ']' + m.content }}\n  {% endif %}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}";
        let t = ChatTemplate::new(src, specials()).unwrap();
        let msgs = [
            ChatMessage::new("system", "  be kind "),
            ChatMessage::new("user", "hi"),
        ];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<s>[S]be kind\n[USER]hi\n[ASSISTANT]"
        );
        assert_eq!(t.render(&msgs, false).unwrap(), "<s>[S]be kind\n[USER]hi\n");
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first turn must be the user') }}{% endif %}ok";
        let t = ChatTemplate::new(src, specials()).unwrap();
        let err = t
            .render(&[ChatMessage::new("assistant", "x")], false)
            .unwrap_err();
        assert!(format!("{err:#}").contains("first turn must be the user"));
    }

    #[test]
    fn strftime_now_formats_a_plausible_date() {
        let s = strftime_now("%Y-%m-%d");
        assert_eq!(s.len(), 10);
        assert!(s.starts_with("20"));
    }
}
