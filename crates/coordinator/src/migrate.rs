//! The state files of a coordinator from before the group
//! (`clusters.json`, `assignments.data`): a group whose committed state is
//! still empty takes them over once, as its first commands, so that an
//! existing deployment keeps its epochs and assignments.

use std::path::Path;

use crate::config::ASSIGN_USERS_PER_CALL_MAX;
use crate::persist::{self, Files, Loaded, Persistence};
use crate::replicated::Command;

/// `loaded` if the group holds anything; else what the state files hold,
/// committed through `persistence` first.
pub fn from_state_files(
    dir: &Path,
    loaded: Loaded,
    persistence: &mut dyn Persistence,
) -> persist::Result<Loaded> {
    let empty = loaded.clusters.is_none() && loaded.assignments.is_empty();
    let present = dir.join(persist::CLUSTERS_FILE).exists()
        || std::fs::metadata(dir.join(persist::ASSIGNMENTS_FILE)).is_ok_and(|m| m.len() > 0);
    if !empty || !present {
        return Ok(loaded);
    }
    let old = Files::open(dir, false)?.load()?;
    if let Some(clusters) = &old.clusters {
        persistence.commit(&Command::Clusters(clusters.clone()))?;
    }
    for chunk in old.assignments.chunks(ASSIGN_USERS_PER_CALL_MAX) {
        persistence.commit(&Command::Assign(chunk.to_vec()))?;
    }
    tracing::info!(
        users = old.assignments.len(),
        "took over the state files of a coordinator from before the group"
    );
    Ok(old)
}
