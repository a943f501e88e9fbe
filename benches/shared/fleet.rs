//! The benches' `xray-tunnel-bNNN.service` units (`/bin/sleep infinity`) and the sandbox's
//! dbus-daemon.

use std::fs;
use std::ops::Range;
use std::time::Duration;

use crate::support::sandbox::Sandbox;

const WAIT: Duration = Duration::from_secs(120);

/// Writes units `range` (`xray-tunnel-b{i:03}`), reloads once, starts them with one call and
/// waits until `range.end` tunnel units are active (units started earlier count: a bench may
/// grow the fleet step by step).
pub fn start_units(sandbox: &Sandbox, range: Range<usize>) {
    let total = range.end;
    let names: Vec<String> = range
        .map(|i| format!("xray-tunnel-b{i:03}.service"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let unit = format!(
            "[Unit]\nDescription=bench tunnel {i}\n[Service]\nExecStart=/bin/sleep infinity\n"
        );
        sandbox.write_unit(name, &unit);
    }
    sandbox.systemctl(&["daemon-reload"]);
    let mut start = vec!["start", "--no-block"];
    start.extend(names.iter().map(String::as_str));
    sandbox.systemctl(&start);
    let list = [
        "list-units",
        "--no-legend",
        "--plain",
        "--state=active",
        "xray-tunnel-*",
    ];
    sandbox.wait_for("every unit active", WAIT, || {
        sandbox.systemctl(&list).lines().count() == total
    });
}

/// Host PID of the sandbox's dbus-daemon: the one whose PID namespace is that of its systemd.
/// Read-only discovery; nothing is ever signalled by name.
pub fn dbus_daemon_of(sandbox: &Sandbox) -> u32 {
    let ns_of = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let ours = ns_of(&sandbox.systemd_pid().to_string()).expect("the sandbox's pid namespace");
    let entries = fs::read_dir("/proc").expect("reading /proc");
    let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    let mut found = pids.filter(|pid| {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        comm.trim_end() == "dbus-daemon" && ns_of(&pid.to_string()) == Some(ours.clone())
    });
    found.next().expect("the sandbox's dbus-daemon is running")
}
