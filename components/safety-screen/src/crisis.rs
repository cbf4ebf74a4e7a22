//! Crisis resources, configurable per deployment, and the payload the API
//! attaches to a reply when a turn is at risk.
//!
//! The configuration is JSON (schema: `config/crisis_resources.schema.json`,
//! default: `config/crisis_resources.default.json`, both embedded here). A
//! deployment sets it as the Spin variable `crisis_resources`; the API
//! passes the variable's text to [`crisis_payload`] (or, across the
//! component boundary, to `therapy:safety/screen.build-crisis-payload`).

use crate::screen::{Assessment, Category, Severity};
use serde::{Deserialize, Serialize};

/// The built-in configuration (US lines plus international guidance).
pub const DEFAULT_CONFIG_JSON: &str = include_str!("../config/crisis_resources.default.json");
/// JSON Schema of the configuration.
pub const CONFIG_SCHEMA_JSON: &str = include_str!("../config/crisis_resources.schema.json");
pub const SCHEMA_ID: &str = "therapy-safety/crisis-resources@1";

const FALLBACK_IMMINENT: &str = "I'm really concerned about your safety right now. Please contact emergency services or a crisis line now.";
const FALLBACK_MEDICAL: &str = "This sounds like a medical emergency. Please call emergency services now.";
const FALLBACK_DEFAULT: &str = "Thank you for telling me. You deserve support from a person right now. These services are free and confidential:";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrisisConfig {
    pub schema: String,
    #[serde(default)]
    pub deployment: Option<String>,
    #[serde(default)]
    pub messages: Messages,
    pub resources: Vec<ResourceConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Messages {
    #[serde(default)]
    pub imminent: Option<String>,
    #[serde(default, rename = "medical-emergency")]
    pub medical_emergency: Option<String>,
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub id: String,
    pub name: String,
    pub contact: String,
    #[serde(default)]
    pub url: Option<String>,
    pub region: String,
    #[serde(default)]
    pub hours: Option<String>,
    #[serde(default)]
    pub emergency: bool,
    /// Empty: shown for every category.
    #[serde(default)]
    pub categories: Vec<Category>,
}

/// A resource as shown to the user (the WIT `crisis-resource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrisisResource {
    pub name: String,
    pub contact: String,
    pub url: Option<String>,
    pub region: String,
    pub hours: Option<String>,
}

/// What the API attaches to its reply (the WIT `crisis-payload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrisisPayload {
    pub escalate: bool,
    pub severity: Severity,
    pub categories: Vec<Category>,
    pub rule_ids: Vec<String>,
    pub message: String,
    pub resources: Vec<CrisisResource>,
    /// False at imminent severity or for a medical emergency: the crisis
    /// message stands alone.
    pub model_reply_allowed: bool,
}

impl CrisisConfig {
    /// Parses and checks a configuration; `""` (or only whitespace) is the default.
    pub fn parse(json: &str) -> Result<CrisisConfig, String> {
        let json = if json.trim().is_empty() { DEFAULT_CONFIG_JSON } else { json };
        let config: CrisisConfig =
            serde_json::from_str(json).map_err(|e| format!("crisis_resources: invalid JSON: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    pub fn default_config() -> CrisisConfig {
        CrisisConfig::parse("").expect("the built-in crisis configuration is valid")
    }

    fn validate(&self) -> Result<(), String> {
        if self.schema != SCHEMA_ID {
            return Err(format!("crisis_resources: `schema` must be \"{SCHEMA_ID}\", found \"{}\"", self.schema));
        }
        if self.resources.is_empty() {
            return Err("crisis_resources: `resources` is empty; a deployment must list at least one".into());
        }
        let mut ids = std::collections::HashSet::new();
        for (i, r) in self.resources.iter().enumerate() {
            let at = format!("crisis_resources: resources[{i}]");
            for (field, value) in [("id", &r.id), ("name", &r.name), ("contact", &r.contact), ("region", &r.region)] {
                if value.trim().is_empty() {
                    return Err(format!("{at}: `{field}` is empty"));
                }
            }
            if !ids.insert(r.id.as_str()) {
                return Err(format!("{at}: duplicate id \"{}\"", r.id));
            }
            if let Some(url) = &r.url
                && !url.starts_with("https://")
            {
                return Err(format!("{at}: `url` must start with https://"));
            }
        }
        for (name, m) in [("imminent", &self.messages.imminent), ("medical-emergency", &self.messages.medical_emergency), ("default", &self.messages.default)] {
            if m.as_ref().is_some_and(|m| m.trim().is_empty()) {
                return Err(format!("crisis_resources: messages.{name} is empty"));
            }
        }
        Ok(())
    }
}

/// Builds the crisis payload for an assessment from a deployment's
/// configuration (`""` = the built-in default). For an assessment with no
/// risk it still answers (escalate false, no resources), so a caller can
/// call it unconditionally.
pub fn crisis_payload(assessment: &Assessment, config_json: &str) -> Result<CrisisPayload, String> {
    let config = CrisisConfig::parse(config_json)?;
    Ok(build_payload(assessment, &config))
}

pub fn build_payload(assessment: &Assessment, config: &CrisisConfig) -> CrisisPayload {
    let medical = assessment.categories.contains(&Category::MedicalEmergency);
    let urgent = assessment.risk && (assessment.severity == Severity::Imminent || medical);
    let resources: Vec<CrisisResource> = if !assessment.risk {
        Vec::new()
    } else {
        // Emergency services first when urgent; then the matching lines in
        // configuration order; emergency entries otherwise last.
        let matches = |r: &ResourceConfig| {
            r.categories.is_empty() || r.categories.iter().any(|c| assessment.categories.contains(c))
        };
        let emergency = config.resources.iter().filter(|r| r.emergency);
        let lines = config.resources.iter().filter(|r| !r.emergency && matches(r));
        let ordered: Vec<&ResourceConfig> =
            if urgent { emergency.chain(lines).collect() } else { lines.chain(emergency).collect() };
        ordered
            .into_iter()
            .map(|r| CrisisResource {
                name: r.name.clone(),
                contact: r.contact.clone(),
                url: r.url.clone(),
                region: r.region.clone(),
                hours: r.hours.clone(),
            })
            .collect()
    };
    let m = &config.messages;
    let message = if !assessment.risk {
        String::new()
    } else if medical {
        m.medical_emergency.clone().unwrap_or_else(|| FALLBACK_MEDICAL.into())
    } else if assessment.severity == Severity::Imminent {
        m.imminent.clone().unwrap_or_else(|| FALLBACK_IMMINENT.into())
    } else {
        m.default.clone().unwrap_or_else(|| FALLBACK_DEFAULT.into())
    };
    CrisisPayload {
        escalate: assessment.escalate,
        severity: assessment.severity,
        categories: assessment.categories.clone(),
        rule_ids: assessment.rule_ids(),
        message,
        resources,
        model_reply_allowed: !urgent,
    }
}

/// The audit-trail entry for a screened turn (no text, rule ids only), for
/// the API's hash-chained audit log: `{"event":"safety.screen", ...}`.
pub fn audit_event(assessment: &Assessment) -> serde_json::Value {
    serde_json::json!({
        "event": if assessment.escalate { "safety.escalation" } else { "safety.screen" },
        "ruleset": assessment.ruleset,
        "severity": assessment.severity,
        "categories": assessment.categories,
        "rule_ids": assessment.rule_ids(),
        "escalate": assessment.escalate,
        "cacheable": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::classify;

    #[test]
    fn default_config_parses_and_has_988_and_741741() {
        let c = CrisisConfig::default_config();
        let all: String = c.resources.iter().map(|r| r.contact.clone()).collect();
        assert!(all.contains("988") && all.contains("741741") && all.contains("911"));
        let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA_JSON).unwrap();
        assert_eq!(schema["$id"], SCHEMA_ID);
    }

    #[test]
    fn payload_for_suicide_risk() {
        let a = classify("I want to kill myself");
        let p = crisis_payload(&a, "").unwrap();
        assert!(p.escalate && p.model_reply_allowed);
        assert_eq!(p.resources[0].name, "988 Suicide & Crisis Lifeline");
        assert!(p.resources.iter().any(|r| r.contact.contains("741741")));
        assert!(!p.resources.iter().any(|r| r.name.contains("Poison")));
        assert!(p.rule_ids.contains(&"SUI-001".to_string()));
    }

    #[test]
    fn imminent_and_medical_put_emergency_first_and_stand_alone() {
        for t in ["I have the pills saved up and tonight is the night", "I took 30 paracetamol an hour ago"] {
            let p = crisis_payload(&classify(t), "").unwrap();
            assert!(!p.model_reply_allowed, "{t}");
            assert_eq!(p.resources[0].contact, "Call 911", "{t}");
        }
        let p = crisis_payload(&classify("I took 30 paracetamol an hour ago"), "").unwrap();
        assert!(p.resources.iter().any(|r| r.name == "Poison Control"));
    }

    #[test]
    fn no_risk_no_resources() {
        let p = crisis_payload(&classify("I had a nice walk today"), "").unwrap();
        assert!(!p.escalate && p.resources.is_empty() && p.message.is_empty());
    }

    #[test]
    fn deployment_config_replaces_the_default() {
        let uk = r#"{"schema":"therapy-safety/crisis-resources@1","deployment":"UK",
            "messages":{"default":"You're not alone."},
            "resources":[{"id":"999","name":"Emergency","contact":"Call 999","region":"UK","emergency":true},
                         {"id":"samaritans","name":"Samaritans","contact":"Call 116 123","url":"https://www.samaritans.org","region":"UK"}]}"#;
        let p = crisis_payload(&classify("I want to die"), uk).unwrap();
        assert_eq!(p.message, "You're not alone.");
        assert_eq!(p.resources.iter().map(|r| r.contact.as_str()).collect::<Vec<_>>(), vec!["Call 116 123", "Call 999"]);
    }

    #[test]
    fn invalid_configs_are_errors_naming_the_problem() {
        let a = classify("I want to die");
        assert!(crisis_payload(&a, "{").unwrap_err().contains("invalid JSON"));
        assert!(crisis_payload(&a, r#"{"schema":"x","resources":[]}"#).unwrap_err().contains("schema"));
        let bad_url = r#"{"schema":"therapy-safety/crisis-resources@1","resources":[{"id":"a","name":"A","contact":"c","region":"US","url":"http://x"}]}"#;
        assert!(crisis_payload(&a, bad_url).unwrap_err().contains("https"));
        let unknown = r#"{"schema":"therapy-safety/crisis-resources@1","resources":[{"id":"a","name":"A","contact":"c","region":"US","categories":["sadness"]}]}"#;
        assert!(crisis_payload(&a, unknown).is_err());
    }

    #[test]
    fn audit_event_has_no_text_and_is_not_cacheable() {
        let e = audit_event(&classify("I want to kill myself, I'm Bob"));
        assert_eq!(e["event"], "safety.escalation");
        assert_eq!(e["cacheable"], false);
        assert!(!e.to_string().contains("Bob"));
    }
}
