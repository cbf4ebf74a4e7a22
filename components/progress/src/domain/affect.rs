//! Per-session affect: self-reported mood combined with the lexicon sentiment
//! (VADER) of the session text.

use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

pub const AFFECT_RULE: &str = "affect = 0.6 x (mood - 5) / 5 + 0.4 x VADER compound sentiment of the session text, on -1..1; without a mood, affect = compound";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    pub compound: f64,
    pub positive: f64,
    pub neutral: f64,
    pub negative: f64,
}

static ANALYZER: LazyLock<vader_sentiment::SentimentIntensityAnalyzer<'static>> =
    LazyLock::new(vader_sentiment::SentimentIntensityAnalyzer::new);

/// VADER polarity of `text`.
pub fn sentiment(text: &str) -> Sentiment {
    if text.trim().is_empty() {
        return Sentiment { compound: 0.0, positive: 0.0, neutral: 1.0, negative: 0.0 };
    }
    let s = ANALYZER.polarity_scores(text);
    let get = |k: &str| s.get(k).copied().unwrap_or(0.0);
    Sentiment { compound: get("compound"), positive: get("pos"), neutral: get("neu"), negative: get("neg") }
}

/// Combines mood (0–10) and sentiment compound (−1..1) into affect (−1..1).
pub fn affect(mood: Option<u8>, compound: f64) -> f64 {
    let a = match mood {
        Some(m) => 0.6 * (m as f64 - 5.0) / 5.0 + 0.4 * compound,
        None => compound,
    };
    a.clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentiment_polarity() {
        assert!(sentiment("I felt happy and hopeful, a great week").compound > 0.5);
        assert!(sentiment("I felt hopeless, sad and terrible").compound < -0.5);
        assert_eq!(sentiment("   ").compound, 0.0);
    }

    #[test]
    fn affect_combination() {
        assert!((affect(Some(10), 1.0) - 1.0).abs() < 1e-9);
        assert!((affect(Some(0), -1.0) + 1.0).abs() < 1e-9);
        assert!((affect(Some(5), 0.5) - 0.2).abs() < 1e-9);
        assert_eq!(affect(None, -0.3), -0.3);
    }
}
