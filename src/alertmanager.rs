//! Alertmanager's webhook payload (version 4), as Alertmanager 0.25 sends it
//! (`notify/webhook/webhook.go` and `template/template.go` there): a group of alerts, each with
//! its own `status`, labels, `startsAt` and `fingerprint`. Only what the warden reads is typed;
//! every other field is accepted and ignored, so a newer Alertmanager adding fields still works.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Largest body the webhook reads.
pub const MAX_BODY: usize = 1 << 20;

/// The webhook body.
#[derive(Debug, Clone, Deserialize)]
pub struct Payload {
    /// `"4"` for every Alertmanager since 0.7.
    pub version: String,
    /// The group's status is "firing" when ANY of its alerts fires: never act on it; judge each
    /// alert by its own status.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    pub alerts: Vec<Alert>,
}

/// One alert of the group.
#[derive(Debug, Clone, Deserialize)]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 time the alert started; with the fingerprint it names one incident.
    #[serde(rename = "startsAt", default)]
    pub starts_at: String,
    /// FNV-1a-64 of the sorted label set, as 16 hex digits; the same on every re-send.
    #[serde(default)]
    pub fingerprint: String,
}

/// Why a body is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("not an Alertmanager webhook body: {0}")]
    Malformed(String),
    #[error("webhook payload version {0:?} is not supported (only \"4\")")]
    Version(String),
}

impl Payload {
    /// Parses and checks a webhook body.
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        let payload: Payload =
            serde_json::from_slice(body).map_err(|e| PayloadError::Malformed(e.to_string()))?;
        if payload.version != "4" {
            return Err(PayloadError::Version(payload.version));
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a body Debian 12's Alertmanager 0.25 posted in the loop proof.
    const BODY: &str = r#"{"receiver":"warden","status":"firing","alerts":[
      {"status":"firing","labels":{"alertname":"XrayTunnelOrphaned","instance":"node-a",
       "tunnel":"eu1","kind":"unit_without_config","warden_action":"cleanup_orphan"},
       "annotations":{"summary":"s"},"startsAt":"2026-11-30T14:00:00.123Z",
       "endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://p/graph","fingerprint":"a1b2c3d4e5f60718"},
      {"status":"resolved","labels":{"alertname":"XrayTunnelOrphaned"},"annotations":{},
       "startsAt":"2026-11-30T13:00:00Z","endsAt":"2026-11-30T13:30:00Z","generatorURL":"",
       "fingerprint":"0000000000000001"}],
      "groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am",
      "version":"4","groupKey":"{}:{}","truncatedAlerts":0}"#;

    #[test]
    fn reads_each_alert_with_its_own_status() {
        let p = Payload::parse(BODY.as_bytes()).unwrap();
        assert_eq!(p.alerts.len(), 2);
        assert_eq!(p.alerts[0].status, "firing");
        assert_eq!(p.alerts[0].labels["tunnel"], "eu1");
        assert_eq!(p.alerts[0].fingerprint, "a1b2c3d4e5f60718");
        assert_eq!(p.alerts[0].starts_at, "2026-11-30T14:00:00.123Z");
        assert_eq!(p.alerts[1].status, "resolved");
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let v3 = BODY.replace(r#""version":"4""#, r#""version":"3""#);
        assert_eq!(
            Payload::parse(v3.as_bytes()).unwrap_err(),
            PayloadError::Version("3".into())
        );
        assert!(matches!(
            Payload::parse(b"{\"alerts\": 5}"),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            Payload::parse(b"not json"),
            Err(PayloadError::Malformed(_))
        ));
    }
}
