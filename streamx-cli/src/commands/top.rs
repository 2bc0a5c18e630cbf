//! `streamx top`: every group's lag, pending entries and rates, refreshed. On a terminal a
//! full-screen view (q, Esc or Ctrl-C quits); otherwise, or with `--once` /
//! `--iterations N`, one table (or JSON line) per refresh.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{self, Event, KeyCode, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};
use serde::Serialize;

use crate::cli::TopArgs;
use crate::connection::Connection;
use crate::error::{CliError, Result};
use crate::output::{or_dash, print_json_line, table};
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
    dead_letters: u64,
}

/// `streamx top`.
pub async fn top(conn: &Connection, args: &TopArgs, json: bool) -> Result<()> {
    let iterations = if args.once { Some(1) } else { args.iterations };
    if iterations.is_none() && !json && std::io::stdout().is_terminal() {
        return full_screen(conn, args.interval).await;
    }
    let mut before: Option<Sample> = None;
    for i in 0..iterations.unwrap_or(u64::MAX) {
        if i > 0 {
            tokio::select! {
                _ = tokio::time::sleep(args.interval) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
        let now = sample(conn).await?;
        let rows = rows(before.as_ref(), &now);
        let time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        if json {
            #[derive(Serialize)]
            struct View<'a> {
                time: &'a str,
                groups: &'a [Row],
            }
            print_json_line(&View { time: &time, groups: &rows });
        } else {
            println!("streamx top  {time}  {}\n{}\n", conn.redacted_url(), render(&rows));
        }
        before = Some(now);
    }
    Ok(())
}

async fn sample(conn: &Connection) -> Result<Sample> {
    let streams = overview::all(conn).await?;
    Ok(Sample { at: Instant::now(), streams })
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
                dead_letters: s.dead_letters,
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
                dead_letters: s.dead_letters,
            });
        }
    }
    rows
}

fn render(rows: &[Row]) -> String {
    let rate = |r: Option<f64>| r.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".to_string());
    let lines = rows.iter().map(|r| {
        vec![
            r.stream.clone(),
            or_dash(r.group.clone()),
            or_dash(r.lag),
            or_dash(r.pending),
            or_dash(r.consumers),
            rate(r.published_per_sec),
            rate(r.consumed_per_sec),
            r.dead_letters.to_string(),
        ]
    });
    table(&["STREAM", "GROUP", "LAG", "PENDING", "CONSUMERS", "IN/S", "OUT/S", "DEAD LETTERS"], lines).to_string()
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
    let mut before: Option<Sample> = None;
    loop {
        let now = sample(conn).await?;
        let time = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let text = format!(
            "streamx top  {time}  {}  (every {}; q quits)\n\n{}",
            conn.redacted_url(),
            humantime::format_duration(interval),
            render(&rows(before.as_ref(), &now))
        );
        screen.draw(&text).map_err(io)?;
        before = Some(now);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = quit.recv() => return Ok(()),
        }
    }
}
