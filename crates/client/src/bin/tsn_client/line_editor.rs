//! The line editor for a person at a terminal (rustyline): the usual
//! editing keys, a history of the lines typed, and — the reason it is
//! here — posts that arrive while a line is being typed are printed above
//! the input line, which is then drawn again as it was, instead of into the
//! middle of it.
//!
//! Reading the terminal blocks, so the editor runs on a thread of its own
//! and reads one line per request: the session asks for the next line (with
//! its prompt) only when it is ready for it, so the editor reads keys and
//! draws the input line only while a line is being typed. While it exists,
//! every line the client prints goes through the editor's printer
//! ([`crate::output::print_through`]).
//!
//! Between two lines (while a command runs, or a post waits for its
//! acknowledgement) nobody reads the terminal, but a person may already be
//! typing. The terminal's own (canonical) line editing must not see those
//! keys: it would turn a Ctrl-D into an end-of-file marker that reaches the
//! editor as a NUL once it switches to raw mode, so the Ctrl-D would be
//! lost, and it would echo and edit the keys itself. So for the whole
//! session the terminal stays in the editor's input mode
//! ([`hold_between_lines`]): keys typed between lines wait, unchanged, for
//! the next line, and the editor sees them exactly as if typed while it
//! read. The settings of the start are put back when the session ends.

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
                hold_between_lines();
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

/// Puts stdin in the editor's input mode for the time between lines:
/// no canonical line editing and no echo, and the input translations the
/// editor turns off while it reads (CR to NL, flow control, the high bit)
/// off too, so a key typed between lines reaches the next line as it would
/// have during it. Signals stay on: Ctrl-C between lines still ends the
/// session. Output processing is untouched (a line printed between lines
/// still ends with CR LF). The editor saves these settings when a line
/// starts and puts them back when it ends; [`LineEditor`]'s drop puts the
/// session's first settings back.
fn hold_between_lines() {
    let Some(mut settings) = saved_terminal() else {
        return;
    };
    settings.c_lflag &= !(libc::ICANON | libc::ECHO | libc::IEXTEN);
    settings.c_iflag &= !(libc::ICRNL | libc::INPCK | libc::ISTRIP | libc::IXON | libc::BRKINT);
    // SAFETY: tcsetattr reads settings read by tcgetattr with some flags
    // changed; it only changes the terminal's modes.
    let set = unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &settings) };
    if set != 0 {
        // The editor still works; only keys typed between lines go
        // through the terminal's own line editing.
        tracing::warn!(error = %io::Error::last_os_error(), "cannot hold the terminal between lines");
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
