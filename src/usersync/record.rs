//! The warden's record of the users each tunnel's core holds, for cores that cannot list their
//! users (V2Ray, Xray before 24.11.5).
//!
//! A core starts with exactly the clients of its config file; from then on only the API changes
//! them, and every change the warden applies is written here (and to the config file). The record
//! carries the core's start time: a record of an earlier process of the core is stale, and the
//! config file is the truth again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::target::Target;
use crate::domain::{Credential, TunnelId, User};
use crate::tunnelcfg::TunnelConfig;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one core holds, per inbound tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    core_start_usec: u64,
    inbounds: BTreeMap<String, Vec<User>>,
}

#[derive(Serialize, Deserialize)]
struct RecordFile {
    core_start_usec: u64,
    inbounds: BTreeMap<String, Vec<RecordUser>>,
}

#[derive(Serialize, Deserialize)]
struct RecordUser {
    email: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    password: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    flow: String,
    #[serde(default)]
    level: u32,
}

impl Record {
    fn path(state_dir: &Path, id: &TunnelId) -> PathBuf {
        state_dir.join(format!("users-{id}.json"))
    }

    /// The record of the running core, or, when there is none or it is of an earlier process,
    /// the clients of the config file the core started with.
    pub fn load_or_start(
        state_dir: &Path,
        target: &Target,
        config: &TunnelConfig,
    ) -> Result<Self, RecordError> {
        if let Some(record) = Self::load(&Self::path(state_dir, &target.id))
            && record.core_start_usec == target.core_start_usec
        {
            return Ok(record);
        }
        let inbounds = config
            .inbounds
            .iter()
            .map(|i| (i.tag.clone(), i.clients.clone()))
            .collect();
        Ok(Self {
            core_start_usec: target.core_start_usec,
            inbounds,
        })
    }

    /// `None` for a missing or unreadable record (then the config file is used instead).
    fn load(path: &Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        let file: RecordFile = serde_json::from_slice(&bytes)
            .map_err(|err| tracing::warn!(path = %path.display(), error = %err, "ignoring unreadable record"))
            .ok()?;
        let inbounds = file
            .inbounds
            .into_iter()
            .map(|(tag, users)| {
                (
                    tag,
                    users
                        .into_iter()
                        .filter_map(RecordUser::into_user)
                        .collect(),
                )
            })
            .collect();
        Some(Self {
            core_start_usec: file.core_start_usec,
            inbounds,
        })
    }

    pub fn save(&self, state_dir: &Path, id: &TunnelId) -> Result<(), RecordError> {
        let path = Self::path(state_dir, id);
        let write_error = |source| RecordError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(write_error)?;
        let file = RecordFile {
            core_start_usec: self.core_start_usec,
            inbounds: self
                .inbounds
                .iter()
                .map(|(tag, users)| (tag.clone(), users.iter().map(RecordUser::from).collect()))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("records serialise");
        crate::tunnelcfg::write_atomic(&path, &bytes).map_err(write_error)
    }

    /// The same users, as the record of the core process started at `core_start_usec`.
    pub fn started_at(&self, core_start_usec: u64) -> Self {
        Self {
            core_start_usec,
            inbounds: self.inbounds.clone(),
        }
    }

    pub fn users(&self, tag: &str) -> &[User] {
        self.inbounds.get(tag).map_or(&[], Vec::as_slice)
    }

    pub fn set(&mut self, tag: &str, users: Vec<User>) {
        self.inbounds.insert(tag.to_owned(), users);
    }

    /// Users over every inbound, each email once.
    pub fn total_users(&self) -> usize {
        let emails: std::collections::BTreeSet<String> = self
            .inbounds
            .values()
            .flatten()
            .map(|u| u.email.to_lowercase())
            .collect();
        emails.len()
    }
}

impl From<&User> for RecordUser {
    fn from(u: &User) -> Self {
        let (id, password) = match &u.credential {
            Credential::Id(id) => (Some(id.clone()), None),
            Credential::Password(pw) => (None, Some(pw.clone())),
        };
        Self {
            email: u.email.clone(),
            id,
            password,
            flow: u.flow.clone(),
            level: u.level,
        }
    }
}

impl RecordUser {
    fn into_user(self) -> Option<User> {
        let credential = match (self.id, self.password) {
            (Some(id), None) => Credential::Id(id),
            (None, Some(pw)) => Credential::Password(pw),
            _ => return None,
        };
        Some(User {
            email: self.email,
            credential,
            flow: self.flow,
            level: self.level,
        })
    }
}
