//! Where and how the daemon's log lines go, decided once at start-up from what stderr is.
//!
//! - A terminal gets tracing's usual coloured lines with a timestamp.
//! - journald (systemd sets `JOURNAL_STREAM` to the device and inode of the stream it hands the
//!   service as stdout/stderr) gets no timestamp of ours, since the journal stamps every line,
//!   no colour, and the level as the `<N>` syslog priority prefix that journald reads off the
//!   start of a line (sd-daemon(3)), so `journalctl -p warning` filters it.
//! - Anything else (a pipe, a file) gets plain lines with a timestamp and no escapes.
//! - `--log-format json` gets one JSON object per line whatever stderr is, for log shippers.
//!
//! The level comes from `RUST_LOG` when set, else from the config's `log_filter`.
//! `NO_COLOR` (no-color.org) turns colour off on a terminal too.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The `--log-format` flag; defined with the other flags (src/cli.rs builds without this
/// module, for the man page and completions build.rs generates).
pub use crate::cli::LogFormat;

/// The shape of text lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Colour and a timestamp.
    Terminal,
    /// `<N>` priority prefix, no timestamp, no colour.
    Journal,
    /// A timestamp, no colour.
    Plain,
}

/// What is known about stderr when the daemon starts.
#[derive(Debug, Clone, Default)]
pub struct Stderr {
    pub is_terminal: bool,
    /// `JOURNAL_STREAM`, as systemd set it: `<device>:<inode>`.
    pub journal_stream: Option<String>,
    /// stderr's own device and inode.
    pub identity: Option<(u64, u64)>,
    /// `NO_COLOR` is set to a non-empty value.
    pub no_color: bool,
}

impl Stderr {
    /// Reads the process's stderr and environment.
    pub fn current() -> Stderr {
        let identity = rustix::fs::fstat(std::io::stderr())
            .ok()
            .map(|st| (st.st_dev, st.st_ino));
        Stderr {
            is_terminal: std::io::stderr().is_terminal(),
            journal_stream: std::env::var("JOURNAL_STREAM").ok(),
            identity,
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        }
    }
}

/// The style for text lines. journald only counts when `JOURNAL_STREAM` names stderr itself: a
/// service that redirects its stderr elsewhere keeps the variable it inherited (systemd.exec(5)).
pub fn style(stderr: &Stderr) -> Style {
    let journal = stderr
        .journal_stream
        .as_deref()
        .and_then(parse_stream)
        .is_some_and(|stream| Some(stream) == stderr.identity);
    if journal {
        Style::Journal
    } else if stderr.is_terminal && !stderr.no_color {
        Style::Terminal
    } else {
        Style::Plain
    }
}

/// `"<dev>:<ino>"` as systemd writes it (both decimal).
fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority journald reads from a `<N>` prefix (syslog(3): 3 err, 4 warning,
/// 6 info, 7 debug; tracing's TRACE has no lower one).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// tracing's full format without time or level, behind a `<N>` priority prefix.
struct Journal {
    inner: Format<Full, ()>,
}

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber. `filter` is the config's `log_filter`; `RUST_LOG` wins.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match (format, style(&Stderr::current())) {
        (LogFormat::Json, _) => builder.json().with_ansi(false).init(),
        (LogFormat::Text, Style::Terminal) => builder.with_ansi(true).init(),
        (LogFormat::Text, Style::Plain) => builder.with_ansi(false).init(),
        (LogFormat::Text, Style::Journal) => builder
            .with_ansi(false)
            .event_format(Journal {
                inner: tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false)
                    .with_ansi(false),
            })
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stderr(is_terminal: bool, journal: Option<&str>, identity: (u64, u64)) -> Stderr {
        Stderr {
            is_terminal,
            journal_stream: journal.map(str::to_owned),
            identity: Some(identity),
            no_color: false,
        }
    }

    #[test]
    fn journald_is_recognised_only_when_the_stream_is_stderr_itself() {
        assert_eq!(
            style(&stderr(false, Some("25:4096"), (25, 4096))),
            Style::Journal
        );
        // Inherited from a parent service but redirected: not the journal.
        assert_eq!(
            style(&stderr(false, Some("25:4096"), (25, 9))),
            Style::Plain
        );
        assert_eq!(
            style(&stderr(true, Some("25:4096"), (3, 9))),
            Style::Terminal
        );
        for bad in ["", "25", "x:1", "25:4096:1"] {
            assert_eq!(
                style(&stderr(false, Some(bad), (25, 4096))),
                Style::Plain,
                "{bad}"
            );
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert_eq!(style(&stderr(true, None, (1, 2))), Style::Terminal);
        assert_eq!(style(&stderr(false, None, (1, 2))), Style::Plain);
        let mut no_color = stderr(true, None, (1, 2));
        no_color.no_color = true;
        assert_eq!(style(&no_color), Style::Plain);
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }
}
