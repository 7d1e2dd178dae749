//! Results of a run: latency summaries taken from an HdrHistogram, the
//! figures a scenario reports, and how they are printed (a human table or one
//! JSON line). This module does no I/O beyond writing the final report.

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

/// Highest latency the histograms track, in microseconds (one minute);
/// larger values are clamped to it.
pub(crate) const MAX_LATENCY_US: u64 = 60_000_000;

/// A latency histogram in microseconds with three significant figures.
/// Recording into it never allocates.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .expect("invariant: constant histogram bounds are valid")
}

/// A small per-client latency histogram (two significant figures, 32-bit
/// counts: about 10 KiB), merged into a [`latency_histogram`] at the end.
pub(crate) fn client_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
        .expect("invariant: constant histogram bounds are valid")
}

/// Adds a per-client histogram into a total (values at each bucket's midpoint).
pub(crate) fn merge_into(total: &mut Histogram<u64>, h: &Histogram<u32>) {
    for v in h.iter_recorded() {
        total.saturating_record_n(
            h.median_equivalent(v.value_iterated_to()),
            u64::from(v.count_at_value()),
        );
    }
}

/// The usual percentiles of one latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// How a figure is shown in the human table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A plain count.
    Count,
    /// Per second.
    PerSec,
    /// Microseconds, shown as ms.
    Micros,
    /// Percent.
    Percent,
    /// Bytes, shown in KiB/MiB.
    Bytes,
    /// A ratio or other dimensionless number.
    Ratio,
    /// Seconds.
    Seconds,
}

/// One named number of a report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figure {
    pub key: String,
    pub value: f64,
    pub unit: Unit,
}

/// What a scenario run produced: its parameters and its figures, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    pub scenario: String,
    pub label: Option<String>,
    pub params: Map<String, Value>,
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_string(),
            ..Report::default()
        }
    }

    pub(crate) fn param(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.params.insert(key.to_string(), value.into());
        self
    }

    pub(crate) fn add(&mut self, key: &str, value: f64, unit: Unit) -> &mut Self {
        self.figures.push(Figure {
            key: key.to_string(),
            value,
            unit,
        });
        self
    }

    /// Adds `{prefix}_p50_us` … `{prefix}_max_us` and `{prefix}_count`.
    pub(crate) fn latency(&mut self, prefix: &str, l: &Latency) -> &mut Self {
        self.add(&format!("{prefix}_count"), l.count as f64, Unit::Count);
        for (name, v) in [
            ("p50", l.p50_us),
            ("p90", l.p90_us),
            ("p99", l.p99_us),
            ("max", l.max_us),
        ] {
            self.add(&format!("{prefix}_{name}_us"), v as f64, Unit::Micros);
        }
        self
    }

    pub(crate) fn note(&mut self, text: impl Into<String>) -> &mut Self {
        self.notes.push(text.into());
        self
    }

    pub(crate) fn get(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key).map(|f| f.value)
    }

    /// One JSON object: `{"scenario", "label", "params", "figures": {key: value}, "notes"}`.
    pub(crate) fn to_json(&self) -> Value {
        let mut figures = Map::new();
        for f in &self.figures {
            let v = if f.value.is_finite() {
                serde_json::Number::from_f64(f.value).map_or(Value::Null, Value::Number)
            } else {
                Value::Null
            };
            figures.insert(f.key.clone(), v);
        }
        serde_json::json!({
            "scenario": self.scenario,
            "label": self.label,
            "params": self.params,
            "figures": figures,
            "notes": self.notes,
        })
    }

    /// A two-column table for people.
    pub(crate) fn to_table(&self) -> String {
        let mut out = String::new();
        let title = match &self.label {
            Some(l) => format!("{} ({l})", self.scenario),
            None => self.scenario.clone(),
        };
        out.push_str(&title);
        out.push('\n');
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !params.is_empty() {
            out.push_str(&format!("  {}\n", params.join(" ")));
        }
        // The table shows microsecond figures in ms: their keys say so too
        // (the JSON keeps `_us` and the raw value).
        let shown = |f: &Figure| match (f.unit, f.key.strip_suffix("_us")) {
            (Unit::Micros, Some(stem)) => format!("{stem}_ms"),
            _ => f.key.clone(),
        };
        let width = self
            .figures
            .iter()
            .map(|f| shown(f).len())
            .max()
            .unwrap_or(0);
        for f in &self.figures {
            out.push_str(&format!(
                "  {:width$}  {}\n",
                shown(f),
                format_value(f.value, f.unit)
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }
}

/// Formats a value for the human table.
pub(crate) fn format_value(v: f64, unit: Unit) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    match unit {
        Unit::Count => format!("{}", v.round() as i64),
        Unit::PerSec => format!("{v:.1}/s"),
        Unit::Micros => format!("{:.3} ms", v / 1000.0),
        Unit::Percent => format!("{v:.1}%"),
        Unit::Bytes => {
            if v.abs() >= 1024.0 * 1024.0 {
                format!("{:.1} MiB", v / (1024.0 * 1024.0))
            } else if v.abs() >= 1024.0 {
                format!("{:.1} KiB", v / 1024.0)
            } else {
                format!("{v:.0} B")
            }
        }
        Unit::Ratio => format!("{v:.3}"),
        Unit::Seconds => format!("{v:.3} s"),
    }
}

/// Guesses the unit of a figure from its key (used when reading JSON back).
pub(crate) fn unit_for_key(key: &str) -> Unit {
    if key.ends_with("_us") {
        Unit::Micros
    } else if key.ends_with("_per_s") {
        Unit::PerSec
    } else if key.ends_with("_pct") {
        Unit::Percent
    } else if key.ends_with("_bytes") {
        Unit::Bytes
    } else if key.ends_with("_s") {
        Unit::Seconds
    } else if key.ends_with("_ratio") || key.contains("per_") {
        Unit::Ratio
    } else {
        Unit::Count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_distribution() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.saturating_record(v * 10);
        }
        let l = Latency::from_histogram(&h);
        assert_eq!(l.count, 1000);
        // Three significant figures: within 0.1 %.
        assert!((l.p50_us as f64 - 5000.0).abs() <= 5.0, "{l:?}");
        assert!((l.p90_us as f64 - 9000.0).abs() <= 9.0, "{l:?}");
        assert!((l.p99_us as f64 - 9900.0).abs() <= 10.0, "{l:?}");
        assert!((l.max_us as f64 - 10000.0).abs() <= 10.0, "{l:?}");
        assert!((l.mean_us - 5005.0).abs() < 10.0, "{l:?}");
    }

    #[test]
    fn empty_histogram_is_zero() {
        assert_eq!(
            Latency::from_histogram(&latency_histogram()),
            Latency::default()
        );
    }

    #[test]
    fn huge_values_are_clamped_not_lost() {
        let mut h = latency_histogram();
        h.saturating_record(u64::MAX);
        let l = Latency::from_histogram(&h);
        assert_eq!(l.count, 1);
        assert!(l.max_us >= MAX_LATENCY_US);
    }

    #[test]
    fn merged_histograms_add_counts() {
        let mut a = latency_histogram();
        let mut b = latency_histogram();
        a.saturating_record(100);
        b.saturating_record(300);
        b.saturating_record(300);
        a.add(&b).expect("same bounds");
        let l = Latency::from_histogram(&a);
        assert_eq!(l.count, 3);
        assert_eq!(l.p50_us, 300);
    }

    #[test]
    fn small_client_histograms_merge_into_the_precise_one() {
        let mut total = latency_histogram();
        let mut c = client_histogram();
        for v in [100u64, 1_000, 10_000, 100_000] {
            c.saturating_record(v);
        }
        merge_into(&mut total, &c);
        let l = Latency::from_histogram(&total);
        assert_eq!(l.count, 4);
        assert!(
            (l.max_us as f64 - 100_000.0).abs() / 100_000.0 < 0.01,
            "{l:?}"
        );
    }

    #[test]
    fn report_json_and_table() {
        let mut r = Report::new("durable");
        r.param("clients", 4)
            .add("calls_per_s", 1234.5, Unit::PerSec);
        r.latency(
            "latency",
            &Latency {
                count: 2,
                mean_us: 1.0,
                p50_us: 1500,
                p90_us: 2000,
                p99_us: 2500,
                max_us: 3000,
            },
        );
        let j = r.to_json();
        assert_eq!(j["figures"]["calls_per_s"], 1234.5);
        assert_eq!(j["figures"]["latency_p99_us"], 2500.0);
        let t = r.to_table();
        assert!(t.contains("1234.5/s"), "{t}");
        assert!(t.contains("2.500 ms"), "{t}");
        assert!(
            t.contains("latency_p99_ms") && !t.contains("latency_p99_us"),
            "{t}"
        );
    }

    #[test]
    fn units_from_keys() {
        assert_eq!(unit_for_key("latency_p50_us"), Unit::Micros);
        assert_eq!(unit_for_key("calls_per_s"), Unit::PerSec);
        assert_eq!(unit_for_key("client_cpu_pct"), Unit::Percent);
        assert_eq!(unit_for_key("rss_per_conn_bytes"), Unit::Bytes);
        assert_eq!(unit_for_key("errors"), Unit::Count);
    }
}
