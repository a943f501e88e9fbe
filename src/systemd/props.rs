//! Conversion of systemd's property maps into [`UnitStatus`] and resource readings.

use std::collections::HashMap;

use zbus::zvariant::OwnedValue;

use crate::domain::{ActiveState, UnitStatus};

/// A `GetAll` answer: property name to value.
pub type PropertyMap = HashMap<String, OwnedValue>;

/// systemd's "not set" for its `uint64` accounting properties (`CPUUsageNSec`, ...).
const UNSET: u64 = u64::MAX;

/// Builds a [`UnitStatus`] from the `org.freedesktop.systemd1.Unit` and `...Service` maps.
///
/// A missing property or one of an unexpected type reads as its empty value: systemd versions
/// differ in what they publish, and one odd property must not hide the whole unit.
pub fn unit_status(unit: &PropertyMap, service: &PropertyMap) -> UnitStatus {
    UnitStatus {
        description: string(unit, "Description"),
        load_state: string(unit, "LoadState"),
        active_state: Some(ActiveState::parse(&string(unit, "ActiveState"))),
        sub_state: string(unit, "SubState"),
        unit_file_state: string(unit, "UnitFileState"),
        fragment_path: string(unit, "FragmentPath"),
        main_pid: number(service, "MainPID"),
        n_restarts: number(service, "NRestarts"),
        exec_main_start_usec: number(service, "ExecMainStartTimestamp"),
        exec_main_status: number(service, "ExecMainStatus"),
        exec_main_code: number(service, "ExecMainCode"),
        result: string(service, "Result"),
        control_group: string(service, "ControlGroup"),
        state_change_usec: number(unit, "StateChangeTimestamp"),
        exec_start: exec_start(service),
    }
}

/// `ExecStart` is `a(sasbttttuii)`: (path, argv, ignore errors, timestamps..., pid, code, status)
/// per command; the first command's argv is what the warden needs.
type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

fn exec_start(service: &PropertyMap) -> Vec<String> {
    service
        .get("ExecStart")
        .and_then(|v| Vec::<ExecCommand>::try_from(v.try_clone().ok()?).ok())
        .and_then(|commands| commands.into_iter().next())
        .map(|command| command.1)
        .unwrap_or_default()
}

/// An accounting property (`CPUUsageNSec`, `MemoryCurrent`, `TasksCurrent`), `None` when systemd
/// reports it as not set.
pub fn accounting(value: &OwnedValue) -> Option<u64> {
    u64::try_from(value).ok().filter(|v| *v != UNSET)
}

fn string(map: &PropertyMap, key: &str) -> String {
    map.get(key)
        .and_then(|v| <&str>::try_from(v).ok())
        .unwrap_or_default()
        .to_owned()
}

fn number<T: Default + for<'a> TryFrom<&'a OwnedValue>>(map: &PropertyMap, key: &str) -> T {
    map.get(key)
        .and_then(|v| T::try_from(v).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Value;

    fn map(entries: Vec<(&str, Value<'static>)>) -> PropertyMap {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), OwnedValue::try_from(v).unwrap()))
            .collect()
    }

    #[test]
    fn reads_a_crashed_service() {
        let unit = map(vec![
            ("Description", Value::from("tunnel a")),
            ("LoadState", Value::from("loaded")),
            ("ActiveState", Value::from("activating")),
            ("SubState", Value::from("auto-restart")),
            ("UnitFileState", Value::from("enabled")),
        ]);
        let service = map(vec![
            ("MainPID", Value::from(0u32)),
            ("NRestarts", Value::from(4u32)),
            (
                "ExecMainStartTimestamp",
                Value::from(1_700_000_000_000_000u64),
            ),
            ("ExecMainStatus", Value::from(3i32)),
            ("ExecMainCode", Value::from(1i32)),
            ("Result", Value::from("exit-code")),
        ]);
        let status = unit_status(&unit, &service);
        assert_eq!(status.active_state(), &ActiveState::Activating);
        assert_eq!(status.sub_state, "auto-restart");
        assert_eq!(status.n_restarts, 4);
        assert_eq!(status.exec_main_status, 3);
        assert_eq!(status.result, "exit-code");
        assert_eq!(status.control_group, "");
    }

    #[test]
    fn wrong_types_read_as_empty() {
        let unit = map(vec![("ActiveState", Value::from(7u32))]);
        let service = map(vec![("NRestarts", Value::from("many"))]);
        let status = unit_status(&unit, &service);
        assert_eq!(status.n_restarts, 0);
        assert_eq!(status.active_state(), &ActiveState::Other(String::new()));
    }

    #[test]
    fn unset_accounting_is_none() {
        let value = |v: u64| OwnedValue::try_from(Value::from(v)).unwrap();
        assert_eq!(accounting(&value(u64::MAX)), None);
        assert_eq!(accounting(&value(42)), Some(42));
        assert_eq!(
            accounting(&OwnedValue::try_from(Value::from("x")).unwrap()),
            None
        );
    }
}
