//! Mechanical rewrites of shipped YAML for a fast test: every duration of a Prometheus rule file
//! divided by one constant factor, and single keys of a YAML file replaced in place.
//!
//! No YAML library is among the crate's dependencies, so these edit the text line by line and
//! panic loudly whenever the file does not have the shape they expect: a derivation that silently
//! kept a shipped duration would make the test slow, or prove nothing about the shipped rules.

/// Keys of a rule file whose value is one duration (`for: 5m`).
const DURATION_KEYS: [&str; 3] = ["for", "keep_firing_for", "interval"];

/// A rule file with every duration divided by a factor, and how many were rewritten.
#[derive(Debug, Clone)]
pub struct FastRules {
    pub text: String,
    /// Rewritten `for:` (and `keep_firing_for:`, `interval:`) values.
    pub keys: usize,
    /// Rewritten durations inside expressions: range selectors, subqueries, offsets.
    pub ranges: usize,
}

/// Divides every duration of the Prometheus rule file `yaml` by `factor`: the values of `for:`,
/// `keep_firing_for:` and `interval:`, and inside the text every `[range]`, `[range:step]` and
/// `offset d`. Panics on a duration key whose value is no duration, and on a duration that would
/// shrink below one millisecond.
pub fn speed_up_rules(yaml: &str, factor: u64) -> FastRules {
    let mut out = FastRules {
        text: String::with_capacity(yaml.len()),
        keys: 0,
        ranges: 0,
    };
    for line in yaml.split_inclusive('\n') {
        let rewritten = match duration_key(line) {
            Some((head, value, tail)) => {
                let d = parse_duration(value.trim_matches(['"', '\'']))
                    .unwrap_or_else(|| panic!("`{}` is no duration", line.trim_end()));
                out.keys += 1;
                format!("{head}{}{tail}", format_duration(scale(d, factor, line)))
            }
            None => {
                let (text, n) = scale_in_expression(line, factor);
                out.ranges += n;
                text
            }
        };
        out.text.push_str(&rewritten);
    }
    out
}

/// `(before the value, the value, after it)` of a line `  for: 5m` (also a list item
/// `- interval: 1m`, and with a trailing comment); `None` for other lines.
fn duration_key(line: &str) -> Option<(&str, &str, &str)> {
    let body = line.trim_start().trim_start_matches("- ");
    let (key, rest) = body.split_once(':')?;
    if !DURATION_KEYS.contains(&key) {
        return None;
    }
    let start = line.len() - rest.len() + (rest.len() - rest.trim_start().len());
    let value_len = line[start..]
        .find([' ', '#', '\n', '\r'])
        .unwrap_or(line.len() - start);
    let end = start + value_len;
    Some((&line[..start], &line[start..end], &line[end..]))
}

/// Scales `[d]`, `[d:]`, `[d:s]` and `offset d` in a line of PromQL (or any other text: a bracket
/// whose content is no duration is left alone, so label regexes like `[0-9]` are safe).
fn scale_in_expression(line: &str, factor: u64) -> (String, usize) {
    let mut out = String::with_capacity(line.len());
    let mut count = 0;
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        match scale_range(&after[..close], factor, line) {
            Some(scaled) => {
                out.push('[');
                out.push_str(&scaled);
                out.push(']');
                count += 1;
            }
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    let (out, offsets) = scale_offsets(&out, factor, line);
    (out, count + offsets)
}

/// `5m` or `5m:1m` or `5m:` scaled; `None` if `inner` is no range.
fn scale_range(inner: &str, factor: u64, line: &str) -> Option<String> {
    let (range, step) = match inner.split_once(':') {
        Some((r, s)) => (r.trim(), Some(s.trim())),
        None => (inner.trim(), None),
    };
    let range = format_duration(scale(parse_duration(range)?, factor, line));
    match step {
        None => Some(range),
        Some("") => Some(format!("{range}:")),
        Some(s) => {
            let step = format_duration(scale(parse_duration(s)?, factor, line));
            Some(format!("{range}:{step}"))
        }
    }
}

fn scale_offsets(text: &str, factor: u64, line: &str) -> (String, usize) {
    const OFFSET: &str = "offset ";
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut rest = text;
    while let Some(at) = rest.find(OFFSET) {
        let value_start = at + OFFSET.len();
        out.push_str(&rest[..value_start]);
        let tail = &rest[value_start..];
        let len = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        match parse_duration(&tail[..len]) {
            Some(d) => {
                out.push_str(&format_duration(scale(d, factor, line)));
                count += 1;
            }
            None => out.push_str(&tail[..len]),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    (out, count)
}

fn scale(ms: u64, factor: u64, line: &str) -> u64 {
    let scaled = ms / factor;
    assert!(
        scaled >= 1,
        "a duration in `{}` shrinks to nothing",
        line.trim_end()
    );
    scaled
}

/// A Prometheus duration (`1h30m`, `90s`, `250ms`, units y w d h m s ms, largest first) in
/// milliseconds; `None` if `text` is none.
pub fn parse_duration(text: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0u64;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // "ms" before "m": the longest unit name that matches.
        let (index, (unit, ms)) = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())?;
        total = total.checked_add(number.checked_mul(*ms)?)?;
        rest = &rest[unit.len()..];
        next_unit = index + 1;
    }
    Some(total)
}

/// Milliseconds as a Prometheus duration: whole seconds as `Ns`, else `Nms`.
pub fn format_duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Replaces the value of every line whose key is `key` (`  group_wait: 30s` and list items
/// `- url: ...`) with `value`, keeping indentation and a `- `; returns the text and how many
/// lines changed.
pub fn replace_key(
    yaml: &str,
    key: &str,
    mut value: impl FnMut(&str) -> String,
) -> (String, usize) {
    let mut out = String::with_capacity(yaml.len());
    let mut count = 0;
    for line in yaml.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let item = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        let head_len = line.len() - item.len();
        match item.split_once(':') {
            Some((k, old)) if k == key => {
                let old = old.split(" #").next().unwrap_or("").trim();
                let newline = if line.ends_with('\n') { "\n" } else { "" };
                out.push_str(&line[..head_len]);
                out.push_str(&format!("{key}: {}{newline}", value(old)));
                count += 1;
            }
            _ => out.push_str(line),
        }
    }
    (out, count)
}
