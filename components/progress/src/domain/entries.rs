//! Request bodies and record views, with input validation. Validation
//! messages name fields and limits, never the submitted values.

use super::affect::Sentiment;
use super::dates::{format_date, parse_timestamp};
use super::goals::{Achievement, Lifecycle};
use super::measures::{Instrument, Severity};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RiskFlag {
    SuicidalIdeation,
    SelfHarm,
    HarmToOthers,
    HarmFromOthers,
    SubstanceMisuse,
    Safeguarding,
    Crisis,
}

impl RiskFlag {
    pub fn label(self) -> &'static str {
        match self {
            Self::SuicidalIdeation => "suicidal ideation",
            Self::SelfHarm => "self-harm",
            Self::HarmToOthers => "harm to others",
            Self::HarmFromOthers => "harm from others",
            Self::SubstanceMisuse => "substance misuse",
            Self::Safeguarding => "safeguarding",
            Self::Crisis => "crisis",
        }
    }
}

/// Who wrote a log entry: a therapist's session note or a client's journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Session,
    Journal,
}

impl EntryKind {
    pub fn code(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Journal => "journal",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "session" => Some(Self::Session),
            "journal" => Some(Self::Journal),
            _ => None,
        }
    }
}

fn check_text(field: &str, s: &str, max: usize, required: bool) -> Result<(), String> {
    if required && s.trim().is_empty() {
        return Err(format!("{field} is required"));
    }
    if s.chars().count() > max {
        return Err(format!("{field} must be at most {max} characters"));
    }
    Ok(())
}

fn check_list(field: &str, items: &[String], max_items: usize, max_len: usize) -> Result<(), String> {
    if items.len() > max_items {
        return Err(format!("{field} may hold at most {max_items} entries"));
    }
    for (i, s) in items.iter().enumerate() {
        if s.trim().is_empty() || s.chars().count() > max_len {
            return Err(format!("{field}[{i}] must be 1 to {max_len} characters"));
        }
    }
    Ok(())
}

/// Parses a date/time field.
pub fn parse_when(field: &str, s: &str) -> Result<i64, String> {
    parse_timestamp(s).ok_or_else(|| format!("{field} must be a date YYYY-MM-DD or an RFC 3339 date-time"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    pub display_name: String,
    #[serde(default)]
    pub date_of_birth: Option<String>,
    #[serde(default)]
    pub contact: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

impl NewClient {
    pub fn validate(&self) -> Result<(), String> {
        check_text("display_name", &self.display_name, 200, true)?;
        if let Some(d) = &self.date_of_birth {
            parse_when("date_of_birth", d)?;
        }
        check_text("contact", self.contact.as_deref().unwrap_or(""), 500, false)?;
        check_text("notes", self.notes.as_deref().unwrap_or(""), 20_000, false)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    pub id: String,
    pub display_name: String,
    pub date_of_birth: Option<String>,
    pub contact: Option<String>,
    pub notes: Option<String>,
    pub created_at: String,
    pub archived_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntry {
    /// When the session happened (date or date-time).
    pub date: String,
    #[serde(default)]
    pub kind: Option<EntryKind>,
    pub summary: String,
    #[serde(default)]
    pub themes: Vec<String>,
    #[serde(default)]
    pub interventions: Vec<String>,
    #[serde(default)]
    pub homework: Option<String>,
    #[serde(default)]
    pub mood: Option<serde_json::Value>,
    #[serde(default)]
    pub risk_flags: Vec<RiskFlag>,
    /// Only for amendments: why the entry is being amended.
    #[serde(default)]
    pub amendment_reason: Option<String>,
}

/// A validated entry body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryContent {
    pub occurred_at: i64,
    pub summary: String,
    pub themes: Vec<String>,
    pub interventions: Vec<String>,
    pub homework: Option<String>,
    pub mood: Option<u8>,
    pub risk_flags: Vec<RiskFlag>,
    pub amendment_reason: Option<String>,
}

impl NewEntry {
    pub fn validate(self, now: i64) -> Result<EntryContent, String> {
        let occurred_at = parse_when("date", &self.date)?;
        if occurred_at > now + 86_400 {
            return Err("date must not be in the future".into());
        }
        check_text("summary", &self.summary, 20_000, true)?;
        check_list("themes", &self.themes, 20, 100)?;
        check_list("interventions", &self.interventions, 20, 200)?;
        check_text("homework", self.homework.as_deref().unwrap_or(""), 5_000, false)?;
        check_text("amendment_reason", self.amendment_reason.as_deref().unwrap_or(""), 1_000, false)?;
        let mood = match &self.mood {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(m @ 0..=10) => Some(m as u8),
                _ => return Err("mood must be an integer from 0 to 10".into()),
            },
        };
        let mut risk_flags = self.risk_flags;
        risk_flags.sort();
        risk_flags.dedup();
        Ok(EntryContent {
            occurred_at,
            summary: self.summary,
            themes: self.themes,
            interventions: self.interventions,
            homework: self.homework,
            mood,
            risk_flags,
            amendment_reason: self.amendment_reason,
        })
    }
}

/// The text that sentiment is computed over.
pub fn sentiment_text(c: &EntryContent) -> String {
    let mut t = c.summary.clone();
    if let Some(h) = &c.homework {
        t.push_str(". ");
        t.push_str(h);
    }
    t
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    pub id: String,
    pub client_id: String,
    pub version: i64,
    pub supersedes: Option<String>,
    pub superseded_by: Option<String>,
    pub kind: EntryKind,
    pub date: String,
    pub occurred_at: i64,
    pub recorded_at: String,
    pub author_id: String,
    pub summary: String,
    pub themes: Vec<String>,
    pub interventions: Vec<String>,
    pub homework: Option<String>,
    pub mood: Option<u8>,
    pub risk_flags: Vec<RiskFlag>,
    pub sentiment: Sentiment,
    pub affect: f64,
    pub amendment_reason: Option<String>,
}

/// The parts of an entry that reports and trends use.
#[derive(Debug, Clone, Serialize)]
pub struct EntryBrief {
    pub id: String,
    pub kind: EntryKind,
    pub occurred_at: i64,
    pub mood: Option<u8>,
    pub sentiment: f64,
    pub affect: f64,
    pub themes: Vec<String>,
    pub risk_flags: Vec<RiskFlag>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMeasure {
    pub instrument: String,
    pub items: Vec<serde_json::Value>,
    /// When it was completed (date or date-time); defaults to now.
    #[serde(default)]
    pub date: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MeasureView {
    pub id: String,
    pub instrument: Instrument,
    pub loinc: &'static str,
    pub date: String,
    pub administered_at: i64,
    pub items: Vec<u8>,
    pub total: u32,
    pub severity: Severity,
}

impl MeasureView {
    pub fn new(id: String, instrument: Instrument, administered_at: i64, items: Vec<u8>) -> Self {
        let total = super::measures::total(&items);
        MeasureView {
            id,
            instrument,
            loinc: instrument.loinc_total(),
            date: format_date(administered_at),
            administered_at,
            items,
            total,
            severity: instrument.severity(total),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGoal {
    pub description: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub due_date: Option<String>,
    #[serde(default)]
    pub lifecycle_status: Option<Lifecycle>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalPatch {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub due_date: Option<String>,
    #[serde(default)]
    pub lifecycle_status: Option<Lifecycle>,
    #[serde(default)]
    pub achievement_status: Option<Achievement>,
}

pub fn validate_goal_text(description: &str, target: Option<&str>) -> Result<(), String> {
    check_text("description", description, 2_000, true)?;
    check_text("target", target.unwrap_or(""), 2_000, false)
}

#[derive(Debug, Clone, Serialize)]
pub struct GoalView {
    pub id: String,
    pub client_id: String,
    pub version: i64,
    pub description: String,
    pub target: Option<String>,
    pub due_date: Option<String>,
    pub due_at: Option<i64>,
    pub lifecycle_status: Lifecycle,
    pub achievement_status: Achievement,
    pub created_at: String,
    pub updated_at: String,
    pub milestones: Vec<MilestoneView>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMilestone {
    pub description: String,
    #[serde(default)]
    pub due_date: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilestonePatch {
    pub achieved: bool,
    #[serde(default)]
    pub date: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MilestoneView {
    pub id: String,
    pub goal_id: String,
    pub description: String,
    pub due_date: Option<String>,
    pub achieved_date: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> Result<EntryContent, String> {
        let e: NewEntry = serde_json::from_str(json).map_err(|e| e.to_string())?;
        e.validate(parse_timestamp("2025-01-01").unwrap())
    }

    #[test]
    fn entry_validation() {
        let ok = entry(r#"{"date":"2024-05-01","summary":"talked","mood":7,"risk_flags":["self-harm","self-harm"]}"#).unwrap();
        assert_eq!(ok.mood, Some(7));
        assert_eq!(ok.risk_flags, vec![RiskFlag::SelfHarm]);
        assert!(entry(r#"{"date":"2024-05-01","summary":"x","mood":11}"#).unwrap_err().contains("mood"));
        assert!(entry(r#"{"date":"2024-05-01","summary":"x","mood":"7"}"#).unwrap_err().contains("mood"));
        assert!(entry(r#"{"date":"2024-05-01","summary":"  "}"#).unwrap_err().contains("summary"));
        assert!(entry(r#"{"date":"2030-05-01","summary":"x"}"#).unwrap_err().contains("future"));
        assert!(entry(r#"{"date":"May 1","summary":"x"}"#).unwrap_err().contains("date"));
        assert!(entry(r#"{"date":"2024-05-01","summary":"x","risk_flags":["bad"]}"#).is_err());
        assert!(entry(r#"{"date":"2024-05-01","summary":"x","extra":1}"#).is_err());
    }

    #[test]
    fn client_validation() {
        let c: NewClient = serde_json::from_str(r#"{"display_name":"A","date_of_birth":"1990-02-30"}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("date_of_birth"));
        let c: NewClient = serde_json::from_str(r#"{"display_name":""}"#).unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn measure_view_scores() {
        let m = MeasureView::new("m".into(), Instrument::Phq9, 0, vec![3, 3, 3, 2, 2, 2, 1, 1, 0]);
        assert_eq!(m.total, 17);
        assert_eq!(m.severity, Severity::ModeratelySevere);
        assert_eq!(m.loinc, "44261-6");
    }
}
