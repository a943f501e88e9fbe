//! A rough PromQL reader for the dashboard checks: not a parser (promtool and the live Prometheus
//! judge validity), but strict enough to list every selector of a query with its matchers, its
//! range and the function it is the argument of, and to reject an unknown function name.

/// One vector selector of a query: `name{matchers}[range]`, inside `function(...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    /// The text between the braces, if any.
    pub matchers: Option<String>,
    /// The text between the brackets, if any.
    pub range: Option<String>,
    /// The function or aggregation whose parentheses directly enclose the selector.
    pub enclosing: Option<String>,
}

/// PromQL's functions and aggregation operators (Prometheus 2.42).
pub const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "end",
    "exp",
    "floor",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "start",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year", // aggregations:
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const OTHER_KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// Every selector of `expr`, or the first thing that is neither a selector nor PromQL.
pub fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    // For each open parenthesis: the function it calls, if any.
    let mut parens: Vec<Option<String>> = Vec::new();
    let mut pending_fn: Option<String> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i)?;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '(' {
            parens.push(pending_fn.take());
            i += 1;
        } else if c == ')' {
            parens
                .pop()
                .ok_or_else(|| format!("unbalanced ')' in {expr}"))?;
            i += 1;
        } else if c == '$' {
            // A Grafana variable outside a string (e.g. a topk count): not a name.
            i = skip_variable(&chars, i);
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(&chars, i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = skip_group(&chars, next, '(', ')')?;
                }
            } else if OTHER_KEYWORDS.contains(&lower.as_str()) {
            } else if chars.get(next) == Some(&'(') || is_grouping(&chars, next) {
                if !FUNCTIONS.contains(&word.as_str()) {
                    return Err(format!("unknown function {word}() in {expr}"));
                }
                pending_fn = Some(word);
            } else {
                let (selector, end) =
                    selector_at(&chars, word, next, parens.last().cloned().flatten())?;
                out.push(selector);
                i = end;
            }
        } else if c == '{' {
            return Err(format!("a selector without a metric name in {expr}"));
        } else {
            i += 1;
        }
    }
    if !parens.is_empty() {
        return Err(format!("unbalanced '(' in {expr}"));
    }
    Ok(out)
}

/// The metric names `expr` reads.
pub fn metric_names(expr: &str) -> Result<Vec<String>, String> {
    Ok(selectors(expr)?.into_iter().map(|s| s.name).collect())
}

fn selector_at(
    chars: &[char],
    name: String,
    mut i: usize,
    enclosing: Option<String>,
) -> Result<(Selector, usize), String> {
    let mut matchers = None;
    if chars.get(i) == Some(&'{') {
        let end = skip_group(chars, i, '{', '}')?;
        matchers = Some(chars[i + 1..end - 1].iter().collect());
        i = skip_space(chars, end);
    }
    let mut range = None;
    if chars.get(i) == Some(&'[') {
        let end = skip_group(chars, i, '[', ']')?;
        range = Some(
            chars[i + 1..end - 1]
                .iter()
                .collect::<String>()
                .trim()
                .to_owned(),
        );
        i = end;
    }
    let selector = Selector {
        name,
        matchers,
        range,
        enclosing,
    };
    Ok((selector, i))
}

/// `sum by (...) (...)`: an aggregation whose grouping comes before its parentheses.
fn is_grouping(chars: &[char], i: usize) -> bool {
    let word: String = chars[i..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
        .collect();
    matches!(word.as_str(), "by" | "without")
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

/// From an opening `open` at `i` to just past its matching `close`, strings skipped.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> Result<usize, String> {
    let mut depth = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(chars, i)?;
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Ok(i + 1);
            }
        }
        i += 1;
    }
    Err(format!("unclosed '{open}'"))
}

fn skip_string(chars: &[char], i: usize) -> Result<usize, String> {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        if chars[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            return Ok(j + 1);
        }
        j += 1;
    }
    Err("unterminated string".into())
}

fn skip_variable(chars: &[char], i: usize) -> usize {
    let mut j = i + 1;
    if chars.get(j) == Some(&'{') {
        while j < chars.len() && chars[j] != '}' {
            j += 1;
        }
        return j + 1;
    }
    while chars
        .get(j)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
    {
        j += 1;
    }
    j
}

/// Grafana's variables of a query: `$name`, `${name}`, `${name:format}`, `[[name]]`.
pub fn variable_refs(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
            let end = (i + 2..chars.len())
                .find(|&j| chars[j] == '}')
                .unwrap_or(chars.len());
            let inner: String = chars[i + 2..end].iter().collect();
            out.push(inner.split([':', '.']).next().unwrap_or("").to_owned());
            i = end;
        } else if chars[i] == '$' {
            let end = (i + 1..chars.len())
                .find(|&j| !(chars[j].is_ascii_alphanumeric() || chars[j] == '_'))
                .unwrap_or(chars.len());
            if end > i + 1 {
                out.push(chars[i + 1..end].iter().collect());
            }
            i = end;
        } else if chars[i] == '[' && chars.get(i + 1) == Some(&'[') {
            let end = (i + 2..chars.len())
                .find(|&j| chars[j] == ']')
                .unwrap_or(chars.len());
            out.push(
                chars[i + 2..end]
                    .iter()
                    .collect::<String>()
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            );
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// `expr` as Prometheus gets it from Grafana when every label variable is "All" (`.+`), with
/// fixed windows for Grafana's interval variables.
pub fn substitute(expr: &str) -> String {
    let fixed = [
        ("__rate_interval", "1m"),
        ("__interval_ms", "15000"),
        ("__interval", "15s"),
        ("__range_ms", "120000"),
        ("__range_s", "120"),
        ("__range", "2m"),
    ];
    let mut out = expr.to_owned();
    for (name, value) in fixed {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    for name in variable_refs(&out) {
        out = out
            .replace(&format!("${{{name}}}"), ".+")
            .replace(&format!("${name}"), ".+");
    }
    out
}
