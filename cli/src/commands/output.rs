//! How results reach the operator: aligned tables for people, one JSON document for scripts,
//! progress bars on stderr only when it is a terminal.

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `value` as JSON, or `human` for people.
    pub fn emit(&self, value: &Value, human: impl FnOnce() -> String) {
        let text = match self.json {
            true => value.to_string(),
            false => human(),
        };
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`fleetlog events | head`) is not an error worth a panic.
        let _ = writeln!(stdout, "{}", text.trim_end());
    }

    pub fn error(&self, error: &anyhow::Error) {
        let message = format!("{error:#}");
        match self.json {
            // The same shape as the daemon's errors: a stable code, and the message.
            true => {
                let code = error
                    .downcast_ref::<fleetlog::Error>()
                    .and_then(|error| error.code().map(str::to_owned))
                    .unwrap_or_else(|| "error".to_owned());
                eprintln!(
                    "{}",
                    serde_json::json!({ "error": code, "message": message })
                )
            }
            false => eprintln!("error: {message}"),
        }
    }

    /// A progress bar over `total` records; hidden when stderr is not a terminal.
    pub fn progress(&self, total: u64, what: &str) -> ProgressBar {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {eta})",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        bar
    }
}

/// Left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push('\n');
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn table_aligns_columns_to_the_widest_cell() {
        let text = table(
            &["SEQ", "KIND"],
            &[
                vec!["1".to_owned(), "custom".to_owned()],
                vec!["1000".to_owned(), "x".to_owned()],
            ],
        );
        assert_eq!(text, "SEQ   KIND\n1     custom\n1000  x");
    }
}
