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
    assert_eq!(parse_net_tcp(ok), [Listener { port: 22, inode: 7 }]);
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

#[test]
fn strays_are_cores_outside_tunnel_units_and_not_our_children() {
    let strays = fixture().strays(999);
    assert_eq!(
        strays,
        [StrayProcess {
            key: ProcessKey {
                pid: 200,
                start_ticks: 6000
            },
            comm: "xray".into(),
            cmdline: "/usr/local/bin/xray run -c /root/x.json".into(),
        }]
    );
    // Seen from another parent, the config test of 400 is a stray too.
    let pids: Vec<u32> = fixture().strays(2).iter().map(|s| s.key.pid).collect();
    assert_eq!(pids, [200, 400]);
}

#[test]
fn one_process_can_be_rechecked() {
    let scan = fixture();
    assert_eq!(scan.stray(200, 999).map(|s| s.key.start_ticks), Some(6000));
    assert!(scan.stray(100, 999).is_none(), "in a tunnel unit");
    assert!(scan.stray(300, 999).is_none(), "not a core");
    assert!(scan.stray(4242, 999).is_none(), "gone");
    assert!(scan.stray(700, 999).is_none(), "a zombie has exited");
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
fn tunnel_cgroups_in_every_hierarchy_layout() {
    assert!(in_tunnel_unit("0::/system.slice/xray-tunnel-a.service\n"));
    assert!(in_tunnel_unit(
        "1:name=systemd:/system.slice/xray-tunnel-b.service/sub\n0::/\n"
    ));
    assert!(!in_tunnel_unit("0::/system.slice/xray-warden.service\n"));
    assert!(!in_tunnel_unit("0::/system.slice/xray-tunnel-.service\n"));
    assert!(!in_tunnel_unit("0::/user.slice/xray-tunnel-a.scope\n"));
    assert!(!in_tunnel_unit(""));
}

#[test]
fn command_lines_are_readable() {
    assert_eq!(render_cmdline(b"a\0b c\0"), "a b c");
    let long = "x".repeat(300);
    assert_eq!(render_cmdline(long.as_bytes()).len(), 203);
}
