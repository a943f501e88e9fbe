//! A REAL systemd, booted by `scripts/sandbox-boot.sh` as PID 1 of fresh PID, mount, cgroup and
//! UTS namespaces, for tests that must talk to systemd over a real D-Bus system bus.
//!
//! Needs root on a hybrid-cgroup host. The host reaches the sandbox through its state directory
//! (`<CARGO_TARGET_TMPDIR>/sandbox-<name>-<test pid>-<n>`, never /tmp): the bus socket lies in its
//! `run/`, unit files go to its `units/`.
//!
//! Lifetime: [`Sandbox::boot`] returns once the bus answers and systemd reports itself running.
//! Dropping the `Sandbox` halts it (SIGRTMIN+3), removes its cgroups and its state directory, also
//! while the test panics. If the test process dies without unwinding (abort, SIGKILL), the sandbox
//! dies with it: `unshare` runs under `setpriv --pdeathsig KILL`, and its `--kill-child=SIGKILL`
//! takes the whole PID namespace down; the next boot sweeps what is left ([`sweep_stale`]).
//!
//! PDEATHSIG fires when the THREAD that spawned the sandbox exits, not the process. Each test runs
//! in a thread of its own, so boot a `Sandbox` in the thread that uses it, never in a short-lived
//! helper thread, or the sandbox dies with that thread.

mod leftovers;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use leftovers::{clear_reused_name, remove_cgroups, remove_state_dir};
pub use leftovers::{host_cgroups_named, sweep_stale};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sandbox-boot.sh");
/// State dirs are named `sandbox-<name>-<owner pid>-<n>`; the script names the sandbox's cgroups
/// `xray-warden-<that name>`.
const STATE_PREFIX: &str = "sandbox-";
const CGROUP_PREFIX: &str = "xray-warden-";
const BUS_SOCKET: &str = "run/dbus/system_bus_socket";
/// `sun_path` holds 108 bytes, the trailing NUL included.
const MAX_SOCKET_PATH: usize = 107;
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
const HALT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// How to boot a sandbox.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// Boot systemd in pure cgroup v2 ("unified") mode. It then fills `CPUUsageNSec`, but on this
    /// hybrid host it has no controllers, so `MemoryCurrent` and `TasksCurrent` stay unset.
    pub cgroup_v2: bool,
}

/// What the sandbox's systemd boots on.
#[derive(Debug, Clone)]
enum Mode {
    /// The host's own systemd on the host's files, with its /run, /tmp and unit dir redirected.
    Host(BootOptions),
    /// Another root's systemd on an overlay of that root (left untouched), in a network namespace
    /// of its own: `sandbox-boot.sh --root`.
    Root(PathBuf),
}

/// A booted sandbox; dropping it halts it and removes everything it left on the host.
pub struct Sandbox {
    state_dir: PathBuf,
    /// Whether it runs another root's systemd ([`Sandbox::boot_root`]).
    in_root: bool,
    /// `setpriv` exec'd into the script, which exec'd into `unshare`: one process.
    unshare: Child,
    /// Host PID of the sandbox's systemd; known once boot found it.
    systemd_pid: Option<u32>,
}

impl Sandbox {
    /// Boots a sandbox and waits until it is usable. Panics with the boot log and the journal's
    /// tail if it does not come up, after halting it and removing its traces.
    pub fn boot(name: &str) -> Sandbox {
        Self::boot_with(name, BootOptions::default())
    }

    /// [`Sandbox::boot`] with options.
    pub fn boot_with(name: &str, opts: BootOptions) -> Sandbox {
        Self::boot_mode(name, Mode::Host(opts))
    }

    /// Boots the systemd of ROOT (a whole Debian tree, e.g. from debootstrap) on an overlay of it,
    /// in network, PID, mount, cgroup and UTS namespaces of its own. ROOT is never written to:
    /// the sandbox's changes land in [`Sandbox::upper_dir`]. [`Sandbox::command`] then runs
    /// ROOT's programs, and [`Sandbox::read_file`] reads ROOT's view; `write_unit` does not
    /// apply (install units the way a package does, inside).
    pub fn boot_root(name: &str, root: &Path) -> Sandbox {
        Self::boot_mode(name, Mode::Root(root.to_path_buf()))
    }

    /// The overlay's upper layer of a [`Sandbox::boot_root`] sandbox: what it changed in ROOT.
    pub fn upper_dir(&self) -> PathBuf {
        assert!(
            self.in_root,
            "only a sandbox booted on a root has an upper layer"
        );
        self.state_dir.join("upper")
    }

    fn boot_mode(name: &str, mode: Mode) -> Sandbox {
        assert_root();
        sweep_stale();
        let state_dir = new_state_dir(name);
        if let Err(e) = clear_reused_name(&state_dir) {
            panic!("cannot clear {}: {e}", state_dir.display());
        }
        let unshare = match spawn(&state_dir, &mode) {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&state_dir);
                panic!("cannot start {SCRIPT}: {e}");
            }
        };
        let mut sandbox = Sandbox {
            state_dir,
            in_root: matches!(mode, Mode::Root(_)),
            unshare,
            systemd_pid: None,
        };
        if let Err(problem) = sandbox.wait_until_ready() {
            let diagnostics = sandbox.diagnostics();
            drop(sandbox);
            panic!("sandbox {name} did not boot: {problem}\n{diagnostics}");
        }
        sandbox
    }

    /// Host PID of the sandbox's systemd (PID 1 inside).
    pub fn systemd_pid(&self) -> u32 {
        self.systemd_pid
            .expect("a booted sandbox knows its systemd")
    }

    /// D-Bus address of the sandbox's system bus, usable from the host.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.state_dir.join(BUS_SOCKET).display())
    }

    /// The sandbox's state directory on the host.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Name of the sandbox's sub-cgroups in every host hierarchy.
    pub fn cgroup_name(&self) -> String {
        cgroup_name_of(&self.state_dir)
    }

    /// Writes a unit file into the sandbox's /etc/systemd/system; run `daemon-reload` after.
    pub fn write_unit(&self, name: &str, contents: &str) {
        let path = self.unit_path(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Removes a unit file written by [`Sandbox::write_unit`]; a missing one is fine.
    pub fn remove_unit(&self, name: &str) {
        let path = self.unit_path(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                panic!("remove {}: {e}", path.display())
            }
            _ => {}
        }
    }

    /// Runs `systemctl ARGS` inside; panics with its stderr unless it succeeds. Returns stdout.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let out = self.systemctl_status(args);
        assert!(
            out.status.success(),
            "systemctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `systemctl ARGS` inside and returns whatever it did.
    pub fn systemctl_status(&self, args: &[&str]) -> Output {
        self.command("systemctl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"))
    }

    /// `systemctl show` of PROPS (all properties if empty), as property -> value.
    pub fn show(&self, unit: &str, props: &[&str]) -> HashMap<String, String> {
        let joined = props.join(",");
        let mut args = vec!["show", unit];
        if !props.is_empty() {
            args.extend(["--property", &joined]);
        }
        let stdout = self.systemctl(&args);
        let pairs = stdout.lines().filter_map(|line| line.split_once('='));
        pairs.map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    /// A command that runs PROGRAM inside the sandbox's mount, PID and cgroup namespaces. Its
    /// process stays in the test's cgroups but dies with the sandbox. In a sandbox booted on a
    /// root, also in its network namespace and chrooted to the root, with a clean environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        let pid = self.systemd_pid().to_string();
        cmd.args(["-t", &pid, "-m", "-p", "-C"]);
        if self.in_root {
            cmd.args(["-n", "-r", "-w", "--", "env", "-i"]);
            cmd.args(["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]);
            cmd.arg(program);
        } else {
            cmd.args(["--", program]);
        }
        cmd
    }

    /// Reads PATH (absolute) as seen inside the sandbox, e.g. `/proc/<sandbox pid>/stat`, through
    /// `/proc/<systemd pid>/root`. Absolute symlinks inside resolve on the host, and `/proc/self`
    /// means nothing there: name the sandbox PID.
    pub fn read_file(&self, path: &str) -> io::Result<String> {
        assert!(
            path.starts_with('/'),
            "read_file wants an absolute path, got {path:?}"
        );
        fs::read_to_string(format!("/proc/{}/root{path}", self.systemd_pid()))
    }

    /// Polls COND until it holds; panics naming WHAT after TIMEOUT or if the sandbox died.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(self.is_alive(), "the sandbox died while waiting for {what}");
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            thread::sleep(POLL);
        }
    }

    /// Whether org.freedesktop.systemd1 answers a Ping over [`Sandbox::bus_address`].
    pub fn bus_answers(&self) -> bool {
        let status = Command::new("busctl")
            .arg(format!("--address={}", self.bus_address()))
            .args([
                "--timeout=2",
                "call",
                "org.freedesktop.systemd1",
                "/org/freedesktop/systemd1",
            ])
            .args(["org.freedesktop.DBus.Peer", "Ping"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        status.is_ok_and(|s| s.success())
    }

    fn unit_path(&self, name: &str) -> PathBuf {
        assert!(
            !self.in_root,
            "a sandbox on a root has no unit dir of the host's"
        );
        assert!(
            !name.is_empty() && !name.contains('/'),
            "bad unit name {name:?}"
        );
        self.state_dir.join("units").join(name)
    }

    fn is_alive(&self) -> bool {
        self.systemd_pid
            .is_some_and(|pid| parent_of(pid) == Some(self.unshare.id()))
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if self.has_exited()? {
                return Err("the boot script exited early".to_owned());
            }
            if self.systemd_pid.is_none() {
                self.systemd_pid = systemd_child_of(self.unshare.id());
            }
            if self.systemd_pid.is_some() && self.bus_answers() && self.is_running() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not up after {BOOT_TIMEOUT:?}"));
            }
            thread::sleep(POLL);
        }
    }

    fn is_running(&self) -> bool {
        let out = self.systemctl_status(&["is-system-running"]);
        matches!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "running" | "degraded"
        )
    }

    fn diagnostics(&self) -> String {
        let log = fs::read_to_string(self.state_dir.join("boot.log")).unwrap_or_default();
        let mut report = format!("--- boot log:\n{log}");
        if self.is_alive() {
            let journal = self
                .command("journalctl")
                .args(["--no-pager", "-n", "40"])
                .output();
            let journal = journal.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            report += &format!("--- journal:\n{}", journal.unwrap_or_default());
        }
        report
    }

    /// Halts systemd, or kills `unshare` (and with it the namespace) if it does not stop in time.
    fn halt(&mut self) -> Result<(), String> {
        if self.has_exited()? {
            return Ok(());
        }
        if self.is_alive() {
            // SIGRTMIN+3 is the container "halt" request; systemd ignores SIGTERM.
            let _ = super::signal::send(self.systemd_pid(), super::signal::halt_request());
            let deadline = Instant::now() + HALT_TIMEOUT;
            while Instant::now() < deadline {
                if self.has_exited()? {
                    return Ok(());
                }
                thread::sleep(POLL);
            }
            let name = self.cgroup_name();
            eprintln!("sandbox {name}: no halt after {HALT_TIMEOUT:?}, killing it");
        }
        // SIGKILL to `unshare` by PID; its --kill-child takes the whole namespace down.
        let _ = self.unshare.kill();
        self.unshare.wait().map(drop).map_err(|e| e.to_string())
    }

    /// Whether `unshare` has exited (and so the whole namespace); reaps it if so.
    fn has_exited(&mut self) -> Result<bool, String> {
        let status = self.unshare.try_wait().map_err(|e| e.to_string())?;
        Ok(status.is_some())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        if let Err(e) = self.halt() {
            problems.push(format!("halt: {e}"));
        }
        match remove_cgroups(&self.state_dir) {
            Ok(()) => {
                if let Err(e) = remove_state_dir(&self.state_dir) {
                    problems.push(e);
                }
                // The fallback root is ours alone: leave no empty directory behind in /var/lib.
                if state_root() == Path::new(FALLBACK_ROOT) {
                    let _ = fs::remove_dir(FALLBACK_ROOT);
                }
            }
            // Keep the state dir: it names the cgroups for the next boot's sweep.
            Err(e) => problems.push(e),
        }
        if problems.is_empty() {
            return;
        }
        let report = format!(
            "sandbox {}: {}",
            self.state_dir.display(),
            problems.join("; ")
        );
        if thread::panicking() {
            eprintln!("{report}");
        } else {
            panic!("{report}");
        }
    }
}

fn state_root() -> PathBuf {
    // Examples get no CARGO_TARGET_TMPDIR; they use the same place under the default target dir.
    let preferred = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp"));
    choose_root(&preferred)
}

/// `preferred` if a sandbox may keep its state there, else [`FALLBACK_ROOT`].
///
/// The bus socket is <root>/sandbox-<name>-<pid>-<n>/run/dbus/system_bus_socket, about 65 bytes
/// past the root, and a unix socket path holds 107: a deep checkout uses a short root of its own
/// instead. Nor under /tmp or /var/tmp, whatever the checkout's path (a symlink included): the
/// sandboxes must not touch the host's /tmp, and tunnel units run with PrivateTmp=, which hides
/// whatever lies there from the core (every start then fails); nor under /home or /root, which
/// their ProtectHome= hides.
pub fn choose_root(preferred: &Path) -> PathBuf {
    if preferred.as_os_str().len() <= 40 && !hidden_from_units(preferred) {
        preferred.to_path_buf()
    } else {
        PathBuf::from(FALLBACK_ROOT)
    }
}

/// Whether `path` (resolved through its nearest existing ancestor) lies in a tree the tunnel
/// units' sandboxing replaces or hides: PrivateTmp= (/tmp, /var/tmp) or ProtectHome= (/home,
/// /root, /run/user), which config tests run as the tunnel user also have.
fn hidden_from_units(path: &Path) -> bool {
    let resolved = path
        .ancestors()
        .find_map(|a| fs::canonicalize(a).ok().map(|r| (a, r)))
        .map(|(a, r)| r.join(path.strip_prefix(a).unwrap_or(Path::new(""))))
        .unwrap_or_else(|| path.to_path_buf());
    ["/tmp", "/var/tmp", "/home", "/root", "/run/user"]
        .iter()
        .any(|tree| resolved.starts_with(tree))
}

/// The state root of checkouts too deep for [`state_root`]'s preferred place, or under /tmp.
const FALLBACK_ROOT: &str = "/var/lib/xray-warden-test-sandboxes";

fn new_state_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    assert!(
        !name.is_empty() && name.chars().all(valid),
        "sandbox name {name:?}: use letters, digits, '_' and '-'"
    );
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = state_root().join(format!("{STATE_PREFIX}{name}-{}-{n}", std::process::id()));
    let socket = dir.join(BUS_SOCKET);
    assert!(
        socket.as_os_str().len() <= MAX_SOCKET_PATH,
        "bus socket path {} is too long for a unix socket; use a shorter target dir or name",
        socket.display()
    );
    dir
}

fn spawn(state_dir: &Path, mode: &Mode) -> io::Result<Child> {
    fs::create_dir_all(state_dir)?;
    let log = File::create(state_dir.join("boot.log"))?;
    let mode_args: Vec<&std::ffi::OsStr> = match mode {
        Mode::Host(opts) => opts
            .cgroup_v2
            .then_some("--cgroup-v2".as_ref())
            .into_iter()
            .collect(),
        Mode::Root(root) => vec!["--root".as_ref(), root.as_os_str()],
    };
    Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--", SCRIPT])
        .arg(state_dir)
        .args(mode_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

fn assert_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the systemd sandbox needs root"
    );
}

fn parent_of(pid: u32) -> Option<u32> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    u32::try_from(process.stat().ok()?.ppid).ok()
}

/// The child of `unshare` once it has exec'd systemd (before, it is the script or `env`).
fn systemd_child_of(unshare: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
    let pid: u32 = children.split_whitespace().next()?.parse().ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim_end() == "systemd").then_some(pid)
}

fn cgroup_name_of(state_dir: &Path) -> String {
    let base = state_dir.file_name().expect("state dirs have a name");
    format!("{CGROUP_PREFIX}{}", base.to_string_lossy())
}
