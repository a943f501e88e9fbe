//! The I/O side of the change-driven health pass: reads the cheap inputs a full read depends on
//! and keeps the facts of the last full read while they hold. The rule itself is
//! [`crate::domain::health_trigger`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::census::ProcCensus;
use super::gather::Gathered;
use super::scan::ProcScan;
use super::verdicts::FileStamp;
use crate::domain::health_trigger::{FullRead, HealthInputs, full_read_due, safety_net_due};
use crate::domain::{TunnelId, UnitStatus};

/// One target's part of the inputs: its id, status and known config path.
pub type UnitInput = (TunnelId, Arc<UnitStatus>, Option<PathBuf>);

/// The last full read and the inputs it was made on.
#[derive(Default)]
pub struct Trigger {
    last: Option<(HealthInputs, Instant, Arc<Gathered>)>,
}

impl Trigger {
    /// The last full read's facts, if none of `now` changed since and the safety net is not
    /// due; else why a full read is due.
    pub fn reusable(
        &self,
        now: &HealthInputs,
        interval: Duration,
    ) -> Result<Arc<Gathered>, FullRead> {
        let before = self
            .last
            .as_ref()
            .map(|(inputs, at, _)| (inputs, at.elapsed()));
        match (full_read_due(before, now, interval), &self.last) {
            (None, Some((_, _, gathered))) => Ok(Arc::clone(gathered)),
            (why, _) => Err(why.unwrap_or(FullRead::First)),
        }
    }

    /// Whether the safety net is due this pass (so the census must read every process again
    /// first, to see a process that exec'd a core after it was settled).
    pub fn safety_net_due(&self, interval: Duration) -> bool {
        self.last
            .as_ref()
            .is_some_and(|(_, at, _)| safety_net_due(at.elapsed(), interval))
    }

    /// Records a full read made on `inputs` (read just before it, so that a change during the
    /// read shows as a change next time).
    pub fn remember(&mut self, inputs: HealthInputs, gathered: &Arc<Gathered>) {
        self.last = Some((inputs, Instant::now(), Arc::clone(gathered)));
    }
}

/// Each known config's `stat`, in target order (the unknown ones left out), for the config
/// verdicts of the same pass.
pub type Stamps = Vec<io::Result<Option<FileStamp>>>;

/// Reads the inputs: a `stat` per known config and of the config directory, the listening
/// sockets and the process census. Blocking.
pub fn read_inputs(
    scan: &ProcScan,
    census: &mut ProcCensus,
    core_binary: &Path,
    config_dir: &Path,
    units: Vec<UnitInput>,
) -> (HealthInputs, Stamps) {
    let mut stamps = Vec::with_capacity(units.len());
    let units = units
        .into_iter()
        .map(|(id, status, path)| {
            let stamp = path.map(|p| FileStamp::stat(&p));
            let input = stamp
                .as_ref()
                .and_then(|s| s.as_ref().ok().copied().flatten());
            stamps.extend(stamp);
            (id, status, input)
        })
        .collect();
    let config_dir = match FileStamp::stat(config_dir) {
        Ok(Some(stamp)) => Some(stamp),
        // A missing directory holds no configs: a readable state, stamped as all zeroes.
        Ok(None) => Some(FileStamp::default()),
        Err(_) => None,
    };
    let listeners = scan.listeners().ok().map(|found| {
        let mut pairs: Vec<(u16, u64)> = found.iter().map(|l| (l.port, l.inode)).collect();
        pairs.sort_unstable();
        pairs
    });
    let census = census.read(scan, core_binary);
    let inputs = HealthInputs {
        units,
        config_dir,
        listeners,
        cores: census.cores,
        census_epoch: census.epoch,
    };
    (inputs, stamps)
}
