//! Asking before changing many dead letters, and showing progress while doing it.

use std::io::{BufRead, IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{CliError, Result};

/// Asks on the terminal whether to `action` `count` dead letters of `what`. One letter, or
/// `yes`, needs no question; without a terminal to ask on, the answer is no
/// ([`CliError::ConfirmationRequired`]).
pub async fn confirm(action: &'static str, count: u64, what: &str, yes: bool) -> Result<()> {
    if yes || count <= 1 {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::ConfirmationRequired { action, count });
    }
    let question = format!("{action} {count} dead letters of {}? [y/N] ", crate::output::printable(what));
    if ask(question).await? {
        Ok(())
    } else {
        Err(CliError::NotConfirmed { action })
    }
}

/// Asks on the terminal whether to `what` (one change that cannot be undone: deleting a
/// group, a scheduled retry). `yes` needs no question; without a terminal to ask on, the
/// answer is no ([`CliError::Refused`]).
pub async fn confirm_one(what: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Refused {
            what: what.to_string(),
            reason: "standard input is not a terminal".to_string(),
            flag: "--yes",
        });
    }
    let question = format!("{}? [y/N] ", crate::output::printable(what));
    if ask(question).await? {
        Ok(())
    } else {
        Err(CliError::NotConfirmed { action: "change" })
    }
}

/// Asks `question` on standard error and reads the answer from standard input: true for
/// `y` or `yes`.
async fn ask(question: String) -> Result<bool> {
    let answer = tokio::task::spawn_blocking(move || {
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "{question}");
        let _ = stderr.flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| CliError::Io { what: "reading the answer".to_string(), source: std::io::Error::other(e) })?
    .map_err(|source| CliError::Io { what: "reading the answer".to_string(), source })?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Progress of a long operation on standard error: a bar on a terminal, else a line at
/// every tenth of the way (so logs show it too).
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: u64,
    done: u64,
    next_line: u64,
}

impl Progress {
    /// Progress of `label` over `total` items.
    pub fn new(label: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} ({per_sec}, {eta} left)") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label);
            bar
        });
        Progress { bar, label, total, done: 0, next_line: 0 }
    }

    /// `n` more items done.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.done >= self.next_line || self.done == self.total => {
                eprintln!("{}: {}/{}", self.label, self.done, self.total);
                self.next_line = self.done + (self.total / 10).max(1);
            }
            None => {}
        }
    }

    /// Done: the bar is cleared.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
