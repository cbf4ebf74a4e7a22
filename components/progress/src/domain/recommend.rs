//! Rule-based recommendations. Each rule states its condition in its text and
//! cites the records it rests on.

use super::dates::{format_date, DAY};
use super::entries::{EntryBrief, RiskFlag};
use super::measures::{Instrument, ReliableChange};
use super::report::{overdue_goals, Evidence, MeasureSection, Recommendation, ReportInput};
use super::trends::{Direction, Trend};

const RECENT_DAYS: i64 = 30;
const STEP_UP_DAYS: i64 = 84;
const VOLATILITY_LIMIT: f64 = 0.35;

fn ev(kind: &'static str, id: &str, at: i64, detail: String) -> Evidence {
    Evidence { kind, id: id.to_string(), date: format_date(at), detail }
}

pub fn recommend(input: &ReportInput<'_>, entries: &[EntryBrief], measures: &[MeasureSection], trend: &Trend) -> Vec<Recommendation> {
    let mut out = Vec::new();
    let recent_from = input.to - RECENT_DAYS * DAY;

    // 1. PHQ-9 item 9 (thoughts of self-harm) endorsed at the latest administration.
    if let Some(latest) = input
        .measures
        .iter()
        .filter(|m| m.instrument == Instrument::Phq9)
        .max_by_key(|m| m.administered_at)
    {
        if latest.items.get(8).is_some_and(|&v| v > 0) {
            out.push(Recommendation {
                code: "suicide-risk-check",
                priority: "high",
                text: "The latest PHQ-9 has item 9 (thoughts of being better off dead or of self-harm) above 0: carry out and document a risk assessment and review the safety plan.".into(),
                evidence: vec![ev("measure", &latest.id, latest.administered_at, format!("PHQ-9 item 9 = {}", latest.items[8]))],
            });
        }
    }

    // 2. Risk flags recorded in the last 30 days of the period.
    let flagged: Vec<&EntryBrief> = entries
        .iter()
        .filter(|e| e.occurred_at >= recent_from && !e.risk_flags.is_empty())
        .collect();
    if !flagged.is_empty() {
        out.push(Recommendation {
            code: "safety-review",
            priority: "high",
            text: format!("Risk flags were recorded in the last {RECENT_DAYS} days of the period: review risk and the safety plan at the next contact."),
            evidence: flagged
                .iter()
                .map(|e| {
                    let flags: Vec<&str> = e.risk_flags.iter().map(|f: &RiskFlag| f.label()).collect();
                    ev("session", &e.id, e.occurred_at, flags.join(", "))
                })
                .collect(),
        });
    }

    for m in measures {
        let Some(c) = &m.change else { continue };
        let first = m.administrations.first().expect("a change has administrations");
        let last = m.administrations.last().expect("a change has administrations");
        let cite = || {
            vec![
                ev("measure", &c.baseline_id, first.at, format!("{} baseline {}", m.instrument.name(), c.baseline_total)),
                ev("measure", &c.latest_id, last.at, format!("{} latest {}", m.instrument.name(), c.latest_total)),
            ]
        };
        // 3. Reliable deterioration.
        if c.reliable_change == ReliableChange::ReliableDeterioration {
            out.push(Recommendation {
                code: "review-deterioration",
                priority: "high",
                text: format!(
                    "{} rose by {} points (reliable deterioration, threshold {}): review the formulation and treatment plan.",
                    m.instrument.name(),
                    c.delta,
                    m.instrument.reliable_change()
                ),
                evidence: cite(),
            });
        }
        // 4. No reliable change after 12 weeks while still at caseness.
        if c.reliable_change == ReliableChange::NoReliableChange
            && last.at - first.at >= STEP_UP_DAYS * DAY
            && c.latest_total >= m.instrument.caseness()
        {
            out.push(Recommendation {
                code: "consider-stepping-up",
                priority: "medium",
                text: format!(
                    "{} shows no reliable change over {} weeks and is still at or above caseness ({}): consider changing or stepping up the intervention.",
                    m.instrument.name(),
                    (last.at - first.at) / (7 * DAY),
                    m.instrument.caseness()
                ),
                evidence: cite(),
            });
        }
        // 5. Recovery or remission reached.
        if c.recovery == Some(true) || c.remission == Some(true) {
            out.push(Recommendation {
                code: "relapse-prevention",
                priority: "routine",
                text: format!(
                    "{} moved below caseness or into remission: plan relapse prevention and review the ending or spacing of sessions.",
                    m.instrument.name()
                ),
                evidence: cite(),
            });
        }
    }

    // 6. Overdue goals.
    let overdue: Vec<Evidence> = overdue_goals(input.goals, input.to.min(input.now))
        .map(|g| ev("goal", &g.id, g.due_at.unwrap_or(0), format!("{} and due", g.lifecycle_status.code())))
        .collect();
    if !overdue.is_empty() {
        out.push(Recommendation {
            code: "review-overdue-goals",
            priority: "medium",
            text: "Open goals are past their due date: review them with the client (revise, put on hold or close).".into(),
            evidence: overdue,
        });
    }

    // 7. Sessions continue but no measure in the last 30 days.
    let recent_sessions = entries.iter().filter(|e| e.occurred_at >= recent_from).count();
    let recent_measures = input.measures.iter().any(|m| m.administered_at >= recent_from);
    if recent_sessions > 0 && !recent_measures {
        let mut evidence: Vec<Evidence> = input
            .measures
            .iter()
            .max_by_key(|m| m.administered_at)
            .map(|m| vec![ev("measure", &m.id, m.administered_at, "latest measure".into())])
            .unwrap_or_default();
        if let Some(e) = entries.iter().rev().find(|e| e.occurred_at >= recent_from) {
            evidence.push(ev("session", &e.id, e.occurred_at, format!("{recent_sessions} sessions in the last {RECENT_DAYS} days")));
        }
        out.push(Recommendation {
            code: "administer-measures",
            priority: "routine",
            text: format!("No PHQ-9 or GAD-7 in the last {RECENT_DAYS} days of the period although sessions continued: administer the measures to keep outcome monitoring current."),
            evidence,
        });
    }

    // 8. Falling emotional trend.
    if trend.direction == Direction::Falling {
        out.push(Recommendation {
            code: "explore-falling-mood",
            priority: "medium",
            text: format!(
                "Session affect fell over the period (fitted change {:.2} on a -1..1 scale): explore recent stressors and mood with the client.",
                trend.fitted_change.unwrap_or(0.0)
            ),
            evidence: trend
                .buckets
                .iter()
                .rev()
                .take(3)
                .map(|b| Evidence { kind: "trend", id: b.period.clone(), date: format_date(b.first_at), detail: format!("mean affect {:.2}", b.mean_affect) })
                .collect(),
        });
    }

    // 9. Volatile affect.
    if let Some(v) = trend.volatility_rmssd {
        if v >= VOLATILITY_LIMIT && trend.sessions >= 6 {
            out.push(Recommendation {
                code: "mood-instability",
                priority: "medium",
                text: format!("Session-to-session affect is volatile (RMSSD {v:.2} >= {VOLATILITY_LIMIT}): consider assessing mood instability."),
                evidence: vec![Evidence { kind: "trend", id: "volatility".into(), date: format_date(input.to), detail: format!("{} sessions", trend.sessions) }],
            });
        }
    }
    out
}
