//! Traces of refused writes in a datastore: after a write was refused
//! (by an old primary that woke up after a failover), no file of any
//! replica may hold anything of it. [`traces`] walks a deployment's
//! datastore and names every line that does; [`line_trace`] is the pure
//! rule for one line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tsn_datastore::record::{ClientLine, EdgeLine, TimelineLine};
use tsn_datastore::{Entry, Op};

use crate::limits::{DATA_FILES_MAX, DATA_WALK_DEPTH_MAX};

/// The writes sent to a primary that woke up after a failover: none of
/// them may leave a trace in any file.
#[derive(Debug, Default)]
pub struct Refused {
    pub post_ids: BTreeSet<String>,
    pub users: BTreeSet<u32>,
    /// (user, target) of the refused follow.
    pub follow: Option<(u32, u32)>,
    /// A text that only the refused posts contain.
    pub text_marker: String,
}

/// Why one line of a datastore file is a trace of a refused write, if it is.
/// `file_name` says what the line is; `owner` is the client whose directory
/// holds the file (`local_clients/<owner>/…`).
pub fn line_trace(
    file_name: &str,
    owner: Option<u32>,
    line: &str,
    refused: &Refused,
) -> Option<&'static str> {
    if !refused.text_marker.is_empty() && line.contains(&refused.text_marker) {
        return Some("the text of a refused post");
    }
    match file_name {
        "journal.data" => op_trace(&Entry::from_line(line.as_bytes())?.op, refused),
        "timeline.data" => {
            let l: TimelineLine = serde_json::from_str(line).ok()?;
            refused
                .post_ids
                .contains(&l.post.id)
                .then_some("a refused post in a timeline")
        }
        "global_clients.data" => {
            let l: ClientLine = serde_json::from_str(line).ok()?;
            refused
                .users
                .contains(&l.user)
                .then_some("a refused login in the user list")
        }
        "following.data" | "followers.data" => {
            let (user, target) = refused.follow?;
            let l: EdgeLine = serde_json::from_str(line).ok()?;
            let hit = if file_name == "following.data" {
                owner == Some(user) && l.user == target
            } else {
                owner == Some(target) && l.user == user
            };
            hit.then_some("a refused follow in a follow list")
        }
        _ => None,
    }
}

/// Why a journal operation is a trace of a refused write, if it is.
fn op_trace(op: &Op, refused: &Refused) -> Option<&'static str> {
    match op {
        Op::User { user, .. } if refused.users.contains(user) => Some("a refused login"),
        Op::Follow { user, target, .. } if refused.follow == Some((*user, *target)) => {
            Some("a refused follow")
        }
        Op::AddFollower { user, follower, .. } if refused.follow == Some((*follower, *user)) => {
            Some("the follower edge of a refused follow")
        }
        Op::Post(p) | Op::Deliver { post: p, .. } if refused.post_ids.contains(&p.id) => {
            Some("a refused post")
        }
        _ => None,
    }
}

/// Every `.data` file under `root`, and every client directory, at most
/// [`DATA_FILES_MAX`] of them.
fn data_files(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut client_dirs = Vec::new();
    let mut todo = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if dir.file_name().is_some_and(|n| n == "local_clients") {
                    client_dirs.push(path.clone());
                }
                if depth < DATA_WALK_DEPTH_MAX {
                    todo.push((path, depth + 1));
                }
            } else if path.extension().is_some_and(|e| e == "data") {
                files.push(path);
            }
            assert!(
                files.len() + client_dirs.len() <= DATA_FILES_MAX,
                "more than {DATA_FILES_MAX} files under {}",
                root.display()
            );
        }
    }
    (files, client_dirs)
}

/// Every trace of `refused` in the datastore under `root`, one line each.
pub fn traces(root: &Path, refused: &Refused) -> Vec<String> {
    let (files, client_dirs) = data_files(root);
    let mut found = Vec::new();
    for dir in client_dirs {
        let owner = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok());
        if owner.is_some_and(|u| refused.users.contains(&u)) {
            found.push(format!("{}: a refused user has files", dir.display()));
        }
    }
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let owner = file
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok());
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).into_owned();
        for (i, line) in text.lines().enumerate() {
            if let Some(why) = line_trace(&name, owner, line, refused) {
                found.push(format!("{} line {}: {why}: {line}", file.display(), i + 1));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_datastore::Post;

    fn refused() -> Refused {
        Refused {
            post_ids: ["1-frozen-0".to_string()].into_iter().collect(),
            users: [7].into_iter().collect(),
            follow: Some((4, 3)),
            text_marker: "frozen-".to_string(),
        }
    }

    fn entry(op: Op) -> String {
        Entry {
            seq: 9,
            epoch: 2,
            op,
        }
        .to_line()
    }

    fn a_post(id: &str, text: &str) -> Post {
        Post {
            id: id.to_string(),
            author: 1,
            text: text.to_string(),
            ts_ms: 1,
        }
    }

    #[test]
    fn journal_lines_of_refused_writes_are_traces() {
        let r = refused();
        // (operation, whether it is a trace of a refused write)
        let cases = [
            (
                Op::User {
                    user: 7,
                    cluster: 1,
                },
                true,
            ),
            (
                Op::User {
                    user: 10,
                    cluster: 1,
                },
                false,
            ),
            (
                Op::Follow {
                    user: 4,
                    target: 3,
                    since_ms: 0,
                },
                true,
            ),
            (
                Op::Follow {
                    user: 3,
                    target: 4,
                    since_ms: 0,
                },
                false,
            ),
            (
                Op::AddFollower {
                    user: 3,
                    follower: 4,
                    since_ms: 0,
                    version: 1,
                },
                true,
            ),
            (
                Op::Deliver {
                    to: vec![2],
                    post: a_post("1-frozen-0", "x"),
                },
                true,
            ),
            (
                Op::Post(a_post("1-after-failover", "after-failover")),
                false,
            ),
        ];
        for (op, is_trace) in cases {
            let line = entry(op);
            let found = line_trace("journal.data", None, &line, &r);
            assert_eq!(found.is_some(), is_trace, "{line}: {found:?}");
        }
        assert!(line_trace("journal.data", None, "not json", &r).is_none());
    }

    #[test]
    fn other_files_are_read_by_their_kind() {
        let r = refused();
        let timeline = r#"{"seq":3,"time":"t","id":"1-frozen-0","author":1,"text":"x","ts_ms":1}"#;
        assert!(line_trace("timeline.data", Some(2), timeline, &r).is_some());
        let marker = r#"{"seq":3,"time":"t","id":"1-z","author":1,"text":"frozen-5","ts_ms":1}"#;
        assert!(line_trace("timeline.data", Some(2), marker, &r).is_some());
        let client = r#"{"seq":4,"user":7,"cluster":1}"#;
        assert!(line_trace("global_clients.data", None, client, &r).is_some());
        let following = r#"{"seq":5,"op":"follow","user":3}"#;
        assert!(line_trace("following.data", Some(4), following, &r).is_some());
        assert!(line_trace("following.data", Some(1), following, &r).is_none());
        let follower = r#"{"seq":5,"op":"add","user":4}"#;
        assert!(line_trace("followers.data", Some(3), follower, &r).is_some());
        assert!(line_trace("followers.data", Some(2), follower, &r).is_none());
    }

    #[test]
    fn traces_are_found_in_a_directory_tree() {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = dir.path().join("1").join("2");
        let client = server.join("local_clients").join("7");
        std::fs::create_dir_all(&client).expect("mkdir");
        std::fs::write(
            server.join("journal.data"),
            format!(
                "{}\n",
                entry(Op::User {
                    user: 7,
                    cluster: 1
                })
            ),
        )
        .expect("write");
        std::fs::write(server.join("positions.json"), "frozen-1").expect("write");
        let found = traces(dir.path(), &refused());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(traces(dir.path(), &Refused::default()).is_empty());
    }
}
