//! The watcher's periodic safety net: which units to read again, from one listing of the
//! units' states, rather than reading every unit.
//!
//! `ListUnitsByPatterns` answers each loaded unit's load, active and sub state in one call;
//! `ListUnitFilesByPatterns` names the units that have a file. A unit whose three states equal
//! the snapshot's missed no signal that changed them, so only the others are read (`GetAll`).
//! When the set of tunnels differs from the snapshot's (a unit appeared or went without its
//! signal), everything is listed and read again, as at start. What the states cannot show (a
//! property changed while the states came back to where they were: a missed restart, a new
//! main PID) waits for the full re-listing every [`FULL_EVERY`] rounds.

use std::collections::{BTreeMap, BTreeSet};

use super::{ActiveState, TunnelId};

/// Every this many safety-net rounds, every unit is read, whatever the listing says.
pub const FULL_EVERY: u32 = 12;

/// A loaded unit as listed: its name and its load, active and sub state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedState {
    pub unit: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
}

/// What the snapshot holds of a tunnel's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownState<'a> {
    pub load_state: &'a str,
    pub active_state: &'a str,
    pub sub_state: &'a str,
}

/// What a safety-net round does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    /// List and read every unit again.
    Full,
    /// Read these units (none: nothing to do).
    Read(Vec<String>),
}

/// Compares one listing with the snapshot. `tunnel_of` maps a unit name to its tunnel id
/// (`None` for a name that is no tunnel's); `files` are the units that have a unit file.
pub fn recheck(
    listed: &[ListedState],
    files: &[String],
    known: &BTreeMap<TunnelId, KnownState<'_>>,
    tunnel_of: impl Fn(&str) -> Option<TunnelId>,
) -> Recheck {
    let mut ids = BTreeSet::new();
    let mut read = Vec::new();
    for unit in listed {
        let Some(id) = tunnel_of(&unit.unit) else {
            continue;
        };
        // A loaded unit without a file and without processes is not kept (the watcher drops
        // it), unless its file is listed below.
        let dropped = unit.load_state == "not-found"
            && !ActiveState::parse(&unit.active_state).may_have_processes();
        if !dropped {
            ids.insert(id.clone());
        }
        let same = known.get(&id).is_some_and(|k| {
            k.load_state == unit.load_state
                && k.active_state == unit.active_state
                && k.sub_state == unit.sub_state
        });
        if !same && !dropped {
            read.push(unit.unit.clone());
        }
    }
    ids.extend(files.iter().filter_map(|unit| tunnel_of(unit)));
    if !ids.iter().eq(known.keys()) {
        return Recheck::Full;
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

    fn known<'a>(rows: &[(&str, KnownState<'a>)]) -> BTreeMap<TunnelId, KnownState<'a>> {
        rows.iter()
            .map(|(id, k)| (TunnelId::new(id).unwrap(), *k))
            .collect()
    }

    const RUNNING: KnownState<'static> = KnownState {
        load_state: "loaded",
        active_state: "active",
        sub_state: "running",
    };
    const NOT_LOADED: KnownState<'static> = KnownState {
        load_state: "not-loaded",
        active_state: "inactive",
        sub_state: "",
    };

    #[test]
    fn unchanged_states_read_nothing_and_changed_ones_are_read() {
        let snapshot = known(&[("a", RUNNING), ("b", RUNNING), ("c", NOT_LOADED)]);
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
        // "other" is a tunnel the snapshot lacks: everything again.
        assert_eq!(recheck(&same, &files, &snapshot, tunnel_of), Recheck::Full);
        let same = with_other(same[..2].to_vec());
        assert_eq!(
            recheck(&same, &files, &snapshot, tunnel_of),
            Recheck::Read(vec![])
        );
        let mut moved = same.clone();
        moved[1].active_state = "activating".into();
        moved[1].sub_state = "auto-restart".into();
        assert_eq!(
            recheck(&moved, &files, &snapshot, tunnel_of),
            Recheck::Read(vec!["xray-tunnel-b.service".into()])
        );
    }

    #[test]
    fn a_tunnel_gone_or_new_without_its_signal_lists_everything() {
        let snapshot = known(&[("a", RUNNING), ("b", RUNNING)]);
        let only_a = [listed("a", "loaded", "active", "running")];
        assert_eq!(recheck(&only_a, &[], &snapshot, tunnel_of), Recheck::Full);
        // A unit with a file but not loaded is still a tunnel.
        let files = vec!["xray-tunnel-b.service".to_owned()];
        let snapshot = known(&[("a", RUNNING), ("b", NOT_LOADED)]);
        assert_eq!(
            recheck(&only_a, &files, &snapshot, tunnel_of),
            Recheck::Read(vec![])
        );
        // It got loaded and started without its signal reaching us: read.
        let both = [
            listed("a", "loaded", "active", "running"),
            listed("b", "loaded", "active", "running"),
        ];
        assert_eq!(
            recheck(&both, &files, &snapshot, tunnel_of),
            Recheck::Read(vec!["xray-tunnel-b.service".into()])
        );
    }

    #[test]
    fn a_loaded_unit_without_file_or_processes_is_not_a_tunnel_to_keep() {
        let snapshot = known(&[("a", RUNNING)]);
        let listing = [
            listed("a", "loaded", "active", "running"),
            listed("ghost", "not-found", "inactive", "dead"),
        ];
        assert_eq!(
            recheck(&listing, &[], &snapshot, tunnel_of),
            Recheck::Read(vec![])
        );
        // Still running without its file: it is kept, so it must be known.
        let running_ghost = [
            listed("a", "loaded", "active", "running"),
            listed("ghost", "not-found", "active", "running"),
        ];
        assert_eq!(
            recheck(&running_ghost, &[], &snapshot, tunnel_of),
            Recheck::Full
        );
    }
}
