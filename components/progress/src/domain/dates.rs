//! Calendar arithmetic on Unix seconds (UTC), without a date library.

pub const DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Date (y, m, d) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn num(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// Parses `YYYY-MM-DD` (midnight UTC) or RFC 3339 `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 10 {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let parts: Vec<&str> = date.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return None;
    }
    let (y, m, d) = (num(parts[0])?, num(parts[1])? as u32, num(parts[2])? as u32);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || !(1900..=2200).contains(&y) {
        return None;
    }
    let base = days_from_civil(y, m, d) * DAY;
    if rest.is_empty() {
        return Some(base);
    }
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    if rest.len() < 8 {
        return None;
    }
    let (time, mut zone) = rest.split_at(8);
    let t: Vec<&str> = time.split(':').collect();
    if t.len() != 3 || t.iter().any(|p| p.len() != 2) {
        return None;
    }
    let (hh, mm, ss) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if let Some(frac) = zone.strip_prefix('.') {
        let end = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
        if end == 0 {
            return None;
        }
        zone = &frac[end..];
    }
    let offset = match zone {
        "Z" | "z" => 0,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) && &z[3..4] == ":" => {
            let o = num(&z[1..3])? * 3600 + num(&z[4..6])? * 60;
            if z.starts_with('+') { o } else { -o }
        }
        _ => return None,
    };
    Some(base + hh * 3600 + mm * 60 + ss - offset)
}

pub fn format_date(ts: i64) -> String {
    let (y, m, d) = civil_from_days(ts.div_euclid(DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn format_datetime(ts: i64) -> String {
    let secs = ts.rem_euclid(DAY);
    format!("{}T{:02}:{:02}:{:02}Z", format_date(ts), secs / 3600, secs % 3600 / 60, secs % 60)
}

/// ISO 8601 week-year and week number.
pub fn iso_week(ts: i64) -> (i64, u32) {
    let days = ts.div_euclid(DAY);
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday
    let thursday = days - weekday + 3;
    let (y, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(y, 1, 1)) / 7 + 1;
    (y, week as u32)
}

/// Rollup period for trends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Week,
    Month,
    Year,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            "year" => Some(Self::Year),
            _ => None,
        }
    }

    /// The granularity that gives a readable number of points for a span.
    pub fn for_span(days: i64) -> Self {
        if days <= 180 {
            Self::Week
        } else if days <= 4 * 366 {
            Self::Month
        } else {
            Self::Year
        }
    }

    /// Label of the period containing `ts`: `2024-W05`, `2024-03` or `2024`.
    pub fn key(self, ts: i64) -> String {
        match self {
            Self::Week => {
                let (y, w) = iso_week(ts);
                format!("{y:04}-W{w:02}")
            }
            Self::Month => {
                let (y, m, _) = civil_from_days(ts.div_euclid(DAY));
                format!("{y:04}-{m:02}")
            }
            Self::Year => format!("{:04}", civil_from_days(ts.div_euclid(DAY)).0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for z in [-1000, 0, 59, 60, 10_956, 19_723, 50_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_timestamp("1970-01-02"), Some(DAY));
        assert_eq!(parse_timestamp("2024-02-29T12:00:00Z"), Some(days_from_civil(2024, 2, 29) * DAY + 43_200));
        assert_eq!(parse_timestamp("2024-01-01T01:00:00+01:00"), Some(days_from_civil(2024, 1, 1) * DAY));
        assert_eq!(parse_timestamp("2024-01-01T00:00:00.123Z"), Some(days_from_civil(2024, 1, 1) * DAY));
        for bad in ["2023-02-29", "2024-13-01", "2024-1-01", "yesterday", "", "2024-01-01T25:00:00Z", "2024-01-01T00:00:00"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_and_weeks() {
        let t = parse_timestamp("2021-01-03T10:11:12Z").unwrap();
        assert_eq!(format_datetime(t), "2021-01-03T10:11:12Z");
        assert_eq!(iso_week(t), (2020, 53)); // Sunday 3 Jan 2021 is in 2020-W53
        assert_eq!(iso_week(parse_timestamp("2021-01-04").unwrap()), (2021, 1));
        assert_eq!(iso_week(parse_timestamp("2019-12-30").unwrap()), (2020, 1));
        assert_eq!(Granularity::Month.key(t), "2021-01");
        assert_eq!(Granularity::Week.key(t), "2020-W53");
        assert_eq!(Granularity::Year.key(t), "2021");
    }
}
