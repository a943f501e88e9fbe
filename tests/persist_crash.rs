//! `tunnelcfg::persist_clients` never leaves a half-written config: a writer killed with SIGKILL
//! at a random instant leaves the file with exactly the old users or exactly the new ones.
//!
//! The test re-executes its own binary, filtered to `writer_child` and told the file by an
//! environment variable, as a child that persists two user sets A and B alternately as fast as
//! it can. The parent waits until the child has replaced the file at least once (so the kill
//! lands inside the write loop), sleeps 0-3 ms, kills it with SIGKILL by PID, and checks the
//! file. A kill between creating the temp file and renaming it leaves that temp file behind: it
//! must be a temp-named file (`.{name}.warden-{pid}-{n}.tmp`), at most one, and the next
//! `persist_clients` (the next child's first write) removes it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xray_warden::domain::{Credential, Flavour, User};
use xray_warden::tunnelcfg::{self, persist_clients};

const CHILD_ENV: &str = "XRAY_WARDEN_PERSIST_CRASH_FILE";
const ROUNDS: usize = 200;
const TAG: &str = "reality";

fn user(n: u32) -> User {
    User {
        email: format!("user{n}@example.com"),
        credential: Credential::Id(format!("00000000-0000-4000-8000-{n:012x}")),
        flow: if n.is_multiple_of(2) {
            "xtls-rprx-vision".into()
        } else {
            String::new()
        },
        level: n % 3,
    }
}

/// Two sets that differ in size, members and fields, so a mix of them is never equal to either.
fn set_a() -> Vec<User> {
    (0..40).map(user).collect()
}

fn set_b() -> Vec<User> {
    (20..45).map(user).collect()
}

fn clients(users: Vec<User>) -> BTreeMap<String, Vec<User>> {
    BTreeMap::from([(TAG.to_owned(), users)])
}

/// The child: runs only when re-executed by the parent test, and loops until killed.
#[test]
fn writer_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let (a, b) = (clients(set_a()), clients(set_b()));
    loop {
        for set in [&a, &b] {
            persist_clients(Path::new(&path), set, Flavour::Xray).expect("persist in the child");
        }
    }
}

/// Kills the child if the parent panics, so no writer outlives the test.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_writer(path: &Path) -> Writer {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Writer(child)
}

/// Changes whenever the file is replaced or written.
fn version(path: &Path) -> (u64, i64, i64) {
    let meta = fs::metadata(path).unwrap();
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

fn is_temp_of(name: &str, file_name: &str) -> bool {
    let Some(rest) = name.strip_prefix(&format!(".{file_name}.warden-")) else {
        return false;
    };
    let Some(ids) = rest.strip_suffix(".tmp") else {
        return false;
    };
    let mut parts = ids.split('-');
    let numeric =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next()) && parts.next().is_none()
}

/// The names in `dir` other than `file_name`, which must all be temp files of it.
fn leftovers(dir: &Path, file_name: &str) -> Vec<String> {
    let names = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap());
    let others: Vec<String> = names.filter(|n| n != file_name).collect();
    for name in &others {
        assert!(
            is_temp_of(name, file_name),
            "a stray file that is not a temp file: {name}"
        );
    }
    others
}

fn scratch() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("persist_crash-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xray-crash.json");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tunnelcfg/xray-api-listen.json");
    fs::copy(fixture, &path).unwrap();
    (dir, path)
}

#[test]
fn sigkill_during_persist_leaves_exactly_the_old_or_the_new_users() {
    assert!(
        std::env::var_os(CHILD_ENV).is_none(),
        "{CHILD_ENV} must not be set for the parent"
    );
    let started = Instant::now();
    let (dir, path) = scratch();
    persist_clients(&path, &clients(set_a()), Flavour::Xray).unwrap();
    let (mut a, mut b) = (set_a(), set_b());
    a.sort();
    b.sort();
    let (mut seen_a, mut seen_b, mut temps_left) = (0, 0, 0);
    for round in 0..ROUNDS {
        let before = version(&path);
        let mut writer = spawn_writer(&path);
        let deadline = Instant::now() + Duration::from_secs(5);
        while version(&path) == before {
            assert!(
                Instant::now() < deadline,
                "round {round}: the child never wrote"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rand::random::<u64>() % 3000));
        writer.0.kill().unwrap(); // SIGKILL, by PID
        let status = writer.0.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the child ended on its own: {status}"
        );

        let config = tunnelcfg::read(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let mut got = config
            .inbounds
            .iter()
            .find(|ib| ib.tag == TAG)
            .unwrap()
            .clients
            .clone();
        got.sort(); // existing clients keep their place, new ones are appended: compare as sets
        match got {
            g if g == a => seen_a += 1,
            g if g == b => seen_b += 1,
            other => panic!("round {round}: clients are neither A nor B: {other:#?}"),
        }
        let left = leftovers(&dir, "xray-crash.json");
        assert!(
            left.len() <= 1,
            "round {round}: stale temp files pile up: {left:?}"
        );
        temps_left += left.len();
    }
    persist_clients(&path, &clients(set_b()), Flavour::Xray).unwrap();
    assert_eq!(
        leftovers(&dir, "xray-crash.json"),
        Vec::<String>::new(),
        "the next persist cleans up"
    );
    eprintln!(
        "{ROUNDS} kills: {seen_a} left A, {seen_b} left B, {temps_left} left a temp file, {:?}",
        started.elapsed()
    );
    assert!(
        seen_a > 0 && seen_b > 0,
        "the kills did not land across the write loop"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    fs::remove_dir_all(&dir).unwrap();
}
