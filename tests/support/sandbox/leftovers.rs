//! Removing what sandboxes leave on the host: their cgroups (through the script's --cleanup),
//! their state dirs, and the leftovers of test processes that died without dropping theirs.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::{CGROUP_PREFIX, SCRIPT, STATE_PREFIX, cgroup_name_of, state_root};

/// Removes what crashed runs left behind: the state dirs and emptied cgroups of sandboxes whose
/// test process is gone. Sandboxes of live processes (this one's included) are never touched, and
/// the script's rmdir never removes a cgroup that still has processes. Runs at every boot.
pub fn sweep_stale() {
    static SWEEP: Mutex<()> = Mutex::new(());
    let _one_at_a_time = SWEEP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for name in stale_sandbox_names() {
        let state_dir = state_root().join(&name);
        match remove_cgroups(&state_dir).and_then(|()| remove_state_dir(&state_dir)) {
            Ok(()) => eprintln!("removed the leftovers of crashed sandbox {name}"),
            Err(e) => eprintln!("leftovers of crashed sandbox {name} stay: {e}"),
        }
    }
}

/// Clears what a dead process that had this process's PID left under the name about to be used.
/// This process hands out each name once, so an existing one can only be such a leftover, which
/// [`sweep_stale`] passes over because its owner PID is alive again.
pub(super) fn clear_reused_name(state_dir: &Path) -> Result<(), String> {
    let cgroup = own_unified_cgroup().map(|dir| dir.join(cgroup_name_of(state_dir)));
    if !state_dir.exists() && !cgroup.is_some_and(|dir| dir.exists()) {
        return Ok(());
    }
    eprintln!(
        "clearing the leftovers of a dead sandbox named {}",
        state_dir.display()
    );
    remove_cgroups(state_dir).and_then(|()| remove_state_dir(state_dir))
}

/// Every directory named NAME in the host's cgroup hierarchies (for checking cleanup).
pub fn host_cgroups_named(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if entry.file_name() == name {
                    found.push(entry.path());
                }
                stack.push(entry.path());
            }
        }
    }
    found
}

/// Runs the script's --cleanup: rmdir of the sandbox's emptied cgroups, refused while populated.
pub(super) fn remove_cgroups(state_dir: &Path) -> Result<(), String> {
    let out = Command::new(SCRIPT)
        .arg("--cleanup")
        .arg(state_dir)
        .output();
    let out = out.map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Removes a state dir, refusing anything that is not one or that has mounts below it (the
/// sandbox's binds live in its own mount namespace; one visible here means something is wrong).
pub(super) fn remove_state_dir(state_dir: &Path) -> Result<(), String> {
    let is_state_dir = state_dir.parent() == Some(state_root().as_path())
        && state_dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(STATE_PREFIX));
    if !is_state_dir {
        return Err(format!(
            "refusing to remove {}: not a sandbox state dir",
            state_dir.display()
        ));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounted = mountinfo.lines().filter_map(|l| l.split(' ').nth(4));
    if let Some(mount) = mounted.find(|m| Path::new(m).starts_with(state_dir)) {
        return Err(format!(
            "refusing to remove {}: {mount} is mounted",
            state_dir.display()
        ));
    }
    match fs::remove_dir_all(state_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(format!("remove {}: {e}", state_dir.display()))
        }
        _ => Ok(()),
    }
}

/// Sandboxes (by state dir name) that left a state dir or a cgroup2 sub-cgroup behind (the script
/// creates that one first and removes it last) and whose test process no longer exists.
fn stale_sandbox_names() -> BTreeSet<String> {
    let dir_names = |dir: &Path| -> Vec<String> {
        let entries = fs::read_dir(dir).into_iter().flatten().flatten();
        entries
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let mut names: BTreeSet<String> = dir_names(&state_root()).into_iter().collect();
    let cgroups = own_unified_cgroup()
        .map(|dir| dir_names(&dir))
        .unwrap_or_default();
    names.extend(
        cgroups
            .iter()
            .filter_map(|n| n.strip_prefix(CGROUP_PREFIX).map(str::to_owned)),
    );
    names.retain(|name| {
        owner_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    names
}

/// The test process that owns a sandbox, from its name `sandbox-<name>-<pid>-<n>`.
fn owner_pid(state_name: &str) -> Option<u32> {
    let mut parts = state_name.rsplitn(3, '-');
    let _n: u32 = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?.starts_with(STATE_PREFIX).then_some(pid)
}

/// The cgroup2 directory this process is in; sandbox sub-cgroups are created below it.
fn own_unified_cgroup() -> Option<PathBuf> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new("/sys/fs/cgroup/unified").join(own.trim_start_matches('/')))
}
