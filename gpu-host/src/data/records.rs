//! Conversation records from JSONL files, in the OpenAI chat format
//! (`{"messages": [{"role", "content"}…], "domain": …}`) or ShareGPT's
//! (`{"conversations": [{"from", "value"}…], "domain": …}`), validated line
//! by line: a bad record is an error naming `file:line` and the field.

use crate::tokenizer::ChatMessage;
use crate::train::model::DOMAINS;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;

/// A validated conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    pub messages: Vec<ChatMessage>,
    /// Index into [`DOMAINS`].
    pub domain: Option<u8>,
}

impl Conversation {
    /// A canonical text of the record: equal for exact duplicates.
    pub fn canonical(&self) -> String {
        let msgs: Vec<Value> = self
            .messages
            .iter()
            .map(|m| serde_json::json!([m.role, m.content]))
            .collect();
        serde_json::json!({ "m": msgs, "d": self.domain }).to_string()
    }
}

/// Reads every record of a JSONL file (blank lines are skipped).
pub fn read_jsonl(path: &Path) -> Result<Vec<Conversation>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        out.push(parse_record(line).with_context(|| at)?);
    }
    Ok(out)
}

/// Parses and validates one JSON record.
pub fn parse_record(line: &str) -> Result<Conversation> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not valid JSON: {e}"))?;
    let Some(obj) = v.as_object() else {
        bail!("a record must be a JSON object")
    };
    let messages = if let Some(msgs) = obj.get("messages") {
        let Some(list) = msgs.as_array() else {
            bail!("field `messages`: must be an array")
        };
        list.iter()
            .enumerate()
            .map(|(i, m)| {
                let role = string_field(m, "role", &format!("messages[{i}].role"))?;
                let content = string_field(m, "content", &format!("messages[{i}].content"))?;
                if !["system", "user", "assistant"].contains(&role.as_str()) {
                    bail!("field `messages[{i}].role`: must be system, user or assistant, not `{role}`");
                }
                Ok(ChatMessage::new(role, content))
            })
            .collect::<Result<Vec<_>>>()?
    } else if let Some(conv) = obj.get("conversations") {
        let Some(list) = conv.as_array() else {
            bail!("field `conversations`: must be an array")
        };
        list.iter()
            .enumerate()
            .map(|(i, m)| {
                let from = string_field(m, "from", &format!("conversations[{i}].from"))?;
                let value = string_field(m, "value", &format!("conversations[{i}].value"))?;
                let role = match from.as_str() {
                    "system" => "system",
                    "human" | "user" => "user",
                    "gpt" | "assistant" | "bot" => "assistant",
                    other => bail!("field `conversations[{i}].from`: must be system, human or gpt, not `{other}`"),
                };
                Ok(ChatMessage::new(role, value))
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        bail!("field `messages`: missing (or `conversations` for ShareGPT records)");
    };
    if messages.is_empty() {
        bail!("field `messages`: empty conversation");
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        bail!("field `messages`: no assistant turn to learn from");
    }
    let domain = match obj.get("domain") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => match DOMAINS.iter().position(|x| x == d) {
            Some(i) => Some(i as u8),
            None => bail!(
                "field `domain`: must be one of {}, not `{d}`",
                DOMAINS.join(", ")
            ),
        },
        Some(_) => bail!("field `domain`: must be a string"),
    };
    Ok(Conversation { messages, domain })
}

fn string_field(m: &Value, key: &str, path: &str) -> Result<String> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => bail!("field `{path}`: must be a string"),
        None => bail!("field `{path}`: missing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats_and_names_file_line_and_field_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(
            &p,
            concat!(
                r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}],"domain":"psychology"}"#, "\n",
                "\n",
                r#"{"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"yo"}]}"#, "\n",
            ),
        )
        .unwrap();
        let recs = read_jsonl(&p).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].domain, Some(0));
        assert_eq!(recs[1].messages[1].role, "assistant");

        std::fs::write(
            &p,
            concat!(
                r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"}]}"#, "\n",
                r#"{"messages":[{"role":"user","content":"hi"},{"role":"robot","content":"x"}]}"#, "\n",
            ),
        )
        .unwrap();
        let err = format!("{:#}", read_jsonl(&p).unwrap_err());
        assert!(
            err.contains("a.jsonl:2") && err.contains("messages[1].role"),
            "{err}"
        );
        for (line, field) in [
            (r#"{"messages":[{"role":"user"}]}"#, "messages[0].content"),
            (
                r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}],"domain":"x"}"#,
                "domain",
            ),
            (
                r#"{"messages":[{"role":"user","content":"a"}]}"#,
                "no assistant",
            ),
            (r#"{"text":"a"}"#, "messages"),
            (r#"{"messages": ["#, "not valid JSON"),
        ] {
            let err = format!("{:#}", parse_record(line).unwrap_err());
            assert!(err.contains(field), "{line}: {err}");
        }
    }
}
