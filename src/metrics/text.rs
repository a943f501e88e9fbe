//! Writing families straight into the Prometheus text format (version 0.0.4).
//!
//! Used for the per-tunnel families, the only ones whose size grows with the node: going through
//! `prometheus::Registry::gather` and `TextEncoder` allocates two strings per label per series,
//! sorts every series and formats every value through a temporary string, which at 200 tunnels
//! (about 4,200 series) cost 1.6-2.5 ms of CPU per scrape (measured with benches/scrape.rs).
//! Writing from the snapshot into one buffer costs a fraction of that.

use std::fmt::Write;

use super::family::Spec;

/// Appends families to a text-format body.
pub struct TextWriter<'a> {
    out: &'a mut String,
}

impl<'a> TextWriter<'a> {
    pub fn new(out: &'a mut String) -> Self {
        Self { out }
    }

    /// Starts a family. Its `# HELP` and `# TYPE` lines are written with its first sample, so
    /// a family without samples leaves no trace (as the registry's encoder does).
    pub fn family(&mut self, spec: &Spec) -> Samples<'_, 'a> {
        Samples {
            writer: self,
            spec: *spec,
            started: false,
        }
    }
}

/// The samples of one family.
pub struct Samples<'w, 'a> {
    writer: &'w mut TextWriter<'a>,
    spec: Spec,
    started: bool,
}

impl Samples<'_, '_> {
    /// Writes one sample; `values` pair up with the spec's label names, in order.
    pub fn push(&mut self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.spec.labels.len(), "{}", self.spec.name);
        let out = &mut *self.writer.out;
        if !self.started {
            self.started = true;
            let kind = if self.spec.is_counter() {
                "counter"
            } else {
                "gauge"
            };
            // Help texts are static and contain neither backslashes nor newlines.
            let _ = writeln!(out, "# HELP {} {}", self.spec.name, self.spec.help);
            let _ = writeln!(out, "# TYPE {} {kind}", self.spec.name);
        }
        out.push_str(self.spec.name);
        if !values.is_empty() {
            out.push('{');
            for (i, (name, value)) in self.spec.labels.iter().zip(values).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(name);
                out.push_str("=\"");
                escape_label_value(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        write_value(out, value);
        out.push('\n');
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label_value(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Most values are whole numbers (counts, bytes, states): those are written as integers.
fn write_value(out: &mut String, value: f64) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact in f64
    if value.fract() == 0.0 && value.abs() < EXACT {
        // itoa, not `write!`: most of the 25 lines per tunnel are integers, and the formatting
        // machinery was the largest share of a rendering (perf, steady bench).
        out.push_str(itoa::Buffer::new().format(value as i64));
    } else if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec::gauge("x_test", "A test family.", &["a", "b"]);

    fn render(values: &[&str], value: f64) -> String {
        let mut out = String::new();
        TextWriter::new(&mut out).family(&SPEC).push(values, value);
        out
    }

    #[test]
    fn writes_help_type_and_samples() {
        assert_eq!(
            render(&["1", "two"], 3.0),
            "# HELP x_test A test family.\n# TYPE x_test gauge\nx_test{a=\"1\",b=\"two\"} 3\n"
        );
    }

    #[test]
    fn a_family_without_samples_writes_nothing() {
        let mut out = String::new();
        TextWriter::new(&mut out).family(&SPEC);
        assert_eq!(out, "");
    }

    #[test]
    fn escapes_label_values() {
        let out = render(&["q\"uote", "back\\slash\nline"], 0.5);
        assert!(
            out.ends_with("x_test{a=\"q\\\"uote\",b=\"back\\\\slash\\nline\"} 0.5\n"),
            "{out}"
        );
    }

    #[test]
    fn formats_values() {
        let value = |v: f64| {
            let mut s = String::new();
            write_value(&mut s, v);
            s
        };
        assert_eq!(value(0.0), "0");
        assert_eq!(value(-3.0), "-3");
        assert_eq!(value(1_700_000_000.5), "1700000000.5");
        assert_eq!(value(18_446_744_073_709_551_615.0), "18446744073709552000");
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
    }
}
