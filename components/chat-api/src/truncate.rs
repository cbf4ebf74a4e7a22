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
pub fn truncate(request: &mut Map<String, Value>, budget: usize, count: impl Fn(&str) -> usize) -> Result<usize, ApiError> {
    let Some(Value::Array(messages)) = request.get_mut("messages") else {
        return Ok(0);
    };
    let cost = |m: &Value| count(m["role"].as_str().unwrap_or("")) + count(m["content"].as_str().unwrap_or("")) + PER_MESSAGE;
    let costs: Vec<usize> = messages.iter().map(cost).collect();
    let mut total: usize = costs.iter().sum();
    if total <= budget {
        return Ok(0);
    }
    let n = messages.len();
    let first_droppable = messages.iter().take(n - 1).take_while(|m| m["role"] == "system").count();
    let mut drop_until = first_droppable;
    while total > budget && drop_until < n - 1 {
        total -= costs[drop_until];
        drop_until += 1;
    }
    if total > budget {
        return Err(ApiError::bad_request(format!(
            "the system prompt and latest message need {total} tokens; the model's context leaves {budget} for the prompt"
        )));
    }
    messages.drain(first_droppable..drop_until);
    Ok(drop_until - first_droppable)
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
