//! The real binary's log lines as journald, a pipe and a log shipper see them: no colour escapes
//! unless stderr is a terminal, a `<N>` priority prefix and no timestamp of its own when systemd's
//! `JOURNAL_STREAM` names stderr, one JSON object per line with `--log-format json`.

use std::io::{BufRead, BufReader, PipeReader};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_xray-warden");

/// A daemon on the host (no bus to reach) whose stderr is a pipe of ours; killed by PID on drop.
struct Daemon {
    child: Child,
    lines: std::io::Lines<BufReader<PipeReader>>,
}

impl Daemon {
    /// `journal`: what to put in JOURNAL_STREAM, given the pipe's own `dev:ino`.
    fn start(name: &str, journal: impl Fn(&str) -> Option<String>, args: &[&str]) -> Daemon {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("logging");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join(format!("{name}.toml"));
        let bus = dir.join(format!("{name}-no-bus"));
        std::fs::write(
            &config,
            format!("[systemd]\nbus_address = \"unix:path={}\"\n", bus.display()),
        )
        .unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let st = rustix::fs::fstat(writer.as_fd()).unwrap();
        let stream = format!("{}:{}", st.st_dev, st.st_ino);
        let mut command = Command::new(BIN);
        command
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .args(args)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .env_remove("XRAY_WARDEN_LOG_FORMAT")
            .stderr(writer);
        if let Some(value) = journal(&stream) {
            command.env("JOURNAL_STREAM", value);
        }
        let child = command.spawn().unwrap();
        // Our copy of the write end went into the Command, dropped with it.
        drop(command);
        let lines = BufReader::new(reader).lines();
        Daemon { child, lines }
    }

    /// The first `n` lines it logs.
    fn first_lines(&mut self, n: usize) -> Vec<String> {
        let lines: Vec<String> = self.lines.by_ref().map_while(Result::ok).take(n).collect();
        assert_eq!(lines.len(), n, "the daemon logged {lines:?}");
        lines
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn no_escapes(lines: &[String]) {
    for line in lines {
        assert!(!line.contains('\x1b'), "colour escape in {line:?}");
    }
}

/// An RFC 3339 timestamp at the start, as tracing writes it: `2026-12-01T02:05:32.169069Z`.
fn starts_with_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':'
}

/// Lines up to and including the first that says the bus is unreachable (the daemon's first
/// warning: its bus address leads nowhere, and it retries every 200 ms), and one before it that
/// says where it listens (info). Which of the two comes first is up to the scheduler.
fn until_listening_and_warned(daemon: &mut Daemon) -> Vec<String> {
    let mut lines = Vec::new();
    let seen = |lines: &[String], text: &str| lines.iter().any(|l| l.contains(text));
    while !(seen(&lines, LISTENING) && seen(&lines, RECONNECTING)) {
        assert!(
            lines.len() < 50,
            "no listening and reconnect lines in {lines:?}"
        );
        lines.extend(daemon.first_lines(1));
    }
    lines
}

const LISTENING: &str = "listening on http://127.0.0.1:";
const RECONNECTING: &str = "systemd session failed; reconnecting";

#[test]
fn under_journald_lines_carry_a_priority_and_no_timestamp() {
    let mut daemon = Daemon::start("journal", |own| Some(own.to_owned()), &[]);
    let lines = until_listening_and_warned(&mut daemon);
    no_escapes(&lines);
    for line in &lines {
        let prefixed = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find(|p| line.starts_with(**p));
        assert!(prefixed.is_some(), "no priority prefix: {line:?}");
        assert!(
            !starts_with_timestamp(&line[3..]),
            "own timestamp: {line:?}"
        );
    }
    let priority_of = |text: &str| {
        let line = lines.iter().find(|l| l.contains(text)).unwrap();
        line[..3].to_owned()
    };
    assert_eq!(priority_of(LISTENING), "<6>", "info: {lines:?}");
    assert_eq!(priority_of(RECONNECTING), "<4>", "warning: {lines:?}");
}

#[test]
fn a_pipe_gets_plain_timestamped_lines_even_with_an_inherited_journal_stream() {
    // A JOURNAL_STREAM that names another stream: inherited, stderr redirected elsewhere.
    let mut daemon = Daemon::start("pipe", |_| Some("1:2".to_owned()), &[]);
    let lines = until_listening_and_warned(&mut daemon);
    no_escapes(&lines);
    for line in &lines {
        assert!(starts_with_timestamp(line), "no timestamp: {line:?}");
        assert!(
            line.contains(" INFO ") || line.contains(" WARN "),
            "no level: {line:?}"
        );
    }
}

#[test]
fn json_format_is_one_object_per_line() {
    let mut daemon = Daemon::start(
        "json",
        |own| Some(own.to_owned()),
        &["--log-format", "json"],
    );
    let lines = until_listening_and_warned(&mut daemon);
    no_escapes(&lines);
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(
            value["level"] == "INFO" || value["level"] == "WARN",
            "{line}"
        );
        assert!(value["fields"]["message"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
    }
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = Command::new(BIN)
        .args(["run", "--check", "--log-format", "xml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("xml") && stderr.contains("json"),
        "{stderr}"
    );
}
