//! Values with units on the command line. Durations: `250` (milliseconds), `250ms`, `30s`,
//! `1.5s`, `5m`, `2h`, `1d` (every `--…-ms` flag and `--threshold`); priorities: a number, or
//! `high`, `normal`, `low`.

/// Parses a duration into milliseconds.
pub fn millis(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" | "sec" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => {
            return Err(format!(
                "{other:?} is not a unit: use ms, s, m, h or d (a bare number is milliseconds)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500, 30s, 5m or 2h"))?;
    let millis = (value * scale).round();
    if !millis.is_finite() || millis < 0.0 || millis > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(millis as u64)
}

/// A moment for `--since`/`--until`: an RFC 3339 time, or a duration (`2h`, `30m`, `1d`)
/// meaning that long before now (the wall clock: this is the command line, not a fold).
pub fn moment(flag: &str, text: &str) -> anyhow::Result<fleetlog_ledger::Timestamp> {
    use fleetlog_ledger::Timestamp;
    if let Ok(at) = Timestamp::parse_rfc3339(text) {
        return Ok(at);
    }
    let ago = text.trim().trim_end_matches("ago").trim();
    match millis(ago) {
        Ok(ms) => Ok(Timestamp::now().minus_millis(ms)),
        Err(_) => anyhow::bail!(
            "{flag} {text:?} is neither an RFC 3339 time such as 2026-11-23T10:00:00Z nor a duration ago such as 2h, 30m or 1d"
        ),
    }
}

/// A priority: a number, or `high` (10), `normal` (0), `low` (-10).
pub fn priority(text: &str) -> Result<i32, String> {
    match text.trim() {
        "high" => Ok(10),
        "normal" => Ok(0),
        "low" => Ok(-10),
        number => number
            .parse()
            .map_err(|_| format!("{text:?} is not a priority: a number, or high, normal or low")),
    }
}

#[cfg(test)]
mod tests {
    use super::{millis, priority};

    #[test]
    fn priorities_are_numbers_or_words() {
        assert_eq!(priority("high"), Ok(10));
        assert_eq!(priority("-3"), Ok(-3));
        assert!(priority("urgent").is_err());
    }

    #[test]
    fn durations_take_units_and_bare_numbers_are_milliseconds() {
        assert_eq!(millis("250"), Ok(250));
        assert_eq!(millis("250ms"), Ok(250));
        assert_eq!(millis("30s"), Ok(30_000));
        assert_eq!(millis("1.5s"), Ok(1_500));
        assert_eq!(millis("5m"), Ok(300_000));
        assert_eq!(millis("2h"), Ok(7_200_000));
        assert_eq!(millis("1d"), Ok(86_400_000));
        assert!(millis("3 fortnights").is_err());
        assert!(millis("s").is_err());
        assert!(millis("-5s").is_err());
    }
}
