//! The report as a printable HTML page with inline SVG charts.

use super::report::{MeasureSection, Report};
use super::trends::Trend;
use std::fmt::Write;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const W: f64 = 640.0;
const H: f64 = 200.0;
const PAD: f64 = 36.0;

/// A line chart of (time, value) points with a fixed y range and optional
/// horizontal guide lines.
fn line_chart(title: &str, points: &[(i64, f64)], y_min: f64, y_max: f64, guides: &[(f64, String)]) -> String {
    let mut s = String::new();
    let _ = write!(s, r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#, esc(title));
    let _ = write!(s, r##"<rect x="{PAD}" y="8" width="{}" height="{}" fill="none" stroke="#999"/>"##, W - PAD - 8.0, H - PAD - 8.0);
    let y_of = |v: f64| 8.0 + (H - PAD - 8.0) * (1.0 - (v - y_min) / (y_max - y_min));
    for (v, label) in guides {
        let y = y_of(*v);
        let _ = write!(s, r##"<line x1="{PAD}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="2" y="{:.1}" font-size="9">{}</text>"##, W - 8.0, y + 3.0, esc(label));
    }
    if let (Some(t0), Some(t1)) = (points.iter().map(|p| p.0).min(), points.iter().map(|p| p.0).max()) {
        let span = (t1 - t0).max(1) as f64;
        let x_of = |t: i64| PAD + (W - PAD - 8.0) * ((t - t0) as f64 / span);
        let path: Vec<String> = points.iter().map(|&(t, v)| format!("{:.1},{:.1}", x_of(t), y_of(v))).collect();
        let _ = write!(s, r##"<polyline fill="none" stroke="#1f5fa8" stroke-width="1.5" points="{}"/>"##, path.join(" "));
        if points.len() <= 400 {
            for &(t, v) in points {
                let _ = write!(s, r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="#1f5fa8"/>"##, x_of(t), y_of(v));
            }
        }
        let _ = write!(s, r#"<text x="{PAD}" y="{}" font-size="9">{}</text>"#, H - 12.0, super::dates::format_date(t0));
        let _ = write!(s, r#"<text x="{}" y="{}" font-size="9" text-anchor="end">{}</text>"#, W - 8.0, H - 12.0, super::dates::format_date(t1));
    } else {
        let _ = write!(s, r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">no data in this period</text>"#, W / 2.0, H / 2.0);
    }
    s.push_str("</svg>");
    s
}

fn measure_chart(m: &MeasureSection) -> String {
    let pts: Vec<(i64, f64)> = m.administrations.iter().map(|a| (a.at, a.total as f64)).collect();
    let guides: Vec<(f64, String)> = m.instrument.band_starts().iter().map(|(v, sev)| (*v as f64, format!("{v} {}", sev.label()))).collect();
    line_chart(&format!("{} totals", m.instrument.name()), &pts, 0.0, m.instrument.max_total() as f64, &guides)
}

/// Self-reported mood (0–10) per period: the mean over the period's entries
/// that carry a mood (periods without one are left out).
fn mood_chart(t: &Trend) -> String {
    let pts: Vec<(i64, f64)> = t.buckets.iter().filter_map(|b| b.mean_mood.map(|m| (b.first_at, m))).collect();
    line_chart("mean self-reported mood (0-10) per period", &pts, 0.0, 10.0, &[(0.0, "0".into()), (5.0, "5".into()), (10.0, "10".into())])
}

/// Affect (mood combined with the sentiment of the text, -1..1) per period.
fn affect_chart(t: &Trend) -> String {
    let pts: Vec<(i64, f64)> = t.buckets.iter().map(|b| (b.first_at, b.mean_affect)).collect();
    line_chart("mean affect per period", &pts, -1.0, 1.0, &[(-1.0, "-1".into()), (0.0, "0".into()), (1.0, "+1".into())])
}

fn opt_flag(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "n/a",
    }
}

pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Progress report {from} to {to}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:800px;margin:2em auto;color:#222}}h1{{font-size:1.4em}}h2{{font-size:1.1em;border-bottom:1px solid #ccc;margin-top:1.6em}}table{{border-collapse:collapse;width:100%;font-size:.9em}}td,th{{border:1px solid #ddd;padding:3px 6px;text-align:left}}.chart{{width:100%;height:auto}}.rule{{color:#555;font-size:.85em}}@media print{{h2{{break-after:avoid}}.chart{{break-inside:avoid}}}}</style></head><body>
<h1>Progress report</h1><p>Client <code>{cid}</code> &middot; period {from} to {to} ({days} days) &middot; generated {gen}</p>"#,
        from = esc(&r.period.from),
        to = esc(&r.period.to),
        days = r.period.days,
        cid = esc(&r.client_id),
        gen = esc(&r.generated_at)
    );
    let _ = write!(
        h,
        r#"<h2>Overall trajectory: {}</h2><ul>{}</ul><p class="rule">Rule: {}</p>"#,
        match r.trajectory.overall {
            super::report::Overall::Improving => "improving",
            super::report::Overall::Stable => "stable",
            super::report::Overall::Worsening => "worsening",
        },
        r.trajectory.components.iter().map(|c| format!("<li>{}</li>", esc(c))).collect::<String>(),
        esc(r.trajectory.rule)
    );
    h.push_str("<h2>Measures</h2>");
    if r.measures.is_empty() {
        h.push_str("<p>No measures in this period.</p>");
    }
    for m in &r.measures {
        let _ = write!(h, "<h3>{} (LOINC {})</h3>{}", m.instrument.name(), m.loinc, measure_chart(m));
        if let Some(c) = &m.change {
            let _ = write!(
                h,
                "<table><tr><th>Baseline</th><th>Latest</th><th>Change</th><th>Reliable change</th><th>Response</th><th>Remission</th><th>Recovery</th></tr><tr><td>{} ({})</td><td>{} ({})</td><td>{:+}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table><p class=\"rule\">{}</p>",
                c.baseline_total,
                esc(&c.baseline_date),
                c.latest_total,
                esc(&c.latest_date),
                c.delta,
                match c.reliable_change {
                    super::measures::ReliableChange::ReliableImprovement => "reliable improvement",
                    super::measures::ReliableChange::ReliableDeterioration => "reliable deterioration",
                    super::measures::ReliableChange::NoReliableChange => "no reliable change",
                },
                if c.response { "yes" } else { "no" },
                opt_flag(c.remission),
                opt_flag(c.recovery),
                esc(&c.rule)
            );
        }
    }
    let t = &r.emotional_trend;
    let _ = write!(
        h,
        "<h2>Emotional trend</h2><h3>Self-reported mood</h3>{}<h3>Affect</h3>{}<p>{} sessions; mean affect {}; slope per 30 days {}; volatility (RMSSD) {}; direction {}.</p><p class=\"rule\">{} {}</p>",
        mood_chart(t),
        affect_chart(t),
        t.sessions,
        t.mean_affect.map(|v| format!("{v:.2}")).unwrap_or("n/a".into()),
        t.slope_per_30_days.map(|v| format!("{v:+.3}")).unwrap_or("n/a".into()),
        t.volatility_rmssd.map(|v| format!("{v:.2}")).unwrap_or("n/a".into()),
        esc(serde_json::to_value(t.direction).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default().as_str()),
        esc(super::affect::AFFECT_RULE),
        esc(t.rule)
    );
    let s = &r.sessions;
    let _ = write!(
        h,
        "<h2>Sessions</h2><p>{} entries ({} session notes, {} journal entries){}.</p>",
        s.total,
        s.session_notes,
        s.journal_entries,
        match (&s.first_date, &s.last_date) {
            (Some(a), Some(b)) => format!(", {} to {}", esc(a), esc(b)),
            _ => String::new(),
        }
    );
    if !s.top_themes.is_empty() {
        let themes: Vec<String> = s.top_themes.iter().map(|(t, n)| format!("{} ({n})", esc(t))).collect();
        let _ = write!(h, "<p>Frequent themes: {}.</p>", themes.join(", "));
    }
    if !s.risk_flags.is_empty() {
        let flags: Vec<String> = s.risk_flags.iter().map(|(f, n)| format!("{} ({n})", f.label())).collect();
        let _ = write!(h, "<p>Risk flags: {}.</p>", flags.join(", "));
    }
    h.push_str("<h2>Goals</h2>");
    if r.goals.goals.is_empty() {
        h.push_str("<p>No goals.</p>");
    } else {
        h.push_str("<table><tr><th>Goal</th><th>Target</th><th>Due</th><th>Status</th><th>Achievement</th><th>Milestones</th></tr>");
        for g in &r.goals.goals {
            let done = g.milestones.iter().filter(|m| m.achieved_date.is_some()).count();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{done}/{}</td></tr>",
                esc(&g.description),
                esc(g.target.as_deref().unwrap_or("")),
                esc(g.due_date.as_deref().unwrap_or("")),
                g.lifecycle_status.code(),
                g.achievement_status.code(),
                g.milestones.len()
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Recommendations</h2>");
    if r.recommendations.is_empty() {
        h.push_str("<p>No rule fired for this period.</p>");
    } else {
        h.push_str("<ol>");
        for rec in &r.recommendations {
            let ev: Vec<String> = rec.evidence.iter().map(|e| format!("{} {} ({}): {}", e.kind, esc(&e.id), esc(&e.date), esc(&e.detail))).collect();
            let _ = write!(h, "<li><strong>[{}]</strong> {}<br><small>Based on: {}</small></li>", rec.priority, esc(&rec.text), ev.join("; "));
        }
        h.push_str("</ol>");
    }
    h.push_str("</body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc(r#"<script>"x"&'y'</script>"#), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;");
    }

    #[test]
    fn report_charts_self_reported_mood_and_affect() {
        use crate::domain::entries::{EntryBrief, EntryKind};
        use crate::domain::report::{build, ReportInput};
        let day = 86_400;
        let entry = |i: i64, mood: Option<u8>| EntryBrief {
            id: format!("e{i}"),
            kind: EntryKind::Session,
            occurred_at: 1_704_067_200 + i * 40 * day,
            mood,
            sentiment: 0.0,
            affect: crate::domain::affect::affect(mood, 0.0),
            themes: vec![],
            risk_flags: vec![],
        };
        // Moods 2, 8 and 10 (one entry without a mood), one entry per month.
        let entries = [entry(0, Some(2)), entry(1, Some(8)), entry(2, None), entry(3, Some(10))];
        let r = build(&ReportInput {
            client_id: "c",
            from: entries[0].occurred_at,
            to: entries[3].occurred_at,
            now: entries[3].occurred_at,
            entries: &entries,
            measures: &[],
            goals: &[],
        });
        let h = render(&r);
        let chart = |label: &str| {
            let start = h.find(&format!(r#"aria-label="{label}""#)).unwrap_or_else(|| panic!("no chart {label:?}"));
            h[start..start + h[start..].find("</svg>").unwrap()].to_string()
        };
        let mood = chart("mean self-reported mood (0-10) per period");
        assert_eq!(mood.matches("<circle").count(), 3, "three periods with a mood: {mood}");
        // y of mood m on the 0..10 axis: 8 + (H - PAD - 8) * (1 - m / 10).
        for m in [2.0, 8.0, 10.0] {
            let y = 8.0 + (H - PAD - 8.0) * (1.0 - m / 10.0);
            assert!(mood.contains(&format!(r#"cy="{y:.1}""#)), "mood {m} plotted at y {y:.1}: {mood}");
        }
        let affect = chart("mean affect per period");
        assert_eq!(affect.matches("<circle").count(), 4, "{affect}");
    }

    #[test]
    fn chart_has_points_or_placeholder() {
        let c = line_chart("t", &[(0, 1.0), (86_400, 2.0)], 0.0, 3.0, &[]);
        assert!(c.contains("<polyline") && c.matches("<circle").count() == 2);
        assert!(line_chart("t", &[], 0.0, 1.0, &[]).contains("no data"));
    }
}
