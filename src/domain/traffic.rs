//! Traffic counters of a core's StatsService, by inbound and by user.

/// One byte counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficCounter {
    /// Inbound tag or user email.
    pub name: String,
    /// `uplink` or `downlink`.
    pub direction: &'static str,
    pub bytes: u64,
}

/// A tunnel's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    pub inbounds: Vec<TrafficCounter>,
    pub users: Vec<TrafficCounter>,
    /// Users left out because of the series cap.
    pub users_dropped: usize,
}

/// What a stats counter name describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatName<'a> {
    Inbound {
        tag: &'a str,
        direction: &'static str,
    },
    User {
        email: &'a str,
        direction: &'static str,
    },
}

/// Parses `inbound>>>TAG>>>traffic>>>uplink` and `user>>>EMAIL>>>traffic>>>downlink`
/// (the names both cores give their counters); `None` for any other counter.
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
        "user" => Some(StatName::User {
            email: subject,
            direction,
        }),
        _ => None,
    }
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
        for other in [
            "outbound>>>direct>>>traffic>>>uplink",
            "inbound>>>x>>>traffic>>>sideways",
            "inbound>>>>>>traffic>>>uplink",
            "user>>>a>>>traffic>>>uplink>>>more",
            "inbound>>>x",
        ] {
            assert_eq!(parse_stat_name(other), None, "{other}");
        }
    }
}
