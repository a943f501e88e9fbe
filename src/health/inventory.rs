//! The inventory: the tunnel ids the app that owns this node knows, `{"tunnels": ["id", ...]}`.
//!
//! A unit absent from it is an orphan, and orphans may be cleaned up, so a document that looks
//! broken must never make every unit an orphan: anything that does not read as a non-empty list
//! is an error, and an error reports no inventory orphans at all.
//!
//! The file is written by that app, not by root: it is read only when it is a regular file
//! (a FIFO would hang the health pass) and no larger than [`MAX_INVENTORY_BYTES`].

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::users::read_regular;

/// Cap on the inventory: 4 MiB, some 60,000 ids of the longest kind.
pub const MAX_INVENTORY_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read the inventory {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("the inventory {} is not UTF-8", path.display())]
    NotText { path: PathBuf },
    #[error("the inventory {} is not {{\"tunnels\": [\"id\", ...]}}: {source}", path.display())]
    Shape {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the inventory {} lists no tunnels; taken as broken rather than orphaning every unit", path.display())]
    Empty { path: PathBuf },
}

#[derive(Deserialize)]
struct Document {
    tunnels: Vec<String>,
}

/// The ids listed in an inventory document (`tunnels` required, other keys ignored).
pub fn parse(text: &str) -> Result<HashSet<String>, serde_json::Error> {
    let doc: Document = serde_json::from_str(text)?;
    Ok(doc.tunnels.into_iter().collect())
}

/// Reads the inventory at `path` (on the blocking pool).
pub async fn read(path: &Path) -> Result<HashSet<String>, InventoryError> {
    let read_error = |source| InventoryError::Read {
        path: path.to_owned(),
        source,
    };
    let owned = path.to_owned();
    let bytes = tokio::task::spawn_blocking(move || read_regular(&owned, MAX_INVENTORY_BYTES))
        .await
        .map_err(|e| read_error(io::Error::other(e.to_string())))?
        .map_err(read_error)?;
    let text = String::from_utf8(bytes).map_err(|_| InventoryError::NotText {
        path: path.to_owned(),
    })?;
    let ids = parse(&text).map_err(|source| InventoryError::Shape {
        path: path.to_owned(),
        source,
    })?;
    if ids.is_empty() {
        return Err(InventoryError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ids() {
        let ids = parse(r#"{"tunnels": ["a", "b", "a"], "generated": "now"}"#).unwrap();
        assert_eq!(ids, HashSet::from(["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn refuses_other_shapes() {
        for text in [
            "",
            "{}",
            "[]",
            r#"{"tunnels": "a"}"#,
            r#"{"tunnels": [1]}"#,
            "{",
        ] {
            assert!(parse(text).is_err(), "{text:?} accepted");
        }
    }

    #[tokio::test]
    async fn an_empty_or_missing_inventory_is_an_error() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/health-inventory");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inventory.json");
        std::fs::write(&path, r#"{"tunnels": []}"#).unwrap();
        assert!(matches!(
            read(&path).await,
            Err(InventoryError::Empty { .. })
        ));
        std::fs::write(&path, r#"{"tunnels": ["x"]}"#).unwrap();
        assert_eq!(read(&path).await.unwrap().len(), 1);
        let missing = read(&dir.join("missing.json")).await;
        assert!(matches!(missing, Err(InventoryError::Read { .. })));
    }

    #[tokio::test]
    async fn a_fifo_or_an_oversized_inventory_is_an_error_at_once() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/health-inventory");
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("inventory.fifo");
        crate::users::mkfifo(&fifo);
        let read_fifo = tokio::time::timeout(std::time::Duration::from_secs(2), read(&fifo));
        let Ok(err) = read_fifo.await else {
            crate::users::release_fifo(&fifo);
            panic!("a FIFO hung the health pass");
        };
        assert!(matches!(err, Err(InventoryError::Read { .. })), "{err:?}");

        let big = dir.join("big-inventory.json");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_INVENTORY_BYTES + 1)
            .unwrap();
        let err = read(&big).await.unwrap_err();
        assert!(err.to_string().contains("larger than the cap"), "{err}");
    }
}
