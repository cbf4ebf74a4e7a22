//! The safety contracts this component imports (`wit/safety.wit`, world
//! `safety-user`); spin.toml says which component provides them.

wit_bindgen::generate!({ path: "../../wit/safety.wit", world: "safety-user", generate_all });

pub use therapy::safety::output_filter;
pub use therapy::safety::screen;

use serde_json::{Value, json};

pub fn severity_str(s: screen::Severity) -> &'static str {
    match s {
        screen::Severity::None => "none",
        screen::Severity::Low => "low",
        screen::Severity::Moderate => "moderate",
        screen::Severity::High => "high",
        screen::Severity::Imminent => "imminent",
    }
}

pub fn category_str(c: screen::RiskCategory) -> &'static str {
    match c {
        screen::RiskCategory::Suicide => "suicide",
        screen::RiskCategory::SelfHarm => "self-harm",
        screen::RiskCategory::HarmToOthers => "harm-to-others",
        screen::RiskCategory::Abuse => "abuse",
        screen::RiskCategory::MedicalEmergency => "medical-emergency",
    }
}

pub fn action_str(a: output_filter::Action) -> &'static str {
    match a {
        output_filter::Action::Allow => "allow",
        output_filter::Action::Rewrite => "rewrite",
        output_filter::Action::Block => "block",
    }
}

/// The crisis payload as the reply's `safety` object.
pub fn payload_json(p: &screen::CrisisPayload) -> Value {
    json!({
        "escalate": p.escalate,
        "severity": severity_str(p.severity),
        "categories": p.categories.iter().map(|c| category_str(*c)).collect::<Vec<_>>(),
        "rule_ids": p.rule_ids,
        "message": p.message,
        "resources": p.resources.iter().map(|r| json!({
            "name": r.name, "contact": r.contact, "url": r.url, "region": r.region, "hours": r.hours,
        })).collect::<Vec<_>>(),
        "model_reply_allowed": p.model_reply_allowed,
    })
}

/// The crisis message with its resources, as assistant text.
pub fn crisis_text(p: &screen::CrisisPayload) -> String {
    let mut s = p.message.clone();
    for r in &p.resources {
        s.push_str(&format!("\n- {}: {}", r.name, r.contact));
        if let Some(u) = &r.url {
            s.push_str(&format!(" ({u})"));
        }
    }
    s
}
