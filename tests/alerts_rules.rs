//! The shipped alerting: alerts/*.rules.yml, their promtool unit tests, the runbooks and the
//! Prometheus and Alertmanager examples in deploy/, checked with Debian's own tools (promtool,
//! amtool, and a real Prometheus that loads the rules and reports them as JSON, so no YAML parser
//! is needed here). A missing tool fails the test: scripts/install-deps.sh installs them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where every alert's runbook_url points: this prefix, the alert name, ".md".
const RUNBOOK_BASE: &str = "https://github.com/xray-warden/xray-warden/blob/main/docs/runbooks/";
/// The only alert that makes the wardens act, and the action it asks for.
const ACTION_ALERT: &str = "XrayTunnelOrphaned";
const ACTION: &str = "cleanup_orphan";
/// The shortest range selector allowed in the rules (alerts/README.md, "Fast variant").
const MIN_RANGE_SECONDS: u64 = 300;
/// The factor the fast variant is checked with.
const FAST_FACTOR: u64 = 30;
/// The headings every runbook has.
const RUNBOOK_SECTIONS: [&str; 4] = [
    "## What it means",
    "## Likely causes",
    "## What to check",
    "## What to do",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("alerts_rules")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The full path of a tool on PATH; panics (never skips) when it is missing.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: run scripts/install-deps.sh \
                 (Debian packages prometheus and prometheus-alertmanager)"
            )
        })
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(tool(program))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    let all = text(&out);
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{all}",
        args.join(" "),
        out.status
    );
    all
}

/// Files of `dir` whose name ends with `suffix`, sorted, as paths relative to the repo.
fn files(dir: &str, suffix: &str) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {suffix} file in {dir}");
    found
}

fn rule_files() -> Vec<String> {
    let all = files("alerts", ".yml");
    let rules = files("alerts", ".rules.yml");
    assert_eq!(
        all, rules,
        "every rule file in alerts/ is named *.rules.yml (the Prometheus example loads that glob)"
    );
    rules
}

#[test]
fn promtool_checks_every_rule_file() {
    let files = rule_files();
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = run_ok("promtool", &args);
    assert_eq!(
        out.matches("SUCCESS").count(),
        files.len(),
        "one SUCCESS per file:\n{out}"
    );
}

#[test]
fn promtool_unit_tests_pass() {
    let files = files("alerts/tests", ".yml");
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = run_ok("promtool", &args);
    assert_eq!(
        out.matches("SUCCESS").count(),
        files.len(),
        "one SUCCESS per test file:\n{out}"
    );
}

/// The example installed as its comments say (rules in xray-warden/ beside it) loads every
/// shipped rule file.
#[test]
fn prometheus_example_config_is_valid_and_loads_the_rules() {
    let dir = install_prometheus_example("check");
    let config = dir.join("prometheus.yml");
    let out = run_ok("promtool", &["check", "config", config.to_str().unwrap()]);
    let want = format!("SUCCESS: {} rule files found", rule_files().len());
    assert!(out.contains(&want), "expected {want:?}:\n{out}");
}

#[test]
fn alertmanager_example_config_is_valid_and_routes_actions_to_the_wardens() {
    let config = "deploy/alertmanager.example.yml";
    run_ok("amtool", &["check-config", config]);
    let route = |labels: &[&str]| {
        let flag = format!("--config.file={config}");
        let mut args = vec!["config", "routes", "test", flag.as_str()];
        args.extend_from_slice(labels);
        run_ok("amtool", &args)
            .lines()
            .find(|l| !l.starts_with("Warning:") && !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    // An action alert reaches the wardens and the people; anything else only the people.
    assert_eq!(
        route(&[
            "alertname=XrayTunnelOrphaned",
            "warden_action=cleanup_orphan",
            "instance=node-a",
            "tunnel=old",
            "kind=unit_without_config",
        ]),
        "xray-warden-nodes,operators"
    );
    assert_eq!(
        route(&["alertname=XrayTunnelDown", "instance=node-a", "tunnel=t1"]),
        "operators"
    );
    assert_eq!(
        route(&[
            "alertname=XrayTunnelOrphanedManualCleanup",
            "instance=node-a"
        ]),
        "operators"
    );
    // Alertmanager 0.25 knows neither url_file nor timeout: the example must not use them.
    let body = fs::read_to_string(repo().join(config)).unwrap();
    for key in ["url_file:", "timeout:"] {
        assert!(
            !body.lines().any(|l| l.trim_start().starts_with(key)),
            "{config} uses {key}, which Alertmanager 0.25 rejects"
        );
    }
}

/// Every alert, as the real Prometheus loaded it: labels, annotations, runbooks, tests.
#[test]
fn every_alert_is_labelled_documented_and_tested() {
    let (alerts, records) = loaded_rules();
    assert!(alerts.len() >= 20, "only {} alerts loaded", alerts.len());

    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for a in &alerts {
        let name = a["name"].as_str().unwrap();
        let mut bad = |what: String| problems.push(format!("{name}: {what}"));
        if !names.insert(name.to_owned()) {
            bad("defined twice".into());
        }
        if !name.starts_with("XrayTunnel") && !name.starts_with("XrayWarden") {
            bad("not prefixed XrayTunnel/XrayWarden".into());
        }
        if a["duration"].as_f64().unwrap_or(0.0) <= 0.0 {
            bad("no `for:`".into());
        }
        let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
        let annotation = |k: &str| a["annotations"][k].as_str().unwrap_or("").to_owned();
        if !matches!(label("severity").as_str(), "critical" | "warning") {
            bad(format!("severity {:?}", label("severity")));
        }
        for key in ["summary", "description", "runbook_url"] {
            if annotation(key).trim().is_empty() {
                bad(format!("no {key} annotation"));
            }
        }
        if annotation("runbook_url") != format!("{RUNBOOK_BASE}{name}.md") {
            bad(format!("runbook_url {:?}", annotation("runbook_url")));
        }
        match (name == ACTION_ALERT, label("warden_action").as_str()) {
            (true, ACTION) | (false, "") => {}
            (true, other) => bad(format!("warden_action {other:?}, want {ACTION:?}")),
            (false, other) => bad(format!("warden_action {other:?} on a notify-only alert")),
        }
        check_runbook(name, &mut problems);
    }
    assert!(names.contains(ACTION_ALERT), "{ACTION_ALERT} is not loaded");

    // The action alert keeps the labels the warden acts on.
    let action = alerts.iter().find(|a| a["name"] == ACTION_ALERT).unwrap();
    let query = action["query"].as_str().unwrap();
    for needle in [
        "xray_tunnel_orphaned",
        "unit_without_config",
        "stray_process",
    ] {
        assert!(query.contains(needle), "{ACTION_ALERT}: {query}");
    }
    assert!(
        !query.contains(" by (") && !query.contains(" without ("),
        "{ACTION_ALERT} must keep instance, tunnel and kind: {query}"
    );

    // No runbook without an alert.
    for file in files("docs/runbooks", ".md") {
        let stem = Path::new(&file).file_stem().unwrap().to_string_lossy();
        if !names.contains(stem.as_ref()) {
            problems.push(format!("{file}: no alert of that name"));
        }
    }

    // Recording rules: level:metric:operations.
    for r in &records {
        let parts: Vec<&str> = r.split(':').collect();
        let ok = parts.len() == 3
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !ok {
            problems.push(format!("recording rule {r}: not level:metric:operations"));
        }
    }

    check_test_cases(&names, &mut problems);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

fn check_runbook(name: &str, problems: &mut Vec<String>) {
    let path = repo().join(format!("docs/runbooks/{name}.md"));
    let Ok(body) = fs::read_to_string(&path) else {
        problems.push(format!("{name}: {} is missing", path.display()));
        return;
    };
    if !body.starts_with(&format!("# {name}\n")) {
        problems.push(format!(
            "{name}: the runbook does not start with `# {name}`"
        ));
    }
    for section in RUNBOOK_SECTIONS {
        if !body.lines().any(|l| l.trim_end() == section) {
            problems.push(format!("{name}: the runbook has no `{section}`"));
        }
    }
}

/// The cases of alerts/tests/*.yml. Each `alertname:` of an alert_rule_test carries a tag:
/// `# fires` (exp_alerts with exp_labels and exp_annotations), `# clears` (the problem went
/// away, or still holds, before `for:` elapsed: no alert) or `# quiet` (under the threshold: no
/// alert). Every alert needs all three.
fn check_test_cases(alerts: &BTreeSet<String>, problems: &mut Vec<String>) {
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files("alerts/tests", ".yml") {
        let body = fs::read_to_string(repo().join(&file)).unwrap();
        let lines: Vec<&str> = body.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.trim_start().strip_prefix("alertname:") else {
                continue;
            };
            let prev = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            if !prev.is_some_and(|p| p.trim_start().starts_with("- eval_time:")) {
                continue; // not an alert_rule_test entry
            }
            let at = format!("{file}:{}", i + 1);
            let (name, tag) = match rest.split_once('#') {
                Some((n, t)) => (n.trim(), t.trim()),
                None => (rest.trim(), ""),
            };
            if !alerts.contains(name) {
                problems.push(format!("{at}: no alert named {name}"));
            }
            // The entry: up to the next entry or test group.
            let entry: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| {
                    let t = l.trim_start();
                    !t.starts_with("- eval_time:") && !t.starts_with("- interval:")
                })
                .copied()
                .collect();
            let expects_none = entry.iter().any(|l| l.trim() == "exp_alerts: []");
            let has = |key: &str| entry.iter().any(|l| l.trim_start().starts_with(key));
            match tag {
                "fires" => {
                    if expects_none
                        || !has("- exp_labels:")
                        || !has("exp_annotations:")
                        || !has("runbook_url:")
                    {
                        problems.push(format!(
                            "{at}: a `fires` case needs exp_alerts with exp_labels and exp_annotations"
                        ));
                    }
                }
                "clears" | "quiet" => {
                    if !expects_none {
                        problems.push(format!("{at}: a `{tag}` case expects `exp_alerts: []`"));
                    }
                }
                other => problems.push(format!(
                    "{at}: tag {other:?}; write `# fires`, `# clears` or `# quiet` after the name"
                )),
            }
            seen.entry(name.to_owned())
                .or_default()
                .insert(tag.to_owned());
        }
    }
    for name in alerts {
        let tags = seen.get(name).cloned().unwrap_or_default();
        for want in ["fires", "clears", "quiet"] {
            if !tags.contains(want) {
                problems.push(format!("{name}: no `{want}` case in alerts/tests"));
            }
        }
    }
}

/// Durations of `for:` and range selectors are plain (`5m`, `[10m]`), no range is shorter than
/// MIN_RANGE_SECONDS, and the rules rewritten for the fast variant still load.
#[test]
fn rules_scale_to_a_fast_variant() {
    let dir = scratch("fast");
    let mut shortest = u64::MAX;
    for file in rule_files() {
        let body = fs::read_to_string(repo().join(&file)).unwrap();
        for range in ranges(&body) {
            let secs = seconds(&range).unwrap_or_else(|| {
                panic!("{file}: range [{range}] is not a plain duration (5m, 1h)")
            });
            shortest = shortest.min(secs);
        }
        for line in body.lines() {
            if let Some(d) = line.trim_start().strip_prefix("for:") {
                assert!(
                    seconds(d.trim()).is_some(),
                    "{file}: `for:{d}` is not a plain duration"
                );
            }
            assert!(
                !line.contains(" offset "),
                "{file}: `offset` is not rewritten by the fast variant: {line}"
            );
        }
        let fast = scale(&body, FAST_FACTOR);
        let name = Path::new(&file).file_name().unwrap();
        fs::write(dir.join(name), fast).unwrap();
    }
    assert!(
        shortest >= MIN_RANGE_SECONDS,
        "a range of {shortest}s: the shortest allowed is {MIN_RANGE_SECONDS}s (alerts/README.md)"
    );
    let mut args = vec!["check".to_owned(), "rules".to_owned()];
    for file in rule_files() {
        let name = Path::new(&file).file_name().unwrap();
        args.push(dir.join(name).to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok("promtool", &args);
    // And the rewrite did something: 5m ranges became 10s.
    let tunnels = fs::read_to_string(dir.join("tunnels.rules.yml")).unwrap();
    assert!(tunnels.contains("[10s]") && !tunnels.contains("[5m]"));
}

/// The contents of every `[...]` outside comments holding no quote, comma or `=` (a range
/// selector; label matchers and regexes excluded).
fn ranges(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(start) = rest.find('[') {
            let Some(len) = rest[start..].find(']') else {
                break;
            };
            let inner = &rest[start + 1..start + len];
            if !inner.is_empty() && !inner.contains(['"', ',', '=']) {
                out.push(inner.to_owned());
            }
            rest = &rest[start + len + 1..];
        }
    }
    out
}

/// Seconds of a plain Prometheus duration with one unit (`30s`, `5m`, `1h`, `1d`, `1w`).
fn seconds(d: &str) -> Option<u64> {
    let split = d.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = d.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 604800,
        _ => return None,
    };
    Some(n * mult)
}

fn format_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The fast variant as alerts/README.md describes it: every `for:` and range selector divided by
/// `factor`, and the constants in seconds (`xray_warden:threshold_*_seconds:const`) too.
fn scale(body: &str, factor: u64) -> String {
    let shrink = |d: &str| seconds(d).map(|s| format_ms(s * 1000 / factor));
    let mut out = String::new();
    let mut seconds_constant = false;
    for line in body.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let mut new = line.to_owned();
        if let Some(d) = trimmed.strip_prefix("for:") {
            if let Some(fast) = shrink(d.trim()) {
                new = format!("{indent}for: {fast}");
            }
        } else if seconds_constant && trimmed.starts_with("expr: vector(") {
            let n: f64 = trimmed["expr: vector(".len()..]
                .trim_end_matches(')')
                .parse()
                .expect("a number in vector()");
            new = format!("{indent}expr: vector({})", n / factor as f64);
        } else {
            for range in ranges(line) {
                if let Some(fast) = shrink(&range) {
                    new = new.replace(&format!("[{range}]"), &format!("[{fast}]"));
                }
            }
        }
        seconds_constant = trimmed.starts_with("- record: xray_warden:threshold_")
            && trimmed.ends_with("_seconds:const");
        out.push_str(&new);
        out.push('\n');
    }
    out
}

/// The deploy/prometheus.example.yml installed as its comments say, in a scratch directory.
fn install_prometheus_example(name: &str) -> PathBuf {
    let dir = scratch(name);
    fs::create_dir_all(dir.join("xray-warden")).unwrap();
    for file in rule_files() {
        let from = repo().join(&file);
        fs::copy(
            &from,
            dir.join("xray-warden").join(from.file_name().unwrap()),
        )
        .unwrap();
    }
    fs::copy(
        repo().join("deploy/prometheus.example.yml"),
        dir.join("prometheus.yml"),
    )
    .unwrap();
    dir
}

/// A Prometheus of our own on loopback, killed by PID when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, config: &Path) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("prometheus.log");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port, log }
    }

    /// GET `path` until `ready` accepts the JSON answer's `data`, or panic after 60 s.
    fn get_until(&mut self, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prometheus exited ({status}):\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Some(data) = get_json(self.port, path).filter(|d| ready(d)) {
                return data;
            }
            assert!(
                Instant::now() < deadline,
                "no answer from prometheus on {path}:\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `data` of a Prometheus API answer, if it answered with success.
fn get_json(port: u16, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    let json: Value = serde_json::from_str(body).ok()?;
    (json["status"] == "success").then(|| json["data"].clone())
}

/// The example's static targets, moved to closed loopback ports so that nothing leaves the host.
fn loopback_targets(config: &str) -> String {
    let mut port = 1;
    config
        .lines()
        .map(|line| match line.split_once("- targets: [") {
            Some((indent, _)) => {
                port += 1;
                format!("{indent}- targets: [\"127.0.0.1:{port}\"]")
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The alerting rules (JSON as Prometheus' /api/v1/rules reports them) and the names of the
/// recording rules, loaded by a real Prometheus from the installed example config. Also checks
/// that the example's relabelling makes `instance` the node name.
fn loaded_rules() -> (Vec<Value>, Vec<String>) {
    let dir = install_prometheus_example("loaded");
    let config = dir.join("prometheus.yml");
    let body = fs::read_to_string(&config).unwrap();
    fs::write(&config, loopback_targets(&body)).unwrap();
    let mut prometheus = Prometheus::start(&dir, &config);

    let files = rule_files().len();
    let data = prometheus.get_until("/api/v1/rules", |d| {
        let groups = d["groups"].as_array().map_or(0, Vec::len);
        groups >= files
    });
    let mut alerts = Vec::new();
    let mut records = Vec::new();
    for group in data["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            match rule["type"].as_str() {
                Some("alerting") => alerts.push(rule.clone()),
                Some("recording") => records.push(rule["name"].as_str().unwrap().to_owned()),
                other => panic!("unknown rule type {other:?}"),
            }
        }
    }

    let targets = prometheus.get_until("/api/v1/targets", |d| {
        d["activeTargets"].as_array().is_some_and(|t| !t.is_empty())
    });
    let mut instances: Vec<String> = targets["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["labels"]["job"] == "xray-warden")
        .map(|t| {
            assert!(t["labels"]["node"].is_null(), "node label kept: {t}");
            t["labels"]["instance"].as_str().unwrap().to_owned()
        })
        .collect();
    instances.sort();
    assert_eq!(instances, ["node-a", "node-b", "node-c"]);
    (alerts, records)
}
