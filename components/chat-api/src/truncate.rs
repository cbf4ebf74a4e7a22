//! Context truncation: fit a conversation into the model's context window,
//! counted with the model's own tokenizer (the component passes its
//! `count`), before it goes to a gpu-host.
//!
//! Policy: the leading system messages and the last message always stay;
//! the oldest other turns go first. Each message costs its role's and
//! content's tokens plus [`PER_MESSAGE`] (the chat template's markers); the budget is
//! the context minus the reply's `max_tokens` (or a quarter of the context,
//! at most 256, when the request sets none) minus [`PROMPT_MARGIN`].

use edge_common::ApiError;
use serde_json::{Map, Value};

pub const PER_MESSAGE: usize = 6;
/// BOS and the generation prompt (`<|im_start|>assistant\n` and the like).
pub const PROMPT_MARGIN: usize = 16;

/// Tokens left for the prompt.
pub fn budget(context_tokens: usize, request: &Map<String, Value>) -> usize {
    let reply = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| request.get(*k).and_then(Value::as_u64))
        .map(|n| n as usize)
        .unwrap_or((context_tokens / 4).min(256));
    context_tokens.saturating_sub(reply).saturating_sub(PROMPT_MARGIN)
}

/// Drops the oldest turns of `request["messages"]` until they fit
/// `budget`; returns how many were dropped. 400 when even the kept ones
/// (system prompt and last message) do not fit.
///
/// Keeping the newest turns that fit is the same as dropping the oldest
/// until the rest fits, and it counts from the newest backwards: the turns
/// older than the first one that does not fit are never tokenized (in a
/// conversation twice the context, that is half the counting).
pub fn truncate(request: &mut Map<String, Value>, budget: usize, count: impl Fn(&str) -> usize) -> Result<usize, ApiError> {
    let Some(Value::Array(messages)) = request.get_mut("messages") else {
        return Ok(0);
    };
    let n = messages.len();
    if n == 0 {
        return Ok(0);
    }
    let cost = |m: &Value| count(m["role"].as_str().unwrap_or("")) + count(m["content"].as_str().unwrap_or("")) + PER_MESSAGE;
    let first_droppable = messages.iter().take(n - 1).take_while(|m| m["role"] == "system").count();
    // What always stays: the leading system messages and the last message.
    let mut total: usize = messages[..first_droppable].iter().map(cost).sum::<usize>() + cost(&messages[n - 1]);
    if total > budget {
        return Err(ApiError::bad_request(format!(
            "the system prompt and latest message need {total} tokens; the model's context leaves {budget} for the prompt"
        )));
    }
    // Then the turns, newest first, while they fit.
    let mut keep_from = n - 1;
    while keep_from > first_droppable {
        let c = cost(&messages[keep_from - 1]);
        if total + c > budget {
            break;
        }
        total += c;
        keep_from -= 1;
    }
    messages.drain(first_droppable..keep_from);
    Ok(keep_from - first_droppable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn req(messages: Value) -> Map<String, Value> {
        json!({"model": "m", "messages": messages}).as_object().unwrap().clone()
    }

    #[test]
    fn oldest_turns_go_first_system_and_last_stay() {
        let long = "w ".repeat(20);
        let mut r = req(json!([
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": long}, {"role": "assistant", "content": long},
            {"role": "user", "content": long}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "now"},
        ]));
        // system 1+2+6, each long 1+20+6, "ok" 1+1+6, "now" 1+1+6 → 106 in all.
        let dropped = truncate(&mut r, 60, words).unwrap();
        assert_eq!(dropped, 2);
        let roles: Vec<&str> = r["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(r["messages"][3]["content"], "now");
        assert_eq!(truncate(&mut r, 60, words).unwrap(), 0, "fits now");
    }

    #[test]
    fn turns_older_than_the_budget_are_never_counted() {
        let mut messages = vec![json!({"role": "system", "content": "sys"})];
        for i in 0..100 {
            messages.push(json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("turn{i} a b c")}));
        }
        let mut r = req(Value::Array(messages.clone()));
        let counted = std::cell::RefCell::new(Vec::new());
        // Every message costs 1 (role) + 4 (content) + 6 = 11; the system one 8.
        let dropped = truncate(&mut r, 8 + 11 * 10, |t| {
            counted.borrow_mut().push(t.to_string());
            words(t)
        })
        .unwrap();
        assert_eq!(dropped, 90);
        let kept = r["messages"].as_array().unwrap();
        assert_eq!(kept.len(), 11);
        assert_eq!(kept[1]["content"], "turn90 a b c", "the newest ten turns stay");
        let counted = counted.into_inner();
        assert!(!counted.iter().any(|t| t.starts_with("turn0 ") || t.starts_with("turn50 ")), "old turns are not counted");
        assert!(counted.len() <= 2 * 12, "counted {} texts", counted.len());
        // The same cut as dropping the oldest one by one until it fits.
        let mut by_dropping = Value::Array(messages);
        let list = by_dropping.as_array_mut().unwrap();
        while list.iter().map(|m| 1 + words(m["content"].as_str().unwrap()) + PER_MESSAGE).sum::<usize>() > 8 + 11 * 10 {
            list.remove(1);
        }
        assert_eq!(&by_dropping, &r["messages"]);
    }

    #[test]
    fn too_long_a_last_message_is_400_without_echo() {
        let mut r = req(json!([{"role": "user", "content": "secret ".repeat(100)}]));
        let e = truncate(&mut r, 50, words).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(!e.message.contains("secret"));
    }

    #[test]
    fn budget_reserves_the_reply() {
        let r = json!({"max_tokens": 100}).as_object().unwrap().clone();
        assert_eq!(budget(512, &r), 512 - 100 - PROMPT_MARGIN);
        assert_eq!(budget(512, &Map::new()), 512 - 128 - PROMPT_MARGIN);
        assert_eq!(budget(8192, &Map::new()), 8192 - 256 - PROMPT_MARGIN);
    }
}
