//! The output filter over a streamed reply.
//!
//! The gpu-host streams `data: {chat.completion.chunk}\n\n` events whose
//! `delta.content` pieces are tokens; the output filter judges sentences.
//! [`StreamFilter`] holds text back until a sentence ends (`.`, `!`, `?`,
//! a newline), runs the filter over the complete sentences and emits them
//! as one content chunk; other events (role, finish, usage, `[DONE]`) pass
//! through after any held text was flushed. Once the filter blocks, the
//! fallback text is sent once and the rest of the model's text is dropped.

use serde_json::Value;

/// What the filter made of some text: the text to show, and whether the
/// reply is blocked from here on.
pub struct Filtered {
    pub text: String,
    pub blocked: bool,
}

#[derive(Default)]
pub struct StreamFilter {
    buf: Vec<u8>,
    held: String,
    /// The last content chunk, as the template for the chunks we emit.
    template: Option<Value>,
    blocked: bool,
}

fn event(v: &Value) -> String {
    format!("data: {v}\n\n")
}

impl StreamFilter {
    /// Feeds upstream bytes; returns the bytes to send on.
    pub fn push(&mut self, bytes: &[u8], check: &mut impl FnMut(&str) -> Filtered) -> String {
        self.buf.extend_from_slice(bytes);
        let mut out = String::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&raw);
            out.push_str(&self.on_event(text.trim_end_matches('\n'), check));
        }
        out
    }

    /// The stream ended: flush held text and any unterminated event.
    pub fn finish(&mut self, check: &mut impl FnMut(&str) -> Filtered) -> String {
        let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
        let mut out = String::new();
        if !rest.trim().is_empty() {
            out.push_str(&self.on_event(rest.trim_end_matches('\n'), check));
        }
        out.push_str(&self.flush(check, true));
        out
    }

    fn on_event(&mut self, ev: &str, check: &mut impl FnMut(&str) -> Filtered) -> String {
        let Some(data) = ev.strip_prefix("data: ").or_else(|| ev.strip_prefix("data:")) else {
            return format!("{ev}\n\n");
        };
        let Ok(mut v) = serde_json::from_str::<Value>(data.trim()) else {
            // `[DONE]` or anything we do not understand: flush, then pass on.
            let mut out = self.flush(check, true);
            out.push_str(&format!("{ev}\n\n"));
            return out;
        };
        let content = v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_string);
        let finishing = v.pointer("/choices/0/finish_reason").is_some_and(|f| !f.is_null())
            || v.get("usage").is_some_and(|u| !u.is_null());
        let mut out = String::new();
        if let Some(c) = content {
            if let Some(delta) = v.pointer_mut("/choices/0/delta").and_then(Value::as_object_mut) {
                delta.remove("content");
            }
            let mut template = v.clone();
            if let Some(choice) = template.pointer_mut("/choices/0").and_then(Value::as_object_mut) {
                choice.insert("finish_reason".into(), Value::Null);
            }
            template.as_object_mut().map(|o| o.remove("usage"));
            self.template = Some(template);
            self.held.push_str(&c);
            out.push_str(&self.flush(check, finishing));
            // A chunk that only carried content has nothing else to say.
            let delta_empty = v.pointer("/choices/0/delta").and_then(Value::as_object).is_none_or(|d| d.is_empty());
            if delta_empty && !finishing {
                return out;
            }
        } else if finishing {
            out.push_str(&self.flush(check, true));
        }
        out.push_str(&event(&v));
        out
    }

    /// Emits the held text up to its last sentence end (all of it when `all`).
    fn flush(&mut self, check: &mut impl FnMut(&str) -> Filtered, all: bool) -> String {
        let cut = if all {
            self.held.len()
        } else {
            match self.held.rfind(['.', '!', '?', '\n']) {
                Some(i) => i + 1,
                None => return String::new(),
            }
        };
        if cut == 0 {
            return String::new();
        }
        let sentences: String = self.held.drain(..cut).collect();
        if self.blocked {
            return String::new();
        }
        let lead = &sentences[..sentences.len() - sentences.trim_start().len()];
        let mut f = check(&sentences);
        if !f.text.starts_with(char::is_whitespace) {
            f.text.insert_str(0, lead);
        }
        self.blocked = f.blocked;
        let Some(mut chunk) = self.template.clone() else {
            return String::new();
        };
        chunk["choices"][0]["delta"]["content"] = Value::String(f.text);
        event(&chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(content: Option<&str>, finish: Option<&str>) -> String {
        let mut delta = json!({});
        if let Some(c) = content {
            delta["content"] = json!(c);
        }
        event(&json!({"id": "c1", "object": "chat.completion.chunk", "model": "tiny",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    }

    fn run(stream: &str, split: usize, check: &mut impl FnMut(&str) -> Filtered) -> (String, Vec<Value>) {
        let mut f = StreamFilter::default();
        let mut out = String::new();
        for piece in stream.as_bytes().chunks(split) {
            out.push_str(&f.push(piece, check));
        }
        out.push_str(&f.finish(check));
        let events: Vec<Value> = out
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        let text = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
        (text, events)
    }

    fn stream(words: &[&str]) -> String {
        let mut s = event(&json!({"id": "c1", "object": "chat.completion.chunk", "model": "tiny",
            "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": null}]}));
        for w in words {
            s.push_str(&chunk(Some(w), None));
        }
        s.push_str(&chunk(None, Some("stop")));
        s.push_str("data: [DONE]\n\n");
        s
    }

    #[test]
    fn sentences_are_filtered_whatever_the_chunking() {
        let input = stream(&["That ", "sounds ", "hard. ", "You ", "have ", "bad", " news. ", "Let's ", "talk"]);
        let calls = std::cell::RefCell::new(Vec::new());
        let mut check = |t: &str| {
            calls.borrow_mut().push(t.to_string());
            Filtered { text: t.replace("bad", "***"), blocked: false }
        };
        for split in [1, 3, 7, 64, 10_000] {
            calls.borrow_mut().clear();
            let (text, events) = run(&input, split, &mut check);
            assert_eq!(text, "That sounds hard. You have *** news. Let's talk", "split {split}");
            assert_eq!(events.first().unwrap()["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(events.last().unwrap()["choices"][0]["finish_reason"], "stop");
            assert!(calls.borrow().iter().all(|c| !c.is_empty()));
        }
        let mut f = StreamFilter::default();
        let out = f.push(input.as_bytes(), &mut |t: &str| Filtered { text: t.to_string(), blocked: false });
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn a_block_sends_the_fallback_once_and_drops_the_rest() {
        let input = stream(&["Fine. ", "Take ", "50mg. ", "More ", "text."]);
        let mut check = |t: &str| {
            if t.contains("50mg") {
                Filtered { text: "I can't advise on medication.".into(), blocked: true }
            } else {
                Filtered { text: t.into(), blocked: false }
            }
        };
        let (text, _) = run(&input, 5, &mut check);
        assert_eq!(text, "Fine. I can't advise on medication.");
    }
}
