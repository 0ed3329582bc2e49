//! Where a rejoining server's journal parts from the primary's.
//!
//! A server that was primary may hold entries it wrote but never got
//! committed (it died before its secondaries had them). The new primary
//! never had them, and wrote other entries under the same sequence numbers.
//! Each epoch has one writer, so two entries with the same seq and epoch
//! are the same entry; comparing the epochs' ranges finds the last entry
//! both journals share. Everything after it is cut, and the files rebuilt.

/// `mine` and `theirs` are (epoch, first seq) of each epoch, in order;
/// `my_last` and `their_last` the last seq of each journal. Returns the seq
/// to keep up to, if anything must be cut.
pub fn cut_after(
    mine: &[(u64, u64)],
    my_last: u64,
    theirs: &[(u64, u64)],
    their_last: u64,
) -> Option<u64> {
    let end_of = |list: &[(u64, u64)], last: u64, i: usize| -> u64 {
        match list.get(i + 1) {
            Some(&(_, next_first)) => next_first.saturating_sub(1),
            None => last,
        }
    };
    for i in (0..mine.len()).rev() {
        // In bounds: `i` ranges over `mine`'s indices.
        let (epoch, first) = mine[i];
        if let Some(j) = theirs.iter().position(|&(e, _)| e == epoch) {
            let keep = end_of(mine, my_last, i).min(end_of(theirs, their_last, j));
            return (keep < my_last).then_some(keep);
        }
        // The primary never had this epoch: all of it goes.
        if i == 0 {
            let keep = first.saturating_sub(1);
            return (keep < my_last).then_some(keep);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_cut_when_behind_or_equal() {
        assert_eq!(cut_after(&[(1, 1)], 50, &[(1, 1)], 50), None);
        assert_eq!(cut_after(&[(1, 1)], 40, &[(1, 1), (2, 51)], 70), None);
        assert_eq!(cut_after(&[], 0, &[(1, 1)], 70), None);
    }

    #[test]
    fn old_primary_with_an_uncommitted_tail() {
        // Wrote 101..105 in epoch 1; the new primary has 1..100 of epoch 1
        // and has not written yet, or has written 101.. in epoch 2.
        assert_eq!(cut_after(&[(1, 1)], 105, &[(1, 1)], 100), Some(100));
        assert_eq!(
            cut_after(&[(1, 1)], 105, &[(1, 1), (2, 101)], 130),
            Some(100)
        );
    }

    #[test]
    fn an_epoch_the_primary_never_saw_goes_whole() {
        // Epoch 2 (45..60) was written by a primary whose entries never
        // got committed; the current primary went from epoch 1 to 3.
        assert_eq!(
            cut_after(&[(1, 1), (2, 45)], 60, &[(1, 1), (3, 50)], 80),
            Some(44)
        );
    }

    #[test]
    fn only_unknown_epochs() {
        assert_eq!(cut_after(&[(2, 1)], 10, &[(3, 1)], 5), Some(0));
    }
}
