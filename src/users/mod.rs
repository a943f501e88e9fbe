//! The desired users: the document that says who should exist (`{"users": [...]}`), validated
//! entry by entry, and the choice of which users one inbound of one tunnel should have. Pure
//! except [`read_file`].
//!
//! Each entry is an object with `email` and exactly one of `id` (a UUID, for VLESS/VMess) or
//! `password` (Trojan/Shadowsocks), and optionally `flow` (`""` or `xtls-rprx-vision`, the only
//! flows Xray loads), `level` (0..=u32::MAX; at most 255 with a password, as Trojan and
//! Shadowsocks configs hold it in a byte),
//! `tunnels` (tunnel ids; absent = every tunnel) and `inbounds` (tags; absent = every inbound
//! whose protocol takes the credential). Unknown keys are ignored. A bad entry is rejected with
//! its reason and the others are kept; only a document that is not usable at all is an error.

mod select;
mod validate;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use crate::readfile::read_regular;
#[cfg(test)]
pub(crate) use crate::readfile::{mkfifo, release_fifo};

/// Cap on the desired-users document (file or https body): 16 MiB, some 100,000 users at
/// ~150 bytes each.
pub const MAX_USERS_BYTES: u64 = 16 << 20;
pub use select::desired_for;

use crate::domain::{TunnelId, User};

/// One accepted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredUser {
    /// The user; its id is canonical.
    pub user: User,
    /// The tunnels to put the user on; `None` means every tunnel.
    pub tunnels: Option<Vec<TunnelId>>,
    /// The inbound tags to put the user on; `None` means every inbound that can take them.
    pub inbounds: Option<Vec<String>>,
}

/// An entry that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Position of the entry in `users`, from 0.
    pub index: usize,
    /// The entry's email when it has a string one.
    pub email: Option<String>,
    pub reason: String,
}

/// A usable document: the accepted users in document order and the rejected entries by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub users: Vec<DesiredUser>,
    pub rejected: Vec<Rejection>,
}

impl Document {
    /// Emails (lower-cased) of rejected entries that no accepted entry has: those users are
    /// left as they are on every tunnel, neither added, changed nor removed. A typo in one
    /// entry (say `"level": "1"`) must not read as "this user is gone".
    pub fn held_emails(&self) -> BTreeSet<String> {
        let accepted: BTreeSet<String> = self
            .users
            .iter()
            .map(|d| d.user.email.to_lowercase())
            .collect();
        self.rejected
            .iter()
            .filter_map(|r| r.email.as_deref())
            .map(str::to_lowercase)
            .filter(|email| !accepted.contains(email))
            .collect()
    }
}

/// A document that cannot be used at all; the caller keeps its last good set.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("not JSON (line {line}, column {column}): {message}")]
    NotJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the document is {found}, not an object with a \"users\" array")]
    NotAnObject { found: &'static str },
    #[error("the document has no \"users\" array")]
    NoUsers,
    #[error("\"users\" is {found}, not an array")]
    UsersNotArray { found: &'static str },
}

/// Parses and validates a desired-users document.
pub fn parse_document(bytes: &[u8]) -> Result<Document, DocumentError> {
    let root: Value = serde_json::from_slice(bytes).map_err(|e| {
        let full = e.to_string();
        let place = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&place).unwrap_or(&full).to_owned();
        DocumentError::NotJson {
            line: e.line(),
            column: e.column(),
            message,
        }
    })?;
    let Value::Object(root) = root else {
        return Err(DocumentError::NotAnObject { found: kind(&root) });
    };
    match root.get("users") {
        None => Err(DocumentError::NoUsers),
        Some(Value::Array(entries)) => Ok(validate::document(entries)),
        Some(other) => Err(DocumentError::UsersNotArray { found: kind(other) }),
    }
}

/// Reads and parses the document at `path`. Only [`DocumentError::Read`] names the path.
pub fn read_file(path: &Path) -> Result<Document, DocumentError> {
    let bytes = read_regular(path, MAX_USERS_BYTES).map_err(|source| DocumentError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_document(&bytes)
}

use crate::tunnelcfg::json_kind as kind;

#[cfg(test)]
mod tests;
