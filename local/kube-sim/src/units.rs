//! Durations (`250ms`, `2s`, `1m`, `1h`) and Kubernetes resource quantities.

use std::time::Duration;

/// Parses a duration written as a number and a unit: `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected a number followed by ms, s, m or h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!("invalid duration {text:?}: unit must be ms, s, m or h"));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The message the apiserver gives for a quantity it cannot decode.
pub const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Parses a Kubernetes quantity (`500m`, `2`, `1.5Gi`, `128M`, `1e3`) into base units.
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number[1..].contains(['+', '-']) {
        return Err(QUANTITY_FORMAT.to_owned());
    }
    let value: f64 = number.parse().map_err(|_| QUANTITY_FORMAT.to_owned())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().map_err(|_| QUANTITY_FORMAT.to_owned())?;
            10f64.powi(power)
        }
        _ => return Err(QUANTITY_FORMAT.to_owned()),
    };
    let result = value * multiplier;
    if !result.is_finite() {
        return Err(format!("quantity {text:?} is too large"));
    }
    Ok(result)
}

/// Formats a quantity of CPU given in millicores the way the apiserver prints it.
pub fn format_millicores(milli: i64) -> String {
    if milli % 1000 == 0 { (milli / 1000).to_string() } else { format!("{milli}m") }
}

/// Formats a memory size in bytes with the largest exact binary suffix.
pub fn format_bytes(bytes: i64) -> String {
    for (suffix, factor) in [("Ti", 1i64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes != 0 && bytes % factor == 0 {
            return format!("{}{suffix}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// `kubectl`'s short human age: `45s`, `3m12s`, `5h`, `2d3h`.
pub fn human_age(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    match seconds {
        0..120 => format!("{seconds}s"),
        120..600 if !seconds.is_multiple_of(60) => format!("{minutes}m{}s", seconds % 60),
        120..10_800 => format!("{minutes}m"),
        10_800..28_800 if !minutes.is_multiple_of(60) => format!("{hours}h{}m", minutes % 60),
        10_800..172_800 => format!("{hours}h"),
        _ if !hours.is_multiple_of(24) && hours < 24 * 8 => format!("{}d{}h", hours / 24, hours % 24),
        _ => format!("{}d", hours / 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let check = |text: &str, expected: f64| assert_eq!(parse_quantity(text).unwrap(), expected, "{text}");
        check("500m", 0.5);
        check("2", 2.0);
        check("1.5", 1.5);
        check("128Mi", 134_217_728.0);
        check("1Gi", 1_073_741_824.0);
        check("1k", 1000.0);
        check("1e3", 1000.0);
        check("+1", 1.0);
        for bad in ["", "abc", "1Qi", "1..2", "1e999", "--1", "1-2", "Mi"] {
            assert!(parse_quantity(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn ages() {
        let check = |seconds: u64, expected: &str| assert_eq!(human_age(Duration::from_secs(seconds)), expected);
        check(5, "5s");
        check(119, "119s");
        check(192, "3m12s");
        check(900, "15m");
        check(11_000, "3h3m");
        check(36_000, "10h");
        check(180_000, "2d2h");
    }

    #[test]
    fn formats() {
        assert_eq!(format_millicores(2000), "2");
        assert_eq!(format_millicores(250), "250m");
        assert_eq!(format_bytes(16 << 30), "16Gi");
        assert_eq!(format_bytes(1000), "1000");
    }
}
