//! Prometheus' text exposition format (version 0.0.4), written by hand: a `# HELP` and a
//! `# TYPE` line per family, then its samples. The values already live in the commands' atomic
//! counters, so a scrape reads them; nothing on the data path counts twice. `promtool check
//! metrics` checks this output in the tests.

use std::fmt::Write;

/// The kind of a family, as the `# TYPE` line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (names end in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in cumulative buckets, with `_sum` and `_count`.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Labels of one sample: (name, value). Values are escaped when written.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// One scrape's text.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// The text so far.
    pub fn finish(self) -> String {
        self.text
    }

    /// A family's header. Each family must be written once, with all its samples after it.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    /// One sample of the family just started (for histograms: `name` with its suffix).
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// A counter family with one unlabelled sample.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, Kind::Counter);
        self.sample(name, &[], value as f64);
    }

    /// A gauge family with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, Kind::Gauge);
        self.sample(name, &[], value);
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: integers without a fraction, infinities as Prometheus spells them.
fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if value.is_nan() {
        "NaN".to_string()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_labels_and_escapes() {
        let mut e = Exposition::default();
        e.counter("openmsi_x_total", "Things.\nMore", 3);
        e.family("openmsi_lag", "Lag.", Kind::Gauge);
        e.sample(
            "openmsi_lag",
            &[("topic", "a\"b\\c"), ("partition", "0")],
            1.5,
        );
        e.gauge("openmsi_inf", "Inf.", f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP openmsi_x_total Things.\\nMore\n# TYPE openmsi_x_total counter\nopenmsi_x_total 3\n\
             # HELP openmsi_lag Lag.\n# TYPE openmsi_lag gauge\nopenmsi_lag{topic=\"a\\\"b\\\\c\",partition=\"0\"} 1.5\n\
             # HELP openmsi_inf Inf.\n# TYPE openmsi_inf gauge\nopenmsi_inf +Inf\n"
        );
    }
}
