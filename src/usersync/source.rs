//! Fetching the desired-users document from its source: a local file or an HTTPS endpoint.
//!
//! Both report [`Fetched::Unchanged`] when nothing changed since the last fetch (file: same
//! mtime, size and inode; HTTPS: `304 Not Modified` to an `If-None-Match` with the last ETag), so
//! a quiet source costs one `stat` or one small request.
//!
//! Limits, because the source is written by someone other than root: a body or file over
//! [`MAX_USERS_BYTES`] (16 MiB) is refused, as is a token file over [`MAX_TOKEN_BYTES`]; a path
//! that is not a regular file (a FIFO would hang the reader) is refused at once; plain http
//! only to loopback (checked again here, not only when the config is read); redirects only
//! within the source's own origin, so an https source is never followed to http or elsewhere.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::UserSource;
use crate::domain::{SourceUrlError, check_source_url, redirect_allowed};
use crate::users::{MAX_USERS_BYTES, read_regular};

/// Cap on the bearer token file.
pub const MAX_TOKEN_BYTES: u64 = 64 << 10;
/// Redirects followed per fetch (each within the source's origin).
const MAX_REDIRECTS: usize = 5;

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
    #[error("fetching {url}: the body is larger than the cap of {cap} bytes")]
    TooLarge { url: String, cap: u64 },
    #[error("fetching {url}: redirected off the source's origin (scheme, host and port); refused")]
    Redirect { url: String },
    #[error("the source {url} is refused: {reason}")]
    Url { url: String, reason: String },
    #[error("file work failed: {0}")]
    Blocking(String),
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
            .redirect(redirect_policy())
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
        let owned = path.to_owned();
        let bytes = on_blocking_pool(move || read_regular(&owned, MAX_USERS_BYTES))
            .await?
            .map_err(file_error)?;
        self.last_file = Some(stamp);
        Ok(Fetched::Changed(bytes))
    }

    async fn fetch_http(&mut self, url: &str) -> Result<Fetched, SourceError> {
        let http_error = |source: reqwest::Error| match source.is_redirect() {
            true => SourceError::Redirect {
                url: url.to_owned(),
            },
            false => SourceError::Http {
                url: url.to_owned(),
                source,
            },
        };
        let parsed = parse_url(url)?;
        let mut request = self.client.get(parsed);
        if let Some(path) = &self.token_file {
            let owned = path.clone();
            let token = on_blocking_pool(move || read_regular(&owned, MAX_TOKEN_BYTES))
                .await?
                .map_err(|source| SourceError::Token {
                    path: path.clone(),
                    source,
                })?;
            request = request.bearer_auth(String::from_utf8_lossy(&token).trim());
        }
        if let Some(etag) = &self.last_etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let mut response = request.send().await.map_err(http_error)?;
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
        let too_large = || SourceError::TooLarge {
            url: url.to_owned(),
            cap: MAX_USERS_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_USERS_BYTES)
        {
            return Err(too_large());
        }
        // Streamed, so a body without (or lying about) its length stops at the cap.
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_error)? {
            if (bytes.len() + chunk.len()) as u64 > MAX_USERS_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        self.last_etag = etag;
        Ok(Fetched::Changed(bytes))
    }
}

/// The source URL, refused unless it passes [`check_source_url`] (the config reader checks it
/// too; this keeps the rule where the request is made).
fn parse_url(url: &str) -> Result<reqwest::Url, SourceError> {
    let refused = |reason: String| SourceError::Url {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| refused(e.to_string()))?;
    check_source_url(&parsed).map_err(|e: SourceUrlError| refused(e.to_string()))?;
    Ok(parsed)
}

/// Follows a redirect only within the origin of the URL it came from (at most
/// [`MAX_REDIRECTS`]); anything else is an error, never a silent fetch from elsewhere.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let allowed = attempt
            .previous()
            .last()
            .is_some_and(|from| redirect_allowed(from, attempt.url()));
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if allowed {
            attempt.follow()
        } else {
            attempt.error("redirect off the source's origin")
        }
    })
}

/// Runs blocking file work off the async workers.
async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| SourceError::Blocking(err.to_string()))
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

    #[tokio::test]
    async fn a_fifo_or_an_oversized_file_is_an_error_at_once() {
        let path = scratch("users.fifo");
        crate::users::mkfifo(&path);
        let mut source = Source::new(UserSource::File(path.clone()), None, Duration::from_secs(1));
        let fetched = tokio::time::timeout(Duration::from_secs(2), source.fetch()).await;
        let Ok(fetched) = fetched else {
            crate::users::release_fifo(&path);
            panic!("a FIFO hung the fetch");
        };
        let err = fetched.unwrap_err();
        assert!(
            err.to_string().contains("not a regular file (a FIFO)"),
            "{err}"
        );

        let big = scratch("big-users.json");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_USERS_BYTES + 1).unwrap();
        let mut source = Source::new(UserSource::File(big), None, Duration::from_secs(1));
        let err = source.fetch().await.unwrap_err();
        assert!(err.to_string().contains("larger than the cap"), "{err}");
    }

    /// A loopback server: `/big` answers a body one byte over the cap (with a length),
    /// `/chunked` the same without one, `/hop` redirects within its origin, `/away` to another
    /// loopback port (a different origin), where `/users` answers a good document.
    async fn serve_redirects() -> (String, String) {
        use axum::body::Body;
        use axum::response::{IntoResponse, Redirect};
        use axum::routing::get;
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_url = format!("http://{}", other.local_addr().unwrap());
        let users = || async { "{\"users\": []}" };
        tokio::spawn(async move {
            axum::serve(other, axum::Router::new().route("/users", get(users))).await
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let away = format!("{other_url}/users");
        let over = (MAX_USERS_BYTES + 1) as usize;
        let app = axum::Router::new()
            .route("/users", get(users))
            .route("/big", get(move || async move { vec![b' '; over] }))
            .route(
                "/chunked",
                get(move || async move {
                    let chunks =
                        (0..=over / 65536).map(|_| Ok::<_, std::io::Error>(vec![b' '; 65536]));
                    Body::from_stream(futures_util::stream::iter(chunks)).into_response()
                }),
            )
            .route("/hop", get(|| async { Redirect::temporary("/users") }))
            .route(
                "/away",
                get(move || async move { Redirect::temporary(&away) }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, other_url)
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let (url, _) = serve_redirects().await;
        for path in ["/big", "/chunked"] {
            let mut source = Source::new(
                UserSource::Https(format!("{url}{path}")),
                None,
                Duration::from_secs(10),
            );
            let err = source.fetch().await.unwrap_err();
            assert!(matches!(err, SourceError::TooLarge { .. }), "{path}: {err}");
        }
    }

    /// Redirects on plain loopback http (an https test server would need a certificate the
    /// client trusts): the policy that refuses https -> http is the same origin rule, tested
    /// on its own in `domain::users`.
    #[tokio::test]
    async fn redirects_are_followed_only_within_the_origin() {
        let (url, _) = serve_redirects().await;
        let mut hop = Source::new(
            UserSource::Https(format!("{url}/hop")),
            None,
            Duration::from_secs(2),
        );
        assert!(matches!(hop.fetch().await, Ok(Fetched::Changed(_))));
        let mut away = Source::new(
            UserSource::Https(format!("{url}/away")),
            None,
            Duration::from_secs(2),
        );
        let err = away.fetch().await.unwrap_err();
        assert!(matches!(err, SourceError::Redirect { .. }), "{err}");
    }

    #[test]
    fn look_alike_loopback_urls_are_refused_by_the_config() {
        use crate::config::{Config, Overrides};
        for url in [
            "http://127.0.0.1.evil.net/users",
            "http://localhost@evil.net/users",
            "http://localhost.evil.net/users",
            "http://evil.net/users",
        ] {
            let toml = format!("[users]\nsource = {url:?}");
            let err = Config::from_toml(&toml, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("users.source"), "{url}: {err}");
        }
        let toml = "[users]\nsource = \"http://127.0.0.1:8080/users\"";
        assert!(Config::from_toml(toml, &Overrides::default()).is_ok());
        // And at the fetch, should a refused URL get this far.
        assert!(matches!(
            parse_url("http://127.0.0.1.evil.net/users"),
            Err(SourceError::Url { .. })
        ));
    }
}
