//! Classifies one user turn with the rules of [`crate::rules`]: which rules
//! fire, how negation and history discount them, how imminence raises them,
//! and the resulting assessment. The text itself never leaves this module:
//! an assessment carries rule ids only.

use crate::normalise::{Normalised, normalise};
use crate::pattern::{AnchorIndex, Compiler, Pattern};
use crate::rules::{
    self, CURRENT_MARKERS, HISTORICAL_MARKERS, NEGATION_CUES, NEGATION_STOPS, NEGATION_WINDOW,
    PSEUDO_NEGATION_NEXT, RULES, SETS,
};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Suicide,
    SelfHarm,
    HarmToOthers,
    Abuse,
    MedicalEmergency,
}

impl Category {
    pub const ALL: [Category; 5] =
        [Category::Suicide, Category::SelfHarm, Category::HarmToOthers, Category::Abuse, Category::MedicalEmergency];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Suicide => "suicide",
            Category::SelfHarm => "self-harm",
            Category::HarmToOthers => "harm-to-others",
            Category::Abuse => "abuse",
            Category::MedicalEmergency => "medical-emergency",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Ordered: `None < Low < Moderate < High < Imminent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    None,
    Low,
    Moderate,
    High,
    Imminent,
}

/// One rule that fired (never the text that matched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub rule_id: String,
    pub category: Category,
    pub severity: Severity,
    /// Negated or historical, so counted as `low`.
    pub discounted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// `severity >= moderate`.
    pub risk: bool,
    pub severity: Severity,
    /// Categories with a hit of at least moderate severity, sorted.
    pub categories: Vec<Category>,
    pub hits: Vec<Hit>,
    /// Escalate to a human and attach crisis resources: exactly `risk`.
    pub escalate: bool,
    pub ruleset: String,
}

impl Assessment {
    pub fn rule_ids(&self) -> Vec<String> {
        self.hits.iter().map(|h| h.rule_id.clone()).collect()
    }
}

struct CompiledRule {
    rule: &'static rules::Rule,
    patterns: Vec<Pattern>,
    /// Id of `patterns[0]` in [`Compiled::index`] (the others follow).
    first_id: usize,
    /// Whether each pattern names a negation itself ("not want to live"):
    /// then a negation inside its match is the risk, not a denial of it.
    own_negation: Vec<bool>,
    unless: Vec<Pattern>,
    with: Vec<Pattern>,
}

struct Compiled {
    rules: Vec<CompiledRule>,
    /// The anchors of every rule's `patterns`, in rule order.
    index: AnchorIndex,
    imminence: Vec<(&'static str, Vec<Pattern>)>,
    historical: Vec<Vec<String>>,
    current: Vec<Vec<String>>,
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(compile)
}

/// Compiles the whole rule set (patterns, index, markers) once more and
/// returns how long it took: what a fresh instance pays on its first call
/// (`screen_cost` in tests/screening.rs prints it).
pub fn compile_cost() -> std::time::Duration {
    let start = std::time::Instant::now();
    std::hint::black_box(compile());
    start.elapsed()
}

fn compile() -> Compiled {
    let mut compiler = Compiler::new(SETS);
    let mut all = |ps: &'static [&'static str]| ps.iter().map(|p| compiler.compile(p)).collect::<Vec<_>>();
    let phrases = |ps: &[&str]| {
        ps.iter().map(|p| normalise(p).tokens().map(str::to_string).collect()).collect::<Vec<Vec<String>>>()
    };
    let mut next_id = 0;
    let rules: Vec<CompiledRule> = RULES
        .iter()
        .map(|rule| CompiledRule {
            rule,
            patterns: all(rule.patterns),
            first_id: {
                next_id += rule.patterns.len();
                next_id - rule.patterns.len()
            },
            own_negation: rule
                .patterns
                .iter()
                .map(|p| p.split(|c: char| !c.is_alphanumeric()).any(|w| NEGATION_CUES.contains(&w)))
                .collect(),
            unless: all(rule.unless),
            with: all(rule.with),
        })
        .collect();
    let index = AnchorIndex::new(rules.iter().flat_map(|r| &r.patterns));
    Compiled {
        rules,
        index,
        imminence: rules::IMMINENCE.iter().map(|m| (m.id, all(m.patterns))).collect(),
        historical: phrases(HISTORICAL_MARKERS),
        current: phrases(CURRENT_MARKERS),
    }
}

/// Compiles the rule set now (otherwise the first call pays for it).
pub fn warm_up() {
    compiled();
}

fn contains_phrase(clause: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && clause.windows(phrase.len()).any(|w| w == phrase)
}

fn any_match(patterns: &[Pattern], n: &Normalised) -> bool {
    n.clauses.iter().any(|c| patterns.iter().any(|p| p.find(c).is_some()))
}

/// A negation cue up to [`NEGATION_WINDOW`] words before `start`, not
/// crossing a stop word, and not a pseudo-negation.
fn negated(clause: &[String], start: usize) -> bool {
    let from = start.saturating_sub(NEGATION_WINDOW);
    for i in (from..start).rev() {
        let t = clause[i].as_str();
        if NEGATION_STOPS.contains(&t) {
            return false;
        }
        if NEGATION_CUES.contains(&t) {
            let next = clause.get(i + 1).map(String::as_str).unwrap_or("");
            if !PSEUDO_NEGATION_NEXT.contains(&next) {
                return true;
            }
        }
    }
    false
}

/// A negation cue inside a match, in a gap ("I would never hurt my kids"
/// matches "@intent .. @violent ..." from "would").
fn negated_inside(clause: &[String], start: usize, end: usize) -> bool {
    (start..end).any(|i| {
        NEGATION_CUES.contains(&clause[i].as_str())
            && !PSEUDO_NEGATION_NEXT.contains(&clause.get(i + 1).map(String::as_str).unwrap_or(""))
    })
}

fn historical(c: &Compiled, clause: &[String]) -> bool {
    c.historical.iter().any(|p| contains_phrase(clause, p)) && !c.current.iter().any(|p| contains_phrase(clause, p))
}

/// Screens one user turn.
pub fn classify(text: &str) -> Assessment {
    let c = compiled();
    let n = normalise(text);
    let mut hits: Vec<Hit> = Vec::new();

    // Per clause, once: does it read as history? Which patterns can match?
    let old: Vec<bool> = n.clauses.iter().map(|clause| historical(c, clause)).collect();
    let candidates: Vec<_> = n.clauses.iter().map(|clause| c.index.candidates(clause)).collect();
    for cr in &c.rules {
        // Best outcome of this rule over the message: a live hit beats a discounted one.
        // `unless` and `with` are checked only once a pattern has matched (most rules don't).
        let mut best: Option<(Severity, bool)> = None;
        for ((clause, &old), candidates) in n.clauses.iter().zip(&old).zip(&candidates) {
            let mut excluded: Option<bool> = None;
            for (i, (p, own_negation)) in cr.patterns.iter().zip(&cr.own_negation).enumerate() {
                for span in p.find_all_anchored(clause, candidates.contains(cr.first_id + i)) {
                    if *excluded.get_or_insert_with(|| cr.unless.iter().any(|u| u.find(clause).is_some())) {
                        break;
                    }
                    let discounted = old
                        || negated(clause, span.start)
                        || (!own_negation && negated_inside(clause, span.start, span.end));
                    let sev = if discounted { cr.rule.severity.min(Severity::Low) } else { cr.rule.severity };
                    let candidate = (sev, !discounted);
                    if best.is_none_or(|(s, d)| candidate > (s, !d)) {
                        best = Some((sev, discounted));
                    }
                }
            }
        }
        if let Some((severity, discounted)) = best
            && (cr.with.is_empty() || any_match(&cr.with, &n))
        {
            hits.push(Hit { rule_id: cr.rule.id.to_string(), category: cr.rule.category, severity, discounted });
        }
    }

    // Imminence: a timeframe, means, plan or farewell makes live intent imminent.
    let can_escalate = |h: &Hit| {
        !h.discounted
            && h.severity >= Severity::Moderate
            && matches!(h.category, Category::Suicide | Category::SelfHarm | Category::HarmToOthers)
    };
    if let Some(top) = hits.iter().filter(|h| can_escalate(h)).max_by_key(|h| h.severity).map(|h| h.category) {
        let markers: Vec<&str> =
            c.imminence.iter().filter(|(_, ps)| any_match(ps, &n)).map(|(id, _)| *id).collect();
        if !markers.is_empty() {
            for h in hits.iter_mut().filter(|h| can_escalate(h)) {
                h.severity = Severity::Imminent;
            }
            for id in markers {
                hits.push(Hit { rule_id: id.to_string(), category: top, severity: Severity::Imminent, discounted: false });
            }
        }
    }

    let severity = hits.iter().map(|h| h.severity).max().unwrap_or(Severity::None);
    let mut categories: Vec<Category> =
        hits.iter().filter(|h| h.severity >= Severity::Moderate).map(|h| h.category).collect();
    categories.sort();
    categories.dedup();
    let risk = severity >= Severity::Moderate;
    Assessment { risk, severity, categories, hits, escalate: risk, ruleset: rules::RULESET.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sev(text: &str) -> Severity {
        classify(text).severity
    }

    #[test]
    fn direct_and_indirect_suicide_risk() {
        assert_eq!(sev("I want to kill myself"), Severity::High);
        assert!(sev("everyone would be better off without me") >= Severity::Moderate);
        assert!(sev("I won't be around much longer") >= Severity::Moderate);
        assert!(sev("I've been giving my things away") >= Severity::Moderate);
        assert_eq!(sev("I have the pills saved up and tonight is the night"), Severity::Imminent);
    }

    #[test]
    fn misspellings_leetspeak_spacing() {
        for t in ["i wanna kil myslef", "K1LL MYSELF", "k i l l myself", "thinking about suicde", "I want to unalive myself", "kmsss", "I wanna dieeee"] {
            assert!(classify(t).risk, "{t}");
        }
    }

    #[test]
    fn negation_gives_low_not_none() {
        for t in ["I'm not suicidal", "I would never kill myself", "I've never had thoughts of hurting myself", "No, I don't want to hurt anyone"] {
            let a = classify(t);
            assert_eq!(a.severity, Severity::Low, "{t}: {a:?}");
            assert!(!a.escalate && a.hits.iter().all(|h| h.discounted), "{t}");
        }
        // A pseudo-negation does not protect.
        assert!(classify("I can't stop thinking about killing myself").risk);
        assert!(classify("I'm not okay and I want to die").risk);
        // Negation does not cross a clause.
        assert!(classify("I'm not suicidal but I want to die").risk);
    }

    #[test]
    fn history_is_low() {
        assert_eq!(sev("I tried to kill myself when I was 16, but I'm in a much better place now"), Severity::Low);
        assert!(classify("I used to self-harm as a teenager and I started again last week").risk);
    }

    #[test]
    fn hard_negatives_are_none() {
        for t in ["this commute is killing me", "I killed it at the presentation", "my phone died", "kill the process", "I could murder a pizza", "I cut myself chopping onions", "He hit me up on WhatsApp"] {
            assert_eq!(sev(t), Severity::None, "{t}: {:?}", classify(t));
        }
    }

    #[test]
    fn the_text_is_never_in_the_assessment() {
        let a = classify("I want to kill myself tonight, my name is Alice");
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.to_lowercase().contains("alice") && !json.contains("kill myself"));
    }

    #[test]
    fn each_category() {
        let cat = |t: &str| classify(t).categories;
        assert_eq!(cat("my husband hits me"), vec![Category::Abuse]);
        assert_eq!(cat("I want to stab my neighbour"), vec![Category::HarmToOthers]);
        assert_eq!(cat("I cut my arms last night"), vec![Category::SelfHarm]);
        assert_eq!(cat("I took 40 paracetamol"), vec![Category::MedicalEmergency]);
    }
}
