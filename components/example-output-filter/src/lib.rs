//! An example plugin for `therapy:safety/output-filter` (wit/safety.wit):
//! a deliberately strict policy, to show how a deployment swaps its own
//! filter in through `spin.toml` (see components/safety-screen/README.md).
//!
//! Policy: the whole model reply is blocked, never rewritten, if it
//! contains a word from the built-in list or the deployment's blocklist,
//! any number followed by a dose unit, or any diagnosis word. It is written
//! from scratch against the WIT (it does not link the default filter).

/// Words that block a reply in every deployment of this plugin.
pub const BUILT_IN_BLOCKLIST: &[&str] = &["diagnose", "diagnosis", "prescribe", "prescription", "dosage", "overdose"];

/// Diagnosis words: this plugin blocks any mention, hedged or not.
pub const DIAGNOSIS_WORDS: &[&str] = &[
    "depression", "bipolar", "ptsd", "ocd", "adhd", "schizophrenia", "psychosis", "borderline", "narcissist",
    "disorder", "anorexia", "bulimia", "autism",
];

pub const DOSE_UNITS: &[&str] = &["mg", "mcg", "ml", "milligrams", "micrograms", "tablets", "pills", "capsules"];

pub const FALLBACK: &str = "I'd rather not go into that here. Your care team is the right place for questions about diagnosis or medication.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DiagnosisAsFact,
    MedicationDosing,
    Blocklisted,
}

/// (rule id, kind) of every finding, in order of the words.
pub fn findings(text: &str, blocklist: &[String]) -> Vec<(&'static str, Kind)> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '.').map(|w| w.trim_matches('.')).filter(|w| !w.is_empty()).collect();
    let joined = format!(" {} ", words.join(" "));
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let number = w.chars().next().is_some_and(|c| c.is_ascii_digit());
        let glued_unit = number && DOSE_UNITS.iter().any(|u| w.ends_with(u));
        let next_unit = number && words.get(i + 1).is_some_and(|n| DOSE_UNITS.contains(n));
        if glued_unit || next_unit {
            out.push(("STRICT-DOSE", Kind::MedicationDosing));
        }
        if DIAGNOSIS_WORDS.contains(w) {
            out.push(("STRICT-DX", Kind::DiagnosisAsFact));
        }
        if BUILT_IN_BLOCKLIST.contains(w) {
            out.push(("STRICT-BL-BUILTIN", Kind::Blocklisted));
        }
    }
    for entry in blocklist {
        let entry = entry.to_lowercase();
        let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
        if !entry.is_empty() && joined.contains(&format!(" {entry} ")) {
            out.push(("STRICT-BL", Kind::Blocklisted));
        }
    }
    out
}

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ path: "../../wit/safety.wit", world: "output-filter-plugin" });

    use exports::therapy::safety::output_filter::{Action, FilterConfig, Finding, FindingKind, Guest, Verdict};

    struct StrictFilter;

    impl Guest for StrictFilter {
        fn check(text: String, config: FilterConfig) -> Verdict {
            let found = super::findings(&text, &config.blocklist);
            if found.is_empty() {
                return Verdict { action: Action::Allow, findings: Vec::new(), text };
            }
            let findings = found
                .into_iter()
                .map(|(id, kind)| Finding {
                    rule_id: id.to_string(),
                    kind: match kind {
                        super::Kind::DiagnosisAsFact => FindingKind::DiagnosisAsFact,
                        super::Kind::MedicationDosing => FindingKind::MedicationDosing,
                        super::Kind::Blocklisted => FindingKind::Blocklisted,
                    },
                    // This plugin does not split sentences: it judges the reply whole.
                    sentence: 0,
                })
                .collect();
            Verdict { action: Action::Block, findings, text: super::FALLBACK.to_string() }
        }
    }

    export!(StrictFilter);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_policy() {
        assert!(findings("That sounds hard. How did you sleep?", &[]).is_empty());
        assert_eq!(findings("Some people take 20mg.", &[]), vec![("STRICT-DOSE", Kind::MedicationDosing)]);
        assert_eq!(findings("Take 2.5 mg", &[]), vec![("STRICT-DOSE", Kind::MedicationDosing)]);
        // hedged or not, a diagnosis word blocks
        assert_eq!(findings("It might be worth asking about ADHD.", &[]), vec![("STRICT-DX", Kind::DiagnosisAsFact)]);
        let bl = vec!["Acme  Pharma".to_string()];
        assert_eq!(findings("Try acme pharma's app", &bl), vec![("STRICT-BL", Kind::Blocklisted)]);
        assert!(findings("acmepharma", &bl).is_empty());
    }
}
