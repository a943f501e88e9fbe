//! The watcher's periodic safety net: which units to read again, from one listing of the
//! units' states, rather than reading every unit.
//!
//! `ListUnitsByPatterns` answers each loaded unit's load, active and sub state in one call. A
//! unit whose three states equal the snapshot's missed no signal that changed them, so only the
//! others are read (`GetAll`). When the set of tunnels differs from the snapshot's (a unit
//! appeared or went without its signal), everything is listed and read again, as at start.
//! What the states cannot show (a property changed while the states came back to where they
//! were: a missed restart, a new main PID) waits for the round that reads every unit, every
//! [`FULL_EVERY`] rounds.
//!
//! Unit files are listed only when they may have changed. `ListUnitFilesByPatterns` makes
//! systemd look up every unit file's enablement state: measured at 1,000 units (`cargo bench
//! --bench listing`), one call cost systemd about 4.7 s of CPU, against 8 ms for
//! `ListUnitsByPatterns`. The set of files changes for systemd at a daemon-reload (the warden
//! lists them again on its `Reloading` signal), and a round sees a reload whose signal it
//! missed by systemd's `UnitsLoadTimestampMonotonic`, which moves at each one. So a round lists
//! files only on a systemd without that property ([`Files::Listed`]).

use std::collections::{BTreeMap, BTreeSet};

use super::{ActiveState, TunnelId};

/// Every this many safety-net rounds (six hours at the default 300 s), every loaded unit is
/// read, whatever the listing says. Such a round costs about 2 s of CPU at 1,000 units (the
/// warden's, dbus-daemon's and systemd's for two `GetAll`s a unit, docs/benchmarks.md); what
/// it alone catches is a lost signal whose unit came back to the same states (a restart the
/// warden did not see), and the unit's next signal brings that news anyway.
pub const FULL_EVERY: u32 = 72;

/// A loaded unit as listed: its name and its load, active and sub state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedState {
    pub unit: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
}

/// What the snapshot holds of a tunnel: its unit and states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownState<'a> {
    pub unit: &'a str,
    pub load_state: &'a str,
    pub active_state: &'a str,
    pub sub_state: &'a str,
}

/// What a round knows of the unit files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files<'a> {
    /// Listed this round: the units that have a unit file.
    Listed(&'a [String]),
    /// Not listed: systemd has not reloaded since the snapshot's listing, so the files it knows
    /// are those the snapshot was built from; loads and unloads since came as signals.
    Unchanged,
}

/// What a safety-net round does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// List and read every unit again.
    Full,
    /// Read these units (none: nothing to do).
    Read(Vec<String>),
}

/// Compares one listing with the snapshot. `every` reads every listed tunnel, moved or not;
/// `tunnel_of` maps a unit name to its tunnel id (`None` for a name that is no tunnel's).
pub fn recheck(
    listed: &[ListedState],
    files: Files<'_>,
    known: &BTreeMap<TunnelId, KnownState<'_>>,
    every: bool,
    tunnel_of: impl Fn(&str) -> Option<TunnelId>,
) -> Recheck {
    let mut ids = BTreeSet::new();
    let mut read = Vec::new();
    for unit in listed {
        let Some(id) = tunnel_of(&unit.unit) else {
            continue;
        };
        // A loaded unit without a file and without processes is not kept (the watcher drops
        // it), unless its file is listed below. A known one whose file went without a reload's
        // signal reaching the warden is read: the reading drops it.
        if unit.load_state == "not-found"
            && !ActiveState::parse(&unit.active_state).may_have_processes()
        {
            if files == Files::Unchanged && known.contains_key(&id) {
                read.push(unit.unit.clone());
                ids.insert(id);
            }
            continue;
        }
        let same = known.get(&id).is_some_and(|k| {
            k.load_state == unit.load_state
                && k.active_state == unit.active_state
                && k.sub_state == unit.sub_state
        });
        if !same || every {
            read.push(unit.unit.clone());
        }
        ids.insert(id);
    }
    match files {
        Files::Listed(files) => {
            ids.extend(files.iter().filter_map(|unit| tunnel_of(unit)));
            if !ids.iter().eq(known.keys()) {
                return Recheck::Full;
            }
        }
        Files::Unchanged => {
            if ids.iter().any(|id| !known.contains_key(id)) {
                return Recheck::Full;
            }
            // Known but not loaded: systemd unloads idle units, so an idle one is as it was.
            // One last seen with processes stopped unseen: read it.
            let unseen_stop = known.iter().filter(|(id, k)| {
                !ids.contains(*id) && ActiveState::parse(k.active_state).may_have_processes()
            });
            read.extend(unseen_stop.map(|(_, k)| k.unit.to_owned()));
        }
    }
    Recheck::Read(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel_of(unit: &str) -> Option<TunnelId> {
        TunnelId::from_unit_name(unit).ok()
    }

    fn listed(id: &str, load: &str, active: &str, sub: &str) -> ListedState {
        ListedState {
            unit: format!("xray-tunnel-{id}.service"),
            load_state: load.into(),
            active_state: active.into(),
            sub_state: sub.into(),
        }
    }

    const UNITS: [&str; 4] = [
        "xray-tunnel-a.service",
        "xray-tunnel-b.service",
        "xray-tunnel-c.service",
        "xray-tunnel-other.service",
    ];

    /// The snapshot: each id with its states (the unit's name from the id).
    fn known<'a>(rows: &[(&str, [&'a str; 3])]) -> BTreeMap<TunnelId, KnownState<'a>> {
        rows.iter()
            .map(|(id, [load_state, active_state, sub_state])| {
                let unit = UNITS
                    .iter()
                    .find(|u| **u == format!("xray-tunnel-{id}.service"));
                let state = KnownState {
                    unit: unit.expect("a unit of UNITS"),
                    load_state,
                    active_state,
                    sub_state,
                };
                (TunnelId::new(id).unwrap(), state)
            })
            .collect()
    }

    const RUNNING: [&str; 3] = ["loaded", "active", "running"];
    const DEAD: [&str; 3] = ["loaded", "inactive", "dead"];
    const NOT_LOADED: [&str; 3] = ["not-loaded", "inactive", ""];

    fn check(listed: &[ListedState], files: Files<'_>, snapshot: &[(&str, [&str; 3])]) -> Recheck {
        recheck(listed, files, &known(snapshot), false, tunnel_of)
    }

    fn read(units: &[&str]) -> Recheck {
        Recheck::Read(
            units
                .iter()
                .map(|u| format!("xray-tunnel-{u}.service"))
                .collect(),
        )
    }

    #[test]
    fn unchanged_states_read_nothing_and_changed_ones_are_read() {
        let snapshot = [("a", RUNNING), ("b", RUNNING), ("c", NOT_LOADED)];
        let files = vec!["xray-tunnel-c.service".to_owned()];
        let same = [
            listed("a", "loaded", "active", "running"),
            listed("b", "loaded", "active", "running"),
            listed("other", "loaded", "active", "running"),
        ];
        let with_other = |mut v: Vec<ListedState>| {
            v.push(ListedState {
                unit: "nginx.service".into(),
                ..listed("x", "loaded", "failed", "failed")
            });
            v
        };
        for files in [Files::Listed(&files), Files::Unchanged] {
            // "other" is a tunnel the snapshot lacks: everything again.
            assert_eq!(check(&same, files, &snapshot), Recheck::Full);
            let same = with_other(same[..2].to_vec());
            assert_eq!(check(&same, files, &snapshot), read(&[]));
            let mut moved = same.clone();
            moved[1].active_state = "activating".into();
            moved[1].sub_state = "auto-restart".into();
            assert_eq!(check(&moved, files, &snapshot), read(&["b"]));
            // The round that reads every unit reads every listed tunnel, moved or not.
            let every = recheck(&moved, files, &known(&snapshot), true, tunnel_of);
            assert_eq!(every, read(&["a", "b"]));
        }
    }

    #[test]
    fn a_tunnel_gone_or_new_without_its_signal_lists_everything() {
        let only_a = [listed("a", "loaded", "active", "running")];
        let running = [("a", RUNNING), ("b", RUNNING)];
        assert_eq!(check(&only_a, Files::Listed(&[]), &running), Recheck::Full);
        // A unit with a file but not loaded is still a tunnel.
        let files = vec!["xray-tunnel-b.service".to_owned()];
        let b_unloaded = [("a", RUNNING), ("b", NOT_LOADED)];
        assert_eq!(
            check(&only_a, Files::Listed(&files), &b_unloaded),
            read(&[])
        );
        assert_eq!(check(&only_a, Files::Unchanged, &b_unloaded), read(&[]));
        // It got loaded and started without its signal reaching us: read.
        let both = [
            listed("a", "loaded", "active", "running"),
            listed("b", "loaded", "active", "running"),
        ];
        assert_eq!(
            check(&both, Files::Listed(&files), &b_unloaded),
            read(&["b"])
        );
        assert_eq!(check(&both, Files::Unchanged, &b_unloaded), read(&["b"]));
    }

    #[test]
    fn without_a_file_listing_an_unloaded_tunnel_is_read_only_if_last_seen_running() {
        let only_a = [listed("a", "loaded", "active", "running")];
        // b stopped and systemd unloaded it, both signals seen: nothing to do.
        let b_dead = [("a", RUNNING), ("b", DEAD)];
        assert_eq!(check(&only_a, Files::Unchanged, &b_dead), read(&[]));
        // b was last seen running: its stop went unseen; read it (reading tells whether its
        // file is still there).
        let b_running = [("a", RUNNING), ("b", RUNNING)];
        assert_eq!(check(&only_a, Files::Unchanged, &b_running), read(&["b"]));
        let every = recheck(
            &only_a,
            Files::Unchanged,
            &known(&b_running),
            true,
            tunnel_of,
        );
        assert_eq!(every, read(&["a", "b"]));
    }

    #[test]
    fn a_loaded_unit_without_file_or_processes_is_not_a_tunnel_to_keep() {
        let snapshot = [("a", RUNNING)];
        let listing = [
            listed("a", "loaded", "active", "running"),
            listed("ghost", "not-found", "inactive", "dead"),
        ];
        assert_eq!(check(&listing, Files::Listed(&[]), &snapshot), read(&[]));
        assert_eq!(check(&listing, Files::Unchanged, &snapshot), read(&[]));
        // Still running without its file: it is kept, so it must be known.
        let running_ghost = [
            listed("a", "loaded", "active", "running"),
            listed("ghost", "not-found", "active", "running"),
        ];
        assert_eq!(
            check(&running_ghost, Files::Listed(&[]), &snapshot),
            Recheck::Full
        );
        assert_eq!(
            check(&running_ghost, Files::Unchanged, &snapshot),
            Recheck::Full
        );
        // A known tunnel whose file went (without a reload's signal) and that is idle: reading
        // it is enough (the watcher drops a unit it reads as not-found and idle), once, whether
        // it was last seen running or not.
        let a_gone = [listed("a", "not-found", "inactive", "dead")];
        assert_eq!(check(&a_gone, Files::Unchanged, &snapshot), read(&["a"]));
        let idle = [("a", DEAD)];
        assert_eq!(check(&a_gone, Files::Unchanged, &idle), read(&["a"]));
    }
}
