//! Holds a deployment to tsn's promise after a run of faults: no
//! acknowledged post is lost, none appears twice, and every replica of a
//! cluster holds the same journal.
//!
//! * [`timelines`]: the pure check of every timeline against what the
//!   writers recorded ([`check`], [`Expectation`], [`Report`]);
//! * [`journals`]: whether the replicas' journals agree
//!   ([`journals_agree`]);
//! * [`reader`]: reads the timelines from a running deployment
//!   ([`Reader`]), through `Posts.Read` and the primary's files;
//! * [`files`]: a replica's files read whole, through the datastore's own
//!   line reader.

pub mod files;
pub mod journals;
pub mod reader;
pub mod timelines;

pub use journals::{compare_journals, journals_agree, read_journal, NamedJournal};
pub use reader::Reader;
pub use timelines::{check, Expectation, FollowRecord, Line, Report, TimelineProblems, Timelines};
