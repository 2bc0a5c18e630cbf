//! How results are printed: tables and lines for people (every value from Redis through
//! [`printable`], colour only on a terminal), JSON for scripts.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use comfy_table::{presets, Attribute, Cell, ContentArrangement, Table};
use serde::Serialize;
use serde_json::value::RawValue;

/// A table with these column headers and rows, sized to the terminal when there is one.
/// Every cell is shown through [`printable`]; the headers are bold when [`colour`] allows.
pub fn table<R, C>(headers: &[&str], rows: R) -> Table
where
    R: IntoIterator<Item = Vec<C>>,
    C: AsRef<str>,
{
    let mut table = facts(rows);
    let bold = colour();
    let headers = headers.iter().map(|h| if bold { Cell::new(h).add_attribute(Attribute::Bold) } else { Cell::new(h) });
    table.load_preset(HEADER_LINE_ONLY).set_header(headers.collect::<Vec<_>>());
    table
}

/// A table without headers: `name  value` lines, every cell through [`printable`].
pub fn facts<R, C>(rows: R) -> Table
where
    R: IntoIterator<Item = Vec<C>>,
    C: AsRef<str>,
{
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Dynamic);
    if colour() {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    for row in rows {
        table.add_row(row.iter().map(|cell| Cell::new(printable(cell.as_ref()))).collect::<Vec<_>>());
    }
    table
}

/// Whether to write ANSI colours and styles: only when standard output is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` safe to write to a terminal: every control character (C0, DEL, C1) and every
/// bidirectional override is shown escaped (`\n`, `\r`, `\t`, `\e` for ESC, `\x7f`,
/// `\u{202e}`), so content from Redis (stream and consumer names, payloads, errors,
/// headers) can neither split a line nor send escape sequences to the operator's terminal.
/// Everything else is kept, backslashes included. JSON output does not need it: JSON
/// escapes control characters itself.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Control characters (C0, DEL, C1) and the bidirectional embeddings, overrides and
/// isolates, which reorder what a terminal shows.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A payload for JSON output: `Ok` with the JSON exactly as published (keys in their
/// order, numbers as written) when it is JSON, made one line when it spans several so JSON
/// Lines stay one entry per line; `Err` with the text (invalid UTF-8 replaced) when it is
/// not JSON.
pub fn json_payload(bytes: &[u8]) -> Result<Box<RawValue>, String> {
    let text = String::from_utf8_lossy(bytes);
    let raw = match std::str::from_utf8(bytes) {
        Ok(text) => RawValue::from_string(text.trim().to_string()),
        Err(_) => return Err(text.into_owned()),
    };
    match raw {
        Ok(raw) if raw.get().contains(['\n', '\r']) => {
            RawValue::from_string(one_line(raw.get())).map_err(|_| text.into_owned())
        }
        Ok(raw) => Ok(raw),
        Err(_) => Err(text.into_owned()),
    }
}

/// Valid JSON without the whitespace between its tokens (strings untouched).
fn one_line(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
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

/// A group's name in a table, marked `(paused)` while it is paused.
pub fn group_name(name: &str, paused: bool) -> String {
    if paused {
        format!("{name} (paused)")
    } else {
        name.to_string()
    }
}

/// A group's lag: `-` when unknown, `~N` when estimated.
pub fn lag(lag: Option<u64>, estimated: bool) -> String {
    match lag {
        Some(lag) if estimated => format!("~{lag}"),
        lag => or_dash(lag),
    }
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

/// Unix milliseconds as an RFC 3339 time with milliseconds (`2026-12-07T10:00:00.000Z`);
/// past what RFC 3339 can write (the year 9999: an id like `1712000000000000-0` is valid in
/// Redis) the number itself, `253402300800000 ms`. The one place every time read from Redis
/// (an id's, a retry's due time) is written, so none can fail to print.
pub fn time_ms(ms: u64) -> String {
    let mut text = String::new();
    match std::time::UNIX_EPOCH.checked_add(Duration::from_millis(ms)) {
        // humantime's Display fails (fmt::Error) past 9999-12-31: `to_string` would panic.
        Some(t) if write!(text, "{}", humantime::format_rfc3339_millis(t)).is_ok() => text,
        _ => format!("{ms} ms"),
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

    #[test]
    fn times_past_the_year_9999_are_printed_as_milliseconds() {
        assert_eq!(time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(time_ms(1_712_000_000_000_000), "1712000000000000 ms");
        assert_eq!(time_ms(u64::MAX), format!("{} ms", u64::MAX));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("orders"), "orders");
        assert_eq!(printable("a\nb\r\t"), "a\\nb\\r\\t");
        assert_eq!(printable("\u{1b}[2J\u{7f}\u{0}"), "\\e[2J\\x7f\\x00");
        assert_eq!(printable("\u{9b}31m \u{202e}txt"), "\\u{9b}31m \\u{202e}txt");
        assert_eq!(printable("é ü \\ ok"), "é ü \\ ok");
    }

    #[test]
    fn json_payloads_keep_their_order_on_one_line() {
        assert_eq!(json_payload(br#"{"z":1,"a":[2, 1.50]}"#).unwrap().get(), r#"{"z":1,"a":[2, 1.50]}"#);
        assert_eq!(
            json_payload(b"{\n  \"z\": \"a b\\\"\\n\",\n  \"a\": 1\n}").unwrap().get(),
            r#"{"z":"a b\"\n","a":1}"#
        );
        assert_eq!(json_payload(b"not json").unwrap_err(), "not json");
        assert_eq!(json_payload(b"\xff").unwrap_err(), "\u{fffd}");
    }
}
