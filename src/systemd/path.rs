//! systemd's escaping of unit names into D-Bus object paths.
//!
//! systemd publishes unit `foo-bar.service` at `/org/freedesktop/systemd1/unit/foo_2dbar_2eservice`:
//! every byte outside `[A-Za-z0-9]` becomes `_` followed by two lower-case hex digits (its
//! `bus_label_escape`). The watcher needs the reverse to map a `PropertiesChanged` signal to a unit
//! without a D-Bus call.

/// Object path prefix of all unit objects.
pub const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";

/// The unit name published at `path`, or `None` if `path` is not a unit object path.
pub fn unit_name_from_path(path: &str) -> Option<String> {
    let label = path.strip_prefix(UNIT_PATH_PREFIX)?;
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The object path systemd publishes `unit` at.
pub fn unit_path(unit: &str) -> String {
    let mut path = String::with_capacity(UNIT_PATH_PREFIX.len() + unit.len() * 2);
    path.push_str(UNIT_PATH_PREFIX);
    for byte in unit.bytes() {
        if byte.is_ascii_alphanumeric() {
            path.push(byte as char);
        } else {
            path.push_str(&format!("_{byte:02x}"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_unit_paths() {
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/xray_2dtunnel_2da_5f1_2eservice")
                .as_deref(),
            Some("xray-tunnel-a_1.service")
        );
    }

    #[test]
    fn round_trips() {
        for unit in ["xray-tunnel-Ab9.service", "dbus.socket", "-.mount"] {
            assert_eq!(unit_name_from_path(&unit_path(unit)).as_deref(), Some(unit));
        }
        assert_eq!(
            unit_path("xray-tunnel-a.service"),
            "/org/freedesktop/systemd1/unit/xray_2dtunnel_2da_2eservice"
        );
    }

    #[test]
    fn rejects_other_paths() {
        assert_eq!(unit_name_from_path("/org/freedesktop/systemd1"), None);
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/job/12"),
            None
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/bad_2"),
            None
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/bad_zz"),
            None
        );
    }
}
