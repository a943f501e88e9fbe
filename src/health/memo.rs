//! Each tunnel's checks kept beside the facts they were built from, so that a pass builds the
//! checks of a tunnel again only when one of those facts changed.
//!
//! Building a tunnel's five checks formats five details; comparing them with what was shown
//! compares five strings. On a steady node neither result changes from one pass to the next,
//! and at 1,000 tunnels that work was about a tenth of the warden's steady CPU (perf, steady
//! bench). The facts compare cheaply: the unit's status is the snapshot's own `Arc` (compared by
//! address first), the full read the ports and config checks came from is compared by address,
//! and the rest are small values. The checks are shared (`Arc<[Check]>`), so a pass that finds
//! them unchanged neither copies nor compares their text.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::checks::{ApiVerdict, ConfigVerdict};
use super::crash::CrashVerdict;
use super::gather::Gathered;
use crate::domain::{Check, ConfigRef, TunnelId, UnitStatus, UnknownReason};

/// A tunnel's config and the core's verdict on it, or why its config is unknown.
pub type Judged = Result<(PathBuf, ConfigVerdict), UnknownReason>;

/// Everything a tunnel's checks are built from.
pub struct CheckFacts {
    pub status: Arc<UnitStatus>,
    pub crash: CrashVerdict,
    pub judged: Judged,
    /// The full read the config and ports checks come from, and the tunnel's place in it.
    pub gathered: Arc<Gathered>,
    pub index: usize,
    pub api: Option<ApiVerdict>,
}

impl PartialEq for CheckFacts {
    fn eq(&self, other: &Self) -> bool {
        // The same full read (by address: it is never changed once made) at the same place.
        Arc::ptr_eq(&self.gathered, &other.gathered)
            && self.index == other.index
            && self.status == other.status
            && self.crash == other.crash
            && self.judged == other.judged
            && self.api == other.api
    }
}

/// The checks of every tunnel, and the config each tunnel's status names.
#[derive(Default)]
pub struct CheckMemo {
    checks: HashMap<TunnelId, (CheckFacts, Arc<[Check]>)>,
    configs: HashMap<TunnelId, (Arc<UnitStatus>, ConfigRef)>,
}

impl CheckMemo {
    /// The tunnel's checks: the kept ones when `facts` equal theirs, else `build(&facts)`, kept.
    pub fn checks(
        &mut self,
        id: &TunnelId,
        facts: CheckFacts,
        build: impl FnOnce(&CheckFacts) -> Vec<Check>,
    ) -> Arc<[Check]> {
        match self.checks.get_mut(id) {
            Some((kept, checks)) if *kept == facts => Arc::clone(checks),
            Some(entry) => {
                let checks: Arc<[Check]> = build(&facts).into();
                *entry = (facts, Arc::clone(&checks));
                checks
            }
            None => {
                let checks: Arc<[Check]> = build(&facts).into();
                self.checks.insert(id.clone(), (facts, Arc::clone(&checks)));
                checks
            }
        }
    }

    /// The config `status` names (parsed from its ExecStart), parsed again only when the
    /// tunnel's status changed.
    pub fn config(
        &mut self,
        id: &TunnelId,
        status: &Arc<UnitStatus>,
        parse: impl FnOnce(&UnitStatus) -> ConfigRef,
    ) -> ConfigRef {
        match self.configs.get_mut(id) {
            Some((kept, config)) if kept == status => config.clone(),
            Some(entry) => {
                *entry = (Arc::clone(status), parse(status));
                entry.1.clone()
            }
            None => {
                let config = parse(status);
                let entry = (Arc::clone(status), config.clone());
                self.configs.insert(id.clone(), entry);
                config
            }
        }
    }

    /// How many tunnels are kept (the larger of the checks and the configs).
    pub fn len(&self) -> usize {
        self.checks.len().max(self.configs.len())
    }

    /// Forgets the tunnels `alive` denies.
    pub fn retain(&mut self, alive: impl Fn(&TunnelId) -> bool) {
        self.checks.retain(|id, _| alive(id));
        self.configs.retain(|id, _| alive(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered() -> Arc<Gathered> {
        Arc::new(Gathered {
            configs: vec![None],
            ports: vec![Vec::new()],
            listeners_ok: true,
            cores: Vec::new(),
            config_files: Some(Vec::new()),
        })
    }

    fn facts(status: &Arc<UnitStatus>, gathered: &Arc<Gathered>) -> CheckFacts {
        CheckFacts {
            status: Arc::clone(status),
            crash: CrashVerdict {
                restarts: 0,
                looping: false,
            },
            judged: Err(UnknownReason::NoConfigFlag),
            gathered: Arc::clone(gathered),
            index: 0,
            api: None,
        }
    }

    fn built(detail: &str) -> Vec<Check> {
        vec![Check {
            name: "active",
            ok: true,
            detail: detail.into(),
        }]
    }

    #[test]
    fn checks_are_built_again_only_when_a_fact_changed() {
        let mut memo = CheckMemo::default();
        let id = TunnelId::new("a").unwrap();
        let (status, read) = (Arc::new(UnitStatus::default()), gathered());
        let first = memo.checks(&id, facts(&status, &read), |_| built("one"));
        let same = memo.checks(&id, facts(&status, &read), |_| panic!("built again"));
        assert!(Arc::ptr_eq(&first, &same));

        // An equal status in a new Arc is the same fact.
        let copy = Arc::new(UnitStatus::default());
        let same = memo.checks(&id, facts(&copy, &read), |_| panic!("built again"));
        assert!(Arc::ptr_eq(&first, &same));

        let mut changed = Vec::new();
        let stopped = Arc::new(UnitStatus {
            main_pid: 7,
            ..UnitStatus::default()
        });
        changed.push(facts(&stopped, &read));
        changed.push(facts(&status, &gathered()));
        let mut crash = facts(&status, &read);
        crash.crash.restarts = 1;
        changed.push(crash);
        let mut judged = facts(&status, &read);
        judged.judged = Ok(("/etc/x.json".into(), ConfigVerdict::Valid));
        changed.push(judged);
        let mut api = facts(&status, &read);
        api.api = Some(ApiVerdict::NotConfigured);
        changed.push(api);
        let mut index = facts(&status, &read);
        index.index = 1;
        changed.push(index);
        for (n, facts) in changed.into_iter().enumerate() {
            let detail = format!("change {n}");
            let checks = memo.checks(&id, facts, |_| built(&detail));
            assert_eq!(checks[0].detail, detail);
        }
    }

    #[test]
    fn a_config_is_parsed_again_only_for_a_new_status_and_gone_tunnels_are_forgotten() {
        let mut memo = CheckMemo::default();
        let id = TunnelId::new("a").unwrap();
        let status = Arc::new(UnitStatus::default());
        let unknown = ConfigRef::Unknown(UnknownReason::NoConfigFlag);
        let parsed = memo.config(&id, &status, |_| unknown.clone());
        assert_eq!(parsed, unknown);
        let again = memo.config(&id, &status, |_| panic!("parsed again"));
        assert_eq!(again, unknown);
        let edited = Arc::new(UnitStatus {
            main_pid: 3,
            ..UnitStatus::default()
        });
        let known = ConfigRef::Known("/etc/raptor-tunnel/xray-a.json".into());
        assert_eq!(memo.config(&id, &edited, |_| known.clone()), known);

        memo.retain(|_| false);
        let read = gathered();
        let rebuilt = memo.checks(&id, facts(&status, &read), |_| built("new"));
        assert_eq!(rebuilt[0].detail, "new");
        assert_eq!(memo.config(&id, &status, |_| unknown.clone()), unknown);
    }
}
