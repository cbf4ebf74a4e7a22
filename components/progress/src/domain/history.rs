//! Compact history context of a client's course, for the chat context.
//! Mirrors the `history-context` record of `wit/progress.wit`.

use super::dates::{format_date, Granularity, DAY};
use super::entries::{EntryBrief, GoalView, MeasureView, RiskFlag};
use super::measures::{ReliableChange, Severity};
use super::report::{affect_points, measure_sections, trajectory, Overall};
use super::trends::{self, Direction};
use serde::Serialize;

/// Days of recent history the themes and risk flags are taken from.
pub const RECENT_DAYS: i64 = 90;

#[derive(Debug, Clone, Serialize)]
pub struct LatestMeasure {
    pub instrument: String,
    pub loinc: String,
    pub date: String,
    pub total: u32,
    pub severity: Severity,
    pub change_from_baseline: Option<i64>,
    pub reliable_change: Option<ReliableChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveGoal {
    pub id: String,
    pub description: String,
    pub achievement_status: String,
    pub due_date: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryContext {
    pub client_id: String,
    pub generated_at: String,
    pub first_session: Option<String>,
    pub last_session: Option<String>,
    pub session_count: u32,
    pub recent_themes: Vec<String>,
    pub recent_risk_flags: Vec<RiskFlag>,
    pub latest_measures: Vec<LatestMeasure>,
    pub active_goals: Vec<ActiveGoal>,
    pub mood_direction: Direction,
    pub recent_mean_mood: Option<f64>,
    pub trajectory: Overall,
    /// The same facts as one short paragraph, ready for a prompt.
    pub summary: String,
}

pub fn build(client_id: &str, now: i64, entries: &[EntryBrief], measures: &[MeasureView], goals: &[GoalView]) -> HistoryContext {
    let mut entries = entries.to_vec();
    entries.sort_by_key(|e| e.occurred_at);
    let recent_from = now - RECENT_DAYS * DAY;
    let recent: Vec<&EntryBrief> = entries.iter().filter(|e| e.occurred_at >= recent_from).collect();
    let mut theme_counts: std::collections::BTreeMap<String, usize> = Default::default();
    for e in &recent {
        for t in &e.themes {
            *theme_counts.entry(t.trim().to_lowercase()).or_default() += 1;
        }
    }
    let mut themes: Vec<(String, usize)> = theme_counts.into_iter().collect();
    themes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let recent_themes: Vec<String> = themes.into_iter().take(5).map(|t| t.0).collect();
    let mut recent_risk_flags: Vec<RiskFlag> = recent.iter().flat_map(|e| e.risk_flags.iter().copied()).collect();
    recent_risk_flags.sort();
    recent_risk_flags.dedup();
    let moods: Vec<f64> = recent.iter().filter_map(|e| e.mood.map(f64::from)).collect();
    let recent_mean_mood = (!moods.is_empty()).then(|| (moods.iter().sum::<f64>() / moods.len() as f64 * 10.0).round() / 10.0);

    let sections = measure_sections(measures);
    let latest_measures: Vec<LatestMeasure> = sections
        .iter()
        .filter_map(|s| {
            let last = s.administrations.last()?;
            Some(LatestMeasure {
                instrument: s.instrument.name().into(),
                loinc: s.loinc.into(),
                date: last.date.clone(),
                total: last.total,
                severity: last.severity,
                change_from_baseline: s.change.as_ref().map(|c| c.delta),
                reliable_change: s.change.as_ref().map(|c| c.reliable_change),
            })
        })
        .collect();
    let span = entries.first().map(|e| (now - e.occurred_at) / DAY).unwrap_or(0);
    let trend = trends::trend(&affect_points(&entries), Granularity::for_span(span));
    let overall = trajectory(&sections, &trend).overall;
    let active_goals: Vec<ActiveGoal> = goals
        .iter()
        .filter(|g| !g.lifecycle_status.is_closed())
        .map(|g| ActiveGoal {
            id: g.id.clone(),
            description: g.description.clone(),
            achievement_status: g.achievement_status.code().into(),
            due_date: g.due_date.clone(),
        })
        .collect();

    let mut summary = format!(
        "{} entries{}.",
        entries.len(),
        match (entries.first(), entries.last()) {
            (Some(a), Some(b)) => format!(" from {} to {}", format_date(a.occurred_at), format_date(b.occurred_at)),
            _ => String::new(),
        }
    );
    for m in &latest_measures {
        summary.push_str(&format!(" Latest {} {} ({}) on {}", m.instrument, m.total, m.severity.label(), m.date));
        if let Some(d) = m.change_from_baseline {
            summary.push_str(&format!(", {d:+} from baseline"));
        }
        summary.push('.');
    }
    summary.push_str(&format!(
        " Overall {}; mood trend {}.",
        match overall {
            Overall::Improving => "improving",
            Overall::Stable => "stable",
            Overall::Worsening => "worsening",
        },
        serde_json::to_value(trend.direction).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    ));
    if !recent_themes.is_empty() {
        summary.push_str(&format!(" Recent themes: {}.", recent_themes.join(", ")));
    }
    if !active_goals.is_empty() {
        let g: Vec<String> = active_goals.iter().take(5).map(|g| format!("{} ({})", g.description, g.achievement_status)).collect();
        summary.push_str(&format!(" Open goals: {}.", g.join("; ")));
    }
    if !recent_risk_flags.is_empty() {
        let f: Vec<&str> = recent_risk_flags.iter().map(|f| f.label()).collect();
        summary.push_str(&format!(" Risk flags in the last {RECENT_DAYS} days: {}.", f.join(", ")));
    }
    if summary.chars().count() > 1500 {
        summary = summary.chars().take(1497).collect::<String>() + "...";
    }

    HistoryContext {
        client_id: client_id.into(),
        generated_at: super::dates::format_datetime(now),
        first_session: entries.first().map(|e| format_date(e.occurred_at)),
        last_session: entries.last().map(|e| format_date(e.occurred_at)),
        session_count: entries.len() as u32,
        recent_themes,
        recent_risk_flags,
        latest_measures,
        active_goals,
        mood_direction: trend.direction,
        recent_mean_mood,
        trajectory: overall,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::entries::EntryKind;
    use crate::domain::measures::Instrument;

    #[test]
    fn summarises_recent_course() {
        let now = 200 * DAY;
        let entries: Vec<EntryBrief> = (0..8)
            .map(|i| EntryBrief {
                id: format!("e{i}"),
                kind: EntryKind::Session,
                occurred_at: (100 + i * 10) * DAY,
                mood: Some(4 + i as u8 / 2),
                sentiment: 0.0,
                affect: 0.0,
                themes: vec!["work stress".into()],
                risk_flags: if i == 7 { vec![RiskFlag::SelfHarm] } else { vec![] },
            })
            .collect();
        let measures = vec![
            MeasureView::new("m1".into(), Instrument::Phq9, 100 * DAY, vec![2; 9]),
            MeasureView::new("m2".into(), Instrument::Phq9, 170 * DAY, vec![1; 9]),
        ];
        let h = build("c1", now, &entries, &measures, &[]);
        assert_eq!(h.session_count, 8);
        assert_eq!(h.recent_themes, vec!["work stress"]);
        assert_eq!(h.recent_risk_flags, vec![RiskFlag::SelfHarm]);
        assert_eq!(h.latest_measures[0].total, 9);
        assert_eq!(h.latest_measures[0].change_from_baseline, Some(-9));
        assert_eq!(h.trajectory, Overall::Improving);
        assert!(h.summary.contains("Latest PHQ-9 9 (mild)"), "{}", h.summary);
        assert!(h.summary.contains("self-harm"));
    }
}
