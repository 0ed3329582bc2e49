//! Lines from stdin, read asynchronously (so posts arriving on the timeline
//! stream print while the user types) and with a bounded length (so a
//! line without end cannot grow the client's memory without end).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Without its `\n` or `\r\n`.
    Text(String),
    /// Longer than the limit; its bytes were skipped.
    TooLong,
    /// Not UTF-8.
    NotUtf8,
}

impl Line {
    /// A message for the user when the line cannot be used.
    pub fn complaint(&self, max_bytes: usize) -> Option<String> {
        match self {
            Line::Text(_) => None,
            Line::TooLong => Some(format!(
                "That line is longer than {max_bytes} bytes; ignored"
            )),
            Line::NotUtf8 => Some("That line is not valid UTF-8; ignored".to_string()),
        }
    }
}

pub struct LineReader<R> {
    inner: R,
    max_bytes: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max_bytes: usize) -> LineReader<R> {
        assert!(max_bytes > 0);
        LineReader { inner, max_bytes }
    }

    /// The next line, or `None` at the end of input. A last line without a
    /// newline is still a line.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        let mut line: Vec<u8> = Vec::new();
        let mut too_long = false;
        let mut read_any = false;
        loop {
            let (used, ended) = {
                let available = self.inner.fill_buf().await?;
                if available.is_empty() {
                    if !read_any {
                        return Ok(None);
                    }
                    return Ok(Some(finish(line, too_long, self.max_bytes)));
                }
                let (chunk, ended) = match available.iter().position(|&b| b == b'\n') {
                    Some(i) => (&available[..i], true),
                    None => (available, false),
                };
                if !too_long {
                    if line.len() + chunk.len() > self.max_bytes + 1 {
                        // One extra byte for a `\r` before the `\n`.
                        too_long = true;
                        line = Vec::new();
                    } else {
                        line.extend_from_slice(chunk);
                    }
                }
                (chunk.len() + usize::from(ended), ended)
            };
            read_any = true;
            self.inner.consume(used);
            if ended {
                return Ok(Some(finish(line, too_long, self.max_bytes)));
            }
        }
    }
}

fn finish(mut line: Vec<u8>, too_long: bool, max_bytes: usize) -> Line {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if too_long || line.len() > max_bytes {
        return Line::TooLong;
    }
    match String::from_utf8(line) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::NotUtf8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all_lines(input: &[u8], max_bytes: usize) -> Vec<Line> {
        // A tiny buffer, so lines cross buffer boundaries.
        let reader = tokio::io::BufReader::with_capacity(3, input);
        let mut lines = LineReader::new(reader, max_bytes);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_string())
    }

    #[tokio::test]
    async fn splits_lines_and_strips_line_ends() {
        let got = all_lines(b"follow 2\r\n\nlist\nlast", 100).await;
        assert_eq!(
            got,
            vec![text("follow 2"), text(""), text("list"), text("last")]
        );
        assert!(all_lines(b"", 100).await.is_empty());
    }

    #[tokio::test]
    async fn long_lines_are_skipped_whole() {
        let got = all_lines(b"12345\n123456\r\n1234567\nok\n", 6).await;
        assert_eq!(
            got,
            vec![text("12345"), text("123456"), Line::TooLong, text("ok")]
        );
        assert_eq!(all_lines(b"1234567", 6).await, vec![Line::TooLong]);
    }

    #[tokio::test]
    async fn bad_utf8_is_reported() {
        let got = all_lines(b"\xff\xfe\nfine\n", 100).await;
        assert_eq!(got, vec![Line::NotUtf8, text("fine")]);
    }
}
