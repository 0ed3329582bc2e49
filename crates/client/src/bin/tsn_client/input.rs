//! Where the interactive session's lines come from: the line editor when a
//! person sits at a terminal (stdin and stdout both one), plain line
//! reading for pipes and scripts, whose input and output stay byte for
//! byte what they were.

use std::io::IsTerminal;

use tokio::io::{BufReader, Stdin};
use tsn_client::limits::STDIN_LINE_MAX_BYTES;

use crate::line_editor::LineEditor;
use crate::line_reader::{Line, LineReader};
use crate::output::Output;

pub enum Input {
    Piped(LineReader<BufReader<Stdin>>),
    Terminal(LineEditor),
}

impl Input {
    /// The line editor on a terminal (without `--json`, whose output is
    /// for programs), else plain lines from stdin.
    pub async fn open(out: Output) -> Input {
        if !out.json() && std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            match LineEditor::start().await {
                Ok(editor) => return Input::Terminal(editor),
                Err(error) => tracing::warn!(%error, "reading plain lines instead"),
            }
        }
        let stdin = BufReader::new(tokio::io::stdin());
        Input::Piped(LineReader::new(stdin, STDIN_LINE_MAX_BYTES))
    }

    pub fn max_bytes(&self) -> usize {
        STDIN_LINE_MAX_BYTES
    }

    /// The next line, asked for with `prompt` (none in timeline mode), or
    /// `None` at the end of input.
    pub async fn next_line(
        &mut self,
        prompt: Option<&str>,
        out: Output,
    ) -> std::io::Result<Option<Line>> {
        match self {
            Input::Piped(reader) => {
                if let Some(prompt) = prompt {
                    out.prompt(prompt)?;
                }
                reader.next_line().await
            }
            Input::Terminal(editor) => {
                let line = editor.next_line(prompt.unwrap_or("")).await?;
                Ok(line.map(|text| {
                    if text.len() > STDIN_LINE_MAX_BYTES {
                        Line::TooLong
                    } else {
                        Line::Text(text)
                    }
                }))
            }
        }
    }
}
