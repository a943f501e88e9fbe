//! systemd over D-Bus (zbus): listing tunnel units, reading their properties, and the signals
//! that tell the watcher something changed.
//!
//! [`Client`] wraps one bus connection and puts a deadline on every call; it also runs one-off
//! commands in sandboxed transient services ([`TransientRun`]). [`watcher`] owns the
//! connect/reconnect state machine. Nothing zbus-typed leaves this module: callers get
//! [`UnitStatus`], unit names and [`Event`]s.

mod manage;
mod path;
mod props;
mod transient;
pub mod watcher;

use std::future::Future;
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use zbus::message::Type as MessageType;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, MessageStream};

use crate::config::SystemdConfig;
use crate::domain::UnitStatus;
use crate::domain::resync::ListedState;

pub use manage::{JOB_TIMEOUT, JobResult};
pub use path::unit_name_from_path;
pub use transient::{Finished, TransientRun};

/// The glob every tunnel unit matches.
pub const UNIT_PATTERN: &str = "xray-tunnel-*.service";

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_IFACE: &str = "org.freedesktop.systemd1.Manager";
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";
/// How many signals may wait in the client before zbus stops reading the socket.
const SIGNAL_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("connecting to the bus at {address}: {source}")]
    Connect {
        address: String,
        source: Box<zbus::Error>,
    },
    #[error("D-Bus call {method} failed: {source}")]
    Call {
        method: &'static str,
        source: Box<zbus::Error>,
    },
    #[error("the bus connection closed")]
    Disconnected,
    #[error("D-Bus call {method} timed out after {timeout:?}")]
    Timeout {
        method: &'static str,
        timeout: Duration,
    },
}

/// Something the watcher must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A loaded unit appeared or changed its properties: read it again.
    UnitChanged(String),
    /// systemd unloaded a unit (it may still have a unit file on disk).
    UnitRemoved(String),
    /// Unit files changed or systemd reloaded: list everything again.
    Relist,
    /// systemd's bus name changed owner (daemon-reexec, crash): start a new session.
    SystemdRestarted,
    /// The bus connection is gone.
    Lost,
}

/// What [`Client::accounting`] answers: systemd's own accounting of one service.
pub use crate::domain::Accounting;

/// One connection to systemd's bus.
#[derive(Debug, Clone)]
pub struct Client {
    conn: Connection,
    timeout: Duration,
}

/// A unit as `ListUnitsByPatterns` returns it: (name, description, load state, active state,
/// sub state, followed unit, object path, job id, job type, job path).
type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

impl Client {
    /// Connects to `config.bus_address`, or to the system bus when unset.
    pub async fn connect(config: &SystemdConfig) -> Result<Self, SystemdError> {
        let address = config.bus_address.as_deref().unwrap_or("system bus");
        let connect_error = |source| SystemdError::Connect {
            address: address.to_owned(),
            source: Box::new(source),
        };
        let builder = match &config.bus_address {
            Some(addr) => zbus::connection::Builder::address(addr.as_str()),
            None => zbus::connection::Builder::system(),
        }
        .map_err(connect_error)?;
        let connect = builder.method_timeout(config.call_timeout).build();
        let conn = tokio::time::timeout(config.call_timeout, connect)
            .await
            .map_err(|_| SystemdError::Timeout {
                method: "Hello",
                timeout: config.call_timeout,
            })?
            .map_err(connect_error)?;
        Ok(Self {
            conn,
            timeout: config.call_timeout,
        })
    }

    /// Asks systemd to emit unit signals (`Subscribe`); they stop when this connection closes.
    pub async fn subscribe(&self) -> Result<(), SystemdError> {
        self.call_manager("Subscribe", &()).await.map(|_| ())
    }

    /// Names of the tunnel units systemd has loaded.
    pub async fn list_loaded_units(&self) -> Result<Vec<String>, SystemdError> {
        let units = self.list_loaded_unit_states().await?;
        Ok(units.into_iter().map(|unit| unit.unit).collect())
    }

    /// The tunnel units systemd has loaded, each with its load, active and sub state: one call.
    pub async fn list_loaded_unit_states(&self) -> Result<Vec<ListedState>, SystemdError> {
        let states: &[&str] = &[];
        let reply = self
            .call_manager("ListUnitsByPatterns", &(states, &[UNIT_PATTERN][..]))
            .await?;
        let units: Vec<ListedUnit> = decode("ListUnitsByPatterns", &reply)?;
        Ok(units
            .into_iter()
            .map(|u| ListedState {
                unit: u.0,
                load_state: u.2,
                active_state: u.3,
                sub_state: u.4,
            })
            .collect())
    }

    /// Names of the tunnel units that have a unit file, loaded or not.
    pub async fn list_unit_files(&self) -> Result<Vec<String>, SystemdError> {
        let states: &[&str] = &[];
        let reply = self
            .call_manager("ListUnitFilesByPatterns", &(states, &[UNIT_PATTERN][..]))
            .await?;
        let files: Vec<(String, String)> = decode("ListUnitFilesByPatterns", &reply)?;
        Ok(files
            .into_iter()
            .filter_map(|(path, _state)| path.rsplit('/').next().map(str::to_owned))
            .collect())
    }

    /// When systemd last loaded its units (`UnitsLoadTimestampMonotonic`, in µs): it moves at
    /// every daemon-reload, so a value that moved since a listing means a reload happened then,
    /// whether or not its signal arrived. One property read; `None` on a systemd without it.
    pub async fn units_load_stamp(&self) -> Result<Option<u64>, SystemdError> {
        let value = match self
            .get(MANAGER_PATH, MANAGER_IFACE, "UnitsLoadTimestampMonotonic")
            .await
        {
            Ok(value) => value,
            Err(SystemdError::Call { source, .. }) if is_unknown_property(&source) => {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        u64::try_from(value)
            .map(Some)
            .map_err(|source| SystemdError::Call {
                method: "Get UnitsLoadTimestampMonotonic",
                source: Box::new(source.into()),
            })
    }

    /// The unit file state (`enabled`, `disabled`, ...) of `unit`, `None` when it has no file.
    ///
    /// Unlike reading the unit's properties, this does not make systemd load the unit.
    pub async fn unit_file_state(&self, unit: &str) -> Result<Option<String>, SystemdError> {
        match self.call_manager("GetUnitFileState", &(unit,)).await {
            Ok(reply) => decode("GetUnitFileState", &reply).map(Some),
            Err(SystemdError::Call { source, .. }) if is_no_such_unit(&source) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Reads the status of a loaded unit.
    pub async fn unit_status(&self, unit: &str) -> Result<UnitStatus, SystemdError> {
        let object = path::unit_path(unit);
        let (unit_props, service_props) = tokio::try_join!(
            self.get_all(&object, UNIT_IFACE),
            self.get_all(&object, SERVICE_IFACE)
        )?;
        Ok(props::unit_status(&unit_props, &service_props))
    }

    /// Reads systemd's accounting of a loaded service.
    pub async fn accounting(&self, unit: &str) -> Result<Accounting, SystemdError> {
        let object = path::unit_path(unit);
        let (cpu, memory, tasks) = tokio::try_join!(
            self.get(&object, SERVICE_IFACE, "CPUUsageNSec"),
            self.get(&object, SERVICE_IFACE, "MemoryCurrent"),
            self.get(&object, SERVICE_IFACE, "TasksCurrent"),
        )?;
        Ok(Accounting {
            cpu_usage_nsec: props::accounting(&cpu),
            memory_current: props::accounting(&memory),
            tasks_current: props::accounting(&tasks),
        })
    }

    /// Every signal the watcher needs, merged into one stream that ends with [`Event::Lost`]
    /// when the connection closes. Call [`Client::subscribe`] too, or systemd stays silent.
    pub async fn events(&self) -> Result<BoxStream<'static, Event>, SystemdError> {
        let manager = self
            .signal_stream(
                MatchRule::builder()
                    .sender(SYSTEMD)
                    .and_then(|b| b.path(MANAGER_PATH))
                    .and_then(|b| b.interface(MANAGER_IFACE)),
            )
            .await?;
        let properties = self
            .signal_stream(
                MatchRule::builder()
                    .sender(SYSTEMD)
                    .and_then(|b| b.interface(PROPERTIES_IFACE))
                    .and_then(|b| b.member("PropertiesChanged"))
                    .and_then(|b| b.path_namespace(MANAGER_PATH.to_owned() + "/unit")),
            )
            .await?;
        let owner = self
            .signal_stream(
                MatchRule::builder()
                    .sender("org.freedesktop.DBus")
                    .and_then(|b| b.interface("org.freedesktop.DBus"))
                    .and_then(|b| b.member("NameOwnerChanged"))
                    .and_then(|b| b.arg(0, SYSTEMD)),
            )
            .await?;
        let merged = stream::select_all([manager, properties, owner])
            .filter_map(|msg| std::future::ready(msg.ok().and_then(|m| signal_event(&m))));
        Ok(merged.chain(stream::once(async { Event::Lost })).boxed())
    }

    async fn signal_stream(
        &self,
        rule: zbus::Result<zbus::match_rule::Builder<'_>>,
    ) -> Result<MessageStream, SystemdError> {
        let call_error = |source| SystemdError::Call {
            method: "AddMatch",
            source: Box::new(source),
        };
        let rule = rule
            .map(|b| b.msg_type(MessageType::Signal).build())
            .map_err(call_error)?;
        let stream = MessageStream::for_match_rule(rule, &self.conn, Some(SIGNAL_QUEUE));
        self.deadline("AddMatch", stream).await?.map_err(call_error)
    }

    async fn call_manager<B>(
        &self,
        method: &'static str,
        body: &B,
    ) -> Result<zbus::Message, SystemdError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.call(MANAGER_PATH, MANAGER_IFACE, method, body).await
    }

    async fn get_all(&self, object: &str, iface: &str) -> Result<props::PropertyMap, SystemdError> {
        let body = (iface,);
        let reply = self.call(object, PROPERTIES_IFACE, "GetAll", &body).await?;
        decode("GetAll", &reply)
    }

    async fn get(&self, object: &str, iface: &str, name: &str) -> Result<OwnedValue, SystemdError> {
        let body = (iface, name);
        let reply = self.call(object, PROPERTIES_IFACE, "Get", &body).await?;
        decode("Get", &reply)
    }

    async fn call<B>(
        &self,
        object: &str,
        iface: &str,
        method: &'static str,
        body: &B,
    ) -> Result<zbus::Message, SystemdError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let call = self
            .conn
            .call_method(Some(SYSTEMD), object, Some(iface), method, body);
        self.deadline(method, call)
            .await?
            .map_err(|source| SystemdError::Call {
                method,
                source: Box::new(source),
            })
    }

    async fn deadline<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = T>,
    ) -> Result<T, SystemdError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| SystemdError::Timeout {
                method,
                timeout: self.timeout,
            })
    }
}

fn decode<T>(method: &'static str, reply: &zbus::Message) -> Result<T, SystemdError>
where
    T: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
{
    reply
        .body()
        .deserialize()
        .map_err(|source| SystemdError::Call {
            method,
            source: Box::new(source),
        })
}

/// Maps one received signal to an [`Event`]; `None` for signals of units that are not tunnels.
fn signal_event(msg: &zbus::Message) -> Option<Event> {
    let header = msg.header();
    let member = header.member()?.as_str();
    let is_tunnel = |unit: &str| unit.starts_with(crate::domain::UNIT_PREFIX);
    match member {
        "UnitNew" | "UnitRemoved" => {
            let (unit, _path): (String, OwnedObjectPath) = msg.body().deserialize().ok()?;
            if !is_tunnel(&unit) {
                return None;
            }
            Some(if member == "UnitNew" {
                Event::UnitChanged(unit)
            } else {
                Event::UnitRemoved(unit)
            })
        }
        "UnitFilesChanged" => Some(Event::Relist),
        // Reloading(false) arrives once a daemon-reload finished.
        "Reloading" => match msg.body().deserialize::<bool>() {
            Ok(false) => Some(Event::Relist),
            _ => None,
        },
        "PropertiesChanged" => {
            let unit = path::unit_name_from_path(header.path()?.as_str())?;
            is_tunnel(&unit).then_some(Event::UnitChanged(unit))
        }
        "NameOwnerChanged" => Some(Event::SystemdRestarted),
        _ => None,
    }
}

/// Whether `err` is a D-Bus error reply named one of `names`.
fn is_error_named(err: &zbus::Error, names: &[&str]) -> bool {
    matches!(err, zbus::Error::MethodError(name, _, _) if names.contains(&name.as_str()))
}

fn is_unknown_property(err: &zbus::Error) -> bool {
    // sd-bus answers a Get of a property its object lacks with one of these.
    let names = [
        "org.freedesktop.DBus.Error.UnknownProperty",
        "org.freedesktop.DBus.Error.InvalidArgs",
    ];
    is_error_named(err, &names)
}

fn is_no_such_unit(err: &zbus::Error) -> bool {
    // systemd answers GetUnitFileState on an unknown unit with one of these.
    let names = [
        "org.freedesktop.DBus.Error.FileNotFound",
        "org.freedesktop.systemd1.NoSuchUnit",
    ];
    is_error_named(err, &names)
}
