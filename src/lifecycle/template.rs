//! Rendering a tunnel's unit file from the template.
//!
//! Values are checked before anything is substituted: systemd would read a newline as a new
//! setting, whitespace and quotes as argument splitting, `%` as a specifier and `$` (in
//! `ExecStart`) as a variable, so values holding any of them are refused rather than escaped.

use std::path::Path;

use crate::core::binary_flavour;
use crate::domain::{Flavour, TunnelId};

/// The built-in template, used unless `tunnels.unit_template` names another file.
pub const BUILT_IN: &str = include_str!("../../deploy/tunnel.service.template");

/// Every placeholder a template may use, without its braces.
pub const PLACEHOLDERS: [&str; 8] = [
    "ID",
    "CORE_BINARY",
    "CORE_ARGS",
    "CONFIG",
    "LOG",
    "LOG_DIR",
    "USER",
    "GROUP",
];

/// What a tunnel's unit is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct UnitValues<'a> {
    /// `{{ID}}`.
    pub id: &'a TunnelId,
    /// `{{CORE_BINARY}}`; its file name also picks `{{CORE_ARGS}}`.
    pub core_binary: &'a Path,
    /// `{{CONFIG}}`, the tunnel's config file.
    pub config: &'a Path,
    /// `{{LOG}}`; its directory is `{{LOG_DIR}}`.
    pub log: &'a Path,
    /// `{{USER}}` and `{{GROUP}}`.
    pub user: &'a str,
    pub group: &'a str,
}

/// Why a unit could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A value is empty, relative (paths), not UTF-8, or holds characters systemd interprets.
    #[error("{name} {value:?}: {problem}")]
    BadValue {
        name: &'static str,
        value: String,
        problem: &'static str,
    },
    /// A `{{NAME}}` that is not in [`PLACEHOLDERS`].
    #[error("the template uses an unknown placeholder {{{{{0}}}}}")]
    UnknownPlaceholder(String),
    /// A `{{` without its `}}`.
    #[error("the template has a `{{{{` that is never closed")]
    Unclosed,
}

/// Renders `template` for `values`. The core's arguments follow the flavour of the binary's
/// name: `run -config F` for Xray, `-config F` for V2Ray.
pub fn render(template: &str, values: &UnitValues<'_>) -> Result<String, TemplateError> {
    let core_binary = path_value("CORE_BINARY", values.core_binary)?;
    let config = path_value("CONFIG", values.config)?;
    let log = path_value("LOG", values.log)?;
    let log_dir = match values.log.parent() {
        Some(dir) if dir != Path::new("/") => path_value("LOG_DIR", dir)?,
        _ => {
            return Err(bad(
                "LOG_DIR",
                log,
                "the log file needs a directory of its own",
            ));
        }
    };
    let user = checked("USER", values.user)?;
    let group = checked("GROUP", values.group)?;
    let core_args = match binary_flavour(values.core_binary) {
        Flavour::Xray => format!("run -config {config}"),
        Flavour::V2ray => format!("-config {config}"),
    };
    let lookup = |name: &str| -> Option<&str> {
        Some(match name {
            "ID" => values.id.as_str(),
            "CORE_BINARY" => core_binary,
            "CORE_ARGS" => &core_args,
            "CONFIG" => config,
            "LOG" => log,
            "LOG_DIR" => log_dir,
            "USER" => user,
            "GROUP" => group,
            _ => return None,
        })
    };
    substitute(template, lookup)
}

fn substitute<'v>(
    template: &str,
    lookup: impl Fn(&str) -> Option<&'v str>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let name = after[..end].trim();
        let value = lookup(name).ok_or_else(|| TemplateError::UnknownPlaceholder(name.into()))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An absolute path that is valid UTF-8 and passes [`checked`].
fn path_value<'p>(name: &'static str, path: &'p Path) -> Result<&'p str, TemplateError> {
    let text = path
        .to_str()
        .ok_or_else(|| bad(name, &path.to_string_lossy(), "is not valid UTF-8"))?;
    if !path.is_absolute() {
        return Err(bad(name, text, "must be an absolute path"));
    }
    checked(name, text)
}

/// A non-empty value without characters systemd would interpret.
fn checked<'v>(name: &'static str, value: &'v str) -> Result<&'v str, TemplateError> {
    if value.is_empty() {
        return Err(bad(name, value, "is empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(bad(
            name,
            value,
            "holds a newline or another control character",
        ));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(bad(name, value, "holds whitespace"));
    }
    if value.contains(['"', '\'', '\\', '%', '$']) {
        return Err(bad(name, value, "holds a quote, '\\', '%' or '$'"));
    }
    Ok(value)
}

fn bad(name: &'static str, value: &str, problem: &'static str) -> TemplateError {
    TemplateError::BadValue {
        name,
        value: value.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests;
