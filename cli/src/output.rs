//! How the operator commands read their arguments and print their answers: job ids
//! and durations on the command line; tables, times and ages on the terminal.

use std::io::Write;
use std::time::Duration;

use comfy_table::{ContentArrangement, Table, presets};
use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};
use podbridge_core::record::Transition;
use podbridge_core::validate::is_valid_job_id;

/// Parses a job id argument (clap value parser): a wrong id is a wrong command line.
pub fn job_id(text: &str) -> Result<String, String> {
    if is_valid_job_id(text) {
        Ok(text.to_owned())
    } else {
        Err("not a job id: 1 to 63 of A-Z a-z 0-9 - _ . starting and ending with a letter or digit".to_owned())
    }
}

/// Parses a duration argument (clap value parser): `90s`, `15m`, `2h`, `1h30m`, `7d`
/// (a day is 24 hours), or ISO 8601 (`PT1H`).
pub fn duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration such as 90s, 15m, 2h, 1h30m or 7d";
    let span: Span = text.trim().parse().map_err(|_| format!("{text:?}: {EXPECTED}"))?;
    let signed = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| format!("{text:?}: months and years are not durations here; {EXPECTED}"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?} is negative; {EXPECTED}"))
}

/// A table in the style of `kubectl get`: a header, no lines, columns three spaces
/// apart, so that `grep` and `awk` work on it. Long cells wrap to the terminal's width
/// when `wrap` is set and stdout is a terminal.
pub fn table(header: &[&str], wrap: bool) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    if !header.is_empty() {
        table.set_header(header.to_vec());
    }
    if wrap {
        table.set_content_arrangement(ContentArrangement::Dynamic);
    }
    table
}

/// Prints `table` to stdout, with column gaps and without trailing blanks.
pub fn print_table(table: &mut Table) -> anyhow::Result<()> {
    let text = render(table);
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// `table` as text, with column gaps and without trailing blanks.
pub fn render(table: &mut Table) -> String {
    let last = table.column_count().saturating_sub(1);
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if index == last { 0 } else { 3 }));
    }
    table.trim_fmt()
}

/// A time as UTC to the second: `2026-11-21T02:00:05Z`.
pub fn time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A duration in its two largest units, as `kubectl` shows ages: `45s`, `3m12s`,
/// `2h5m`, `3d4h`. Negative durations (clock skew) show as `0s`.
pub fn age(duration: SignedDuration) -> String {
    let seconds = duration.as_secs().max(0);
    let (days, hours, minutes, secs) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60, seconds % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, _) if secs == 0 => format!("{minutes}m"),
        (0, 0, _) => format!("{minutes}m{secs}s"),
        (0, _, 0) => format!("{hours}h"),
        (0, _, _) => format!("{hours}h{minutes}m"),
        (_, 0, _) => format!("{days}d"),
        _ => format!("{days}d{hours}h"),
    }
}

/// How long ago `at` was, seen at `now`.
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    format!("{} ago", age(now.duration_since(at)))
}

/// A transition's change of state: `queued → setting_up`, `new → queued` for the first.
pub fn change(transition: &Transition) -> String {
    let from = transition.from.map_or("new", |state| state.as_str());
    format!("{from} → {}", transition.to)
}

/// One line for a transition, as `watch` prints them as they happen.
pub fn transition_line(transition: &Transition) -> String {
    format!(
        "{}  attempt {}  {}  {}: {}",
        time(transition.at),
        transition.attempt,
        change(transition),
        transition.reason,
        transition.message
    )
}

/// What to say when a job is not in the table.
pub fn not_found(job_id: &str, table: &str) -> String {
    format!(
        "no job {job_id:?} in the table {table}: check the id (`podbridge list` shows the active jobs); \
         a job sent to the queue is recorded once dispatch takes its message"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use podbridge_core::state::JobState;

    #[test]
    fn durations_parse_in_friendly_units_and_days_are_24_hours() {
        let check = |text: &str, seconds: u64| assert_eq!(duration(text), Ok(Duration::from_secs(seconds)), "{text}");
        check("90s", 90);
        check("15m", 900);
        check("2h", 7_200);
        check("1h30m", 5_400);
        check("7d", 604_800);
        check("PT1H", 3_600);
        check("0s", 0);
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "90", "soon", "-1h", "1 month"] {
            let error = duration(bad).unwrap_err();
            assert!(error.contains("expected a duration"), "{bad}: {error}");
        }
    }

    #[test]
    fn ages_show_their_two_largest_units() {
        let check = |seconds: i64, expected: &str| assert_eq!(age(SignedDuration::from_secs(seconds)), expected);
        check(-5, "0s");
        check(0, "0s");
        check(45, "45s");
        check(180, "3m");
        check(192, "3m12s");
        check(7_200, "2h");
        check(7_500, "2h5m");
        check(86_400, "1d");
        check(3 * 86_400 + 4 * 3_600 + 59, "3d4h");
    }

    #[test]
    fn job_ids_are_checked_on_the_command_line() {
        assert_eq!(job_id("hello-1"), Ok("hello-1".to_owned()));
        assert!(job_id("-bad").is_err());
        assert!(job_id("has space").is_err());
        assert!(job_id(&"x".repeat(64)).is_err());
    }

    #[test]
    fn transitions_read_as_one_line() {
        let at: Timestamp = "2026-11-21T02:00:05.123456789Z".parse().unwrap();
        let first = Transition {
            at,
            from: None,
            to: JobState::Queued,
            attempt: 1,
            reason: "Submitted".into(),
            message: "the job was accepted and queued".into(),
        };
        assert_eq!(
            transition_line(&first),
            "2026-11-21T02:00:05Z  attempt 1  new → queued  Submitted: the job was accepted and queued"
        );
        let next = Transition { from: Some(JobState::Queued), to: JobState::SettingUp, ..first };
        assert_eq!(change(&next), "queued → setting_up");
    }

    #[test]
    fn tables_have_no_trailing_blanks() {
        let mut t = table(&["ID", "STATE"], false);
        t.add_row(vec!["a-much-longer-id", "queued"]);
        t.add_row(vec!["b", "executing"]);
        assert_eq!(render(&mut t), "ID                 STATE\na-much-longer-id   queued\nb                  executing");
    }
}
