//! Emotional trend: per-session affect rolled up by week, month or year, with
//! a least-squares slope and volatility.

use super::dates::{Granularity, DAY};
use serde::Serialize;

pub const TREND_RULE: &str = "slope: least-squares fit of per-session affect against time, per 30 days; volatility: root mean square of successive differences (RMSSD) of per-session affect; direction: rising / falling when the fitted change over the period (slope x span) is at least +0.15 / at most -0.15 with 4 or more sessions, else flat";

/// One session's affect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AffectPoint {
    pub at: i64,
    pub mood: Option<u8>,
    pub sentiment: f64,
    pub affect: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub period: String,
    pub sessions: usize,
    pub mean_affect: f64,
    pub mean_mood: Option<f64>,
    pub mean_sentiment: f64,
    pub min_affect: f64,
    pub max_affect: f64,
    /// Time of the bucket's first session (for plotting).
    pub first_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Rising,
    Flat,
    Falling,
    InsufficientData,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trend {
    pub granularity: Granularity,
    pub sessions: usize,
    pub buckets: Vec<Bucket>,
    pub mean_affect: Option<f64>,
    /// Affect units per 30 days.
    pub slope_per_30_days: Option<f64>,
    pub fitted_change: Option<f64>,
    pub volatility_rmssd: Option<f64>,
    pub std_dev: Option<f64>,
    pub direction: Direction,
    pub rule: &'static str,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// Least-squares slope of y on x (per unit x), if x varies.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Root mean square of successive differences.
pub fn rmssd(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let ss: f64 = values.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum();
    Some((ss / (values.len() - 1) as f64).sqrt())
}

pub fn std_dev(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = values.iter().sum::<f64>() / values.len() as f64;
    Some((values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt())
}

/// Builds the trend of `points` (any order) at `granularity`.
pub fn trend(points: &[AffectPoint], granularity: Granularity) -> Trend {
    let mut pts = points.to_vec();
    pts.sort_by_key(|p| p.at);
    let mut buckets: Vec<(String, Vec<AffectPoint>)> = Vec::new();
    for p in &pts {
        let key = granularity.key(p.at);
        match buckets.last_mut() {
            Some((k, v)) if *k == key => v.push(*p),
            _ => buckets.push((key, vec![*p])),
        }
    }
    let buckets = buckets
        .into_iter()
        .map(|(period, v)| Bucket {
            period,
            sessions: v.len(),
            mean_affect: mean(v.iter().map(|p| p.affect)).unwrap_or(0.0),
            mean_mood: mean(v.iter().filter_map(|p| p.mood.map(f64::from))),
            mean_sentiment: mean(v.iter().map(|p| p.sentiment)).unwrap_or(0.0),
            min_affect: v.iter().map(|p| p.affect).fold(f64::INFINITY, f64::min),
            max_affect: v.iter().map(|p| p.affect).fold(f64::NEG_INFINITY, f64::max),
            first_at: v[0].at,
        })
        .collect();
    let affects: Vec<f64> = pts.iter().map(|p| p.affect).collect();
    let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.at as f64 / (30.0 * DAY as f64), p.affect)).collect();
    let slope_per_30_days = slope(&xy);
    let span_30 = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => (b.at - a.at) as f64 / (30.0 * DAY as f64),
        _ => 0.0,
    };
    let fitted_change = slope_per_30_days.map(|s| s * span_30);
    let direction = match fitted_change {
        Some(c) if pts.len() >= 4 => {
            if c >= 0.15 {
                Direction::Rising
            } else if c <= -0.15 {
                Direction::Falling
            } else {
                Direction::Flat
            }
        }
        _ => Direction::InsufficientData,
    };
    Trend {
        granularity,
        sessions: pts.len(),
        buckets,
        mean_affect: mean(affects.iter().copied()),
        slope_per_30_days,
        fitted_change,
        volatility_rmssd: rmssd(&affects),
        std_dev: std_dev(&affects),
        direction,
        rule: TREND_RULE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dates::parse_timestamp;

    fn p(date: &str, affect: f64) -> AffectPoint {
        AffectPoint { at: parse_timestamp(date).unwrap(), mood: Some(5), sentiment: 0.0, affect }
    }

    #[test]
    fn slope_and_rmssd() {
        assert!((slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
        assert!((rmssd(&[0.0, 1.0, 0.0]).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(rmssd(&[1.0]), None);
        assert!((std_dev(&[1.0, 3.0]).unwrap() - 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn weekly_buckets_and_rising_direction() {
        let pts = vec![
            p("2024-01-01", -0.5),
            p("2024-01-03", -0.3),
            p("2024-01-08", -0.1),
            p("2024-01-15", 0.1),
            p("2024-01-22", 0.3),
        ];
        let t = trend(&pts, Granularity::Week);
        assert_eq!(t.buckets.len(), 4);
        assert_eq!(t.buckets[0].period, "2024-W01");
        assert_eq!(t.buckets[0].sessions, 2);
        assert!((t.buckets[0].mean_affect + 0.4).abs() < 1e-12);
        assert_eq!(t.direction, Direction::Rising);
        assert!(t.slope_per_30_days.unwrap() > 0.0);
    }

    #[test]
    fn flat_and_insufficient() {
        let pts: Vec<_> = ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"].iter().map(|d| p(d, 0.1)).collect();
        assert_eq!(trend(&pts, Granularity::Month).direction, Direction::Flat);
        assert_eq!(trend(&pts[..3], Granularity::Month).direction, Direction::InsufficientData);
        assert_eq!(trend(&[], Granularity::Year).buckets.len(), 0);
    }

    #[test]
    fn falling_over_years() {
        let pts: Vec<_> = (0..10).map(|y| p(&format!("{}-06-01", 2010 + y), 0.5 - y as f64 * 0.1)).collect();
        let t = trend(&pts, Granularity::Year);
        assert_eq!(t.buckets.len(), 10);
        assert_eq!(t.direction, Direction::Falling);
    }
}
