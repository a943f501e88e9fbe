//! Proof tier for the HTTP server's bounds: the REAL warden in the systemd sandbox, with the
//! open-file limit a unit gets when it sets no LimitNOFILE (1,024), is flooded with 2,000 idle
//! connections and still answers `/live` within 1 s and creates a REAL V2Ray tunnel through
//! `PUT`; then a body trickled a byte at a time is cut off at `api.body_timeout` and changes
//! nothing. Needs root: `cargo test --test http_limits_proof`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use support::cores::free_port;
use support::node::{Node, TOKEN};
use support::sandbox::Sandbox;
use support::warden::{Warden, http_call, http_get};

const FLOOD: usize = 2_000;
/// What `LimitNOFILE=1024` gives a service, soft and hard: the warden raises its soft limit
/// to the hard one at start, so the hard limit is what it must fit in. Set with `prlimit`
/// around the warden alone (lowering a hard limit cannot be undone without CAP_SYS_RESOURCE).
const WARDEN_NOFILE: u64 = 1_024;

/// Sets this process's soft open-file limit; the hard limit stays.
fn set_nofile(soft: u64) {
    let hard = getrlimit(Resource::Nofile).maximum;
    let soft = hard.map_or(soft, |hard| soft.min(hard));
    let limit = Rlimit {
        current: Some(soft),
        maximum: hard,
    };
    setrlimit(Resource::Nofile, limit).expect("setrlimit NOFILE");
}

fn tunnel_json(port: u16) -> String {
    format!(
        r#"{{"log": {{"loglevel": "warning"}},
 "inbounds": [{{"tag": "in", "listen": "127.0.0.1", "port": {port}, "protocol": "vless",
   "settings": {{"clients": [{{"id": "0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f",
     "email": "alice@example.com"}}], "decryption": "none"}}}}],
 "outbounds": [{{"protocol": "freedom"}}]}}"#
    )
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn idle_connections_cannot_lock_out_live_or_a_put_and_slow_bodies_are_cut() {
    let sandbox = Sandbox::boot("http-limits");
    // The warden runs under its own limit; this process then takes room for its 2,000 clients.
    let nofile = format!("--nofile={WARDEN_NOFILE}:{WARDEN_NOFILE}");
    let wrapper = ["/usr/bin/prlimit", nofile.as_str(), "--"];
    let node = Node::start_under(
        sandbox,
        "/usr/bin/v2ray",
        "body_timeout = \"1s\"\n",
        &wrapper,
    );
    set_nofile(4 * FLOOD as u64);
    let Node {
        warden,
        dir,
        sandbox,
    } = &node;
    let addr = warden.addr;

    // 2,000 clients that connect and send nothing, opened within 4 s. The header timeout (5 s)
    // would close each one in time, but until then, uncapped, they hold every descriptor the
    // warden has, and later clients wait in the listen backlog. (A connect may need one SYN
    // retry, 1 s, when the backlog overflows for a moment on a loaded machine.)
    let flood_started = Instant::now();
    let mut idle = Vec::with_capacity(FLOOD);
    let mut refused = 0;
    while idle.len() < FLOOD && flood_started.elapsed() < Duration::from_secs(4) {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(1200)) {
            Ok(stream) => idle.push(stream),
            Err(_) => refused += 1,
        }
    }
    let flood_took = flood_started.elapsed();

    // /live on a fresh connection, while the flood is still open.
    let asked = Instant::now();
    let live = ask_live(addr, Duration::from_secs(1));
    let took = asked.elapsed();
    let flood = format!(
        "{} of {FLOOD} connected in {flood_took:?}, {refused} connects timed out",
        idle.len()
    );
    assert_eq!(
        live.as_ref().map(|(status, _)| *status).ok(),
        Some(200),
        "/live: {live:?} after {took:?} ({flood})\n{}",
        warden.log()
    );
    assert!(
        took < Duration::from_secs(1),
        "/live took {took:?} ({flood})"
    );
    assert_eq!(idle.len(), FLOOD, "{flood}");
    eprintln!("/live answered in {took:?}; {flood}");
    let fds = open_fds(warden.pid());
    assert!(
        fds < WARDEN_NOFILE as usize,
        "the warden holds {fds} descriptors"
    );

    // A real create still works, the flood still open.
    let port = free_port();
    let (status, body) = http_call(
        addr,
        "PUT",
        "/api/v1/tunnels/edge",
        Some(TOKEN),
        &tunnel_json(port),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}\n{}", warden.log());
    assert_eq!(
        sandbox.show("xray-tunnel-edge.service", &["ActiveState"])["ActiveState"],
        "active"
    );
    let log = warden.log();
    assert!(
        log.contains("lowered_to=896"),
        "the cap was not fitted to the open-file limit:\n{log}"
    );
    assert!(
        !log.contains("accept failed"),
        "ran out of descriptors:\n{log}"
    );
    drop(idle);

    slow_body_is_cut_off(warden);
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(audit.contains("\"target\":\"edge\""), "{audit}");
    assert!(!audit.contains("\"target\":\"slow\""), "{audit}");
    let Node {
        warden, sandbox, ..
    } = node;
    let status = warden.stop();
    drop(sandbox);
    assert!(status.success(), "{status:?}");
}

/// GET /live with a read deadline of `wait`.
fn ask_live(addr: SocketAddr, wait: Duration) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, wait)?;
    stream.set_read_timeout(Some(wait))?;
    stream.write_all(b"GET /live HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, answer))
}

/// A PUT whose body trickles in a byte every 200 ms is answered 408 `body_timeout` at the 1 s
/// deadline, and nothing is created or audited.
fn slow_body_is_cut_off(warden: &Warden) {
    let body = tunnel_json(free_port());
    let mut stream = TcpStream::connect(warden.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "PUT /api/v1/tunnels/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut reader = stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for byte in body.as_bytes() {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut answer = Vec::new();
    let _ = reader.read_to_end(&mut answer);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("body_timeout"),
        "after {took:?}: {answer:?}"
    );
    assert!(took < Duration::from_secs(5), "cut off only after {took:?}");
    let _ = reader.shutdown(std::net::Shutdown::Both);
    trickle.join().unwrap();
    let (status, _) =
        http_call(warden.addr, "GET", "/api/v1/tunnels/slow", Some(TOKEN), "").unwrap();
    assert_eq!(status, 404, "a tunnel was created from a cut-off body");
    assert_eq!(http_get(warden.addr, "/live").unwrap().0, 200);
}
