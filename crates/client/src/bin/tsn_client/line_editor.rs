//! The line editor for a person at a terminal (rustyline): the usual
//! editing keys, a history of the lines typed, and — the reason it is
//! here — posts that arrive while a line is being typed are printed above
//! the input line, which is then drawn again as it was, instead of into the
//! middle of it.
//!
//! Reading the terminal blocks, so the editor runs on a thread of its own
//! and reads one line per request: the session asks for the next line (with
//! its prompt) only when it is ready for it, so the editor holds the
//! terminal only while a line is being typed. While it exists, every line
//! the client prints goes through the editor's printer
//! ([`crate::output::print_through`]).

use std::io;
use std::sync::mpsc as std_mpsc;

use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::Editor;
use tokio::sync::{mpsc, oneshot};

use crate::output;

/// Lines kept in the history (in memory, for the session only).
const HISTORY_MAX_LINES: usize = 1_000;

/// The answer to one request: a line, `None` at the end of input (Ctrl-D
/// on an empty line, or Ctrl-C), or the terminal's error.
type Answer = io::Result<Option<String>>;

pub struct LineEditor {
    prompts: std_mpsc::Sender<String>,
    lines: mpsc::Receiver<Answer>,
    /// The terminal's settings at the start, put back when the session
    /// ends, even if it ends while a line is being typed (the editor's
    /// thread is then still in raw mode when the process exits).
    saved: Option<libc::termios>,
}

impl LineEditor {
    /// Starts the editor on stdin and stdout, which must be a terminal.
    pub async fn start() -> anyhow::Result<LineEditor> {
        let saved = saved_terminal();
        let (prompts, prompt_rx) = std_mpsc::channel::<String>();
        let (line_tx, lines) = mpsc::channel::<Answer>(1);
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("line editor".into())
            .spawn(move || {
                let mut editor = match new_editor() {
                    Ok(editor) => editor,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.to_string()));
                        return;
                    }
                };
                match editor.create_external_printer() {
                    Ok(printer) => output::print_through(Box::new(printer)),
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.to_string()));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(()));
                while let Ok(prompt) = prompt_rx.recv() {
                    let answer = read_one(&mut editor, &prompt);
                    if line_tx.blocking_send(answer).is_err() {
                        break;
                    }
                }
            })?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(LineEditor {
                prompts,
                lines,
                saved,
            }),
            Ok(Err(why)) => anyhow::bail!("cannot start the line editor: {why}"),
            Err(_) => anyhow::bail!("cannot start the line editor"),
        }
    }

    /// The next line typed after `prompt`, or `None` at the end of input.
    pub async fn next_line(&mut self, prompt: &str) -> io::Result<Option<String>> {
        if self.prompts.send(prompt.to_string()).is_err() {
            return Err(io::Error::other("the line editor stopped"));
        }
        match self.lines.recv().await {
            Some(answer) => answer,
            None => Err(io::Error::other("the line editor stopped")),
        }
    }
}

impl Drop for LineEditor {
    fn drop(&mut self) {
        output::print_directly();
        if let Some(saved) = &self.saved {
            // SAFETY: tcsetattr reads the settings read by tcgetattr at
            // the start; it only changes the terminal's modes.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

fn new_editor() -> rustyline::Result<Editor<(), DefaultHistory>> {
    let config = Config::builder()
        .max_history_size(HISTORY_MAX_LINES)?
        .auto_add_history(false)
        .build();
    Editor::with_config(config)
}

fn read_one(editor: &mut Editor<(), DefaultHistory>, prompt: &str) -> Answer {
    match editor.readline(prompt) {
        Ok(line) => {
            if !line.trim().is_empty() {
                // A history that cannot take a line is no reason to stop.
                let _ = editor.add_history_entry(line.as_str());
            }
            Ok(Some(line))
        }
        Err(ReadlineError::Eof | ReadlineError::Interrupted) => Ok(None),
        Err(ReadlineError::Io(error)) => Err(error),
        Err(error) => Err(io::Error::other(error)),
    }
}

/// The terminal settings of stdin, if it has any.
fn saved_terminal() -> Option<libc::termios> {
    // SAFETY: a zeroed termios is a valid value to be overwritten, and
    // tcgetattr writes only into it.
    unsafe {
        let mut settings: libc::termios = std::mem::zeroed();
        (libc::tcgetattr(libc::STDIN_FILENO, &mut settings) == 0).then_some(settings)
    }
}
