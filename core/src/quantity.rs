//! CPU and memory quantities in exact integers: millicores and bytes. Parsing is strict
//! (what the apiserver accepts, nothing that would overflow), and formatting gives the
//! canonical form put in the pod spec.

/// Parses a CPU quantity (`"500m"`, `"2"`, `"0.25"`) into millicores, rounding a
/// fraction of a millicore up as the apiserver does. A quantity above zero but below
/// one millicore (`"0.0001"`) is refused: Kubernetes accounts CPU in millicores, so it
/// would silently become `1m`.
pub fn parse_cpu(text: &str) -> Result<u64, String> {
    let (millis, exact) = parse_scaled(text, 3)?;
    if millis == 1 && !exact {
        return Err(format!("{text:?} is less than 1m, the smallest CPU quantity; allowed: at least 1m"));
    }
    Ok(millis)
}

/// Parses a memory quantity (`"512Mi"`, `"1Gi"`, `"1G"`, `"1048576"`) into bytes,
/// rounding a fraction of a byte up.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    parse_scaled(text, 0).map(|(bytes, _)| bytes)
}

/// Parses `text` and returns it multiplied by `10^scale`, rounded up, and whether
/// that was exact.
fn parse_scaled(text: &str, scale: u32) -> Result<(u64, bool), String> {
    let bad = || format!("{text:?} is not a quantity (e.g. \"500m\", \"2\", \"512Mi\", \"1Gi\")");
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || number.len() > 30 {
        return Err(bad());
    }
    // Suffix: binary (Ki..Ei), decimal (m, k..E), or none; as a power of 2 or of 10.
    let (two, ten): (u32, i32) = match suffix {
        "" => (0, 0),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        _ => return Err(bad()),
    };
    let too_big = || format!("{text:?} is far too large");
    let digits: String = format!("{whole}{fraction}");
    let mut value: u128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad())? };
    // value * 10^(scale + ten - fraction.len()) * 2^two, rounded up like the apiserver.
    let exponent = i64::from(scale) + i64::from(ten) - fraction.len() as i64;
    value = value.checked_mul(1u128 << two).ok_or_else(too_big)?;
    let mut exact = true;
    if exponent >= 0 {
        let factor = 10u128.checked_pow(exponent as u32).ok_or_else(too_big)?;
        value = value.checked_mul(factor).ok_or_else(too_big)?;
    } else {
        let divisor = 10u128.checked_pow((-exponent) as u32).ok_or_else(too_big)?;
        exact = value.is_multiple_of(divisor);
        value = value.div_ceil(divisor);
    }
    u64::try_from(value).map(|value| (value, exact)).map_err(|_| too_big())
}

/// `1500` → `"1500m"`, `2000` → `"2"`.
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) { (millis / 1000).to_string() } else { format!("{millis}m") }
}

/// `536870912` → `"512Mi"`; sizes that are not a whole number of Ki stay in bytes.
pub fn format_memory(bytes: u64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        let check = |text: &str, expected: u64| assert_eq!(parse_cpu(text), Ok(expected), "{text}");
        check("500m", 500);
        check("2", 2000);
        check("0.25", 250);
        check("1.5", 1500);
        check("100m", 100);
        check(".5", 500);
        check("0.001", 1);
        check("1.5m", 2);
        check("0.0011", 2);
        for bad in ["", "abc", "-1", "1e3", "1Gi!", "1..2", "1 ", "."] {
            assert!(parse_cpu(bad).is_err(), "{bad} must be rejected");
        }
        for below in ["0.0001", "0.5m", "1u"] {
            let why = parse_cpu(below).unwrap_err();
            assert!(why.contains("less than 1m") || why.contains("not a quantity"), "{below}: {why}");
        }
        assert!(parse_cpu("0.0001").unwrap_err().contains("less than 1m"));
    }

    #[test]
    fn memory() {
        let check = |text: &str, expected: u64| assert_eq!(parse_memory(text), Ok(expected), "{text}");
        check("512Mi", 512 << 20);
        check("1Gi", 1 << 30);
        check("1G", 1_000_000_000);
        check("1.5Gi", 3 << 29);
        check("1048576", 1 << 20);
        check("128k", 128_000);
        check("1m", 1);
        assert!(parse_memory("99999999999999999999Ei").unwrap_err().contains("too large"));
        assert!(parse_memory("1e999").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_cpu(1500), "1500m");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_memory(512 << 20), "512Mi");
        assert_eq!(format_memory(1 << 30), "1Gi");
        assert_eq!(format_memory(1_000_000_000), "1000000000");
    }
}
