//! Progress report over a period: sessions, measures with change
//! classification, goals, emotional trend, overall trajectory and rule-based
//! recommendations that cite their evidence.

use super::dates::{format_date, Granularity, DAY};
use super::entries::{EntryBrief, EntryKind, GoalView, MeasureView, RiskFlag};
use super::goals::Lifecycle;
use super::measures::{self, Administration, Change, Instrument, JointOutcome, ReliableChange};
use super::trends::{self, AffectPoint, Direction, Trend};
use serde::Serialize;
use std::collections::BTreeMap;

pub const TRAJECTORY_RULE: &str = "Each measure with two or more administrations in the period scores +1 for reliable improvement and -1 for reliable deterioration (first vs last in the period); the emotional trend scores +1 if rising and -1 if falling. Overall: worsening if any measure reliably deteriorated or the score is below 0; improving if the score is above 0; otherwise stable.";

/// Everything a report is computed from, already decrypted and restricted to the period.
pub struct ReportInput<'a> {
    pub client_id: &'a str,
    pub from: i64,
    pub to: i64,
    pub now: i64,
    pub entries: &'a [EntryBrief],
    pub measures: &'a [MeasureView],
    pub goals: &'a [GoalView],
}

#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub from: String,
    pub to: String,
    pub days: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionSection {
    pub total: usize,
    pub session_notes: usize,
    pub journal_entries: usize,
    pub first_date: Option<String>,
    pub last_date: Option<String>,
    pub top_themes: Vec<(String, usize)>,
    pub risk_flags: BTreeMap<RiskFlag, usize>,
    pub entries: Vec<SessionLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionLine {
    pub id: String,
    pub date: String,
    pub kind: EntryKind,
    pub mood: Option<u8>,
    pub affect: f64,
    pub themes: Vec<String>,
    pub risk_flags: Vec<RiskFlag>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MeasureSection {
    pub instrument: Instrument,
    pub loinc: &'static str,
    pub administrations: Vec<MeasurePoint>,
    pub change: Option<Change>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MeasurePoint {
    pub id: String,
    pub date: String,
    pub at: i64,
    pub total: u32,
    pub severity: measures::Severity,
}

#[derive(Debug, Clone, Serialize)]
pub struct GoalSection {
    pub by_lifecycle: BTreeMap<String, usize>,
    pub by_achievement: BTreeMap<String, usize>,
    pub goals: Vec<GoalView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overall {
    Improving,
    Stable,
    Worsening,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trajectory {
    pub overall: Overall,
    pub score: i32,
    pub components: Vec<String>,
    pub rule: &'static str,
}

/// A piece of data a recommendation rests on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    pub kind: &'static str,
    pub id: String,
    pub date: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub code: &'static str,
    pub priority: &'static str,
    pub text: String,
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub client_id: String,
    pub generated_at: String,
    pub period: Period,
    pub sessions: SessionSection,
    pub measures: Vec<MeasureSection>,
    pub joint_outcome: Option<JointOutcome>,
    pub goals: GoalSection,
    pub emotional_trend: Trend,
    pub trajectory: Trajectory,
    pub recommendations: Vec<Recommendation>,
}

fn top_themes(entries: &[EntryBrief], n: usize) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in entries {
        for t in &e.themes {
            *counts.entry(t.trim().to_lowercase()).or_default() += 1;
        }
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

pub fn measure_sections(measures: &[MeasureView]) -> Vec<MeasureSection> {
    Instrument::ALL
        .iter()
        .filter_map(|&instrument| {
            let mut list: Vec<&MeasureView> = measures.iter().filter(|m| m.instrument == instrument).collect();
            if list.is_empty() {
                return None;
            }
            list.sort_by_key(|m| m.administered_at);
            let series: Vec<Administration> =
                list.iter().map(|m| Administration { id: m.id.clone(), at: m.administered_at, total: m.total }).collect();
            Some(MeasureSection {
                instrument,
                loinc: instrument.loinc_total(),
                administrations: list
                    .iter()
                    .map(|m| MeasurePoint { id: m.id.clone(), date: m.date.clone(), at: m.administered_at, total: m.total, severity: m.severity })
                    .collect(),
                change: measures::classify_series(instrument, &series),
            })
        })
        .collect()
}

pub fn affect_points(entries: &[EntryBrief]) -> Vec<AffectPoint> {
    entries
        .iter()
        .map(|e| AffectPoint { at: e.occurred_at, mood: e.mood, sentiment: e.sentiment, affect: e.affect })
        .collect()
}

pub fn trajectory(measures: &[MeasureSection], trend: &Trend) -> Trajectory {
    let mut score = 0;
    let mut components = Vec::new();
    let mut deteriorated = false;
    for m in measures {
        if let Some(c) = &m.change {
            let (s, word) = match c.reliable_change {
                ReliableChange::ReliableImprovement => (1, "reliable improvement"),
                ReliableChange::ReliableDeterioration => {
                    deteriorated = true;
                    (-1, "reliable deterioration")
                }
                ReliableChange::NoReliableChange => (0, "no reliable change"),
            };
            score += s;
            components.push(format!(
                "{}: {} -> {} ({word}, {:+})",
                m.instrument.name(),
                c.baseline_total,
                c.latest_total,
                s
            ));
        }
    }
    let s = match trend.direction {
        Direction::Rising => 1,
        Direction::Falling => -1,
        _ => 0,
    };
    score += s;
    components.push(format!(
        "emotional trend: {} ({:+})",
        serde_json::to_value(trend.direction).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        s
    ));
    let overall = if deteriorated || score < 0 {
        Overall::Worsening
    } else if score > 0 {
        Overall::Improving
    } else {
        Overall::Stable
    };
    Trajectory { overall, score, components, rule: TRAJECTORY_RULE }
}

pub fn build(input: &ReportInput<'_>) -> Report {
    let mut entries: Vec<EntryBrief> = input.entries.to_vec();
    entries.sort_by_key(|e| e.occurred_at);
    let span_days = ((input.to - input.from) / DAY).max(1);
    let emotional_trend = trends::trend(&affect_points(&entries), Granularity::for_span(span_days));
    let measure_sections = measure_sections(input.measures);
    let joint_outcome = {
        let phq = measure_sections.iter().find(|m| m.instrument == Instrument::Phq9).and_then(|m| m.change.as_ref());
        let gad = measure_sections.iter().find(|m| m.instrument == Instrument::Gad7).and_then(|m| m.change.as_ref());
        match (phq, gad) {
            (Some(p), Some(g)) => Some(measures::joint_outcome(p, g)),
            _ => None,
        }
    };
    let trajectory = trajectory(&measure_sections, &emotional_trend);
    let recommendations = super::recommend::recommend(input, &entries, &measure_sections, &emotional_trend);
    let mut risk_flags = BTreeMap::new();
    for e in &entries {
        for f in &e.risk_flags {
            *risk_flags.entry(*f).or_insert(0) += 1;
        }
    }
    let mut by_lifecycle = BTreeMap::new();
    let mut by_achievement = BTreeMap::new();
    for g in input.goals {
        *by_lifecycle.entry(g.lifecycle_status.code().to_string()).or_insert(0) += 1;
        *by_achievement.entry(g.achievement_status.code().to_string()).or_insert(0) += 1;
    }
    Report {
        client_id: input.client_id.to_string(),
        generated_at: super::dates::format_datetime(input.now),
        period: Period { from: format_date(input.from), to: format_date(input.to), days: span_days },
        sessions: SessionSection {
            total: entries.len(),
            session_notes: entries.iter().filter(|e| e.kind == EntryKind::Session).count(),
            journal_entries: entries.iter().filter(|e| e.kind == EntryKind::Journal).count(),
            first_date: entries.first().map(|e| format_date(e.occurred_at)),
            last_date: entries.last().map(|e| format_date(e.occurred_at)),
            top_themes: top_themes(&entries, 8),
            risk_flags,
            entries: entries
                .iter()
                .map(|e| SessionLine {
                    id: e.id.clone(),
                    date: format_date(e.occurred_at),
                    kind: e.kind,
                    mood: e.mood,
                    affect: (e.affect * 1000.0).round() / 1000.0,
                    themes: e.themes.clone(),
                    risk_flags: e.risk_flags.clone(),
                })
                .collect(),
        },
        measures: measure_sections,
        joint_outcome,
        goals: GoalSection { by_lifecycle, by_achievement, goals: input.goals.to_vec() },
        emotional_trend,
        trajectory,
        recommendations,
    }
}

/// Goals whose due date is before `now` and which are still open.
pub fn overdue_goals<'a>(goals: &'a [GoalView], now: i64) -> impl Iterator<Item = &'a GoalView> {
    goals.iter().filter(move |g| !g.lifecycle_status.is_closed() && g.due_at.is_some_and(|d| d < now) && g.lifecycle_status != Lifecycle::Proposed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dates::parse_timestamp;

    fn measure(id: &str, instrument: Instrument, date: &str, total: u8) -> MeasureView {
        let n = instrument.item_count();
        let mut items = vec![0u8; n];
        let mut left = total;
        for i in items.iter_mut() {
            let v = left.min(3);
            *i = v;
            left -= v;
        }
        MeasureView::new(id.into(), instrument, parse_timestamp(date).unwrap(), items)
    }

    fn entry(id: &str, date: &str, mood: u8) -> EntryBrief {
        let compound = 0.0;
        EntryBrief {
            id: id.into(),
            kind: EntryKind::Session,
            occurred_at: parse_timestamp(date).unwrap(),
            mood: Some(mood),
            sentiment: compound,
            affect: crate::domain::affect::affect(Some(mood), compound),
            themes: vec!["Sleep".into()],
            risk_flags: vec![],
        }
    }

    fn input<'a>(entries: &'a [EntryBrief], measures: &'a [MeasureView], goals: &'a [GoalView]) -> ReportInput<'a> {
        ReportInput {
            client_id: "c1",
            from: parse_timestamp("2024-01-01").unwrap(),
            to: parse_timestamp("2024-06-30").unwrap(),
            now: parse_timestamp("2024-06-30").unwrap(),
            entries,
            measures,
            goals,
        }
    }

    #[test]
    fn improving_course() {
        let ms = [
            measure("p1", Instrument::Phq9, "2024-01-05", 18),
            measure("p2", Instrument::Phq9, "2024-03-05", 12),
            measure("p3", Instrument::Phq9, "2024-06-05", 6),
            measure("g1", Instrument::Gad7, "2024-01-05", 12),
            measure("g2", Instrument::Gad7, "2024-06-05", 6),
        ];
        let es: Vec<_> = (0..10).map(|i| entry(&format!("e{i}"), &format!("2024-{:02}-10", 1 + i % 6), (3 + i / 2) as u8)).collect();
        let r = build(&input(&es, &ms, &[]));
        assert_eq!(r.measures.len(), 2);
        let phq = r.measures[0].change.as_ref().unwrap();
        assert_eq!((phq.baseline_total, phq.latest_total), (18, 6));
        assert_eq!(phq.reliable_change, ReliableChange::ReliableImprovement);
        assert_eq!(phq.recovery, Some(true));
        assert_eq!(r.joint_outcome.as_ref().unwrap().recovery, Some(true));
        assert_eq!(r.trajectory.overall, Overall::Improving);
        assert_eq!(r.sessions.total, 10);
        assert_eq!(r.sessions.top_themes[0], ("sleep".to_string(), 10));
        assert!(r.recommendations.iter().any(|x| x.code == "relapse-prevention"));
    }

    #[test]
    fn deterioration_wins() {
        let ms = [
            measure("p1", Instrument::Phq9, "2024-01-05", 5),
            measure("p2", Instrument::Phq9, "2024-06-05", 14),
            measure("g1", Instrument::Gad7, "2024-01-05", 14),
            measure("g2", Instrument::Gad7, "2024-06-05", 6),
        ];
        let r = build(&input(&[], &ms, &[]));
        assert_eq!(r.trajectory.overall, Overall::Worsening);
        let rec = r.recommendations.iter().find(|x| x.code == "review-deterioration").unwrap();
        assert!(rec.evidence.iter().any(|e| e.id == "p2"));
    }

    #[test]
    fn stable_with_no_data() {
        let r = build(&input(&[], &[], &[]));
        assert_eq!(r.trajectory.overall, Overall::Stable);
        assert_eq!(r.sessions.total, 0);
        assert!(r.measures.is_empty());
    }
}
