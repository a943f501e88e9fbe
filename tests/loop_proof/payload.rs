//! Alertmanager's webhook bodies (version 4) for the direct posts, built the way Alertmanager
//! 0.25 builds them: the fingerprint is prometheus/common's FNV-1a-64 of the sorted label set
//! (checked against the one the real Alertmanager computes, in the loop proof).

use std::time::SystemTime;

use serde_json::{Map, Value, json};

/// The labels the shipped `XrayTunnelOrphaned` alert carries for `tunnel` of `kind` on `node`
/// (instance), as Prometheus sends them (job from the scrape config).
pub fn orphan_labels(node: &str, tunnel: &str, kind: &str) -> Map<String, Value> {
    let mut labels = Map::new();
    for (k, v) in [
        ("alertname", "XrayTunnelOrphaned"),
        ("instance", node),
        ("job", "xray-warden"),
        ("kind", kind),
        ("severity", "warning"),
        ("tunnel", tunnel),
        ("warden_action", "cleanup_orphan"),
    ] {
        labels.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    labels
}

/// One alert of a webhook body.
#[derive(Debug, Clone)]
pub struct Alert {
    pub status: &'static str,
    pub labels: Map<String, Value>,
    pub starts_at: String,
    pub fingerprint: String,
}

impl Alert {
    /// A firing alert with these labels that started now.
    pub fn firing(labels: Map<String, Value>) -> Alert {
        Alert {
            status: "firing",
            fingerprint: fingerprint(&labels),
            labels,
            starts_at: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        }
    }

    /// The same incident, resolved.
    pub fn resolved(&self) -> Alert {
        Alert {
            status: "resolved",
            ..self.clone()
        }
    }

    fn to_json(&self) -> Value {
        let ends_at = if self.status == "resolved" {
            humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
        } else {
            "0001-01-01T00:00:00Z".to_owned()
        };
        json!({
            "status": self.status,
            "labels": self.labels,
            "annotations": {"summary": "sent by tests/loop_proof.rs"},
            "startsAt": self.starts_at,
            "endsAt": ends_at,
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": self.fingerprint,
        })
    }
}

/// A webhook body holding `alerts`, grouped by alertname and instance.
pub fn body(alerts: &[Alert]) -> String {
    let firing = alerts.iter().any(|a| a.status == "firing");
    let first = alerts.first().map(|a| a.labels.clone()).unwrap_or_default();
    let group: Map<String, Value> = ["alertname", "instance"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), first.get(k)?.clone())))
        .collect();
    json!({
        "version": "4",
        "groupKey": "{}/{warden_action=~\"^(?:.+)$\"}:{alertname=\"XrayTunnelOrphaned\"}",
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": "xray-warden",
        "groupLabels": group,
        "commonLabels": group,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts.iter().map(Alert::to_json).collect::<Vec<_>>(),
    })
    .to_string()
}

/// prometheus/common `LabelSet.Fingerprint()`: FNV-1a-64 over each label name and value, sorted
/// by name, each followed by the separator byte 0xff; printed as 16 hex digits.
pub fn fingerprint(labels: &Map<String, Value>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut names: Vec<&String> = labels.keys().collect();
    names.sort();
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes.iter().chain([0xffu8].iter()) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for name in names {
        add(name.as_bytes());
        add(labels[name].as_str().unwrap_or_default().as_bytes());
    }
    format!("{hash:016x}")
}
