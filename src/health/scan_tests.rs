use std::path::Path;

use super::*;

fn fixture() -> ProcScan {
    ProcScan::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/health/proc"))
}

#[test]
fn parses_listening_sockets_of_both_tables() {
    let mut listeners = fixture().listeners().unwrap();
    listeners.sort_by_key(|l| l.inode);
    let pairs: Vec<(u16, u64)> = listeners.iter().map(|l| (l.port, l.inode)).collect();
    // 1005 is an established connection on 443; the tcp6 socket with inode 0 is left out.
    assert_eq!(
        pairs,
        [
            (443, 1001),
            (8443, 1002),
            (8080, 1003),
            (443, 1004),
            (80, 1006)
        ]
    );
}

#[test]
fn net_tcp_parsing_skips_what_it_cannot_read() {
    let text = "header\n 0: 0100007F:XYZ 00000000:0000 0A 0:0 0:0 0 0 0 7\n garbage\n\n";
    assert!(parse_net_tcp(text).is_empty());
    let ok = "header\n 0: 0100007F:0016 00000000:0000 0A 0:0 0:0 0 0 0 7 1\n";
    assert_eq!(parse_net_tcp(ok), [Listener::new(22, 7)]);
}

#[test]
fn a_missing_tcp6_table_is_no_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/health-no-tcp6");
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::fs::write(dir.join("net/tcp"), "header\n").unwrap();
    assert!(ProcScan::new(&dir).listeners().unwrap().is_empty());
    assert!(ProcScan::new(dir.join("nowhere")).listeners().is_err());
}

#[test]
fn reads_socket_inodes_from_fd_links() {
    let scan = fixture();
    assert_eq!(scan.socket_inodes(100), HashSet::from([1001, 1004]));
    assert!(scan.socket_inodes(400).is_empty(), "no fd directory");
    assert!(scan.socket_inodes(4242).is_empty(), "no such process");
    assert_eq!(parse_socket_link("socket:[77]"), Some(77));
    assert_eq!(parse_socket_link("pipe:[77]"), None);
    assert_eq!(parse_socket_link("/dev/null"), None);
}

#[test]
fn finds_the_owners_of_foreign_sockets() {
    let owners = fixture().owners_of(&HashSet::from([1002, 1003, 9999]));
    assert_eq!(
        owners,
        HashMap::from([
            (
                1002,
                Owner {
                    pid: 200,
                    comm: "xray".into()
                }
            ),
            (
                1003,
                Owner {
                    pid: 300,
                    comm: "nginx".into()
                }
            ),
        ])
    );
    assert!(fixture().owners_of(&HashSet::new()).is_empty());
}

const NO_BINARY: &str = "/nonexistent/core";

#[test]
fn cores_are_read_with_their_command_line_and_cgroup() {
    let cores = fixture().cores(999, Path::new(NO_BINARY));
    let seen: Vec<(u32, bool)> = cores.iter().map(|c| (c.key.pid, c.in_unit)).collect();
    // 100 and 500 are in tunnel units (v2 and v1 layouts), 200 in a login session; 300 and 600
    // are no cores, 400 is our own child, 700 a zombie.
    assert_eq!(seen, [(100, true), (200, true), (500, true)]);
    assert_eq!(
        cores[1],
        CoreProcess {
            key: ProcessKey {
                pid: 200,
                start_ticks: 6000
            },
            comm: "xray".into(),
            argv: vec![
                "/usr/local/bin/xray".into(),
                "run".into(),
                "-c".into(),
                "/root/x.json".into()
            ],
            in_unit: true,
        }
    );
    // Seen from another parent, the config test of 400 is a core too (the domain's rule
    // then leaves it alone for its -test flag).
    let pids: Vec<u32> = fixture()
        .cores(2, Path::new(NO_BINARY))
        .iter()
        .map(|c| c.key.pid)
        .collect();
    assert_eq!(pids, [100, 200, 400, 500]);
}

#[test]
fn one_process_can_be_rechecked() {
    let scan = fixture();
    let core = |pid| scan.core(pid, 999, Path::new(NO_BINARY));
    assert_eq!(core(200).map(|c| c.key.start_ticks), Some(6000));
    assert!(core(300).is_none(), "not a core");
    assert!(core(4242).is_none(), "gone");
    assert!(core(700).is_none(), "a zombie has exited");
    assert!(scan.alive(200, 6000));
    assert!(
        !scan.alive(200, 6001),
        "same pid, another start: another process"
    );
    assert!(!scan.alive(700, 9500));
    assert!(
        !scan.is_own_pid_namespace(),
        "a fixture tree is nobody's namespace"
    );
    assert!(ProcScan::new("/proc").is_own_pid_namespace());
    assert_eq!(scan.start_ticks(300), Some(7000));
    assert_eq!(scan.start_ticks(4242), None);
}

#[test]
fn command_lines_split_at_nul() {
    assert_eq!(parse_cmdline(b"a\0b c\0"), ["a", "b c"]);
    assert_eq!(parse_cmdline(b"a\0\0b\0"), ["a", "", "b"]);
    assert!(parse_cmdline(b"").is_empty());
    assert_eq!(parse_cmdline(b"x\xff\0"), ["x\u{fffd}"]);
}
