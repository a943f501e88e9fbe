use std::path::Path;

use super::*;

fn id() -> TunnelId {
    TunnelId::new("edge-1").unwrap()
}

fn values<'a>(id: &'a TunnelId, core: &'a str) -> UnitValues<'a> {
    UnitValues {
        id,
        core_binary: Path::new(core),
        config: Path::new("/etc/raptor-tunnel/xray-edge-1.json"),
        log: Path::new("/var/log/raptor-tunnel/xray-edge-1.log"),
        user: "raptor-tunnel",
        group: "raptor-tunnel",
    }
}

fn setting<'u>(unit: &'u str, key: &str) -> Vec<&'u str> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

#[test]
fn the_built_in_template_fills_every_setting() {
    let id = id();
    let unit = render(BUILT_IN, &values(&id, "/usr/local/bin/xray")).unwrap();
    assert!(!unit.contains("{{"), "{unit}");
    assert_eq!(
        setting(&unit, "ExecStart"),
        ["/usr/local/bin/xray run -config /etc/raptor-tunnel/xray-edge-1.json"]
    );
    assert_eq!(setting(&unit, "User"), ["raptor-tunnel"]);
    assert_eq!(setting(&unit, "Group"), ["raptor-tunnel"]);
    assert_eq!(setting(&unit, "Restart"), ["always"]);
    assert_eq!(setting(&unit, "RestartSec"), ["5"]);
    assert_eq!(
        setting(&unit, "StandardOutput"),
        ["append:/var/log/raptor-tunnel/xray-edge-1.log"]
    );
    assert_eq!(setting(&unit, "StandardError"), ["inherit"]);
    assert_eq!(setting(&unit, "ReadWritePaths"), ["/var/log/raptor-tunnel"]);
    assert_eq!(
        setting(&unit, "ReadOnlyPaths"),
        ["/etc/raptor-tunnel/xray-edge-1.json"]
    );
    assert_eq!(
        setting(&unit, "Description"),
        ["Xray tunnel edge-1 (managed by xray-warden)"]
    );
    assert_eq!(
        setting(&unit, "CapabilityBoundingSet"),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(
        setting(&unit, "AmbientCapabilities"),
        ["CAP_NET_BIND_SERVICE"]
    );
}

#[test]
fn v2ray_gets_its_own_arguments() {
    let id = id();
    let unit = render(BUILT_IN, &values(&id, "/usr/bin/v2ray")).unwrap();
    assert_eq!(
        setting(&unit, "ExecStart"),
        ["/usr/bin/v2ray -config /etc/raptor-tunnel/xray-edge-1.json"]
    );
}

#[test]
fn every_placeholder_is_replaced_and_spacing_inside_braces_is_allowed() {
    let id = id();
    let template = PLACEHOLDERS
        .iter()
        .map(|p| format!("{p}=[{{{{{p}}}}}] [{{{{ {p} }}}}]"))
        .collect::<Vec<_>>()
        .join("\n");
    let unit = render(&template, &values(&id, "/usr/bin/v2ray")).unwrap();
    assert!(unit.contains("ID=[edge-1] [edge-1]"), "{unit}");
    assert!(unit.contains("LOG_DIR=[/var/log/raptor-tunnel]"), "{unit}");
    assert!(unit.contains("CORE_ARGS=[-config /etc/raptor-tunnel/xray-edge-1.json]"));
    assert!(!unit.contains("{{"), "{unit}");
}

#[test]
fn unknown_or_unclosed_placeholders_are_errors() {
    let id = id();
    let v = values(&id, "/usr/bin/xray");
    assert_eq!(
        render("ExecStart={{CORE}}", &v),
        Err(TemplateError::UnknownPlaceholder("CORE".into()))
    );
    assert_eq!(render("User={{USER", &v), Err(TemplateError::Unclosed));
    assert_eq!(
        render("no placeholders\n", &v).unwrap(),
        "no placeholders\n"
    );
}

/// Spoils one value.
type Change = fn(&mut UnitValues<'_>);

#[test]
fn values_with_newlines_or_systemd_syntax_are_refused() {
    let id = id();
    let cases: [(&str, Change); 9] = [
        ("USER", |v| v.user = "nobody\nExecStartPre=/bin/sh"),
        ("GROUP", |v| v.group = "a\rb"),
        ("USER", |v| v.user = ""),
        ("USER", |v| v.user = "a b"),
        ("GROUP", |v| v.group = "%n"),
        ("CONFIG", |v| v.config = Path::new("/etc/x\n.json")),
        ("CONFIG", |v| v.config = Path::new("/etc/my tunnels/x.json")),
        ("CORE_BINARY", |v| v.core_binary = Path::new("bin/xray")),
        ("LOG", |v| v.log = Path::new("/var/log/$HOME.log")),
    ];
    for (name, change) in cases {
        let mut v = values(&id, "/usr/bin/xray");
        change(&mut v);
        match render(BUILT_IN, &v) {
            Err(TemplateError::BadValue { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_log_file_at_the_root_is_refused() {
    let id = id();
    let mut v = values(&id, "/usr/bin/xray");
    v.log = Path::new("/xray.log");
    assert!(matches!(
        render(BUILT_IN, &v),
        Err(TemplateError::BadValue {
            name: "LOG_DIR",
            ..
        })
    ));
}
