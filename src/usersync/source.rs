//! Fetching the desired-users document from its source: a local file or an HTTPS endpoint.
//!
//! Both report [`Fetched::Unchanged`] when nothing changed since the last fetch (file: same
//! mtime, size and inode; HTTPS: `304 Not Modified` to an `If-None-Match` with the last ETag), so
//! a quiet source costs one `stat` or one small request.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::UserSource;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fetching {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("fetching {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
}

/// What a fetch found.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    Unchanged,
    Changed(Vec<u8>),
}

/// A source with the memory of its last fetch.
pub struct Source {
    kind: UserSource,
    token_file: Option<PathBuf>,
    client: reqwest::Client,
    /// File: (mtime ns, size, inode) of the last read. HTTPS: the last ETag.
    last_file: Option<(i128, u64, u64)>,
    last_etag: Option<String>,
}

impl Source {
    pub fn new(kind: UserSource, token_file: Option<PathBuf>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .expect("a TLS client with default settings builds");
        Self {
            kind,
            token_file,
            client,
            last_file: None,
            last_etag: None,
        }
    }

    /// Describes the source for logs (never includes the token).
    pub fn describe(&self) -> String {
        match &self.kind {
            UserSource::File(path) => format!("file://{}", path.display()),
            UserSource::Https(url) => url.clone(),
        }
    }

    /// Forgets what was fetched, so the next fetch reads the whole document again.
    pub fn forget(&mut self) {
        self.last_file = None;
        self.last_etag = None;
    }

    pub async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        match self.kind.clone() {
            UserSource::File(path) => self.fetch_file(&path).await,
            UserSource::Https(url) => self.fetch_http(&url).await,
        }
    }

    /// For a file source: whether the file differs from what was last read (one `stat`).
    /// Always false for HTTPS sources, which are only fetched by rounds.
    pub async fn file_changed(&self) -> bool {
        match &self.kind {
            UserSource::File(path) => match tokio::fs::metadata(path).await {
                Ok(meta) => self.last_file != Some(stamp(&meta)),
                Err(_) => self.last_file.is_some(),
            },
            UserSource::Https(_) => false,
        }
    }

    async fn fetch_file(&mut self, path: &Path) -> Result<Fetched, SourceError> {
        let file_error = |source| SourceError::File {
            path: path.to_owned(),
            source,
        };
        let meta = tokio::fs::metadata(path).await.map_err(file_error)?;
        let stamp = stamp(&meta);
        if self.last_file == Some(stamp) {
            return Ok(Fetched::Unchanged);
        }
        let bytes = tokio::fs::read(path).await.map_err(file_error)?;
        self.last_file = Some(stamp);
        Ok(Fetched::Changed(bytes))
    }

    async fn fetch_http(&mut self, url: &str) -> Result<Fetched, SourceError> {
        let http_error = |source| SourceError::Http {
            url: url.to_owned(),
            source,
        };
        let mut request = self.client.get(url);
        if let Some(path) = &self.token_file {
            let token =
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| SourceError::Token {
                        path: path.clone(),
                        source,
                    })?;
            request = request.bearer_auth(token.trim());
        }
        if let Some(etag) = &self.last_etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let response = request.send().await.map_err(http_error)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::Unchanged);
        }
        if !status.is_success() {
            return Err(SourceError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.map_err(http_error)?;
        self.last_etag = etag;
        Ok(Fetched::Changed(bytes.to_vec()))
    }
}

/// (mtime in ns, size, inode): a rewrite, an append or an atomic replace all change it.
fn stamp(meta: &std::fs::Metadata) -> (i128, u64, u64) {
    let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    (mtime, meta.len(), meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/source");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[tokio::test]
    async fn a_file_is_read_again_only_when_it_changes() {
        let path = scratch("users.json");
        std::fs::write(&path, b"{\"users\": []}").unwrap();
        let mut source = Source::new(UserSource::File(path.clone()), None, Duration::from_secs(1));
        assert_eq!(
            source.fetch().await.unwrap(),
            Fetched::Changed(b"{\"users\": []}".to_vec())
        );
        assert_eq!(source.fetch().await.unwrap(), Fetched::Unchanged);
        assert!(!source.file_changed().await);
        std::fs::write(&path, b"{\"users\": [1]}").unwrap();
        assert!(source.file_changed().await);
        assert!(matches!(source.fetch().await.unwrap(), Fetched::Changed(_)));
        source.forget();
        assert!(matches!(source.fetch().await.unwrap(), Fetched::Changed(_)));
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error() {
        let mut source = Source::new(
            UserSource::File(scratch("absent.json")),
            None,
            Duration::from_secs(1),
        );
        let err = source.fetch().await.unwrap_err();
        assert!(err.to_string().contains("absent.json"), "{err}");
    }

    #[tokio::test]
    async fn https_sources_send_the_token_and_honour_etags() {
        use axum::http::{HeaderMap, StatusCode};
        async fn serve(
            headers: HeaderMap,
        ) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            if auth != Some("Bearer s3cret") {
                return (StatusCode::UNAUTHORIZED, [("etag", "\"v1\"")], "");
            }
            if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"v1\"") {
                return (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")], "");
            }
            (StatusCode::OK, [("etag", "\"v1\"")], "{\"users\": []}")
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/users", listener.local_addr().unwrap());
        let app = axum::Router::new().route("/users", axum::routing::get(serve));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let token = scratch("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let mut source = Source::new(
            UserSource::Https(url.clone()),
            Some(token),
            Duration::from_secs(2),
        );
        assert_eq!(
            source.fetch().await.unwrap(),
            Fetched::Changed(b"{\"users\": []}".to_vec())
        );
        assert_eq!(source.fetch().await.unwrap(), Fetched::Unchanged);

        let mut anonymous = Source::new(UserSource::Https(url), None, Duration::from_secs(2));
        assert!(matches!(
            anonymous.fetch().await,
            Err(SourceError::Status { status: 401, .. })
        ));
    }
}
