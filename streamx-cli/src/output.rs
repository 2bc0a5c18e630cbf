//! How results are printed: tables for people, JSON for scripts.

use std::time::Duration;

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

/// A table with these column headers and rows, sized to the terminal when there is one.
pub fn table<R, C>(headers: &[&str], rows: R) -> Table
where
    R: IntoIterator<Item = Vec<C>>,
    C: Into<comfy_table::Cell>,
{
    let mut table = facts(rows);
    table.load_preset(HEADER_LINE_ONLY).set_header(headers.to_vec());
    table
}

/// A table without headers: `name  value` lines.
pub fn facts<R, C>(rows: R) -> Table
where
    R: IntoIterator<Item = Vec<C>>,
    C: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Dynamic);
    for row in rows {
        table.add_row(row);
    }
    table
}

/// No borders, a line under the header (comfy-table's preset characters; a space draws
/// nothing).
const HEADER_LINE_ONLY: &str = "     ─ ─           ";

/// Prints `value` as pretty JSON on standard output.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    // Serializing these plain structs cannot fail; print nothing rather than panic if it did.
    if let Ok(text) = serde_json::to_string_pretty(value) {
        println!("{text}");
    }
}

/// Prints `value` as one line of JSON (JSON Lines, for streams of results).
pub fn print_json_line<T: Serialize + ?Sized>(value: &T) {
    if let Ok(text) = serde_json::to_string(value) {
        println!("{text}");
    }
}

/// An optional number, or `-`.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "-".to_string())
}

/// A duration in milliseconds, short and readable: `850ms`, `12.4s`, `3m 20s`, `2h 5m`.
pub fn millis(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", d.as_secs_f64()),
        60_000..3_600_000 => format!("{}m {}s", ms / 60_000, ms % 60_000 / 1_000),
        _ => format!("{}h {}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_text_are_short() {
        assert_eq!(millis(850), "850ms");
        assert_eq!(millis(12_400), "12.4s");
        assert_eq!(millis(200_000), "3m 20s");
        assert_eq!(millis(7_500_000), "2h 5m");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
        assert_eq!(or_dash(None::<u64>), "-");
    }
}
