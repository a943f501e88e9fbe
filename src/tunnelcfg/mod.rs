//! A tunnel's Xray/V2Ray JSON config (e.g. `/etc/raptor-tunnel/xray-{id}.json`): reading its
//! inbounds, their clients and the API address, and persisting the clients the warden manages.
//!
//! The file belongs to the operator: a rewrite changes only `settings.clients` (or the
//! `settings.users` it was read from) of the inbounds it is asked about and keeps every other value and the order of every object's keys. The cores
//! accept `//`, `/* */` and `#` comments; they are read, but a file that has them is not
//! rewritten (the rewrite would lose them).

mod atomic;
mod clients;
#[doc(hidden)]
pub mod fuzzing;
mod jsonc;
mod merge;
mod model;

pub use atomic::{Owner, open_safe_dir};
pub(crate) use model::kind as json_kind;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::domain::{Flavour, Protocol, User};

/// What the warden needs from a tunnel's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The TCP address to dial for the gRPC API, or `None` when the config has none (no `api`,
    /// no routing to it, or an API on a Unix socket). A wildcard listen becomes `127.0.0.1`.
    pub api: Option<SocketAddr>,
    /// The tagged inbounds, in file order. Untagged ones are left out: the API cannot reach them.
    pub inbounds: Vec<Inbound>,
}

/// One tagged inbound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub tag: String,
    pub protocol: Protocol,
    /// `None` for a port range or a value that is not a single port.
    pub port: Option<u16>,
    /// The clients read as users (VLESS, VMess, Trojan, Shadowsocks), from `settings.clients`
    /// or, when that is absent, its alias `settings.users` (semantics §6); ids are canonical and
    /// `flow` is only read for VLESS, where a client without one has [`Inbound::default_flow`].
    pub clients: Vec<User>,
    /// VLESS `settings.flow`: the flow of every client that names none (Xray ≥ 25.8.29,
    /// semantics §3); `""` elsewhere.
    pub default_flow: String,
    /// Clients that could not be read, each as `clients[n] ("email"): why`. The sync must not
    /// touch them, and [`persist_clients`] keeps them in the file.
    pub invalid_clients: Vec<String>,
}

/// Why a config could not be read or written. Every variant names the file (`parse` errors
/// name "config text").
#[derive(Debug, thiserror::Error)]
pub enum TunnelConfigError {
    #[error("cannot read {}: {source}", shown(path))]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{}: not valid JSON at line {line}, column {column}: {message}",
        shown(path)
    )]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {at}: {problem}", shown(path))]
    Shape {
        path: PathBuf,
        at: String,
        problem: String,
    },
    #[error(
        "{}: cannot set the clients of inbound {tag:?}: {problem}",
        shown(path)
    )]
    Clients {
        path: PathBuf,
        tag: String,
        problem: String,
    },
    #[error(
        "{}: the file has comments, which a rewrite would lose; remove them so that the warden can persist users",
        shown(path)
    )]
    HasComments { path: PathBuf },
    #[error("cannot write {}: {step}: {source}", shown(path))]
    Write {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
}

fn shown(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "config text".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Reads a config from its text (comments allowed, as the cores allow them).
pub fn parse(text: &str) -> Result<TunnelConfig, TunnelConfigError> {
    parse_at(Path::new(""), text)
}

/// Cap on a tunnel's config file: 64 MiB, room for the clients of a full users document
/// ([`crate::users::MAX_USERS_BYTES`]) written out with their JSON keys.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// Reads the config file at `path`: only a regular file (a FIFO is refused at once, not waited
/// on) of at most [`MAX_CONFIG_BYTES`].
pub fn read(path: &Path) -> Result<TunnelConfig, TunnelConfigError> {
    let read_err = |source| TunnelConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = crate::readfile::read_regular(path, MAX_CONFIG_BYTES).map_err(read_err)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| read_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    parse_at(path, &text)
}

/// The config in `text`; errors name `path`.
fn parse_at(path: &Path, text: &str) -> Result<TunnelConfig, TunnelConfigError> {
    let root = document(path, text)?;
    model::config_from_value(&root).map_err(|e| shape_err(path, e))
}

fn document(path: &Path, text: &str) -> Result<Value, TunnelConfigError> {
    serde_json::from_str(&jsonc::blank_comments(text)).map_err(|e| {
        let full = e.to_string();
        let place = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&place).unwrap_or(&full).to_owned();
        TunnelConfigError::Json {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message,
        }
    })
}

fn shape_err(path: &Path, e: model::ShapeError) -> TunnelConfigError {
    TunnelConfigError::Shape {
        path: path.to_owned(),
        at: e.at,
        problem: e.problem,
    }
}

/// Sets `settings.clients` of the inbounds named in `clients` (tag -> users) and writes the file
/// atomically; inbounds not named are untouched.
///
/// Per inbound: the existing client object of each wanted email (matched case-insensitively)
/// is kept, unknown keys and all, with its email, credential, flow (VLESS) and level updated;
/// wanted users without one get a new object appended (`email`, `id`/`password`, then `method`
/// for Shadowsocks AEAD, copied from another client or `settings.method`, `flow`, `level` when
/// set); readable clients not wanted are dropped; unreadable clients stay as they are.
///
/// Refused, before anything is written: an unknown tag; users for an inbound whose protocol
/// cannot take them on `flavour`; a credential the protocol does not take; an email given twice;
/// a wanted email that an unreadable client holds; a file with comments.
///
/// The file is rewritten only when its content changes, pretty-printed with a 2-space indent,
/// through a temp file in the same directory (fsynced, renamed over, directory fsynced), with
/// the old file's group and mode but owned by the warden's user and writable by nobody else
/// (a config the tunnel user owned is taken back); the old file is read without following a
/// symlink at the final name, only if it is a regular file, at most [`MAX_CONFIG_BYTES`]; symlinks are followed only out of directories no other user
/// can write, into such a directory, and only to a regular file. On error the old file is untouched and
/// the temp file removed. A process killed mid-write can leave a temp file
/// `.{name}.warden-{pid}-{n}.tmp`, never a partial config; the next call removes it. Calls are
/// serialised per directory by an exclusive `flock`. Blocking: call it from a blocking thread.
pub fn persist_clients(
    path: &Path,
    clients: &BTreeMap<String, Vec<User>>,
    flavour: Flavour,
) -> Result<(), TunnelConfigError> {
    let target = atomic::Target::lock(path).map_err(|failed| lock_err(path, failed))?;
    let real = target.path();
    let read_err = |source| TunnelConfigError::Read {
        path: real.to_owned(),
        source,
    };
    let (bytes, owner) = target
        .read(MAX_CONFIG_BYTES)
        .map_err(|(_, source)| read_err(source))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| read_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    let mut root = document(real, &text)?;
    let before = root.clone();
    merge::merge(&mut root, clients, flavour).map_err(|e| merge_err(real, e))?;
    if root == before {
        return Ok(());
    }
    if matches!(jsonc::blank_comments(&text), Cow::Owned(_)) {
        let path = real.to_owned();
        return Err(TunnelConfigError::HasComments { path });
    }
    let mut bytes = serde_json::to_vec_pretty(&root).expect("a JSON value always serialises");
    bytes.push(b'\n');
    target
        .replace(&bytes, Some(root_owned(owner)))
        .map_err(|(step, source)| TunnelConfigError::Write {
            path: real.to_owned(),
            step,
            source,
        })
}

/// A rewritten config belongs to the warden's user (root), whoever owned it before, keeps its
/// group and mode, and is writable by nobody else: a tunnel user who owned its config (as
/// older versions left it) could otherwise keep editing what the warden's checks passed.
fn root_owned(old: Owner) -> Owner {
    Owner {
        uid: rustix::process::geteuid().as_raw(),
        mode: old.mode & !0o022,
        ..old
    }
}

/// Locking fails on a path that cannot be resolved or opened (a read error) or on the lock.
fn lock_err(path: &Path, (step, source): atomic::Failed) -> TunnelConfigError {
    let path = path.to_owned();
    match step {
        "lock the directory" => TunnelConfigError::Write { path, step, source },
        _ => TunnelConfigError::Read { path, source },
    }
}

fn merge_err(path: &Path, e: merge::MergeError) -> TunnelConfigError {
    match e {
        merge::MergeError::Shape(e) => shape_err(path, e),
        merge::MergeError::Clients { tag, problem } => TunnelConfigError::Clients {
            path: path.to_owned(),
            tag,
            problem,
        },
    }
}

/// Writes `bytes` to `path` atomically, like [`persist_clients`] does (temp file, fsync, rename,
/// directory fsync, stale temp files removed, `flock` on the directory): readers and crashes see
/// the old content or the new, never a mix. An existing file keeps its mode and owner; a new one
/// gets mode 0600. Symlinks are followed as [`persist_clients`] follows them. The error names
/// the step that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let with_step = |(step, e): atomic::Failed| io::Error::new(e.kind(), format!("{step}: {e}"));
    let target = atomic::Target::lock(path).map_err(with_step)?;
    let meta = match fs::metadata(target.path()) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(with_step(("read the old file's mode", e))),
    };
    let owner = meta.as_ref().map(atomic::Owner::of);
    target.replace(bytes, owner).map_err(with_step)
}

/// Writes `bytes` as `path` atomically like [`write_atomic`], with `owner` set on the open temp
/// file, but never through a symlink: a symlink, FIFO or anything else that is not a regular
/// file at `path` is refused, and so is a directory another user could write in
/// ([`open_safe_dir`]). The error names the step that failed.
pub fn install(path: &Path, bytes: &[u8], owner: Owner) -> io::Result<()> {
    let with_step = |(step, e): atomic::Failed| io::Error::new(e.kind(), format!("{step}: {e}"));
    let target = atomic::Target::lock_exact(path).map_err(with_step)?;
    target.replace(bytes, Some(owner)).map_err(with_step)
}

#[cfg(test)]
mod tests;
