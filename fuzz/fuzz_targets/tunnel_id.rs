//! Tunnel ids from the outside: the `{id}` of an API path, a unit name systemd lists, a config
//! file name in the config directory. Whatever parses must be safe to splice into a unit name
//! and a file path, and the three forms must agree with each other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xray_warden::domain::TunnelId;
use xray_warden::http::api::parse_id;

fuzz_target!(|text: &str| {
    let parsed = TunnelId::new(text);
    assert_eq!(
        parse_id(text).is_ok(),
        parsed.is_ok(),
        "the API parses ids by the same rule"
    );
    if let Ok(id) = &parsed {
        assert_eq!(id.as_str(), text);
        for name in [id.unit_name(), id.config_file_name(), id.log_file_name()] {
            assert_safe_name(&name);
        }
        assert_eq!(TunnelId::from_unit_name(&id.unit_name()).as_ref(), Ok(id));
        assert_eq!(
            TunnelId::from_config_file_name(&id.config_file_name()).as_ref(),
            Some(id)
        );
    }
    // A unit name or a config file name maps back to exactly the name it came from.
    if let Ok(id) = TunnelId::from_unit_name(text) {
        assert_eq!(id.unit_name(), text);
    }
    if let Some(id) = TunnelId::from_config_file_name(text) {
        assert_eq!(id.config_file_name(), text);
    }
});

/// One path component that systemd takes literally: no separator, no `..`, no specifier (`%`),
/// no escape (`\`), no whitespace or control characters, nothing outside ASCII.
fn assert_safe_name(name: &str) {
    assert!(
        !name.contains('/') && !name.contains(".."),
        "{name:?} escapes its directory"
    );
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'\\'),
        "{name:?} has a byte systemd or a shell would interpret"
    );
    assert!(name.len() <= 64 + "xray-tunnel-.service".len());
}
