//! Traffic counters of a core's StatsService, by inbound, outbound and user, and Xray's online
//! users (semantics "API the warden does not use yet").

use super::check_email;

/// One byte counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficCounter {
    /// Inbound or outbound tag, or user email.
    pub name: String,
    /// `uplink` or `downlink`.
    pub direction: &'static str,
    pub bytes: u64,
}

/// A tunnel's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    pub inbounds: Vec<TrafficCounter>,
    /// Every outbound's counters (the core makes them only with `statsOutboundUplink` /
    /// `statsOutboundDownlink` in `policy.system`).
    pub outbounds: Vec<TrafficCounter>,
    pub users: Vec<TrafficCounter>,
    /// Users left out because of the series cap.
    pub users_dropped: usize,
    /// Who is online, from Xray's online API; `None` where the core has none (V2Ray, Xray
    /// before v26.1.13) or it did not answer.
    pub online: Option<Online>,
}

/// Xray's online users at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Online {
    /// Users connected from at least one address. Xray tracks them only on policy levels with
    /// `statsUserOnline`, and never records the loopback client 127.0.0.1 or ::1
    /// (app/stats/online_map.go), so with neither this is 0.
    pub users: usize,
    /// Distinct addresses per online user, by email; empty unless asked for.
    pub user_ips: Vec<UserIps>,
    /// Online users left out of `user_ips` because of the series cap.
    pub users_dropped: usize,
}

/// How many distinct addresses one user is online from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIps {
    pub user: String,
    pub ips: usize,
}

/// What a stats counter name describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatName<'a> {
    Inbound {
        tag: &'a str,
        direction: &'static str,
    },
    Outbound {
        tag: &'a str,
        direction: &'static str,
    },
    User {
        email: &'a str,
        direction: &'static str,
    },
}

/// Parses `inbound>>>TAG>>>traffic>>>uplink`, `outbound>>>TAG>>>traffic>>>uplink` and
/// `user>>>EMAIL>>>traffic>>>downlink` (the names both cores give their counters, facts §4.3);
/// `None` for any other counter.
pub fn parse_stat_name(name: &str) -> Option<StatName<'_>> {
    let mut parts = name.split(">>>");
    let (kind, subject, traffic, direction) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || traffic != "traffic" || subject.is_empty() {
        return None;
    }
    let direction = match direction {
        "uplink" => "uplink",
        "downlink" => "downlink",
        _ => return None,
    };
    match kind {
        "inbound" => Some(StatName::Inbound {
            tag: subject,
            direction,
        }),
        "outbound" => Some(StatName::Outbound {
            tag: subject,
            direction,
        }),
        "user" => Some(StatName::User {
            email: subject,
            direction,
        }),
        _ => None,
    }
}

/// The name of a user's online map, `user>>>EMAIL>>>online` (facts §4.3), which the online
/// calls take.
pub fn online_map_name(email: &str) -> String {
    format!("user>>>{email}>>>online")
}

/// The email in an online map's name (what GetAllOnlineUsers lists, facts §4.2); `None` for
/// any other name, or an email that cannot be a metric label (see [`check_email`]).
pub fn parse_online_name(name: &str) -> Option<&str> {
    let email = name.strip_prefix("user>>>")?.strip_suffix(">>>online")?;
    check_email(email).is_ok().then_some(email)
}

/// The users whose addresses are counted: the online map names that parse, each once, in
/// email order, at most `cap` of them; and how many were left out for the cap.
pub fn online_users_capped(names: &[String], cap: usize) -> (Vec<&str>, usize) {
    let mut emails: Vec<&str> = names.iter().filter_map(|n| parse_online_name(n)).collect();
    emails.sort_unstable();
    emails.dedup();
    let dropped = emails.len().saturating_sub(cap);
    emails.truncate(cap);
    (emails, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counter_names() {
        assert_eq!(
            parse_stat_name("inbound>>>vless-in>>>traffic>>>uplink"),
            Some(StatName::Inbound {
                tag: "vless-in",
                direction: "uplink"
            })
        );
        assert_eq!(
            parse_stat_name("user>>>a@x>>>traffic>>>downlink"),
            Some(StatName::User {
                email: "a@x",
                direction: "downlink"
            })
        );
        assert_eq!(
            parse_stat_name("outbound>>>direct>>>traffic>>>downlink"),
            Some(StatName::Outbound {
                tag: "direct",
                direction: "downlink"
            })
        );
        for other in [
            "outbound>>>direct>>>traffic",
            "outbound>>>>>>traffic>>>uplink",
            "outbound>>>direct>>>online",
            "user>>>a@x>>>online",
            "sideways>>>direct>>>traffic>>>uplink",
            "inbound>>>x>>>traffic>>>sideways",
            "inbound>>>>>>traffic>>>uplink",
            "user>>>a>>>traffic>>>uplink>>>more",
            "inbound>>>x",
        ] {
            assert_eq!(parse_stat_name(other), None, "{other}");
        }
    }

    #[test]
    fn parses_online_map_names() {
        assert_eq!(
            parse_online_name("user>>>Alice@x>>>online"),
            Some("Alice@x")
        );
        assert_eq!(
            parse_online_name(&online_map_name("bob@example.com")),
            Some("bob@example.com")
        );
        for other in [
            "user>>>>>>online",
            "user>>>a@x>>>traffic>>>uplink",
            "inbound>>>a>>>online",
            "user>>>a@x",
            "user>>>a>>>b>>>online",
            "user>>> a@x>>>online",
            "user>>>a\u{7}b>>>online",
            "",
        ] {
            assert_eq!(parse_online_name(other), None, "{other:?}");
        }
    }

    #[test]
    fn online_users_are_sorted_unique_and_capped() {
        let names: Vec<String> = [
            "user>>>c>>>online",
            "user>>>a>>>online",
            "junk",
            "user>>>b>>>online",
            "user>>>a>>>online",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(online_users_capped(&names, 10), (vec!["a", "b", "c"], 0));
        assert_eq!(online_users_capped(&names, 2), (vec!["a", "b"], 1));
        assert_eq!(online_users_capped(&names, 0), (vec![], 3));
        assert_eq!(online_users_capped(&[], 5), (vec![], 0));
    }
}
