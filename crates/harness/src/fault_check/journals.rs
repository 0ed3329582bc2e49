//! Whether the replicas of a cluster hold the same journal: each a
//! gap-free sequence from seq 1, all equal up to the shortest one's end.
//! [`compare_journals`] is pure; [`journals_agree`] reads the files first.

use tsn_datastore::{Entry, Layout};

use super::files::read_complete_lines;

/// Entries of one journal, in file order.
#[derive(Clone, Debug)]
pub struct NamedJournal {
    pub name: String,
    pub entries: Vec<Entry>,
}

/// Checks that the journals of one cluster's servers agree: each is a
/// gap-free sequence from seq 1, and all hold the same entries up to the
/// shortest one's end. Returns how many entries were compared. Pure.
pub fn compare_journals(journals: &[NamedJournal]) -> Result<usize, String> {
    for j in journals {
        for (i, e) in j.entries.iter().enumerate() {
            if e.seq != i as u64 + 1 {
                return Err(format!(
                    "{}: entry {} has seq {} (the journal must run 1, 2, …)",
                    j.name,
                    i + 1,
                    e.seq
                ));
            }
        }
    }
    let Some(shortest) = journals.iter().map(|j| j.entries.len()).min() else {
        return Ok(0);
    };
    let first = &journals[0];
    for other in &journals[1..] {
        if let Some(i) = (0..shortest).find(|&i| first.entries[i] != other.entries[i]) {
            return Err(format!(
                "{} and {} disagree at seq {}:\n  {}: {}\n  {}: {}",
                first.name,
                other.name,
                i + 1,
                first.name,
                first.entries[i].to_line(),
                other.name,
                other.entries[i].to_line()
            ));
        }
    }
    Ok(shortest)
}

/// The journal of the server whose files are at `layout`.
pub fn read_journal(layout: &Layout) -> Result<Vec<Entry>, String> {
    read_complete_lines(&layout.journal(), |l| serde_json::from_slice::<Entry>(l))
}

/// Reads the journals of `servers` (name, files) and checks that they agree
/// (see [`compare_journals`]); returns how many entries were compared.
pub fn journals_agree(servers: &[(String, Layout)]) -> Result<usize, String> {
    let mut journals = Vec::with_capacity(servers.len());
    for (name, layout) in servers {
        journals.push(NamedJournal {
            name: name.clone(),
            entries: read_journal(layout)?,
        });
    }
    compare_journals(&journals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsn_datastore::{Op, Post};

    fn entry(seq: u64, epoch: u64, id: &str) -> Entry {
        Entry {
            seq,
            epoch,
            op: Op::Post(Post {
                id: id.into(),
                author: 1,
                text: "t".into(),
                ts_ms: 5,
            }),
        }
    }

    fn journal(name: &str, entries: Vec<Entry>) -> NamedJournal {
        NamedJournal {
            name: name.into(),
            entries,
        }
    }

    #[test]
    fn journals_agree_up_to_the_shortest() {
        let a = journal("a", vec![entry(1, 1, "1-a"), entry(2, 1, "1-b")]);
        let b = journal("b", vec![entry(1, 1, "1-a")]);
        assert_eq!(compare_journals(&[a.clone(), b]), Ok(1));
        assert_eq!(compare_journals(&[]), Ok(0));
        let c = journal("c", vec![entry(1, 1, "1-a"), entry(2, 2, "1-b")]);
        let err = compare_journals(&[a, c]).expect_err("epochs differ at seq 2");
        assert!(err.contains("a and c disagree at seq 2"), "{err}");
    }

    #[test]
    fn journals_with_gaps_are_refused() {
        let gap = journal("g", vec![entry(1, 1, "1-a"), entry(3, 1, "1-b")]);
        let err = compare_journals(&[gap]).expect_err("a gap");
        assert!(err.contains("g: entry 2 has seq 3"), "{err}");
    }

    #[test]
    fn journal_files_are_read_whole_lines_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout::new(dir.path(), 1, 1);
        std::fs::create_dir_all(layout.dir()).expect("mkdir");
        let line = entry(1, 1, "1-a").to_line();
        std::fs::write(layout.journal(), format!("{line}\n{{\"seq\":2,")).expect("write");
        assert_eq!(read_journal(&layout), Ok(vec![entry(1, 1, "1-a")]));
        std::fs::write(layout.journal(), format!("{line}\nnot json\n")).expect("write");
        let err = read_journal(&layout).expect_err("corrupt");
        assert!(err.contains("line 2"), "{err}");
        let missing = Layout::new(dir.path(), 9, 9);
        assert_eq!(read_journal(&missing), Ok(vec![]));
    }
}
