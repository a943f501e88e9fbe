//! The core binary itself (`xray` or `v2ray`): testing a config the way the core would load it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::domain::Flavour;

/// How long a config test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum CoreTestError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("the core's config test did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the core rejects the config: {0}")]
    Rejected(String),
}

/// The flavour a core binary is, from its file name (`v2ray*` is V2Ray, anything else Xray).
pub fn binary_flavour(binary: &Path) -> Flavour {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.starts_with("v2ray") {
        Flavour::V2ray
    } else {
        Flavour::Xray
    }
}

/// Runs the core's own config test on `config`: `xray run -test -config F` or
/// `v2ray -test -config F`. The process is killed if it outlives [`TEST_TIMEOUT`].
pub async fn test_config(binary: &Path, config: &Path) -> Result<(), CoreTestError> {
    let mut command = tokio::process::Command::new(binary);
    if binary_flavour(binary) == Flavour::Xray {
        command.arg("run");
    }
    command
        .arg("-test")
        .arg("-config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(|source| CoreTestError::Spawn {
        binary: binary.display().to_string(),
        source,
    })?;
    let output = tokio::time::timeout(TEST_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| CoreTestError::Timeout(TEST_TIMEOUT))?
        .map_err(|source| CoreTestError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    // The cores print a banner first; the complaint is in the last lines.
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(3)
        .collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(CoreTestError::Rejected(tail.join(" | ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_from_the_binary_name() {
        assert_eq!(binary_flavour(Path::new("/usr/bin/v2ray")), Flavour::V2ray);
        assert_eq!(
            binary_flavour(Path::new("/usr/local/bin/xray")),
            Flavour::Xray
        );
    }

    #[tokio::test]
    async fn a_real_v2ray_tests_configs() {
        let v2ray = Path::new("/usr/bin/v2ray");
        if !v2ray.exists() {
            panic!("/usr/bin/v2ray is missing: scripts/install-deps.sh installs it");
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/core");
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"inbounds": [{"port": 1, "listen": "127.0.0.1", "protocol": "socks"}], "outbounds": [{"protocol": "freedom"}]}"#).unwrap();
        test_config(v2ray, &good).await.unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"inbounds": [{"protocol": "no-such-protocol"}]}"#).unwrap();
        let err = test_config(v2ray, &bad).await.unwrap_err();
        assert!(matches!(err, CoreTestError::Rejected(_)), "{err}");
        let missing = test_config(Path::new("/nonexistent/xray"), &good)
            .await
            .unwrap_err();
        assert!(matches!(missing, CoreTestError::Spawn { .. }), "{missing}");
    }
}
