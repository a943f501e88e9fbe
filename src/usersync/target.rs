//! One tunnel to sync: what the engine syncs and the record is kept for.

use std::path::PathBuf;

use crate::domain::TunnelId;

/// One tunnel to sync, as the watcher sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: TunnelId,
    pub config_path: PathBuf,
    /// `ExecMainStartTimestamp` of the running core: a new value means the core restarted and
    /// holds exactly the users of its config file again.
    pub core_start_usec: u64,
}
