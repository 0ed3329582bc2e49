//! Everything the client prints on stdout: lines for people, or with
//! `--json` one JSON object per line for scripts. Each line is written with
//! one call and flushed at once, so a watcher piping the output sees every
//! post as it arrives and two tasks printing never interleave within a line.

use std::io::Write;

use serde_json::Value;

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
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}
