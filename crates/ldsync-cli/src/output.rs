//! Writing a command's result on stdout.

use std::io::Write;

/// Writes `document` as one JSON document and a newline.
pub(crate) fn json<T: serde::Serialize>(document: &T) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, document)?;
    writeln!(stdout)?;
    Ok(())
}

/// Writes lines of text.
pub(crate) fn lines(lines: &[String]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        writeln!(stdout, "{line}")?;
    }
    Ok(())
}
