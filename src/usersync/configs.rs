//! What the traffic tick needs from each running tunnel's config: its API address and, for the
//! per-user series, its users' emails. Kept per tunnel with the file's stamp and read again only
//! when the stamp moves, so an unchanged config costs one stat per tick, a missing one the same,
//! and a tunnel without an API nothing more: at 1,000 tunnels a tick is one hand-off to the
//! blocking pool and 1,000 stats instead of 1,000 hand-offs, opens and parses of configs that
//! may hold 10,000 users each.
//!
//! A stamp is taken before the file is read: a change after it moves the next stamp, so the
//! next tick reads the file again. The warden's own writes (user sync, edits) replace the file
//! and so its inode.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{debug, warn};

use super::engine::Target;
use crate::domain::TunnelId;
use crate::domain::health_trigger::FileStamp;
use crate::tunnelcfg;

/// What the traffic tick reads from one tunnel's config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// `None` when the config is missing, unreadable or names no TCP API.
    pub api: Option<SocketAddr>,
    /// Every inbound's clients' emails, lower-cased; empty unless the cache keeps emails.
    pub emails: Arc<HashSet<String>>,
}

/// One tunnel's config as last read.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    /// `None` while the file is missing or cannot be stat'ed.
    stamp: Option<FileStamp>,
    facts: Facts,
}

/// The facts of every running tunnel's config, by tunnel.
#[derive(Debug, Default)]
pub struct ConfigCache {
    entries: HashMap<TunnelId, Entry>,
    /// Whether to keep the users' emails (`users.per_user_traffic`).
    emails: bool,
    /// Configs read and parsed so far.
    parses: u64,
}

impl ConfigCache {
    pub fn new(emails: bool) -> Self {
        Self {
            emails,
            ..Self::default()
        }
    }

    /// Stats the config of every one of `targets` in one call on the blocking pool, reads those
    /// whose stamp moved, and forgets every other tunnel.
    pub async fn refresh(&mut self, targets: Arc<[Target]>) {
        let entries = std::mem::take(&mut self.entries);
        let emails = self.emails;
        let work = tokio::task::spawn_blocking(move || {
            let mut entries = entries;
            let parses = refresh_all(&mut entries, &targets, emails);
            (entries, parses)
        });
        match work.await {
            Ok((entries, parses)) => {
                self.entries = entries;
                self.parses += parses;
                if parses > 0 {
                    debug!(
                        read = parses,
                        since_start = self.parses,
                        "tunnel configs read for traffic"
                    );
                }
            }
            // Everything is read again next tick.
            Err(err) => warn!(error = %err, "reading the tunnels' configs for traffic failed"),
        }
    }

    /// The facts of `id`'s config when it names an API.
    pub fn with_api(&self, id: &TunnelId) -> Option<&Facts> {
        self.entries
            .get(id)
            .map(|e| &e.facts)
            .filter(|f| f.api.is_some())
    }

    /// Whether `id` was among the last refresh's targets.
    pub fn knows(&self, id: &TunnelId) -> bool {
        self.entries.contains_key(id)
    }

    /// Configs read and parsed since the cache was made.
    #[cfg(test)]
    pub fn parses(&self) -> u64 {
        self.parses
    }
}

/// Brings `entries` to `targets`: an entry whose path and stamp are the same is kept as it is
/// (nothing allocated), any other is read again; entries of other tunnels go. Returns how many
/// configs were parsed.
fn refresh_all(entries: &mut HashMap<TunnelId, Entry>, targets: &[Target], emails: bool) -> u64 {
    let mut parses = 0;
    for target in targets {
        let stamp = match FileStamp::stat(&target.config_path) {
            Ok(stamp) => stamp,
            Err(err) => {
                debug!(tunnel = %target.id, error = %err, "cannot stat the tunnel's config");
                None
            }
        };
        if let Some(entry) = entries.get(&target.id)
            && entry.path == target.config_path
            && entry.stamp == stamp
        {
            continue;
        }
        let facts = match stamp {
            Some(_) => {
                parses += 1;
                read(target, emails)
            }
            None => Facts::default(),
        };
        let entry = Entry {
            path: target.config_path.clone(),
            stamp,
            facts,
        };
        entries.insert(target.id.clone(), entry);
    }
    if entries.len() != targets.len() {
        let running: HashSet<&TunnelId> = targets.iter().map(|t| &t.id).collect();
        entries.retain(|id, _| running.contains(id));
    }
    parses
}

/// Reads `target`'s config; a config that cannot be read has no API (said once per version).
fn read(target: &Target, emails: bool) -> Facts {
    match tunnelcfg::read(&target.config_path) {
        Ok(config) => Facts {
            api: config.api,
            emails: Arc::new(match emails {
                true => (config.inbounds.iter())
                    .flat_map(|i| &i.clients)
                    .map(|u| u.email.to_lowercase())
                    .collect(),
                false => HashSet::new(),
            }),
        },
        Err(err) => {
            debug!(tunnel = %target.id, error = %err, "no traffic counters: unreadable config");
            Facts::default()
        }
    }
}

#[cfg(test)]
#[path = "configs_tests.rs"]
mod tests;
