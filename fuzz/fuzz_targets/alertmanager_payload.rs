//! Alertmanager's webhook body (`POST /api/v1/alerts`), then the per-alert triage the
//! remediation worker runs on it. An alert that passes triage asks THIS node for a known action
//! on a tunnel id that is safe to use.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xray_warden::alertmanager::{MAX_BODY, Payload};
use xray_warden::domain::remediation::{AlertView, NodeIdentity, triage};

fuzz_target!(|body: &[u8]| {
    if body.len() > MAX_BODY {
        return; // the router refuses a larger body before parsing
    }
    let Ok(payload) = Payload::parse(body) else {
        return;
    };
    assert_eq!(payload.version, "4");
    let me = NodeIdentity {
        node: "node-a".into(),
        node_label: "instance".into(),
    };
    for alert in &payload.alerts {
        let view = AlertView {
            status: &alert.status,
            labels: &alert.labels,
            fingerprint: &alert.fingerprint,
            starts_at: &alert.starts_at,
        };
        let Ok(request) = triage(view, &me) else {
            continue;
        };
        assert_eq!(alert.status, "firing");
        assert_eq!(
            alert.labels.get("instance").map(String::as_str),
            Some("node-a")
        );
        assert_eq!(
            alert.labels.get("warden_action").map(String::as_str),
            Some("cleanup_orphan")
        );
        assert_eq!(
            alert.labels.get("tunnel").map(String::as_str),
            Some(request.tunnel.as_str())
        );
        assert!(!alert.fingerprint.is_empty() && !alert.starts_at.is_empty());
        let name = request.tunnel.unit_name();
        assert!(!name.contains('/') && !name.contains(".."));
    }
});
