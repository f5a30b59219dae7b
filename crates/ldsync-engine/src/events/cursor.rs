//! Cursor arithmetic, in epoch milliseconds: what `$1` is bound to, and the windows of a
//! backfill.

use std::time::Duration;

/// Milliseconds in `duration`, saturating.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Where an incremental run reads from (`$1`): the initial cursor on the first run, later the
/// latest delivered `occurred_at` minus the lookback, never before the initial cursor (the
/// sync promises nothing older).
pub(crate) fn read_from(cursor_ms: Option<i64>, lookback_ms: i64, initial_ms: i64) -> i64 {
    match cursor_ms {
        None => initial_ms,
        Some(cursor) => cursor.saturating_sub(lookback_ms).max(initial_ms),
    }
}

/// The windows `[start, end)` that cover `[from, to)`, each `window` long but the last, which
/// ends at `to`.
pub(crate) fn windows(from_ms: i64, to_ms: i64, window_ms: i64) -> Vec<(i64, i64)> {
    let window_ms = window_ms.max(1);
    let mut windows = Vec::new();
    let mut start = from_ms;
    while start < to_ms {
        let end = start.saturating_add(window_ms).min(to_ms);
        windows.push((start, end));
        start = end;
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn the_first_run_reads_from_the_initial_cursor() {
        assert_eq!(read_from(None, 6 * HOUR, 1_000), 1_000);
    }

    #[test]
    fn later_runs_read_the_lookback_again() {
        let cursor = 100 * HOUR;
        assert_eq!(read_from(Some(cursor), 6 * HOUR, 0), 94 * HOUR);
        // Never before the initial cursor.
        assert_eq!(read_from(Some(cursor), 6 * HOUR, 97 * HOUR), 97 * HOUR);
        // A zero lookback reads from the cursor itself (rows at the same millisecond come back).
        assert_eq!(read_from(Some(cursor), 0, 0), cursor);
        assert_eq!(read_from(Some(i64::MIN + 5), 6 * HOUR, i64::MIN), i64::MIN);
        assert_eq!(millis(Duration::from_hours(6)), 6 * HOUR);
    }

    #[test]
    fn windows_cover_the_range_exactly() {
        assert_eq!(windows(0, 10, 4), [(0, 4), (4, 8), (8, 10)]);
        assert_eq!(windows(0, 8, 4), [(0, 4), (4, 8)]);
        assert_eq!(windows(5, 5, 4), []);
        assert_eq!(windows(0, 3, 0), [(0, 1), (1, 2), (2, 3)]);
    }
}
