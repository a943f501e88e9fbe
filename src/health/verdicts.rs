//! `config_valid`: the core's own test of a tunnel's config, run only when the file changed, as
//! the tunnel user in a transient systemd service ([`crate::core::Tester`]): the file is one the
//! tunnel user may have written, so root never parses it.
//!
//! Spawning the core costs tens of milliseconds and some memory per tunnel; a pass every few
//! seconds over hundreds of tunnels must not do it. A verdict is kept for the file's
//! (path, mtime, size, inode): editing the file in place, replacing it by rename, or truncating
//! it all change one of them.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use futures_util::stream::{self, StreamExt};

use super::checks::ConfigVerdict;
use crate::config::{Config, SystemdConfig};
use crate::core::{CoreTestError, Tester};
use crate::systemd::Client;

/// How the pass runs the core's config test.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigTester {
    /// As the tunnel user, in a transient service of the systemd at `bus` (a connection is
    /// made for each batch of tests: a config changes rarely).
    Systemd { tester: Tester, bus: SystemdConfig },
    /// In this process, as whoever runs it: unit tests only, which have no systemd.
    #[cfg(test)]
    Local(PathBuf),
}

impl ConfigTester {
    pub fn from_config(config: &Config) -> Self {
        Self::Systemd {
            tester: Tester::new(&config.tunnels),
            bus: config.systemd.clone(),
        }
    }

    /// Ready to test: connected, or why not.
    async fn session(&self) -> Result<Session<'_>, String> {
        match self {
            Self::Systemd { tester, bus } => Client::connect(bus)
                .await
                .map(|client| Session::Systemd(tester, client))
                .map_err(|e| format!("cannot reach systemd to run the test: {e}")),
            #[cfg(test)]
            Self::Local(binary) => Ok(Session::Local(binary)),
        }
    }
}

enum Session<'t> {
    Systemd(&'t Tester, Client),
    #[cfg(test)]
    Local(&'t Path),
}

impl Session<'_> {
    async fn verdict(&self, path: &Path) -> ConfigVerdict {
        let tested = match self {
            Self::Systemd(tester, client) => tester.test(client, path).await,
            #[cfg(test)]
            Self::Local(binary) => crate::core::test_locally(binary, path).await,
        };
        match tested {
            Ok(()) => ConfigVerdict::Valid,
            Err(CoreTestError::Rejected(why)) => ConfigVerdict::Rejected(why),
            Err(
                e @ (CoreTestError::Spawn { .. }
                | CoreTestError::NotRun { .. }
                | CoreTestError::Systemd(_)
                | CoreTestError::Timeout(_)),
            ) => ConfigVerdict::Untested(e.to_string()),
        }
    }
}

/// What stat says about a config file: when any part changes, the verdict is stale.
pub use crate::domain::health_trigger::FileStamp;

impl FileStamp {
    /// Stats `path` (following symlinks); `None` when it does not exist.
    pub async fn read(path: &Path) -> io::Result<Option<FileStamp>> {
        match tokio::fs::metadata(path).await {
            Ok(m) => Ok(Some(FileStamp::of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`FileStamp::read`] on the blocking pool's side.
    pub fn stat(path: &Path) -> io::Result<Option<FileStamp>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileStamp::of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn of(m: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            size: m.len(),
            inode: m.ino(),
        }
    }
}

/// The last conclusive verdict per config path.
#[derive(Debug, Default)]
pub struct VerdictCache {
    verdicts: HashMap<PathBuf, (FileStamp, ConfigVerdict)>,
}

impl VerdictCache {
    /// The verdict of `path` if it was reached on a file with the same `stamp`.
    pub fn get(&self, path: &Path, stamp: FileStamp) -> Option<&ConfigVerdict> {
        self.verdicts
            .get(path)
            .filter(|(seen, _)| *seen == stamp)
            .map(|(_, verdict)| verdict)
    }

    /// Keeps `verdict` when it is conclusive (accepted or rejected by the core); a test that
    /// could not run is tried again next time.
    pub fn put(&mut self, path: &Path, stamp: FileStamp, verdict: &ConfigVerdict) {
        if matches!(verdict, ConfigVerdict::Valid | ConfigVerdict::Rejected(_)) {
            self.verdicts
                .insert(path.to_owned(), (stamp, verdict.clone()));
        }
    }

    /// Forgets every path not in `paths` (tunnels that are gone or changed their config).
    pub fn retain(&mut self, paths: &[&Path]) {
        let keep: HashSet<&Path> = paths.iter().copied().collect();
        self.verdicts.retain(|p, _| keep.contains(p.as_path()));
    }

    /// The verdict on `path`: from the cache while the file is unchanged, else from running
    /// the core's own config test through `tester`.
    pub async fn verdict(&mut self, tester: &ConfigTester, path: &Path) -> ConfigVerdict {
        let mut all = self.verdicts(tester, &[path.to_owned()]).await;
        all.pop().expect("one verdict per path")
    }

    /// [`VerdictCache::verdict`] of every path, in order; the tests that must run run
    /// [`TESTS_AT_ONCE`] at a time.
    pub async fn verdicts(
        &mut self,
        tester: &ConfigTester,
        paths: &[PathBuf],
    ) -> Vec<ConfigVerdict> {
        let mut stamps = Vec::with_capacity(paths.len());
        for path in paths {
            stamps.push(FileStamp::read(path).await);
        }
        self.verdicts_stamped(tester, paths, stamps).await
    }

    /// [`VerdictCache::verdicts`] with each path's `stat` already made (`stamps[i]` is
    /// `paths[i]`'s): the health pass stats every config for its inputs once per pass.
    pub async fn verdicts_stamped(
        &mut self,
        tester: &ConfigTester,
        paths: &[PathBuf],
        stamps: Vec<io::Result<Option<FileStamp>>>,
    ) -> Vec<ConfigVerdict> {
        assert_eq!(paths.len(), stamps.len(), "one stamp per path");
        let mut out = Vec::with_capacity(paths.len());
        let mut pending = Vec::new();
        for (i, (path, stamp)) in paths.iter().zip(stamps).enumerate() {
            let verdict = match stamp {
                Ok(Some(stamp)) => match self.get(path, stamp) {
                    Some(verdict) => verdict.clone(),
                    None => {
                        pending.push((i, stamp));
                        ConfigVerdict::Untested("not tested yet".into())
                    }
                },
                Ok(None) => ConfigVerdict::Missing,
                Err(e) => ConfigVerdict::Untested(format!("cannot stat it: {e}")),
            };
            out.push(verdict);
        }
        if pending.is_empty() {
            return out;
        }
        let session = match tester.session().await {
            Ok(session) => session,
            Err(why) => {
                for (i, _) in pending {
                    out[i] = ConfigVerdict::Untested(why.clone());
                }
                return out;
            }
        };
        // Collected first: a lazy `map` over borrowed paths trips rustc's Send inference.
        let session = &session;
        let tests: Vec<_> = pending
            .into_iter()
            .map(|(i, stamp)| {
                let path = paths[i].clone();
                async move { (i, stamp, session.verdict(&path).await) }
            })
            .collect();
        let tested: Vec<_> = stream::iter(tests)
            .buffer_unordered(TESTS_AT_ONCE)
            .collect()
            .await;
        for (i, stamp, verdict) in tested {
            self.put(&paths[i], stamp, &verdict);
            out[i] = verdict;
        }
        out
    }
}

/// How many core config tests run at once (each is a process of the core).
pub const TESTS_AT_ONCE: usize = 4;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A stand-in core that counts its runs and rejects configs containing "bad"; it is called
    /// like Xray: `run -test -config F`.
    fn counting_core(dir: &Path) -> PathBuf {
        let core = dir.join("xray");
        let script = format!(
            "#!/bin/sh\necho run >> {}/runs\ngrep -q bad \"$4\" && {{ echo 'bad config' >&2; exit 1; }}\nexit 0\n",
            dir.display()
        );
        std::fs::write(&core, script).unwrap();
        std::fs::set_permissions(&core, std::fs::Permissions::from_mode(0o755)).unwrap();
        core
    }

    /// `verdict`, retried while exec answers ETXTBSY: another test thread may fork while the
    /// script's write fd is still open, and the child holds it until its own exec.
    async fn judged(cache: &mut VerdictCache, core: &Path, config: &Path) -> ConfigVerdict {
        let tester = ConfigTester::Local(core.to_owned());
        for _ in 0..50 {
            match cache.verdict(&tester, config).await {
                ConfigVerdict::Untested(why) if why.contains("busy") => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                verdict => return verdict,
            }
        }
        panic!("{} stays busy", core.display());
    }

    fn runs(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("runs"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_core_runs_once_per_version_of_the_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/health-verdicts");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let core = counting_core(&dir);
        let config = dir.join("xray-a.json");
        std::fs::write(&config, "{}").unwrap();
        let mut cache = VerdictCache::default();

        assert_eq!(
            judged(&mut cache, &core, &config).await,
            ConfigVerdict::Valid
        );
        assert_eq!(
            judged(&mut cache, &core, &config).await,
            ConfigVerdict::Valid
        );
        assert_eq!(runs(&dir), 1, "unchanged file: cached");

        // Replaced by rename (new inode): tested again, and rejected.
        let next = dir.join("next.json");
        std::fs::write(&next, "{\"bad\": 1}").unwrap();
        std::fs::rename(&next, &config).unwrap();
        let rejected = judged(&mut cache, &core, &config).await;
        assert_eq!(rejected, ConfigVerdict::Rejected("bad config".into()));
        assert_eq!(judged(&mut cache, &core, &config).await, rejected);
        assert_eq!(runs(&dir), 2, "a rejection is cached too");

        std::fs::remove_file(&config).unwrap();
        assert_eq!(
            judged(&mut cache, &core, &config).await,
            ConfigVerdict::Missing
        );
        assert_eq!(runs(&dir), 2, "a missing file spawns nothing");
    }

    #[tokio::test]
    async fn a_test_that_cannot_run_is_retried() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/health-untested");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("xray-a.json");
        std::fs::write(&config, "{}").unwrap();
        let mut cache = VerdictCache::default();
        let tester = ConfigTester::Local("/nonexistent/xray".into());
        let verdict = cache.verdict(&tester, &config).await;
        assert!(matches!(verdict, ConfigVerdict::Untested(_)), "{verdict:?}");
        let stamp = FileStamp::read(&config).await.unwrap().unwrap();
        assert!(cache.get(&config, stamp).is_none());
    }

    #[test]
    fn stamps_must_match_and_retain_forgets() {
        let stamp = FileStamp {
            mtime_sec: 1,
            mtime_nsec: 2,
            size: 3,
            inode: 4,
        };
        let mut cache = VerdictCache::default();
        let p = Path::new("/etc/t/xray-a.json");
        cache.put(p, stamp, &ConfigVerdict::Valid);
        assert_eq!(cache.get(p, stamp), Some(&ConfigVerdict::Valid));
        for other in [
            FileStamp {
                mtime_nsec: 9,
                ..stamp
            },
            FileStamp { size: 9, ..stamp },
            FileStamp { inode: 9, ..stamp },
        ] {
            assert_eq!(cache.get(p, other), None);
        }
        cache.retain(&[Path::new("/etc/t/xray-b.json")]);
        assert_eq!(cache.get(p, stamp), None);
    }
}
