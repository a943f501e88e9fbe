//! Declaring metric families once and filling them from a snapshot at scrape time.

use prometheus::core::Desc;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// The fixed part of a metric family: name, help, type and label names.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub labels: &'static [&'static str],
}

impl Spec {
    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self::new(MetricType::GAUGE, name, help, labels)
    }

    pub const fn counter(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self::new(MetricType::COUNTER, name, help, labels)
    }

    const fn new(
        kind: MetricType,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            kind,
            labels,
        }
    }

    pub fn is_counter(&self) -> bool {
        self.kind == MetricType::COUNTER
    }

    /// The registry's description of this family (checked for valid names at registration).
    pub fn desc(&self) -> Desc {
        let labels = self.labels.iter().map(|l| (*l).to_owned()).collect();
        Desc::new(
            self.name.into(),
            self.help.into(),
            labels,
            Default::default(),
        )
        .expect("metric specs are static and valid")
    }

    /// Starts an empty family of this spec.
    pub fn family(&self) -> Family {
        let mut family = MetricFamily::default();
        family.set_name(self.name.into());
        family.set_help(self.help.into());
        family.set_field_type(self.kind);
        Family {
            spec: *self,
            family,
        }
    }
}

/// A family being filled during one scrape.
pub struct Family {
    spec: Spec,
    family: MetricFamily,
}

impl Family {
    /// Adds one series. `values` pairs up with the spec's label names, in order.
    pub fn push(&mut self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.spec.labels.len(), "{}", self.spec.name);
        let labels = self
            .spec
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect();
        let mut metric = Metric::from_label(labels);
        if self.spec.kind == MetricType::COUNTER {
            let mut counter = Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        } else {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
        self.family.mut_metric().push(metric);
    }

    pub fn finish(self) -> MetricFamily {
        self.family
    }
}
