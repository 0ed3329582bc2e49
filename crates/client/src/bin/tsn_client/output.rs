//! Everything the client prints on stdout: lines for people, or with
//! `--json` one JSON object per line for scripts. Each line is written with
//! one call and flushed at once, so a watcher piping the output sees every
//! post as it arrives and two tasks printing never interleave within a line.

use std::io::Write;
use std::sync::Mutex;

use rustyline::ExternalPrinter;
use serde_json::Value;
use tsn_cluster::sync::lock;

/// The printer of the line editor while it holds the terminal: stdout is
/// one per process, and while a line is being typed on it, a line printed
/// past the editor would land in the middle of the typed text.
static PRINTER: Mutex<Option<Box<dyn ExternalPrinter + Send>>> = Mutex::new(None);

/// From now on every line goes through `printer`, which prints it above
/// the line being typed and draws that line again.
pub fn print_through(printer: Box<dyn ExternalPrinter + Send>) {
    *lock(&PRINTER) = Some(printer);
}

/// From now on every line goes straight to stdout again.
pub fn print_directly() {
    *lock(&PRINTER) = None;
}

#[derive(Clone, Copy, Debug)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// One line for people.
    pub fn line(&self, text: &str) -> std::io::Result<()> {
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        line.push('\n');
        write_flushed(line.as_bytes())
    }

    /// One JSON object on its own line.
    pub fn json_line(&self, value: &Value) -> std::io::Result<()> {
        let mut line = value.to_string();
        line.push('\n');
        write_flushed(line.as_bytes())
    }

    /// The interactive prompt, without a newline. Not printed with
    /// `--json`, whose stdout holds nothing but JSON lines.
    pub fn prompt(&self, text: &str) -> std::io::Result<()> {
        if self.json {
            return Ok(());
        }
        write_flushed(text.as_bytes())
    }
}

fn write_flushed(bytes: &[u8]) -> std::io::Result<()> {
    if let Some(printer) = lock(&PRINTER).as_mut() {
        let text = String::from_utf8_lossy(bytes).into_owned();
        return printer.print(text).map_err(std::io::Error::other);
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}
