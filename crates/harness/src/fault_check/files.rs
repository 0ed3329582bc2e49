//! A replica's files read whole, through the datastore's own forward
//! reader ([`tsn_datastore::jsonl::read_forward`]): only complete lines,
//! and a line that does not parse is an error (a replica's files are never
//! corrupt in these tests).

use std::path::Path;

use tsn_datastore::jsonl::read_forward;

/// Largest file the checks read whole (a journal or a timeline).
pub const FILE_READ_MAX_BYTES: u64 = 1 << 30;

/// Every complete line of `path`, parsed by `parse`; the first line that
/// does not parse is an error. A partial last line (being written) is left
/// out; a missing file has no lines.
pub fn read_complete_lines<T>(
    path: &Path,
    parse: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<Vec<T>, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > FILE_READ_MAX_BYTES => {
            return Err(format!(
                "{} is {} bytes, more than the {FILE_READ_MAX_BYTES} the checks read",
                path.display(),
                m.len()
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let mut parsed = Vec::new();
    let mut failed = None;
    read_forward(path, 0, |_, line| match parse(line) {
        Ok(v) => {
            parsed.push(v);
            true
        }
        Err(e) => {
            failed = Some(format!(
                "{} line {}: {e}: {}",
                path.display(),
                parsed.len() + 1,
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ));
            false
        }
    })
    .map_err(|e| e.to_string())?;
    match failed {
        Some(why) => Err(why),
        None => Ok(parsed),
    }
}
