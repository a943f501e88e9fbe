//! The quiet round: a tunnel whose last round found nothing to do, and about which nothing that
//! round read has changed since, is answered without reading its config, its record or the
//! core's whole user list again.
//!
//! What "nothing changed" means, checked on every quiet round:
//! - the same desired document (the same `Arc`: the loop keeps it while the source is unchanged);
//! - the same core process (its start time);
//! - the same config file (inode, size and mtime, the stamp the health pass keeps too: every
//!   write the warden and an atomic writer make replaces the inode, and an in-place edit moves
//!   mtime);
//! - on a core that can list users (Xray), the same number of users in each inbound
//!   (GetInboundUsersCount: one small answer, where the full list of 10,000 users is 870 KB
//!   that the core needs about 40 ms of CPU to build).
//!
//! A user removed or added behind the warden's back changes the count, so the next round is a
//! full one and repairs it. A credential swapped behind its back with the count unchanged is
//! only seen by a full comparison: one runs at least every [`FULL_CHECK`], and on every forced
//! round.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

pub use crate::domain::health_trigger::FileStamp;
use crate::users::Document;

/// The longest a tunnel goes without a full comparison of the core's users with the desired
/// set (the drift a same-count credential swap behind the warden's back makes waits this long).
pub const FULL_CHECK: Duration = Duration::from_secs(300);

/// A tunnel's last round that found nothing to do, and what it read.
#[derive(Debug, Clone)]
pub struct Quiet {
    pub document: Weak<Document>,
    pub core_start_usec: u64,
    pub config: FileStamp,
    pub api: SocketAddr,
    /// Per inbound whose users the core listed: how many users it holds, as its count call
    /// counts them (users without an email of their own included).
    pub counts: Vec<(String, u64)>,
    pub outcome: crate::contract::Outcome,
    /// When the core's users were last compared in full with the desired set.
    pub compared_at: Instant,
}

impl Quiet {
    /// Whether this round may be quiet as far as what needs no I/O tells: same document, same
    /// core process, a full comparison not yet due.
    pub fn still_holds(&self, desired: &Arc<Document>, core_start_usec: u64, now: Instant) -> bool {
        std::ptr::eq(self.document.as_ptr(), Arc::as_ptr(desired))
            && self.core_start_usec == core_start_usec
            && now.saturating_duration_since(self.compared_at) < FULL_CHECK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(document: &Arc<Document>) -> Quiet {
        Quiet {
            document: Arc::downgrade(document),
            core_start_usec: 7,
            config: FileStamp {
                mtime_sec: 1,
                mtime_nsec: 2,
                size: 3,
                inode: 4,
            },
            api: "127.0.0.1:1".parse().unwrap(),
            counts: Vec::new(),
            outcome: Default::default(),
            compared_at: Instant::now(),
        }
    }

    #[test]
    fn only_the_same_document_the_same_core_and_a_recent_comparison_hold() {
        let doc = Arc::new(Document::default());
        let q = quiet(&doc);
        let now = Instant::now();
        assert!(q.still_holds(&doc, 7, now));
        // An equal document parsed again is another version of the source: not quiet.
        let same_content = Arc::new(Document::default());
        assert!(!q.still_holds(&same_content, 7, now));
        assert!(!q.still_holds(&doc, 8, now), "another core process");
        assert!(
            !q.still_holds(&doc, 7, now + FULL_CHECK),
            "a full comparison is due"
        );
    }

    #[test]
    fn a_file_rewritten_in_place_or_replaced_gets_another_stamp() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/unit-scratch")
            .join(format!("quiet-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("xray-a.json");
        std::fs::write(&file, "{}").unwrap();
        let first = FileStamp::stat(&file).unwrap().unwrap();
        assert_eq!(FileStamp::stat(&file).unwrap(), Some(first));
        // Same size, rewritten in place: ctime and mtime move (nanosecond stamps).
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write(&file, "[]").unwrap();
        assert_ne!(FileStamp::stat(&file).unwrap(), Some(first));
        // Replaced by rename: another inode.
        let second = FileStamp::stat(&file).unwrap().unwrap();
        let tmp = dir.join("new");
        std::fs::write(&tmp, "[]").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_ne!(FileStamp::stat(&file).unwrap(), Some(second));
        std::fs::remove_file(&file).unwrap();
        assert_eq!(FileStamp::stat(&file).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
