//! A one-line progress display on a terminal: rows read, batches delivered, and an estimate of
//! the time left. Drawn on stderr, at most ten times a second, and only on a terminal.

use std::{
    fmt::Write as _,
    io::{IsTerminal, Write},
    sync::Mutex,
    time::{Duration, Instant},
};

use ldsync_engine::Progress;

/// Draws the progress of one sync's run.
#[derive(Debug)]
pub(crate) struct TerminalProgress {
    sync: String,
    started: Instant,
    state: Mutex<Drawn>,
}

#[derive(Debug, Default)]
struct Drawn {
    rows: u64,
    batches: Option<(u64, u64)>,
    last: Option<Instant>,
    width: usize,
}

impl TerminalProgress {
    /// A display for `sync`, or `None` when stderr is not a terminal.
    pub(crate) fn for_terminal(sync: &str) -> Option<Self> {
        std::io::stderr().is_terminal().then(|| Self {
            sync: sync.to_owned(),
            started: Instant::now(),
            state: Mutex::new(Drawn::default()),
        })
    }

    fn draw(&self, update: impl FnOnce(&mut Drawn)) {
        let mut state = self.state.lock().expect("the progress state is never poisoned");
        update(&mut state);
        let now = Instant::now();
        if state.last.is_some_and(|last| now - last < Duration::from_millis(100)) {
            return;
        }
        state.last = Some(now);
        let line = line(&self.sync, state.rows, state.batches, self.started.elapsed());
        let pad = state.width.saturating_sub(line.chars().count());
        state.width = line.chars().count();
        let mut stderr = std::io::stderr().lock();
        // A progress line that fails to draw is not worth failing a run for.
        let _ = write!(stderr, "\r{line}{}", " ".repeat(pad));
        let _ = stderr.flush();
    }
}

impl Progress for TerminalProgress {
    fn rows_read(&self, rows: u64) {
        self.draw(|state| state.rows = rows);
    }

    fn batches(&self, delivered: u64, total: u64) {
        self.draw(|state| state.batches = Some((delivered, total)));
    }

    fn finish(&self) {
        let state = self.state.lock().expect("the progress state is never poisoned");
        if state.width > 0 {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r{}\r", " ".repeat(state.width));
            let _ = stderr.flush();
        }
    }
}

/// `sync: 1,234,567 rows read · 12/40 batches · about 3s left`.
fn line(sync: &str, rows: u64, batches: Option<(u64, u64)>, elapsed: Duration) -> String {
    let mut line = format!("{sync}: {} rows read", thousands(rows));
    if let Some((done, total)) = batches {
        let _ = write!(line, " · {done}/{total} batches");
        if done > 0 && done < total {
            // The time so far, scaled by what is left: whole batches, so whole-number ratios.
            let per_batch = elapsed / u32::try_from(done).unwrap_or(u32::MAX);
            let left = per_batch.saturating_mul(u32::try_from(total - done).unwrap_or(u32::MAX));
            let _ = write!(line, " · about {}s left", left.as_secs().max(1));
        }
    }
    line
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_rows_batches_and_time_left() {
        assert_eq!(line("beta", 1_234_567, None, Duration::ZERO), "beta: 1,234,567 rows read");
        assert_eq!(
            line("beta", 999, Some((10, 40)), Duration::from_secs(2)),
            "beta: 999 rows read · 10/40 batches · about 6s left"
        );
        assert_eq!(
            line("beta", 0, Some((40, 40)), Duration::from_secs(9)),
            "beta: 0 rows read · 40/40 batches"
        );
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12), "12");
    }
}
