//! The wasm component: exports `therapy:safety/screen` and
//! `therapy:safety/output-filter` over the native core.

use crate::{crisis, output_filter, screen};

wit_bindgen::generate!({ path: "../../wit/safety.wit", world: "safety" });

use exports::therapy::safety::output_filter as wit_out;
use exports::therapy::safety::screen as wit;

struct SafetyScreen;

fn category_to_wit(c: screen::Category) -> wit::RiskCategory {
    match c {
        screen::Category::Suicide => wit::RiskCategory::Suicide,
        screen::Category::SelfHarm => wit::RiskCategory::SelfHarm,
        screen::Category::HarmToOthers => wit::RiskCategory::HarmToOthers,
        screen::Category::Abuse => wit::RiskCategory::Abuse,
        screen::Category::MedicalEmergency => wit::RiskCategory::MedicalEmergency,
    }
}

fn category_from_wit(c: wit::RiskCategory) -> screen::Category {
    match c {
        wit::RiskCategory::Suicide => screen::Category::Suicide,
        wit::RiskCategory::SelfHarm => screen::Category::SelfHarm,
        wit::RiskCategory::HarmToOthers => screen::Category::HarmToOthers,
        wit::RiskCategory::Abuse => screen::Category::Abuse,
        wit::RiskCategory::MedicalEmergency => screen::Category::MedicalEmergency,
    }
}

fn severity_to_wit(s: screen::Severity) -> wit::Severity {
    match s {
        screen::Severity::None => wit::Severity::None,
        screen::Severity::Low => wit::Severity::Low,
        screen::Severity::Moderate => wit::Severity::Moderate,
        screen::Severity::High => wit::Severity::High,
        screen::Severity::Imminent => wit::Severity::Imminent,
    }
}

fn severity_from_wit(s: wit::Severity) -> screen::Severity {
    match s {
        wit::Severity::None => screen::Severity::None,
        wit::Severity::Low => screen::Severity::Low,
        wit::Severity::Moderate => screen::Severity::Moderate,
        wit::Severity::High => screen::Severity::High,
        wit::Severity::Imminent => screen::Severity::Imminent,
    }
}

fn assessment_to_wit(a: screen::Assessment) -> wit::Assessment {
    wit::Assessment {
        risk: a.risk,
        severity: severity_to_wit(a.severity),
        categories: a.categories.into_iter().map(category_to_wit).collect(),
        hits: a
            .hits
            .into_iter()
            .map(|h| wit::RuleHit {
                rule_id: h.rule_id,
                category: category_to_wit(h.category),
                severity: severity_to_wit(h.severity),
                discounted: h.discounted,
            })
            .collect(),
        escalate: a.escalate,
        ruleset: a.ruleset,
    }
}

fn assessment_from_wit(a: wit::Assessment) -> screen::Assessment {
    screen::Assessment {
        risk: a.risk,
        severity: severity_from_wit(a.severity),
        categories: a.categories.into_iter().map(category_from_wit).collect(),
        hits: a
            .hits
            .into_iter()
            .map(|h| screen::Hit {
                rule_id: h.rule_id,
                category: category_from_wit(h.category),
                severity: severity_from_wit(h.severity),
                discounted: h.discounted,
            })
            .collect(),
        escalate: a.escalate,
        ruleset: a.ruleset,
    }
}

impl wit::Guest for SafetyScreen {
    fn classify(text: String) -> wit::Assessment {
        assessment_to_wit(screen::classify(&text))
    }

    fn build_crisis_payload(assessment: wit::Assessment, resources_json: String) -> Result<wit::CrisisPayload, String> {
        let p = crisis::crisis_payload(&assessment_from_wit(assessment), &resources_json)?;
        Ok(wit::CrisisPayload {
            escalate: p.escalate,
            severity: severity_to_wit(p.severity),
            categories: p.categories.into_iter().map(category_to_wit).collect(),
            rule_ids: p.rule_ids,
            message: p.message,
            resources: p
                .resources
                .into_iter()
                .map(|r| wit::CrisisResource { name: r.name, contact: r.contact, url: r.url, region: r.region, hours: r.hours })
                .collect(),
            model_reply_allowed: p.model_reply_allowed,
        })
    }
}

impl wit_out::Guest for SafetyScreen {
    fn check(text: String, config: wit_out::FilterConfig) -> wit_out::Verdict {
        let v = output_filter::check(&text, &output_filter::FilterConfig { blocklist: config.blocklist });
        wit_out::Verdict {
            action: match v.action {
                output_filter::Action::Allow => wit_out::Action::Allow,
                output_filter::Action::Rewrite => wit_out::Action::Rewrite,
                output_filter::Action::Block => wit_out::Action::Block,
            },
            findings: v
                .findings
                .into_iter()
                .map(|f| wit_out::Finding {
                    rule_id: f.rule_id,
                    kind: match f.kind {
                        output_filter::FindingKind::DiagnosisAsFact => wit_out::FindingKind::DiagnosisAsFact,
                        output_filter::FindingKind::MedicationDosing => wit_out::FindingKind::MedicationDosing,
                        output_filter::FindingKind::Blocklisted => wit_out::FindingKind::Blocklisted,
                    },
                    sentence: f.sentence,
                })
                .collect(),
            text: v.text,
        }
    }
}

export!(SafetyScreen);
