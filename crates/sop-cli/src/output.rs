//! Output: tables and text for humans, one JSON object per line for machines, progress bars.

use std::io::{self, Write};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value as Json;

/// Where results go, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// Machine output: one JSON object per line on stdout.
    pub json: bool,
}

impl Out {
    /// Prints one JSON object on its own line.
    pub fn json_line(&self, v: &Json) -> io::Result<()> {
        let mut out = io::stdout().lock();
        serde_json::to_writer(&mut out, v)?;
        out.write_all(b"\n")
    }

    /// Prints a line of text for humans.
    pub fn text(&self, s: impl std::fmt::Display) -> io::Result<()> {
        writeln!(io::stdout().lock(), "{s}")
    }

    /// Prints `v` as JSON in JSON mode, else `text()`.
    pub fn emit(&self, v: &Json, text: impl FnOnce() -> String) -> io::Result<()> {
        if self.json {
            self.json_line(v)
        } else {
            self.text(text())
        }
    }

    /// Prints a table for humans.
    pub fn table(&self, header: &[&str], rows: Vec<Vec<String>>) -> io::Result<()> {
        self.text(table(header, rows))
    }

    /// A progress bar on stderr of `len` steps, bytes or items (hidden in JSON mode and when
    /// stderr is not a terminal).
    pub fn progress(&self, len: u64, what: &str, bytes: bool) -> ProgressBar {
        let pb = ProgressBar::with_draw_target(
            Some(len),
            if self.json {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        let template = if bytes {
            "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})"
        } else {
            "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({eta})"
        };
        let style =
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
        pb.set_style(style);
        pb.set_message(what.to_owned());
        pb
    }

    /// A spinner on stderr for work of unknown length.
    pub fn spinner(&self, what: &str) -> ProgressBar {
        let pb = if self.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        let style = ProgressStyle::with_template("{spinner} {msg} {pos} [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        pb.set_style(style);
        pb.set_message(what.to_owned());
        pb
    }
}

/// A table in the CLI's style.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    for r in rows {
        t.add_row(r);
    }
    t
}

/// Bytes in human units.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}
