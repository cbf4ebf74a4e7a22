//! Filter over model text before the client sees it: no diagnosis stated as
//! fact, no medication doses or dose changes, nothing on the deployment's
//! blocklist. Works sentence by sentence: an offending sentence is replaced
//! by a fixed safe sentence (diagnosis, dosing) or removed (blocklist); if no
//! sentence of the model survives, the whole reply is blocked and a fallback
//! is shown instead.

use crate::normalise::normalise;
use crate::pattern::{Compiler, Pattern};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    DiagnosisAsFact,
    MedicationDosing,
    Blocklisted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule_id: String,
    pub kind: FindingKind,
    /// 0-based index of the sentence.
    pub sentence: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Allow,
    Rewrite,
    Block,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterConfig {
    pub blocklist: Vec<String>,
}

impl FilterConfig {
    /// A blocklist from a Spin variable: one entry per line (or comma separated).
    pub fn from_lines(text: &str) -> FilterConfig {
        FilterConfig {
            blocklist: text
                .split(['\n', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub action: Action,
    pub findings: Vec<Finding>,
    pub text: String,
}

pub const DIAGNOSIS_REPLACEMENT: &str = "I can't diagnose, but a qualified clinician can help you make sense of what you're experiencing.";
pub const DOSING_REPLACEMENT: &str = "I can't advise on medication or doses; please ask your prescriber or pharmacist.";
pub const BLOCK_FALLBACK: &str = "I'm not able to help with that here. Could you tell me a bit more about how you're feeling?";

pub(crate) struct OutRule {
    id: &'static str,
    kind: FindingKind,
    description: &'static str,
    pub(crate) patterns: &'static [&'static str],
    pub(crate) unless: &'static [&'static str],
}

pub(crate) const OUT_SETS: &[(&str, &str)] = &[
    ("dx", "depression|depressive_disorder|major_depressive_disorder|mdd|clinical_depression|postpartum_depression|\
            bipolar|bipolar_disorder|bpd|borderline|borderline_personality_disorder|ptsd|cptsd|c_ptsd|ocd|adhd|autism|\
            autistic|asperger*|schizophrenia|schizophrenic|psychosis|psychotic|anxiety_disorder|generalized_anxiety_disorder|\
            generalised_anxiety_disorder|gad|social_anxiety_disorder|panic_disorder|personality_disorder|npd|\
            narcissistic_personality_disorder|eating_disorder|anorexia|bulimia|binge_eating_disorder|dementia|alzheimer*|\
            a_disorder|a_mental_illness|mental_illness|dissociative_identity_disorder|seasonal_affective_disorder|\
            substance_use_disorder|alcoholism|an_addiction|addiction|dysthymia|cyclothymia|agoraphobia|hypochondria|\
            body_dysmorphic_disorder|trauma_disorder|attachment_disorder"),
    ("dxperson", "narcissist|sociopath|psychopath|bipolar|schizophrenic|depressive|anorexic|bulimic|alcoholic|addict|\
                  borderline|psychotic|autistic|hypochondriac|manic_depressive"),
    ("med", "medication|medications|meds|medicine|pills|tablets|dose|dosage|doses|antidepressant*|ssri*|snri*|sertraline|\
             fluoxetine|citalopram|escitalopram|paroxetine|venlafaxine|duloxetine|bupropion|mirtazapine|lithium|\
             quetiapine|olanzapine|aripiprazole|risperidone|lamotrigine|valproate|xanax|alprazolam|valium|diazepam|\
             lorazepam|clonazepam|zopiclone|zolpidem|propranolol|adderall|ritalin|methylphenidate|prozac|zoloft|lexapro|\
             wellbutrin|seroquel|abilify|benzo*|stimulant*|sleeping_pills|insulin|paracetamol|ibuprofen|melatonin"),
    ("unit", "mg|milligram|milligrams|mcg|microgram|micrograms|ug|ml|millilitre|millilitres|milliliter|milliliters|\
              g|gram|grams|iu|units|tablet|tablets|pill|pills|capsule|capsules|puffs|drops"),
    ("num", "#many|1|2|3|4|5|6|7|one|two|three|four|five|six|seven|half|a_half|quarter|double|triple"),
];

pub(crate) const OUT_RULES: &[OutRule] = &[
    OutRule {
        id: "OUT-DX-001",
        kind: FindingKind::DiagnosisAsFact,
        description: "Tells the user they have a condition",
        patterns: &[
            "you [clearly|definitely|obviously|certainly|probably|likely|must|really|do] have|got|suffer_from|are_suffering_from|are_experiencing|have_got|are_living_with .. @dx",
            "your diagnosis|condition|disorder is",
            "i diagnose|am_diagnosing you",
            "you meet the criteria",
        ],
        unless: &["may|might|could|possibly|perhaps|maybe|diagnose|diagnosis_only|professional|clinician|doctor|psychiatrist|psychologist|gp|assessment|assess|evaluate|evaluated|evaluation|screen*|worth|consider|some_people|many_people|symptoms|signs|traits|features|if_you|whether|wonder|explore|not_saying|can_not_say|not_able_to_say|not_a_diagnosis|without_an_assessment|told_you|were_diagnosed|have_been_diagnosed|mentioned|you_said"],
    },
    OutRule {
        id: "OUT-DX-002",
        kind: FindingKind::DiagnosisAsFact,
        description: "Labels the user or their experience with a diagnosis",
        patterns: &[
            "you are [clearly|definitely|obviously|certainly|probably|just|a|an] [a|an|classic|textbook] @dxperson",
            "this|that|it|what_you_describe|what_you_are_describing|these|those is|are [clearly|definitely|obviously|classic|textbook|just|a|typical] .. @dx",
            "classic|textbook|typical signs|symptoms|case of .. @dx",
            "sounds|seems|looks like [you_have|you_are_a|you_are|a|classic] @dx|@dxperson",
        ],
        unless: &["may|might|could|possibly|perhaps|maybe|diagnose|professional|clinician|doctor|psychiatrist|psychologist|gp|assessment|assess|evaluate|evaluation|worth|consider|if_you|whether|wonder|explore|not_saying|can_not_say|not_a_diagnosis|not_necessarily|does_not_mean|common|normal|understandable"],
    },
    OutRule {
        id: "OUT-MED-001",
        kind: FindingKind::MedicationDosing,
        description: "States an amount of a drug (a number with a unit)",
        patterns: &["@num @unit", "#dose"],
        unless: &["steps|minutes|hours|days|weeks|glasses_of_water|breaths|deep_breaths|things|ways|times|people|sessions"],
    },
    OutRule {
        id: "OUT-MED-002",
        kind: FindingKind::MedicationDosing,
        description: "Tells the user to start, stop or change a medication or its dose",
        patterns: &[
            "start|stop|stopping|starting|increase|increasing|decrease|decreasing|double|doubling|halve|halving|reduce|reducing|lower|lowering|raise|raising|up|skip|skipping|taper|tapering|adjust|change|cut_down|come_off|go_off|switch|add .. your|the|a|my|some|more|less .. @med",
            "take|taking|try .. @num .. @med|of_your|extra|more",
            "take|taking|try [an|a] extra|more|another @med|one|dose",
        ],
        unless: &["prescriber|doctor|pharmacist|psychiatrist|gp|physician|nurse|clinician|provider|prescribed_it|talk_to|speak_to|ask|never|do_not|without|not_advise|can_not_advise|not_able_to_advise"],
    },
];

struct CompiledOut {
    rules: Vec<(&'static OutRule, Vec<Pattern>, Vec<Pattern>)>,
}

fn compiled() -> &'static CompiledOut {
    static C: OnceLock<CompiledOut> = OnceLock::new();
    C.get_or_init(|| {
        let mut compiler = Compiler::new(OUT_SETS);
        CompiledOut {
            rules: OUT_RULES
                .iter()
                .map(|r| {
                    let pats = r.patterns.iter().filter(|p| **p != "#dose").map(|p| compiler.compile(p)).collect();
                    let unless = r.unless.iter().map(|p| compiler.compile(p)).collect();
                    (r, pats, unless)
                })
                .collect(),
        }
    })
}

/// The rule table, for documentation and for plugin authors: (id, kind, description).
pub fn rule_table() -> Vec<(&'static str, FindingKind, &'static str)> {
    OUT_RULES.iter().map(|r| (r.id, r.kind, r.description)).collect()
}

/// A token such as "50mg" or "2.5ml" (digits glued to a unit).
fn glued_dose(token: &str) -> bool {
    let unit_start = token.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(token.len());
    let (num, unit) = token.split_at(unit_start);
    !num.is_empty()
        && num.chars().next().is_some_and(|c| c.is_ascii_digit())
        && matches!(unit, "mg" | "mcg" | "ug" | "ml" | "g" | "iu" | "units")
}

/// Splits model text into sentences, keeping each one's trailing whitespace
/// so that the kept sentences join back exactly.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        let (_, c) = bytes[i];
        let end_here = matches!(c, '.' | '!' | '?' | '\n');
        if end_here {
            // Absorb repeated punctuation and the whitespace after it.
            let mut j = i + 1;
            while j < bytes.len() && matches!(bytes[j].1, '.' | '!' | '?') {
                j += 1;
            }
            // A dot inside a number ("2.5") does not end a sentence.
            let next_is_space = j >= bytes.len() || bytes[j].1.is_whitespace();
            if next_is_space || c == '\n' {
                while j < bytes.len() && bytes[j].1.is_whitespace() {
                    j += 1;
                }
                let end = bytes.get(j).map_or(text.len(), |b| b.0);
                out.push(&text[start..end]);
                start = end;
                i = j;
                continue;
            }
        }
        i += 1;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Checks one model reply.
pub fn check(text: &str, config: &FilterConfig) -> Verdict {
    let c = compiled();
    let blocklist: Vec<Vec<String>> = config
        .blocklist
        .iter()
        .map(|b| normalise(b).tokens().map(str::to_string).collect::<Vec<_>>())
        .filter(|t: &Vec<String>| !t.is_empty())
        .collect();

    let parts = sentences(text);
    let mut findings = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut kept_original = 0usize;
    let (mut said_dx, mut said_med) = (false, false);
    for (i, sentence) in parts.iter().enumerate() {
        let n = normalise(sentence);
        let question = sentence.trim_end().ends_with('?');
        let mut kinds = Vec::new();
        for (rule, patterns, unless) in &c.rules {
            if rule.kind == FindingKind::DiagnosisAsFact && question {
                continue;
            }
            // Matched in some clause, and no hedge anywhere in the sentence.
            let matched = n.clauses.iter().any(|clause| {
                patterns.iter().any(|p| p.find(clause).is_some())
                    || (rule.patterns.contains(&"#dose") && clause.iter().any(|t| glued_dose(t)))
            });
            let hedged = || n.clauses.iter().any(|clause| unless.iter().any(|u| u.find(clause).is_some()));
            if matched && !kinds.contains(&rule.kind) && !hedged() {
                findings.push(Finding { rule_id: rule.id.to_string(), kind: rule.kind, sentence: i as u32 });
                kinds.push(rule.kind);
            }
        }
        let all_tokens: Vec<String> = n.tokens().map(str::to_string).collect();
        if blocklist.iter().any(|b| all_tokens.windows(b.len()).any(|w| w == b.as_slice())) {
            findings.push(Finding { rule_id: "OUT-BL".into(), kind: FindingKind::Blocklisted, sentence: i as u32 });
            kinds.push(FindingKind::Blocklisted);
        }
        let trailing = &sentence[sentence.trim_end().len()..];
        if kinds.is_empty() {
            out.push_str(sentence);
            kept_original += 1;
        } else if kinds.contains(&FindingKind::Blocklisted) {
            // removed
        } else if kinds.contains(&FindingKind::MedicationDosing) {
            if !said_med {
                out.push_str(DOSING_REPLACEMENT);
                out.push_str(if trailing.is_empty() { " " } else { trailing });
                said_med = true;
            }
        } else if !said_dx {
            out.push_str(DIAGNOSIS_REPLACEMENT);
            out.push_str(if trailing.is_empty() { " " } else { trailing });
            said_dx = true;
        }
    }
    let action = if findings.is_empty() {
        Action::Allow
    } else if kept_original == 0 {
        Action::Block
    } else {
        Action::Rewrite
    };
    let text = match action {
        Action::Allow => text.to_string(),
        Action::Rewrite => out.trim_end().to_string(),
        Action::Block => BLOCK_FALLBACK.to_string(),
    };
    Verdict { action, findings, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<FindingKind> {
        check(text, &FilterConfig::default()).findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn diagnosis_as_fact_is_caught_hedged_talk_is_not() {
        for t in ["You have depression.", "You clearly have bipolar disorder.", "You're a narcissist.", "This is classic PTSD.", "It sounds like you have OCD."] {
            assert_eq!(kinds(t), vec![FindingKind::DiagnosisAsFact], "{t}");
        }
        for t in [
            "Some of what you describe can be signs of depression, and a clinician could assess that with you.",
            "Do you think you might have ADHD?",
            "Feeling low after a loss is very common.",
            "You mentioned you were diagnosed with PTSD last year; how has that been?",
        ] {
            assert!(kinds(t).is_empty(), "{t}: {:?}", check(t, &FilterConfig::default()));
        }
    }

    #[test]
    fn dosing_is_caught() {
        for t in ["Take 50mg of sertraline each morning.", "You could try 2 tablets of ibuprofen.", "Double your dose of lithium tonight.", "The usual dose is 10 mg.", "Stop taking your antidepressants."] {
            assert!(kinds(t).contains(&FindingKind::MedicationDosing), "{t}");
        }
        for t in ["Please don't change your medication without talking to your prescriber.", "Try 3 deep breaths.", "Take 5 minutes for yourself."] {
            assert!(kinds(t).is_empty(), "{t}: {:?}", check(t, &FilterConfig::default()));
        }
    }

    #[test]
    fn rewrite_keeps_the_rest_and_block_when_nothing_is_left() {
        let v = check("That sounds really hard. You have depression. Let's look at your week.", &FilterConfig::default());
        assert_eq!(v.action, Action::Rewrite);
        assert_eq!(v.text, format!("That sounds really hard. {DIAGNOSIS_REPLACEMENT} Let's look at your week."));
        let v = check("You have bipolar disorder.", &FilterConfig::default());
        assert_eq!(v.action, Action::Block);
        assert_eq!(v.text, BLOCK_FALLBACK);
        let v = check("That sounds hard. How are you sleeping?", &FilterConfig::default());
        assert_eq!((v.action, v.text.as_str()), (Action::Allow, "That sounds hard. How are you sleeping?"));
    }

    #[test]
    fn blocklist_is_case_spacing_and_leet_insensitive() {
        let cfg = FilterConfig::from_lines("acme pharma\nmiracle cure");
        let v = check("That sounds hard. Have you heard of ACME   Pharma? Keep going.", &cfg);
        assert_eq!(v.action, Action::Rewrite);
        assert_eq!(v.text, "That sounds hard. Keep going.");
        assert_eq!(v.findings[0].rule_id, "OUT-BL");
        assert_eq!(kinds_cfg("It is a m1racle cure.", &cfg), vec![FindingKind::Blocklisted]);
        assert!(check("A cure is rare.", &cfg).findings.is_empty());
    }

    fn kinds_cfg(text: &str, cfg: &FilterConfig) -> Vec<FindingKind> {
        check(text, cfg).findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn sentences_split_and_rejoin() {
        let t = "One. Two 2.5 mg!  Three?\nFour";
        assert_eq!(sentences(t), vec!["One. ", "Two 2.5 mg!  ", "Three?\n", "Four"]);
        assert_eq!(sentences(t).concat(), t);
    }
}
