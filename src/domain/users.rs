//! Users of a tunnel's inbounds: who they are (email), how they log in (credential), and which
//! inbound protocols can take them.

use std::fmt;

/// Which core a tunnel runs. They speak the same gRPC API under different package names and
/// differ in a few enum numbers, so every request is built for one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    Xray,
    V2ray,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xray => "xray",
            Self::V2ray => "v2ray",
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a user authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Credential {
    /// A UUID in canonical lower-case hyphenated form (VLESS, VMess).
    Id(String),
    /// A password (Trojan, Shadowsocks).
    Password(String),
}

/// One user as an inbound holds it. `email` is the identity: the API removes users by email.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User {
    pub email: String,
    pub credential: Credential,
    /// VLESS flow (`""` or e.g. `xtls-rprx-vision`); ignored by other protocols.
    pub flow: String,
    /// Policy level (`policy.levels[level]`).
    pub level: u32,
}

/// An inbound's protocol, as named in the core's JSON config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Protocol {
    Vless,
    Vmess,
    Trojan,
    Shadowsocks,
    Other(String),
}

impl Protocol {
    /// Reads a protocol name in any letter case, as the cores' loader lower-cases it first
    /// (semantics §7: `"VLESS"` is a VLESS inbound). Other names are kept lower-cased.
    pub fn parse(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "vless" => Self::Vless,
            "vmess" => Self::Vmess,
            "trojan" => Self::Trojan,
            "shadowsocks" => Self::Shadowsocks,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Vless => "vless",
            Self::Vmess => "vmess",
            Self::Trojan => "trojan",
            Self::Shadowsocks => "shadowsocks",
            Self::Other(name) => name,
        }
    }

    /// Why an inbound of this protocol cannot take users through the API on `flavour`, or
    /// `None` when it can. (V2Ray 4.34's Shadowsocks inbound is single-user: "proxy is not a
    /// UserManager"; dokodemo-door, socks, http never are. Source: shared/xray-api-facts.md §3.4.)
    pub fn user_management_refusal(&self, flavour: Flavour) -> Option<&'static str> {
        match (self, flavour) {
            (Self::Vless | Self::Vmess | Self::Trojan, _) => None,
            (Self::Shadowsocks, Flavour::Xray) => None,
            (Self::Shadowsocks, Flavour::V2ray) => {
                Some("V2Ray's shadowsocks inbound is single-user")
            }
            (Self::Other(_), _) => Some("this protocol has no users"),
        }
    }

    /// Whether a credential fits this protocol: ids for VLESS/VMess, passwords for
    /// Trojan/Shadowsocks. Sending a mismatched account crashes the core (facts, appendix A:
    /// "VMess account to VLESS inbound: server PANIC"), so nothing is sent unless this holds.
    pub fn accepts(&self, credential: &Credential) -> bool {
        matches!(
            (self, credential),
            (Self::Vless | Self::Vmess, Credential::Id(_))
                | (Self::Trojan | Self::Shadowsocks, Credential::Password(_))
        )
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a UUID in any case into canonical lower-case hyphenated form, or `None`.
pub fn canonical_uuid(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let ok = bytes.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    ok.then(|| text.to_ascii_lowercase())
}

/// Longest email accepted from the desired-users document, in bytes of UTF-8: RFC 5321's limit
/// on an address. Emails end up in log lines, metric labels and the cores' stats names.
pub const MAX_EMAIL_BYTES: usize = 254;

/// Why an email cannot be a user's identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("empty email")]
    Empty,
    #[error("email is {0} bytes long, more than {MAX_EMAIL_BYTES}")]
    TooLong(usize),
    #[error("email {0:?} has leading or trailing whitespace")]
    Whitespace(String),
    #[error(
        "email {email:?} contains {bad:?} (U+{code:04X}): control, invisible and separator characters other than a plain space are refused"
    )]
    Unprintable { email: String, bad: char, code: u32 },
    #[error("email {0:?} contains \">>>\", the separator of the cores' stats names")]
    StatsSeparator(String),
    #[error(
        "email {0:?} contains \" > \", the separator of the cores' error chains: their answers about this user could not be read"
    )]
    ErrorChainSeparator(String),
}

/// Checks an email for use as a user's identity. Unicode letters, marks, digits, punctuation
/// and symbols are fine (internationalised addresses exist, and the cores take any string);
/// what is refused is what can forge or hide text where the email is shown: control
/// characters (a newline would start a fake log line), format characters (bidi overrides,
/// zero-width joiners), line/paragraph separators, spaces other than U+0020, private-use,
/// surrogate and unassigned code points. Length is capped at [`MAX_EMAIL_BYTES`].
pub fn check_email(email: &str) -> Result<(), EmailError> {
    use unicode_properties::{GeneralCategoryGroup as Group, UnicodeGeneralCategory};
    if email.len() > MAX_EMAIL_BYTES {
        return Err(EmailError::TooLong(email.len()));
    }
    if email.trim().is_empty() {
        return Err(EmailError::Empty);
    }
    if email.trim() != email {
        return Err(EmailError::Whitespace(email.to_owned()));
    }
    let unprintable =
        |c: char| c != ' ' && matches!(c.general_category_group(), Group::Other | Group::Separator);
    if let Some(bad) = email.chars().find(|c| unprintable(*c)) {
        return Err(EmailError::Unprintable {
            email: email.to_owned(),
            bad,
            code: u32::from(bad),
        });
    }
    if email.contains(">>>") {
        return Err(EmailError::StatsSeparator(email.to_owned()));
    }
    // semantics §10: the cores chain errors as `pkg: msg > inner`; an email holding the
    // separator would split "User E already exists." in two.
    if email.contains(" > ") {
        return Err(EmailError::ErrorChainSeparator(email.to_owned()));
    }
    Ok(())
}

/// An email (or any name read from outside) fit for a log line: control and other unprintable
/// characters escaped, cut to [`MAX_EMAIL_BYTES`] characters. For names that were never
/// validated, like the clients already in a core's config.
pub fn loggable(text: &str) -> String {
    let mut shown: String = text.chars().take(MAX_EMAIL_BYTES).collect();
    if shown.len() < text.len() {
        shown.push_str("...");
    }
    shown.escape_debug().to_string()
}

/// Why a users source URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceUrlError {
    #[error(
        "plain http only to a loopback address (127.0.0.0/8, [::1]) or exactly `localhost`; use https"
    )]
    PlainHttpOffLoopback,
    #[error("the scheme must be https (or http to loopback)")]
    Scheme,
    #[error("no user name or password in the URL (they would show in logs): use users.token_file")]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
}

/// Whether `url` may be a users source: https to any host, or plain http to a loopback IP or
/// the name `localhost` (parsed, so `http://127.0.0.1.evil.net` and `http://localhost@evil.net`
/// are not loopback). No credentials in the URL.
pub fn check_source_url(url: &url::Url) -> Result<(), SourceUrlError> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SourceUrlError::Credentials);
    }
    let host = url.host().ok_or(SourceUrlError::NoHost)?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&host) => Ok(()),
        "http" => Err(SourceUrlError::PlainHttpOffLoopback),
        _ => Err(SourceUrlError::Scheme),
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => *name == "localhost",
    }
}

/// Whether a users source may follow a redirect from `from` to `to`: only within one origin
/// (scheme, host and port), so an https source is never sent off to plain http or to another
/// host, whatever the server answers.
pub fn redirect_allowed(from: &url::Url, to: &url::Url) -> bool {
    from.origin() == to.origin() && check_source_url(to).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_accept_only_their_credential() {
        let id = Credential::Id("x".into());
        let pw = Credential::Password("x".into());
        assert!(Protocol::Vless.accepts(&id) && !Protocol::Vless.accepts(&pw));
        assert!(Protocol::Vmess.accepts(&id) && !Protocol::Vmess.accepts(&pw));
        assert!(Protocol::Trojan.accepts(&pw) && !Protocol::Trojan.accepts(&id));
        assert!(Protocol::Shadowsocks.accepts(&pw));
        assert!(!Protocol::parse("dokodemo-door").accepts(&id));
    }

    #[test]
    fn user_management_depends_on_the_core() {
        assert_eq!(
            Protocol::Shadowsocks.user_management_refusal(Flavour::Xray),
            None
        );
        assert!(
            Protocol::Shadowsocks
                .user_management_refusal(Flavour::V2ray)
                .is_some()
        );
        assert!(
            Protocol::parse("socks")
                .user_management_refusal(Flavour::Xray)
                .is_some()
        );
        assert_eq!(Protocol::parse("vless"), Protocol::Vless);
    }

    #[test]
    fn protocol_names_are_read_in_any_case() {
        for (name, protocol) in [
            ("VLESS", Protocol::Vless),
            ("VMess", Protocol::Vmess),
            ("Trojan", Protocol::Trojan),
            ("ShadowSocks", Protocol::Shadowsocks),
            ("Dokodemo-Door", Protocol::Other("dokodemo-door".into())),
        ] {
            assert_eq!(Protocol::parse(name), protocol, "{name}");
        }
    }

    #[test]
    fn uuids_are_canonicalised() {
        assert_eq!(
            canonical_uuid("A1B2C3D4-0000-4000-8000-00000000000F").as_deref(),
            Some("a1b2c3d4-0000-4000-8000-00000000000f")
        );
        for bad in [
            "",
            "hello",
            "a1b2c3d4000040008000000000000000000f",
            "g1b2c3d4-0000-4000-8000-00000000000f",
        ] {
            assert_eq!(canonical_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn emails_that_forge_or_hide_text_are_refused() {
        for good in [
            "alice@example.com",
            "Zoë@例子.测试",
            "John Doe",
            "o'brien+tag@x",
        ] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        let at_limit = format!("{}@x", "a".repeat(MAX_EMAIL_BYTES - 2));
        assert_eq!(check_email(&at_limit), Ok(()));
        let long = format!("{}@x", "a".repeat(MAX_EMAIL_BYTES));
        assert_eq!(
            check_email(&long),
            Err(EmailError::TooLong(MAX_EMAIL_BYTES + 2))
        );
        for (bad, code) in [
            ("alice@x\nINFO forged line", 0x0a),
            ("a\rb", 0x0d),
            ("a\u{1b}[31mred", 0x1b),
            ("a\u{7f}b", 0x7f),
            ("a\u{85}b", 0x85),
            ("evil\u{202e}moc.x@a", 0x202e),
            ("zero\u{200b}width", 0x200b),
            ("line\u{2028}sep", 0x2028),
            ("no\u{a0}break", 0xa0),
            ("private\u{e000}", 0xe000),
            ("bom\u{feff}", 0xfeff),
        ] {
            match check_email(bad) {
                Err(EmailError::Unprintable { code: c, .. }) => assert_eq!(c, code, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert_eq!(check_email(""), Err(EmailError::Empty));
        assert!(matches!(check_email(" a"), Err(EmailError::Whitespace(_))));
        assert!(matches!(
            check_email("a>>>b"),
            Err(EmailError::StatsSeparator(_))
        ));
        // semantics §10: " > " splits the cores' error chains; a bare ">" is fine.
        assert!(matches!(
            check_email("a > b@x"),
            Err(EmailError::ErrorChainSeparator(_))
        ));
        assert_eq!(check_email("a>b@x"), Ok(()));
    }

    #[test]
    fn loggable_escapes_and_cuts() {
        assert_eq!(loggable("bob@x"), "bob@x");
        assert_eq!(loggable("a\nb"), "a\\nb");
        let shown = loggable(&"x".repeat(10_000));
        assert_eq!(shown.len(), MAX_EMAIL_BYTES + 3);
    }

    #[test]
    fn plain_http_only_to_a_parsed_loopback_host() {
        let check = |text: &str| check_source_url(&url::Url::parse(text).unwrap());
        for good in [
            "https://panel.example/users",
            "https://127.0.0.1.evil.net/users",
            "http://127.0.0.1:8080/users",
            "http://127.1.2.3/users",
            "http://localhost/users",
            "http://LOCALHOST:9/users",
            "http://[::1]:8080/users",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            (
                "http://127.0.0.1.evil.net/users",
                SourceUrlError::PlainHttpOffLoopback,
            ),
            (
                "http://localhost.evil.net/users",
                SourceUrlError::PlainHttpOffLoopback,
            ),
            (
                "http://localhost@evil.net/users",
                SourceUrlError::Credentials,
            ),
            (
                "http://evil.net@127.0.0.1/users",
                SourceUrlError::Credentials,
            ),
            (
                "https://user:pw@panel.example/",
                SourceUrlError::Credentials,
            ),
            (
                "http://10.0.0.1/users",
                SourceUrlError::PlainHttpOffLoopback,
            ),
            (
                "http://[::ffff:127.0.0.1]/users",
                SourceUrlError::PlainHttpOffLoopback,
            ),
            ("http://0.0.0.0/users", SourceUrlError::PlainHttpOffLoopback),
            ("ftp://localhost/users", SourceUrlError::Scheme),
        ] {
            assert_eq!(check(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn redirects_stay_on_their_origin() {
        let url = |text: &str| url::Url::parse(text).unwrap();
        let from = url("https://panel.example/users");
        assert!(redirect_allowed(
            &from,
            &url("https://panel.example/v2/users")
        ));
        assert!(!redirect_allowed(&from, &url("http://panel.example/users")));
        assert!(!redirect_allowed(
            &from,
            &url("https://other.example/users")
        ));
        assert!(!redirect_allowed(
            &from,
            &url("https://panel.example:8443/users")
        ));
        let local = url("http://127.0.0.1:8080/users");
        assert!(!redirect_allowed(
            &local,
            &url("http://127.0.0.1:8081/users")
        ));
        assert!(redirect_allowed(&local, &url("http://127.0.0.1:8080/u")));
    }
}
