//! `streamx top`: every group's lag, pending entries and rates, refreshed. On a terminal a
//! full-screen view (q, Esc or Ctrl-C quits); otherwise, or with `--once` /
//! `--iterations N`, one table (or JSON line) per refresh.
//!
//! A refresh costs a bounded number of commands (see [`crate::discovery`]) and at most
//! [`overview::REFRESH_TIMEOUT`]; while Redis does not answer, the view says since when,
//! keeps the last figures with their age, and carries on by itself once Redis is back.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{self, Event, KeyCode, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};
use serde::Serialize;

use crate::cli::TopArgs;
use crate::connection::Connection;
use crate::discovery::Discovery;
use crate::error::{CliError, Result};
use crate::output::{or_dash, print_json_line, printable, table};
use crate::overview;
use crate::rates::{Rates, Sample};

/// One line of the view: a group (or a stream without groups).
#[derive(Debug, Serialize)]
struct Row {
    stream: String,
    group: Option<String>,
    lag: Option<u64>,
    pending: Option<u64>,
    consumers: Option<u64>,
    published_per_sec: Option<f64>,
    consumed_per_sec: Option<f64>,
    /// Entries acknowledged (or dead-lettered) per second.
    acknowledged_per_sec: Option<f64>,
    dead_letters: u64,
    /// The Redis user may not read the stream: no figures.
    no_permission: bool,
    /// The group is paused (`streamx pause`).
    paused: bool,
}

/// What `top` knows: the last good sample and, while refreshes fail, since when and why.
struct Watch {
    discovery: Discovery,
    before: Option<Sample>,
    /// The wall-clock time of `before`.
    before_time: Option<SystemTime>,
    /// Since when refreshes fail, and the last failure.
    failing: Option<(SystemTime, String)>,
    /// The last refresh's error, kept whole for `--once` (its exit code).
    error: Option<CliError>,
}

impl Watch {
    fn new() -> Self {
        Watch { discovery: Discovery::new(), before: None, before_time: None, failing: None, error: None }
    }

    /// Refreshes; returns the rows (of the last good sample while failing).
    async fn refresh(&mut self, conn: &Connection) -> Vec<Row> {
        match overview::refresh(conn, &mut self.discovery).await {
            Ok(streams) => {
                let now = Sample { at: Instant::now(), streams };
                let rows = rows(self.before.as_ref(), &now);
                self.before = Some(now);
                self.before_time = Some(SystemTime::now());
                self.failing = None;
                self.error = None;
                rows
            }
            Err(e) => {
                let since = self.failing.as_ref().map_or_else(SystemTime::now, |(since, _)| *since);
                self.failing = Some((since, e.to_string()));
                self.error = Some(e);
                self.before.as_ref().map(|b| rows(None, b)).unwrap_or_default()
            }
        }
    }

    /// "Redis unreachable since ..." and the figures' age, while refreshes fail. The error's
    /// text may quote names from Redis: escaped.
    fn warning(&self) -> Option<String> {
        let (since, error) = self.failing.as_ref()?;
        let now = SystemTime::now();
        let secs = |t: SystemTime| now.duration_since(t).unwrap_or_default().as_secs();
        let figures = match self.before_time {
            Some(t) => format!("figures below are from {} ({}s old)", rfc3339(t), secs(t)),
            None => "no figures yet".to_string(),
        };
        let error = printable(error);
        Some(format!("Redis unreachable since {} ({}s): {error}; {figures}", rfc3339(*since), secs(*since)))
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `streamx top`.
pub async fn top(conn: &Connection, args: &TopArgs, json: bool) -> Result<()> {
    let iterations = if args.once { Some(1) } else { args.iterations };
    if iterations.is_none() && !json && std::io::stdout().is_terminal() {
        return full_screen(conn, args.interval).await;
    }
    let mut watch = Watch::new();
    let iterations = iterations.unwrap_or(u64::MAX);
    for i in 0..iterations {
        if i > 0 {
            tokio::select! {
                _ = tokio::time::sleep(args.interval) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
        let rows = watch.refresh(conn).await;
        if iterations == 1 {
            // The failure itself, with its exit code (3 for an unreachable Redis, 5 NOPERM...).
            if let Some(error) = watch.error.take() {
                return Err(error);
            }
        }
        let time = rfc3339(SystemTime::now());
        if json {
            #[derive(Serialize)]
            struct View<'a> {
                time: &'a str,
                groups: &'a [Row],
                /// Why the last refresh failed; `null` when it worked.
                error: Option<&'a str>,
                /// Since when refreshes fail (Unix ms); `null` when they work.
                unreachable_since_ms: Option<u64>,
                /// When the figures shown were read (Unix ms).
                figures_time_ms: Option<u64>,
            }
            print_json_line(&View {
                time: &time,
                groups: &rows,
                error: watch.failing.as_ref().map(|(_, e)| e.as_str()),
                unreachable_since_ms: watch.failing.as_ref().map(|(since, _)| unix_ms(*since)),
                figures_time_ms: watch.before_time.map(unix_ms),
            });
        } else {
            let warning = watch.warning().map(|w| format!("{w}\n")).unwrap_or_default();
            println!("streamx top  {time}  {}\n{warning}{}\n", conn.redacted_url(), render(&rows));
        }
        // Seen at once by a pipe's reader, as on a terminal.
        let _ = std::io::stdout().flush();
    }
    Ok(())
}

fn rows(before: Option<&Sample>, now: &Sample) -> Vec<Row> {
    let rates = Rates::between(before, now);
    let mut rows = Vec::new();
    for s in &now.streams {
        let published = rates.published(&s.stream);
        if s.groups.is_empty() {
            rows.push(Row {
                stream: s.stream.clone(),
                group: None,
                lag: None,
                pending: None,
                consumers: None,
                published_per_sec: published,
                consumed_per_sec: None,
                acknowledged_per_sec: None,
                dead_letters: s.dead_letters,
                no_permission: s.no_permission,
                paused: false,
            });
        }
        for g in &s.groups {
            rows.push(Row {
                stream: s.stream.clone(),
                group: Some(g.name.clone()),
                lag: g.lag,
                pending: Some(g.pending),
                consumers: Some(g.consumers),
                published_per_sec: published,
                consumed_per_sec: rates.consumed(&s.stream, &g.name),
                acknowledged_per_sec: rates.acknowledged(&s.stream, &g.name),
                dead_letters: s.dead_letters,
                no_permission: false,
                paused: g.paused,
            });
        }
    }
    rows
}

fn render(rows: &[Row]) -> String {
    let rate = |r: Option<f64>| r.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".to_string());
    let lines = rows.iter().map(|r| {
        if r.no_permission {
            let mut line = vec![r.stream.clone(), "no permission".to_string()];
            line.extend(std::iter::repeat_n("-".to_string(), 7));
            return line;
        }
        vec![
            r.stream.clone(),
            or_dash(r.group.as_ref().map(|g| crate::output::group_name(g, r.paused))),
            or_dash(r.lag),
            or_dash(r.pending),
            or_dash(r.consumers),
            rate(r.published_per_sec),
            rate(r.consumed_per_sec),
            rate(r.acknowledged_per_sec),
            r.dead_letters.to_string(),
        ]
    });
    table(&["STREAM", "GROUP", "LAG", "PENDING", "CONSUMERS", "IN/S", "OUT/S", "ACK/S", "DEAD LETTERS"], lines)
        .to_string()
}

/// Restores the terminal however the view ends.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Self> {
        terminal::enable_raw_mode()?;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(Screen)
    }

    fn draw(&self, text: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout();
        queue!(out, cursor::MoveTo(0, 0), terminal::Clear(terminal::ClearType::All))?;
        for line in text.lines() {
            write!(out, "{line}\r\n")?;
        }
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

async fn full_screen(conn: &Connection, interval: Duration) -> Result<()> {
    let io = |source| CliError::Io { what: "driving the terminal".to_string(), source };
    let screen = Screen::enter().map_err(io)?;
    let (quit_tx, mut quit) = tokio::sync::mpsc::channel::<()>(1);
    // Keys are read on a blocking thread; it stops once the view is gone.
    tokio::task::spawn_blocking(move || {
        while !quit_tx.is_closed() {
            if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                continue;
            }
            if let Ok(Event::Key(key)) = event::read() {
                let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                    let _ = quit_tx.blocking_send(());
                    return;
                }
            }
        }
    });
    let mut watch = Watch::new();
    loop {
        let rows = watch.refresh(conn).await;
        let time = rfc3339(SystemTime::now());
        let warning = watch.warning().map(|w| format!("{w}\n")).unwrap_or_default();
        let text = format!(
            "streamx top  {time}  {}  (every {}; q quits)\n{warning}\n{}",
            conn.redacted_url(),
            humantime::format_duration(interval),
            render(&rows)
        );
        screen.draw(&text).map_err(io)?;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = quit.recv() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unreachable_warning_escapes_what_redis_named() {
        let mut watch = Watch::new();
        watch.failing = Some((SystemTime::now(), "XINFO STREAM on `evil\u{1b}[2J\n` failed".to_string()));
        let warning = watch.warning().unwrap();
        assert!(warning.contains("evil\\e[2J\\n"), "{warning}");
        assert!(!warning.contains('\u{1b}') && !warning.contains('\n'), "{warning}");
    }
}
