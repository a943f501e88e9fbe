//! Proof tier for the tunnel policy and the start check, through the REAL warden's HTTP API
//! in the systemd sandbox, once per real core (Xray-core and V2Ray 4.34): a config that forwards to the warden's own
//! API or to the cloud metadata service is refused with 422 and changes nothing; an allowed
//! target passes; a config whose port is taken answers an error with the core's own complaint
//! and leaves nothing behind. Needs root: `cargo test --test tunnel_policy_proof`.

mod support;

use std::net::TcpListener;

use serde_json::Value;
use support::cores::{Core, free_port};
use support::node::Node;
use xray_warden::contract::{ActionName, ErrorBody, OutcomeView};

per_core!(
    configs_forwarding_to_the_host_or_metadata_are_refused_with_422,
    an_allowed_target_passes,
    a_core_that_cannot_bind_its_port_is_refused_and_leaves_nothing,
);

/// A VLESS server on `port` plus `extra_inbound` and `outbound` when given.
fn config(port: u16, extra_inbound: Option<&str>, outbound: Option<&str>) -> String {
    let extra = extra_inbound.map_or(String::new(), |i| format!(", {i}"));
    let outbound = outbound.unwrap_or(r#"{"protocol": "freedom"}"#);
    format!(
        r#"{{"log": {{"loglevel": "warning"}},
 "inbounds": [{{"tag": "vless-in", "listen": "127.0.0.1", "port": {port}, "protocol": "vless",
   "settings": {{"clients": [], "decryption": "none"}}}}{extra}],
 "outbounds": [{outbound}]}}"#
    )
}

fn door(address: &str, port: u16) -> String {
    format!(
        r#"{{"tag": "door", "port": {}, "protocol": "dokodemo-door",
            "settings": {{"address": "{address}", "port": {port}}}}}"#,
        free_port()
    )
}

fn error(answer: &Value) -> ErrorBody {
    ErrorBody::deserialize(answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

use serde::Deserialize;

fn configs_forwarding_to_the_host_or_metadata_are_refused_with_422(core: Core) {
    let node = Node::boot_on("policy-refuse", core, "");
    let warden_port = node.warden.addr.port();
    let (status, answer) = node.put("keep", &config(free_port(), None, None));
    assert_eq!(status, 200, "{answer}");
    let keep_config = std::fs::read(node.dir.join("etc/xray-keep.json")).unwrap();
    let keep_pid = node.show("keep", "MainPID");
    let before = node.footprint();

    let warden_door = door("127.0.0.1", warden_port);
    let metadata_door = door("169.254.169.254", 80);
    let redirect = format!(
        r#"{{"protocol": "freedom", "settings": {{"redirect": "127.0.0.1:{warden_port}"}}}}"#
    );
    let fallback = format!(
        r#"{{"tag": "fb", "port": {}, "protocol": "vless",
            "settings": {{"clients": [], "decryption": "none", "fallbacks": [{{"dest": {warden_port}}}]}}}}"#,
        free_port()
    );
    let cases = [
        (
            "the warden's API",
            config(free_port(), Some(&warden_door), None),
            "127.0.0.1",
        ),
        (
            "cloud metadata",
            config(free_port(), Some(&metadata_door), None),
            "metadata",
        ),
        (
            "a freedom redirect",
            config(free_port(), None, Some(&redirect)),
            "settings.redirect",
        ),
        (
            "a fallback",
            config(free_port(), Some(&fallback), None),
            "fallbacks dest",
        ),
    ];
    for (what, body, names) in &cases {
        for id in ["fresh", "keep"] {
            let (status, answer) = node.put(id, body);
            assert_eq!(status, 422, "{what} on {id}: {answer}");
            let body = error(&answer);
            assert_eq!(body.error, "refused_policy", "{what}: {answer}");
            assert!(body.message.contains(names), "{what}: {}", body.message);
            assert!(body.message.contains("allow_targets"), "{}", body.message);
            assert_eq!(
                node.footprint(),
                before,
                "{what} on {id} changed files or units"
            );
        }
    }
    assert_eq!(
        std::fs::read(node.dir.join("etc/xray-keep.json")).unwrap(),
        keep_config
    );
    assert_eq!(node.show("keep", "MainPID"), keep_pid, "keep was restarted");
    assert_eq!(node.show("fresh", "LoadState"), "not-found");
}

fn an_allowed_target_passes(core: Core) {
    let target = free_port();
    let extra = format!("[tunnels.policy]\nallow_targets = [\"127.0.0.1:{target}\"]\n");
    let node = Node::boot_on("policy-allow", core, &extra);
    let (status, answer) = node.put(
        "open",
        &config(free_port(), Some(&door("127.0.0.1", target)), None),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        OutcomeView::deserialize(&answer).unwrap().action,
        ActionName::Created
    );
    // The entry names one port: the warden's own stays closed.
    let warden = door("127.0.0.1", node.warden.addr.port());
    let (status, answer) = node.put("closed", &config(free_port(), Some(&warden), None));
    assert_eq!(status, 422, "{answer}");
}

fn a_core_that_cannot_bind_its_port_is_refused_and_leaves_nothing(core: Core) {
    let node = Node::boot_on("policy-taken", core, "");
    let before = node.footprint();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();

    let (status, answer) = node.put("taken", &config(port, None, None));
    assert_eq!(status, 422, "{answer}");
    let body = error(&answer);
    assert_eq!(body.error, "start_failed", "{answer}");
    assert!(
        body.message.contains("address already in use"),
        "{}",
        body.message
    );
    assert_eq!(node.footprint(), before, "files or units left behind");
    assert_eq!(node.show("taken", "LoadState"), "not-found");
    drop(taken);
}
