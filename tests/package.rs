//! Proof tier for the Debian package (issue 12): `cargo deb` builds it (release), a pristine
//! Debian 12 root (debootstrap, cached by scripts/debian-root.sh) boots its own systemd in the
//! sandbox (`Sandbox::boot_root`: an overlay of the root, its own network namespace), and the
//! package is installed, exercised and purged there with the root's dpkg. The host never sees
//! the package's files, user or units; the cached root is never written to.
//!
//! Needs root, cargo-deb, debootstrap (once) and lintian: `cargo test --test package`
//! (scripts/install-deps.sh installs them). Cold, the release build and the bootstrap take
//! minutes; warm, a run takes about a minute.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use support::sandbox::Sandbox;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Where the package puts the daemon's HTTP server (the shipped config's `listen`).
const READY_URL: &str = "http://127.0.0.1:9550/ready";
/// Mount points of the sandbox (its own /proc, /sys, /dev, /run, /tmp), not the root's files.
const MOUNTED: [&str; 5] = ["proc", "sys", "dev", "run", "tmp"];

/// What may differ in the root after install + purge (path prefixes), and why.
const PURGE_ALLOWED: [(&str, &str); 4] = [
    (
        "var/lib/dpkg/",
        "dpkg's database records the install and the purge",
    ),
    ("var/log/dpkg.log", "dpkg's log"),
    (
        "var/cache/man/",
        "man-db's trigger re-indexes the man pages",
    ),
    (
        "var/cache/debconf/",
        "debconf keeps a backup of its database on every run",
    ),
];
/// The raptor-tunnel user and group stay after a purge, as Debian does with system users (files
/// the user owns may outlive the package): the account databases, their backups and their lock
/// file (lckpwdf(3), which systemd-sysusers takes) change.
const ACCOUNT_FILES: [&str; 9] = [
    "etc/.pwd.lock",
    "etc/passwd",
    "etc/group",
    "etc/shadow",
    "etc/gshadow",
    "etc/passwd-",
    "etc/group-",
    "etc/shadow-",
    "etc/gshadow-",
];

#[test]
fn the_package_installs_runs_and_purges_cleanly_on_debian_12() {
    let deb = package();
    let root = debian_root();
    let sandbox = Sandbox::boot_root("pkg", &root);
    let pristine = listing(&sandbox);
    let upper_before = written(&sandbox);

    let inside_deb = "/tmp/xray-warden.deb";
    let in_root = format!("/proc/{}/root{inside_deb}", sandbox.systemd_pid());
    fs::copy(deb, &in_root).unwrap_or_else(|e| panic!("copy the .deb into the root: {e}"));
    run(&sandbox, &["dpkg", "-i", inside_deb]);

    service_is_enabled_notify_and_ready(&sandbox);
    conffiles_are_registered(&sandbox);
    user_and_directories_exist(&sandbox);
    docs_and_completions_work(&sandbox);
    shared_files_are_installed(&sandbox);

    run(&sandbox, &["dpkg", "--purge", "xray-warden"]);
    let gone = sandbox.systemctl_status(&["cat", "xray-warden.service"]);
    assert!(!gone.status.success(), "the unit outlived the purge");
    let left = diff(&pristine, &listing(&sandbox));
    let unexplained: Vec<_> = left.iter().filter(|l| !allowed(l)).collect();
    assert!(
        unexplained.is_empty(),
        "purge left these behind:\n{unexplained:#?}"
    );
    let rewritten: Vec<_> = written(&sandbox)
        .into_iter()
        .filter(|p| !upper_before.contains(p) && !allowed(p))
        .collect();
    assert!(
        rewritten.is_empty(),
        "install + purge changed these files:\n{rewritten:#?}"
    );
    let user = run(&sandbox, &["getent", "passwd", "raptor-tunnel"]);
    assert!(user.contains("raptor-tunnel"), "{user}");
    let accounts = left
        .iter()
        .filter(|l| ACCOUNT_FILES.iter().any(|a| l.contains(a)));
    println!("left after purge: {} allowed differences", left.len());
    println!("  account files: {:?}", accounts.collect::<Vec<_>>());
    for (prefix, why) in PURGE_ALLOWED {
        let n = left
            .iter()
            .filter(|l| allowed(l) && l.contains(prefix))
            .count();
        println!("  {n} under {prefix} ({why})");
    }
}

#[test]
fn lintian_finds_nothing_unexplained() {
    let deb = package();
    // Overrides ship in the package (usr/share/lintian/overrides/xray-warden), each with why.
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning,info", "--display-info"])
        .arg(deb)
        .output()
        .unwrap_or_else(|e| panic!("cannot run lintian (scripts/install-deps.sh): {e}"));
    let report = String::from_utf8_lossy(&out.stdout);
    println!("lintian: {}", report.trim());
    assert!(
        out.status.success(),
        "lintian: {report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the .deb once per test process (`cargo deb`: a release build, reused while nothing
/// changed) and returns its path.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let started = Instant::now();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .args(["deb", "--locked"])
            .current_dir(MANIFEST_DIR)
            .output()
            .expect("cannot run cargo");
        assert!(
            out.status.success(),
            "cargo deb failed (is cargo-deb installed? scripts/install-deps.sh):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(path.is_file(), "cargo deb named no .deb: {stdout}");
        println!("built {} in {:?}", path.display(), started.elapsed());
        path
    })
}

/// The cached pristine Debian 12 root (scripts/debian-root.sh bootstraps it on the first run).
fn debian_root() -> PathBuf {
    let script = Path::new(MANIFEST_DIR).join("scripts/debian-root.sh");
    let out = Command::new(&script)
        .output()
        .expect("cannot run debian-root.sh");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs ARGS in the root; panics with its output unless it succeeds. Returns stdout.
fn run(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = run_status(sandbox, args);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_status(sandbox: &Sandbox, args: &[&str]) -> Output {
    let mut cmd = sandbox.command(args[0]);
    cmd.args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"))
}

/// Enabled and started by the install; Type=notify, so once `systemctl start` returns the
/// daemon has sent READY=1, which it does only when /ready answers 200.
fn service_is_enabled_notify_and_ready(sandbox: &Sandbox) {
    let enabled = run(sandbox, &["systemctl", "is-enabled", "xray-warden.service"]);
    assert_eq!(enabled.trim(), "enabled");
    let shown = sandbox.show("xray-warden.service", &["ActiveState", "Type", "ExecStart"]);
    assert_eq!(shown["ActiveState"], "active", "{}", journal(sandbox));
    assert_eq!(shown["Type"], "notify");
    assert!(
        shown["ExecStart"].contains("path=/usr/bin/xray-warden "),
        "{shown:?}"
    );
    sandbox.systemctl(&["stop", "xray-warden.service"]);
    assert_eq!(ready_status(sandbox), "000", "still serving after the stop");
    sandbox.systemctl(&["start", "xray-warden.service"]);
    assert_eq!(ready_status(sandbox), "200", "{}", journal(sandbox));
    let shown = sandbox.show("xray-warden.service", &["ActiveState", "StatusText"]);
    assert_eq!(shown["ActiveState"], "active");
    assert_eq!(shown["StatusText"], "0 tunnels: 0 active, 0 failed");
}

/// The HTTP status of /ready ("000": no answer), asked by the host's curl in the sandbox's
/// network namespace, once.
fn ready_status(sandbox: &Sandbox) -> String {
    let pid = sandbox.systemd_pid().to_string();
    let out = Command::new("nsenter")
        .args(["-t", &pid, "-n", "--", "curl", "-s", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--max-time", "5", READY_URL])
        .output()
        .expect("cannot run nsenter curl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn conffiles_are_registered(sandbox: &Sandbox) {
    let conffiles = run(
        sandbox,
        &["dpkg-query", "-W", "-f=${Conffiles}", "xray-warden"],
    );
    for file in [
        "/etc/xray-warden/config.toml",
        "/etc/logrotate.d/xray-warden",
    ] {
        assert!(
            conffiles.lines().any(|l| l.trim_start().starts_with(file)),
            "{file} is not a conffile: {conffiles}"
        );
    }
    let listed = sandbox
        .read_file("/var/lib/dpkg/info/xray-warden.conffiles")
        .unwrap();
    assert!(listed.lines().any(|l| l == "/etc/xray-warden/config.toml"));
}

fn user_and_directories_exist(sandbox: &Sandbox) {
    let entry = run(sandbox, &["getent", "passwd", "raptor-tunnel"]);
    let fields: Vec<&str> = entry.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "not a system user: {entry}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{entry}");
    let group = run(sandbox, &["getent", "group", "raptor-tunnel"]);
    let gid: u32 = group.trim().split(':').nth(2).unwrap().parse().unwrap();
    let expected = [
        ("/etc/raptor-tunnel", 0, gid, 0o750),
        ("/var/log/raptor-tunnel", 0, 0, 0o750),
        ("/var/lib/xray-warden", 0, 0, 0o700),
        ("/var/log/xray-warden", 0, 0, 0o750),
        ("/etc/xray-warden/config.toml", 0, 0, 0o644),
    ];
    for (path, uid, gid, mode) in expected {
        let meta = fs::metadata(sandbox_path(sandbox, path)).unwrap();
        let seen = (meta.uid(), meta.gid(), meta.mode() & 0o7777);
        assert_eq!(seen, (uid, gid, mode), "{path}: (uid, gid, mode)");
    }
}

fn docs_and_completions_work(sandbox: &Sandbox) {
    let help = run(sandbox, &["xray-warden", "--help"]);
    assert!(help.contains("Usage: xray-warden"), "{help}");
    let man = run(sandbox, &["man", "-P", "cat", "xray-warden"]);
    assert!(man.contains("xray-warden"), "{man}");
    let run_page = run(sandbox, &["man", "-P", "cat", "xray-warden-run"]);
    assert!(run_page.contains("--log-format"), "{run_page}");
    for file in [
        "/usr/share/bash-completion/completions/xray-warden",
        "/usr/share/zsh/vendor-completions/_xray-warden",
        "/usr/share/fish/vendor_completions.d/xray-warden.fish",
    ] {
        let text = sandbox
            .read_file(file)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains("tunnels"), "{file} completes no subcommand");
    }
    let bash =
        "source /usr/share/bash-completion/completions/xray-warden && complete -p xray-warden";
    run(sandbox, &["bash", "-c", bash]);
    // The logrotate file parses, and logrotate accepts the directories' owners and modes.
    run(
        sandbox,
        &["logrotate", "--debug", "/etc/logrotate.d/xray-warden"],
    );
}

/// Every alert rule file and dashboard of the checkout (with their READMEs) is under
/// /usr/share/xray-warden.
fn shared_files_are_installed(sandbox: &Sandbox) {
    let mut expected = Vec::new();
    for dir in ["alerts", "dashboards"] {
        let entries = fs::read_dir(Path::new(MANIFEST_DIR).join(dir)).unwrap();
        for entry in entries.map(Result::unwrap).filter(|e| e.path().is_file()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            // dashboards/.lint is the linter's exclusions file, of no use on a node.
            if !name.starts_with('.') {
                expected.push(format!("{dir}/{name}"));
            }
        }
    }
    assert!(expected.iter().any(|f| f.ends_with(".rules.yml")));
    assert!(
        expected
            .iter()
            .any(|f| f.starts_with("dashboards/") && f.ends_with(".json"))
    );
    for file in expected {
        let path = format!("/usr/share/xray-warden/{file}");
        assert!(sandbox_path(sandbox, &path).is_file(), "{path} is missing");
    }
}

/// PATH inside the sandbox's root, seen from the host.
fn sandbox_path(sandbox: &Sandbox, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root{path}", sandbox.systemd_pid()))
}

/// Every file of the root (its mount points aside): path -> type, mode and owner.
fn listing(sandbox: &Sandbox) -> BTreeMap<String, String> {
    let top = sandbox_path(sandbox, "/");
    let mut files = BTreeMap::new();
    let mut pending = vec![top.clone()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            let rel = path
                .strip_prefix(&top)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if MOUNTED.contains(&rel.as_str()) {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path);
            }
            let shape = format!("{:o} {}:{}", meta.mode(), meta.uid(), meta.gid());
            files.insert(rel, shape);
        }
    }
    files
}

/// What the sandbox wrote to the root, files only (a directory is copied up whenever anything
/// below it changes): the overlay's upper layer, whiteouts (deletions) included.
fn written(sandbox: &Sandbox) -> Vec<String> {
    let top = sandbox.upper_dir();
    let mut files = Vec::new();
    let mut pending = vec![top.clone()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
                continue;
            }
            let rel = entry.path().strip_prefix(&top).unwrap().to_owned();
            let whiteout = if kind.is_char_device() {
                " (deleted)"
            } else {
                ""
            };
            files.push(format!("{}{whiteout}", rel.display()));
        }
    }
    files.sort();
    files
}

/// "+ path shape", "- path shape" for what appeared, vanished or changed.
fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let gone = before
        .iter()
        .filter(|(p, s)| after.get(*p) != Some(s))
        .map(|(p, s)| format!("- {p} {s}"));
    let new = after
        .iter()
        .filter(|(p, s)| before.get(*p) != Some(s))
        .map(|(p, s)| format!("+ {p} {s}"));
    gone.chain(new).collect()
}

/// Whether a line of [`diff`] or [`written`] is in [`PURGE_ALLOWED`] or [`ACCOUNT_FILES`].
fn allowed(line: &str) -> bool {
    let path = line.trim_start_matches(['+', '-', ' ']);
    let path = path.split(' ').next().unwrap_or_default();
    ACCOUNT_FILES.contains(&path)
        || PURGE_ALLOWED
            .iter()
            .any(|(prefix, _)| path.starts_with(prefix))
}

/// The unit's journal, for a failure message.
fn journal(sandbox: &Sandbox) -> String {
    let out = run_status(
        sandbox,
        &["journalctl", "-u", "xray-warden.service", "--no-pager"],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_allow_list_is_narrow() {
    assert!(allowed("+ var/lib/dpkg/status 100644 0:0"));
    assert!(allowed("etc/shadow-"));
    assert!(!allowed("+ etc/xray-warden 40755 0:0"));
    assert!(!allowed("+ var/lib/xray-warden 40700 0:0"));
    assert!(!allowed("usr/bin/xray-warden"));
    assert!(!allowed("etc/passwdx"));
}
