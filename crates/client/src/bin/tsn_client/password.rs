//! Reading a password: from the terminal without echo, or with
//! `--password-stdin` as the first line of stdin (for scripts). It is never
//! printed nor logged.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;

use anyhow::{anyhow, bail, Context};
use tsn_cluster::password::{Password, PASSWORD_MAX_BYTES};

/// Where the password comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The controlling terminal, echo off.
    Terminal,
    /// The first line of stdin.
    Stdin,
}

/// Reads a password from `source`. `confirm` asks twice at a terminal (a
/// new password, whose typo would lock the account).
pub fn read(source: Source, confirm: bool) -> anyhow::Result<Password> {
    let raw = match source {
        Source::Stdin => first_line(std::io::stdin().lock())?,
        Source::Terminal => {
            let first = from_terminal("password: ")?;
            if confirm && from_terminal("password again: ")? != first {
                bail!("the two passwords differ");
            }
            first
        }
    };
    Password::new(raw).map_err(|e| anyhow!("{e}"))
}

/// The first line of `input`, without its line end, at most
/// [`PASSWORD_MAX_BYTES`] bytes.
fn first_line(input: impl BufRead) -> anyhow::Result<String> {
    let mut line = Vec::new();
    // One byte more than allowed, and one for the newline: a longer line
    // is refused rather than cut.
    input
        .take(PASSWORD_MAX_BYTES as u64 + 2)
        .read_until(b'\n', &mut line)
        .context("reading the password from stdin")?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    String::from_utf8(line).map_err(|_| anyhow!("the password is not UTF-8"))
}

/// Asks on the controlling terminal with echo off, and puts echo back even
/// when reading fails.
fn from_terminal(prompt: &str) -> anyhow::Result<String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| anyhow!("no terminal to ask for the password: use --password-stdin"))?;
    let fd = tty.as_raw_fd();
    // SAFETY: `termios` is plain data, filled in by tcgetattr.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the whole function; saved is a valid pointer.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        bail!("cannot read the terminal's settings: use --password-stdin");
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    (&tty).write_all(prompt.as_bytes())?;
    (&tty).flush()?;
    // SAFETY: as above; quiet is a copy of valid settings.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        bail!("cannot turn the terminal's echo off: use --password-stdin");
    }
    let read = first_line(std::io::BufReader::new(&tty));
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_without_its_end_is_the_password() {
        assert_eq!(first_line(&b"secret\nrest"[..]).unwrap(), "secret");
        assert_eq!(first_line(&b"secret\r\n"[..]).unwrap(), "secret");
        assert_eq!(first_line(&b"no newline"[..]).unwrap(), "no newline");
        assert_eq!(first_line(&b""[..]).unwrap(), "");
        let long = "x".repeat(PASSWORD_MAX_BYTES + 1);
        let got = first_line(long.as_bytes()).unwrap();
        assert!(Password::new(got).is_err());
    }
}
