//! Where a tunnel config sends traffic, and which of those places stay closed unless the
//! operator allows them: the host's own loopback, link-local addresses, the unspecified address
//! (which reaches the host itself), cloud metadata services, and Unix sockets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A place a config forwards or redirects traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP literal or a host name, and the port when the config fixes one (`None`: the port
    /// is chosen at run time, e.g. the listening port or the client's).
    Host { host: String, port: Option<u16> },
    /// A Unix socket path (`/path`) or an abstract socket (`@name`).
    Unix(String),
}

impl Target {
    /// `host` (as written in the config) with `port`.
    pub fn host(host: &str, port: Option<u16>) -> Self {
        Self::Host {
            host: host.to_owned(),
            port,
        }
    }

    /// Why this target must be allowed explicitly, or `None` when it needs no permission.
    pub fn closed(&self) -> Option<Closed> {
        match self {
            Self::Unix(_) => Some(Closed::UnixSocket),
            Self::Host { host, .. } => classify(host),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{path}"),
            Self::Host { host, port } => {
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                match port {
                    Some(port) => write!(f, "{host}:{port}"),
                    None => write!(f, "{host} (any port)"),
                }
            }
        }
    }
}

/// Why a target is closed by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Loopback,
    LinkLocal,
    Unspecified,
    Metadata,
    UnixSocket,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "a loopback address (this host)",
            Self::LinkLocal => "a link-local address",
            Self::Unspecified => "the unspecified address (this host)",
            Self::Metadata => "a cloud metadata service",
            Self::UnixSocket => "a local Unix socket",
        })
    }
}

/// Host names of metadata services (GCE's, and EC2's legacy names), matched exactly.
const METADATA_NAMES: [&str; 4] = [
    "metadata.google.internal",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Why `host` is closed; `None` for a public or private address or any other name. Names are
/// not resolved: a name that resolves to a closed address is not caught here.
pub fn classify(host: &str) -> Option<Closed> {
    let host = normalize(host);
    if host.is_empty() || host == "localhost" || host.ends_with(".localhost") {
        return Some(Closed::Loopback);
    }
    if METADATA_NAMES.contains(&host.as_str()) {
        return Some(Closed::Metadata);
    }
    parse_ip(&host).and_then(classify_ip)
}

fn classify_ip(ip: IpAddr) -> Option<Closed> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Closed> {
    // Alibaba Cloud's metadata service; AWS, GCP, Azure and Oracle use 169.254.169.254.
    let metadata = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(100, 100, 100, 200),
    ];
    if metadata.contains(&ip) {
        Some(Closed::Metadata)
    } else if ip.is_loopback() {
        Some(Closed::Loopback)
    } else if ip.is_link_local() {
        Some(Closed::LinkLocal)
    } else if ip.octets()[0] == 0 {
        // 0.0.0.0/8, "this network": Linux connects 0.0.0.0 to the host itself.
        Some(Closed::Unspecified)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Closed> {
    const EC2_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    if ip == EC2_METADATA {
        Some(Closed::Metadata)
    } else if ip.is_loopback() {
        Some(Closed::Loopback)
    } else if ip.is_unspecified() {
        Some(Closed::Unspecified)
    } else if ip.is_unicast_link_local() {
        Some(Closed::LinkLocal)
    } else {
        None
    }
}

/// Lower case, without brackets or a trailing dot, so that `LOCALHOST.` and `[::1]` are seen
/// for what they are.
fn normalize(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// An IP literal, including the old numeric forms some resolvers still accept (`127.1`,
/// `0x7f.1`, `2130706433`, `0177.0.0.1`): refusing those costs nothing.
fn parse_ip(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    // A zone suffix (fe80::1%eth0) does not change the address.
    if let Some((ip, _zone)) = host.split_once('%') {
        return ip.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    inet_aton(host).map(IpAddr::V4)
}

/// `inet_aton(3)`: one to four parts, each decimal, octal (leading 0) or hex (0x); the last
/// part fills the remaining bytes.
fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let numbers = parts
        .iter()
        .map(|part| number(part))
        .collect::<Option<Vec<u64>>>()?;
    let (last, head) = numbers.split_last()?;
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - head.len() as u32);
    if *last >= 1u64 << rest_bits {
        return None;
    }
    let value = head
        .iter()
        .fold(0u64, |acc, &n| (acc << 8) | n)
        .checked_shl(rest_bits)?
        | last;
    Some(Ipv4Addr::from(u32::try_from(value).ok()?))
}

fn number(part: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() && radix != 16 {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, radix).ok()
}

/// One entry of `[tunnels.policy] allow_targets`: a host with or without a port, or a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedTarget(Target);

impl AllowedTarget {
    /// Reads `"host:port"`, `"[v6]:port"`, a bare `"host"` or `"[v6]"` or v6 literal (any
    /// port), or a socket `"/path"` or `"@name"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("an empty target".into());
        }
        if text.starts_with('/') || text.starts_with('@') {
            return Ok(Self(Target::Unix(text.to_owned())));
        }
        if text.parse::<Ipv6Addr>().is_ok() {
            return Ok(Self(Target::host(text, None)));
        }
        let (host, port) = match split_host_port(text) {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{port:?} is not a port from 1 to 65535"))?;
                (host, Some(port))
            }
            None => (text, None),
        };
        let bare = normalize(host);
        if bare.is_empty() || bare.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("{host:?} is not a host"));
        }
        Ok(Self(Target::host(host, port)))
    }

    /// Whether this entry lets `target` through: the same socket, or the same host (IPs
    /// compared as addresses, names without case) and either no port in the entry or the
    /// target's own port.
    pub fn allows(&self, target: &Target) -> bool {
        match (&self.0, target) {
            (Target::Unix(a), Target::Unix(b)) => a == b,
            (Target::Host { host: a, port: pa }, Target::Host { host: b, port: pb }) => {
                same_host(a, b) && (pa.is_none() || pa == pb)
            }
            _ => false,
        }
    }
}

impl fmt::Display for AllowedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn same_host(a: &str, b: &str) -> bool {
    let (a, b) = (normalize(a), normalize(b));
    match (parse_ip(&a), parse_ip(&b)) {
        (Some(a), Some(b)) => canonical(a) == canonical(b),
        (None, None) => a == b,
        _ => false,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `host:port` with the host possibly in brackets; `None` when there is no port part. An
/// empty host is kept empty (callers decide what it means).
pub fn split_host_port(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return after.strip_prefix(':').map(|port| (host, port));
    }
    let (host, port) = text.rsplit_once(':')?;
    // A bare IPv6 literal has several colons and no port.
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}
