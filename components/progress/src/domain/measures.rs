//! PHQ-9 and GAD-7: item validation, totals, severity bands, LOINC codes and
//! change classification between a baseline and a later administration.
//!
//! Change rules (NHS Talking Therapies and common outcome definitions):
//! - reliable improvement / deterioration: total falls / rises by at least
//!   6 (PHQ-9) or 4 (GAD-7);
//! - response: total falls by at least 50% of the baseline;
//! - remission: PHQ-9 total below 5 (defined for PHQ-9 only);
//! - recovery: baseline at or above caseness (PHQ-9 ≥ 10, GAD-7 ≥ 8) and the
//!   latest below it; not applicable when the baseline was below caseness.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Instrument {
    #[serde(rename = "PHQ-9")]
    Phq9,
    #[serde(rename = "GAD-7")]
    Gad7,
}

impl Instrument {
    pub const ALL: [Instrument; 2] = [Instrument::Phq9, Instrument::Gad7];

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().replace(['-', '_'], "").as_str() {
            "PHQ9" => Some(Self::Phq9),
            "GAD7" => Some(Self::Gad7),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Phq9 => "PHQ-9",
            Self::Gad7 => "GAD-7",
        }
    }
    /// Stable storage code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Phq9 => "phq9",
            Self::Gad7 => "gad7",
        }
    }
    pub fn from_code(s: &str) -> Option<Self> {
        match s {
            "phq9" => Some(Self::Phq9),
            "gad7" => Some(Self::Gad7),
            _ => None,
        }
    }
    pub fn item_count(self) -> usize {
        match self {
            Self::Phq9 => 9,
            Self::Gad7 => 7,
        }
    }
    pub fn max_total(self) -> u32 {
        3 * self.item_count() as u32
    }
    /// LOINC code of the total score.
    pub fn loinc_total(self) -> &'static str {
        match self {
            Self::Phq9 => "44261-6",
            Self::Gad7 => "70274-6",
        }
    }
    /// Totals at or above this are "caseness".
    pub fn caseness(self) -> u32 {
        match self {
            Self::Phq9 => 10,
            Self::Gad7 => 8,
        }
    }
    /// Smallest change counted as reliable.
    pub fn reliable_change(self) -> u32 {
        match self {
            Self::Phq9 => 6,
            Self::Gad7 => 4,
        }
    }
    pub fn severity(self, total: u32) -> Severity {
        match (self, total) {
            (_, 0..=4) => Severity::Minimal,
            (_, 5..=9) => Severity::Mild,
            (_, 10..=14) => Severity::Moderate,
            (Self::Phq9, 15..=19) => Severity::ModeratelySevere,
            _ => Severity::Severe,
        }
    }
    /// Severity band boundaries (lower bounds), for charts.
    pub fn band_starts(self) -> &'static [(u32, Severity)] {
        match self {
            Self::Phq9 => &[
                (0, Severity::Minimal),
                (5, Severity::Mild),
                (10, Severity::Moderate),
                (15, Severity::ModeratelySevere),
                (20, Severity::Severe),
            ],
            Self::Gad7 => &[(0, Severity::Minimal), (5, Severity::Mild), (10, Severity::Moderate), (15, Severity::Severe)],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Minimal,
    Mild,
    Moderate,
    ModeratelySevere,
    Severe,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Mild => "mild",
            Self::Moderate => "moderate",
            Self::ModeratelySevere => "moderately severe",
            Self::Severe => "severe",
        }
    }
}

/// Checks item answers: the right count, each an integer 0–3. The message
/// names the item position, never the value.
pub fn validate_items(instrument: Instrument, items: &[serde_json::Value]) -> Result<Vec<u8>, String> {
    if items.len() != instrument.item_count() {
        return Err(format!(
            "{} needs exactly {} item answers, got {}",
            instrument.name(),
            instrument.item_count(),
            items.len()
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_u64() {
            Some(n @ 0..=3) => Ok(n as u8),
            _ => Err(format!("{} item {} must be an integer from 0 to 3", instrument.name(), i + 1)),
        })
        .collect()
}

pub fn total(items: &[u8]) -> u32 {
    items.iter().map(|&i| i as u32).sum()
}

/// One administration, as used for change classification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Administration {
    pub id: String,
    pub at: i64,
    pub total: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReliableChange {
    ReliableImprovement,
    ReliableDeterioration,
    NoReliableChange,
}

/// Change from a baseline administration to a later one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub instrument: Instrument,
    pub baseline_id: String,
    pub baseline_date: String,
    pub baseline_total: u32,
    pub latest_id: String,
    pub latest_date: String,
    pub latest_total: u32,
    /// latest − baseline (negative is better).
    pub delta: i64,
    pub reliable_change: ReliableChange,
    /// Total fell by ≥ 50% of a non-zero baseline.
    pub response: bool,
    /// PHQ-9 latest < 5; `None` for GAD-7.
    pub remission: Option<bool>,
    /// Baseline at/above caseness and latest below; `None` when baseline was below caseness.
    pub recovery: Option<bool>,
    /// Recovery together with reliable improvement.
    pub reliable_recovery: Option<bool>,
    pub rule: String,
}

/// Classifies the change from `baseline` to `latest`.
pub fn classify(instrument: Instrument, baseline: &Administration, latest: &Administration) -> Change {
    let delta = latest.total as i64 - baseline.total as i64;
    let rc = instrument.reliable_change() as i64;
    let reliable_change = if delta <= -rc {
        ReliableChange::ReliableImprovement
    } else if delta >= rc {
        ReliableChange::ReliableDeterioration
    } else {
        ReliableChange::NoReliableChange
    };
    let response = baseline.total > 0 && (latest.total as f64) <= baseline.total as f64 * 0.5;
    let remission = (instrument == Instrument::Phq9).then_some(latest.total < 5);
    let recovery = (baseline.total >= instrument.caseness()).then_some(latest.total < instrument.caseness());
    let reliable_recovery = recovery.map(|r| r && reliable_change == ReliableChange::ReliableImprovement);
    Change {
        instrument,
        baseline_id: baseline.id.clone(),
        baseline_date: super::dates::format_date(baseline.at),
        baseline_total: baseline.total,
        latest_id: latest.id.clone(),
        latest_date: super::dates::format_date(latest.at),
        latest_total: latest.total,
        delta,
        reliable_change,
        response,
        remission,
        recovery,
        reliable_recovery,
        rule: format!(
            "reliable change if |delta| >= {rc}; response if a fall of >= 50% of baseline; {}recovery if baseline >= {} and latest < {}",
            if instrument == Instrument::Phq9 { "remission if latest < 5; " } else { "" },
            instrument.caseness(),
            instrument.caseness()
        ),
    }
}

/// First-to-last change of a time-ordered series, if it has two administrations.
pub fn classify_series(instrument: Instrument, series: &[Administration]) -> Option<Change> {
    match series {
        [first, .., last] => Some(classify(instrument, first, last)),
        _ => None,
    }
}

/// Joint outcome over PHQ-9 and GAD-7 (NHS Talking Therapies definitions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JointOutcome {
    /// PHQ-9 ≥ 10 or GAD-7 ≥ 8 at baseline.
    pub caseness_at_baseline: bool,
    /// Caseness at baseline and both below caseness at the latest.
    pub recovery: Option<bool>,
    /// At least one measure reliably improved and neither reliably deteriorated.
    pub reliable_improvement: bool,
    /// Either measure reliably deteriorated.
    pub reliable_deterioration: bool,
    pub reliable_recovery: Option<bool>,
    pub rule: &'static str,
}

pub fn joint_outcome(phq9: &Change, gad7: &Change) -> JointOutcome {
    let caseness_at_baseline =
        phq9.baseline_total >= Instrument::Phq9.caseness() || gad7.baseline_total >= Instrument::Gad7.caseness();
    let below_now = phq9.latest_total < Instrument::Phq9.caseness() && gad7.latest_total < Instrument::Gad7.caseness();
    let improved = [phq9, gad7].iter().any(|c| c.reliable_change == ReliableChange::ReliableImprovement);
    let deteriorated = [phq9, gad7].iter().any(|c| c.reliable_change == ReliableChange::ReliableDeterioration);
    let recovery = caseness_at_baseline.then_some(below_now);
    JointOutcome {
        caseness_at_baseline,
        recovery,
        reliable_improvement: improved && !deteriorated,
        reliable_deterioration: deteriorated,
        reliable_recovery: recovery.map(|r| r && improved && !deteriorated),
        rule: "caseness: PHQ-9 >= 10 or GAD-7 >= 8; recovery: caseness at baseline and both below caseness at the latest; reliable improvement: one measure reliably improved and neither reliably deteriorated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn adm(id: &str, day: i64, total: u32) -> Administration {
        Administration { id: id.into(), at: day * 86_400, total }
    }

    #[test]
    fn item_validation() {
        let ok: Vec<_> = (0..9).map(|i| json!(i % 4)).collect();
        assert_eq!(validate_items(Instrument::Phq9, &ok).unwrap(), vec![0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert!(validate_items(Instrument::Phq9, &ok[..8]).unwrap_err().contains("exactly 9"));
        assert!(validate_items(Instrument::Gad7, &ok).unwrap_err().contains("exactly 7"));
        let mut bad = ok.clone();
        bad[4] = json!(4);
        assert_eq!(validate_items(Instrument::Phq9, &bad).unwrap_err(), "PHQ-9 item 5 must be an integer from 0 to 3");
        bad[4] = json!(-1);
        assert!(validate_items(Instrument::Phq9, &bad).is_err());
        bad[4] = json!(1.5);
        assert!(validate_items(Instrument::Phq9, &bad).is_err());
        bad[4] = json!("2");
        assert!(validate_items(Instrument::Phq9, &bad).is_err());
    }

    #[test]
    fn severity_bands() {
        let p = Instrument::Phq9;
        let cases = [(0, "minimal"), (4, "minimal"), (5, "mild"), (9, "mild"), (10, "moderate"), (14, "moderate"),
            (15, "moderately severe"), (19, "moderately severe"), (20, "severe"), (27, "severe")];
        for (t, s) in cases {
            assert_eq!(p.severity(t).label(), s, "PHQ-9 {t}");
        }
        let g = Instrument::Gad7;
        for (t, s) in [(4, "minimal"), (5, "mild"), (10, "moderate"), (14, "moderate"), (15, "severe"), (21, "severe")] {
            assert_eq!(g.severity(t).label(), s, "GAD-7 {t}");
        }
        assert_eq!(p.loinc_total(), "44261-6");
        assert_eq!(g.loinc_total(), "70274-6");
        assert_eq!(Instrument::parse("phq-9"), Some(p));
        assert_eq!(Instrument::parse("GAD7"), Some(g));
    }

    #[test]
    fn reliable_change_thresholds() {
        let p = Instrument::Phq9;
        assert_eq!(classify(p, &adm("a", 0, 18), &adm("b", 1, 12)).reliable_change, ReliableChange::ReliableImprovement);
        assert_eq!(classify(p, &adm("a", 0, 18), &adm("b", 1, 13)).reliable_change, ReliableChange::NoReliableChange);
        assert_eq!(classify(p, &adm("a", 0, 8), &adm("b", 1, 14)).reliable_change, ReliableChange::ReliableDeterioration);
        let g = Instrument::Gad7;
        assert_eq!(classify(g, &adm("a", 0, 12), &adm("b", 1, 8)).reliable_change, ReliableChange::ReliableImprovement);
        assert_eq!(classify(g, &adm("a", 0, 12), &adm("b", 1, 9)).reliable_change, ReliableChange::NoReliableChange);
        assert_eq!(classify(g, &adm("a", 0, 5), &adm("b", 1, 9)).reliable_change, ReliableChange::ReliableDeterioration);
    }

    #[test]
    fn response_remission_recovery() {
        let p = Instrument::Phq9;
        let c = classify(p, &adm("a", 0, 20), &adm("b", 90, 4));
        assert!(c.response);
        assert_eq!(c.remission, Some(true));
        assert_eq!(c.recovery, Some(true));
        assert_eq!(c.reliable_recovery, Some(true));
        assert_eq!(c.delta, -16);
        let c = classify(p, &adm("a", 0, 20), &adm("b", 90, 11));
        assert!(!c.response); // 11 > 10
        assert_eq!(c.remission, Some(false));
        assert_eq!(c.recovery, Some(false));
        let c = classify(p, &adm("a", 0, 20), &adm("b", 90, 10));
        assert!(c.response);
        assert_eq!(c.recovery, Some(false), "10 is still caseness");
        let c = classify(p, &adm("a", 0, 8), &adm("b", 90, 2));
        assert_eq!(c.recovery, None, "not a case at baseline");
        assert!(!classify(p, &adm("a", 0, 0), &adm("b", 1, 0)).response);
        let g = classify(Instrument::Gad7, &adm("a", 0, 8), &adm("b", 1, 7));
        assert_eq!(g.remission, None);
        assert_eq!(g.recovery, Some(true));
        assert_eq!(g.reliable_recovery, Some(false));
    }

    #[test]
    fn series_and_joint() {
        let s = [adm("a", 0, 16), adm("b", 30, 12), adm("c", 60, 7)];
        let phq = classify_series(Instrument::Phq9, &s).unwrap();
        assert_eq!((phq.baseline_id.as_str(), phq.latest_id.as_str()), ("a", "c"));
        assert!(classify_series(Instrument::Phq9, &s[..1]).is_none());
        let gad = classify(Instrument::Gad7, &adm("x", 0, 10), &adm("y", 60, 9));
        let j = joint_outcome(&phq, &gad);
        assert!(j.caseness_at_baseline);
        assert_eq!(j.recovery, Some(false), "GAD-7 9 is still caseness");
        assert!(j.reliable_improvement);
        let gad = classify(Instrument::Gad7, &adm("x", 0, 10), &adm("y", 60, 5));
        let j = joint_outcome(&phq, &gad);
        assert_eq!(j.recovery, Some(true));
        assert_eq!(j.reliable_recovery, Some(true));
        let gad = classify(Instrument::Gad7, &adm("x", 0, 3), &adm("y", 60, 7));
        let j = joint_outcome(&phq, &gad);
        assert!(j.reliable_deterioration && !j.reliable_improvement);
    }
}
