//! The client's error enum and the one place where the core's error strings are read.
//!
//! Both cores report almost every failure as gRPC status UNKNOWN with a Go error text as the
//! message (facts §0, §6), so the kind of failure can only be told from that text.
//! [`classify`] is the single function that does it; each string it knows has a test below.
//! It also reads the two answers the client uses as probes: "unknown service" (detection) and
//! "Email must not be empty." (which proxy serves an inbound).

use std::error::Error as _;

use tonic::{Code, Status, TimeoutExpired};

/// Why a call to a core's API did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Add: the inbound already has a user with this email (compared case-insensitively by the
    /// core). It does not mean the existing user has the same credential (facts P2, P3).
    #[error("the user already exists on this inbound")]
    AlreadyExists,
    /// Remove: the inbound has no user with this email.
    #[error("the user is not on this inbound")]
    NotFound,
    /// The core does not know this service or method (V2Ray, an older Xray, or a service that
    /// is not listed in the core's `api.services`). Holds the core's message.
    #[error("not implemented by the core: {0}")]
    Unimplemented(String),
    /// Nothing was sent: the request would have been malformed or would have crashed the core.
    #[error("refused to send: {0}")]
    Refused(String),
    /// The call did not finish within the client's timeout. It may still have taken effect.
    #[error("the call timed out")]
    Timeout,
    /// The core could not be reached or the connection broke (refused, reset, unavailable).
    #[error("transport: {0}")]
    Transport(String),
    /// The inbound cannot hold users: its proxy is not a user manager (a single-user or relay
    /// Shadowsocks-2022 inbound on Xray answers "proxy is not a UserManager", semantics §2).
    /// Holds the core's message.
    #[error("the inbound cannot hold users: {0}")]
    CannotHoldUsers(String),
    /// Detection: the API answers, but serves neither HandlerService nor StatsService under
    /// Xray's or V2Ray's names (the core's `api.services` lists neither). Holds what to fix.
    #[error("{0}")]
    NoServices(String),
    /// Any other failure the core reported, with its text (e.g. an unknown inbound tag), or an
    /// answer this client could not read.
    #[error("core: {0}")]
    Core(String),
}

impl ApiError {
    /// Whether trying the same call again later may succeed: timeouts and transport failures.
    /// After a timeout the first attempt may have been applied, so a retried add can answer
    /// [`ApiError::AlreadyExists`] and a retried remove [`ApiError::NotFound`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout | Self::Transport(_))
    }
}

/// A refusal to send: the request would be malformed or could crash the core.
pub(super) fn refused(why: &str) -> ApiError {
    ApiError::Refused(why.to_owned())
}

/// What a failed call's status says. Most of it is an [`ApiError`]; the other variants are
/// answers that detection and the inbound check read, and become [`ApiError`]s otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Api(ApiError),
    /// grpc-go "unknown service S": the core has no such service (e.g. Xray's on V2Ray).
    UnknownService(String),
    /// grpc-go "unknown method M for service S".
    UnknownMethod(String),
    /// "<pkg>/proxy/<proxy>[/...]: Email must not be empty.", the answer to removing the
    /// empty email: it names the inbound's proxy (`vless`, `vmess`, `trojan`, ...).
    EmptyEmail {
        proxy: String,
        message: String,
    },
    /// "... proxy is not a UserManager": the inbound cannot hold users (facts §3.4).
    NotUserManager(String),
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> ApiError {
        match failure {
            Failure::Api(error) => error,
            Failure::UnknownService(message) | Failure::UnknownMethod(message) => {
                ApiError::Unimplemented(message)
            }
            Failure::EmptyEmail { message, .. } => ApiError::Core(message),
            Failure::NotUserManager(message) => ApiError::CannotHoldUsers(message),
        }
    }
}

/// Reads a failed call's status. The only function that reads the core's error texts.
pub(crate) fn classify(status: &Status) -> Failure {
    let message = status.message();
    let api = |error| Failure::Api(error);
    match status.code() {
        Code::DeadlineExceeded => return api(ApiError::Timeout),
        // tonic's own grpc-timeout expiry is reported as CANCELLED with a TimeoutExpired source.
        Code::Cancelled if source_is::<TimeoutExpired>(status) => return api(ApiError::Timeout),
        Code::Unavailable => return api(ApiError::Transport(message.to_owned())),
        Code::Unimplemented if message.starts_with("unknown service") => {
            return Failure::UnknownService(message.to_owned());
        }
        Code::Unimplemented => return Failure::UnknownMethod(message.to_owned()),
        // A status that carries a local error as its source was made by tonic, not sent by the
        // core: the connection broke mid-call (reset, h2 protocol error, the core crashed).
        _ if status.source().is_some() => return api(ApiError::Transport(message.to_owned())),
        _ => {}
    }
    // facts §6: "<pkg>: User EMAIL already exists." / "<pkg>: User EMAIL not found.". The email
    // is free text (it may hold " > ", the chain separator, or ": User "), so these are read
    // from the known suffix and the first proxy package, never by splitting the chain.
    if user_text(message, " already exists.") {
        return api(ApiError::AlreadyExists);
    }
    if user_text(message, " not found.") {
        return api(ApiError::NotFound);
    }
    // facts §0: "<pkg>: <message>[ > <inner>]"; the innermost error is last. The texts below
    // carry no email, so splitting is safe for them.
    let inner = message.rsplit(" > ").next().unwrap_or(message);
    if let Some(package) = inner.strip_suffix(": Email must not be empty.") {
        // "v2ray.com/core/proxy/vmess/inbound" (4.34, live) or "proxy/vless" (Xray, facts §6).
        let after = package
            .rfind("proxy/")
            .map_or("", |at| &package[at + "proxy/".len()..]);
        let proxy = after.split('/').next().unwrap_or("").to_owned();
        Failure::EmptyEmail {
            proxy,
            message: message.to_owned(),
        }
    } else if inner.ends_with("proxy is not a UserManager") {
        Failure::NotUserManager(message.to_owned())
    } else {
        api(ApiError::Core(message.to_owned()))
    }
}

/// Whether `message` is "... <proxy package>: User <email><suffix>", with the fixed words in
/// any letter case (the cores print the email as they hold it, some lower-cased, semantics §1).
/// The package is the first `proxy/<name>` path in the text that starts the text or follows a
/// '/' or a space and is followed by ": User "; everything after it up to `suffix` is the
/// email, whatever it contains. A handler's "handler not found: TAG" names no proxy package.
fn user_text(message: &str, suffix: &str) -> bool {
    // ASCII lower-casing keeps byte offsets, so positions found in `lower` hold in `message`.
    let lower = message.to_ascii_lowercase();
    let Some(body) = lower.strip_suffix(suffix) else {
        return false;
    };
    let mut from = 0;
    while let Some(at) = body[from..].find("proxy/") {
        let start = from + at;
        from = start + "proxy/".len();
        if start > 0 && !matches!(body.as_bytes()[start - 1], b'/' | b' ') {
            continue;
        }
        let rest = &body[from..];
        let name = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '/'))
            .unwrap_or(rest.len());
        if name > 0 && rest[name..].starts_with(": user ") {
            return true;
        }
    }
    false
}

fn source_is<E: std::error::Error + 'static>(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(error) = source {
        if error.is::<E>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: Status) -> ApiError {
        classify(&status).into()
    }

    fn unknown(message: &str) -> ApiError {
        api(Status::unknown(message))
    }

    #[test]
    fn already_exists_from_each_protocol_and_core() {
        for text in [
            "v2ray.com/core/proxy/vless: User alice@x already exists.",
            "v2ray.com/core/proxy/vmess/inbound: User ALICE@x already exists.",
            "v2ray.com/core/proxy/trojan: User t@x already exists.",
            "proxy/vless: User alice@x already exists.",
            "proxy/shadowsocks_2022: User s@x already exists.",
        ] {
            assert_eq!(unknown(text), ApiError::AlreadyExists, "{text}");
        }
    }

    #[test]
    fn not_found_on_remove() {
        for text in [
            "v2ray.com/core/proxy/vless: User nobody@x not found.",
            "v2ray.com/core/proxy/vmess/inbound: User nobody@x not found.",
            "proxy/trojan: User nobody@x not found.",
        ] {
            assert_eq!(unknown(text), ApiError::NotFound, "{text}");
        }
    }

    #[test]
    fn emails_holding_the_chain_separator_or_the_fixed_words_still_classify() {
        // An email is free text: " > " (the error chain separator), ": User ", "proxy/" and the
        // fixed words may all be part of it (issue 9 §3.8).
        for email in [
            "a > b@x",
            "x > y > z",
            "a: User b@x",
            "proxy/vless: User c@x",
            "d > proxy/vless: User e@x",
            "not found. > already exists.",
        ] {
            for package in ["proxy/vless", "v2ray.com/core/proxy/vmess/inbound"] {
                let exists = format!("{package}: User {email} already exists.");
                assert_eq!(unknown(&exists), ApiError::AlreadyExists, "{exists}");
                let missing = format!("{package}: User {email} not found.");
                assert_eq!(unknown(&missing), ApiError::NotFound, "{missing}");
            }
        }
    }

    #[test]
    fn the_fixed_words_match_in_any_letter_case() {
        // Xray's shadowsocks and vless print the removed email lower-cased (semantics §1); the
        // email's case never matters, and neither does the case of the fixed words.
        for text in [
            "proxy/shadowsocks: User alice@x not found.",
            "proxy/vless: user ALICE@X NOT FOUND.",
            "PROXY/TROJAN: User Alice@X Not Found.",
        ] {
            assert_eq!(unknown(text), ApiError::NotFound, "{text}");
        }
        let text = "proxy/vmess/inbound: USER ALICE@x ALREADY EXISTS.";
        assert_eq!(unknown(text), ApiError::AlreadyExists, "{text}");
    }

    #[test]
    fn user_texts_need_a_proxy_package() {
        for text in [
            "User alice@x not found.",
            "app/proxyman/command: User alice@x not found.",
            "xproxy/vless: User alice@x not found.",
            "proxy/: User alice@x not found.",
            "proxy/vless: User alice@x not found. (retry)",
        ] {
            assert_eq!(unknown(text), ApiError::Core(text.to_owned()), "{text}");
        }
    }

    #[test]
    fn unknown_tag_and_other_texts_stay_core_errors() {
        for text in [
            "v2ray.com/core/app/proxyman/command: failed to get handler: nope > \
             v2ray.com/core/app/proxyman/inbound: handler not found: nope",
            "v2ray.com/core/app/proxyman/command: failed to parse user > \
             v2ray.com/core/proxy/vless: failed to parse ID > invalid UUID: hello",
            "v2ray.com/core/app/stats/command: user>>>carol@x>>>traffic>>>downlink not found.",
            "not enough information for making a decision",
        ] {
            assert_eq!(unknown(text), ApiError::Core(text.to_owned()), "{text}");
        }
    }

    #[test]
    fn the_empty_email_answer_names_the_inbound_proxy() {
        for (text, proxy) in [
            (
                "v2ray.com/core/proxy/vless: Email must not be empty.",
                "vless",
            ),
            (
                "v2ray.com/core/proxy/vmess/inbound: Email must not be empty.",
                "vmess",
            ),
            (
                "v2ray.com/core/proxy/trojan: Email must not be empty.",
                "trojan",
            ),
            (
                "proxy/shadowsocks_2022: Email must not be empty.",
                "shadowsocks_2022",
            ),
            ("proxy/shadowsocks: Email must not be empty.", "shadowsocks"),
        ] {
            let expected = Failure::EmptyEmail {
                proxy: proxy.into(),
                message: text.into(),
            };
            assert_eq!(classify(&Status::unknown(text)), expected);
            assert_eq!(unknown(text), ApiError::Core(text.into()));
        }
        let text = "v2ray.com/core/app/proxyman/command: proxy is not a UserManager";
        assert_eq!(
            classify(&Status::unknown(text)),
            Failure::NotUserManager(text.into())
        );
        assert_eq!(unknown(text), ApiError::CannotHoldUsers(text.into()));
    }

    #[test]
    fn unknown_service_and_method_are_unimplemented() {
        let service = "unknown service xray.app.proxyman.command.HandlerService";
        let method = "unknown method GetInboundUsers for service \
                      v2ray.core.app.proxyman.command.HandlerService";
        let failure = classify(&Status::unimplemented(service));
        assert_eq!(failure, Failure::UnknownService(service.into()));
        assert_eq!(
            ApiError::from(failure),
            ApiError::Unimplemented(service.into())
        );
        let failure = classify(&Status::unimplemented(method));
        assert_eq!(failure, Failure::UnknownMethod(method.into()));
        assert_eq!(
            ApiError::from(failure),
            ApiError::Unimplemented(method.into())
        );
    }

    #[test]
    fn transport_failures_are_retryable() {
        let refused = api(Status::unavailable("tcp connect error: Connection refused"));
        assert!(matches!(refused, ApiError::Transport(ref m) if m.contains("refused")));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let reset = api(Status::from_error(Box::new(io)));
        assert!(matches!(reset, ApiError::Transport(_)), "{reset:?}");
        // What a core that crashed mid-call looks like (seen live: Unknown "transport error").
        let broken = api(Status::from_error("transport error".into()));
        assert!(matches!(broken, ApiError::Transport(_)), "{broken:?}");
        assert!(refused.is_retryable() && reset.is_retryable());
        assert!(!ApiError::AlreadyExists.is_retryable());
        assert!(!ApiError::Core(String::new()).is_retryable());
    }

    #[test]
    fn deadlines_are_timeouts() {
        assert_eq!(
            api(Status::deadline_exceeded("deadline")),
            ApiError::Timeout
        );
        let local = Status::from_error(Box::new(TimeoutExpired(())));
        assert_eq!(local.code(), Code::Cancelled);
        assert_eq!(api(local), ApiError::Timeout);
        assert!(ApiError::Timeout.is_retryable());
        // A cancellation sent by the peer is not ours to retry blindly.
        assert!(matches!(api(Status::cancelled("peer")), ApiError::Core(_)));
    }
}
