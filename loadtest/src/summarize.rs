//! Turning JSON report lines (from `--json` runs) into tables: the median of
//! each figure over repeated runs (`summarize`), and one target against
//! others with ratios (`compare`). Reads files; talks to no server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use crate::report::{format_value, unit_for_key};

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SummarizeArgs {
    /// Files of JSON report lines (other lines are ignored).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Figures to show, comma-separated (default: a per-scenario selection).
    #[arg(long, value_delimiter = ',')]
    pub figures: Vec<String>,
    /// Print a Markdown table.
    #[arg(long)]
    pub markdown: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct CompareArgs {
    /// Files of JSON report lines; each report's `label` names its target.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The label whose ratio to every other label is printed.
    #[arg(long, default_value = "roost")]
    pub baseline: String,
    /// Figures to show, comma-separated (default: a per-scenario selection).
    #[arg(long, value_delimiter = ',')]
    pub figures: Vec<String>,
    /// Print Markdown tables.
    #[arg(long)]
    pub markdown: bool,
}

/// One report line, reduced to what tables need.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub scenario: String,
    pub label: String,
    pub params: String,
    pub figures: BTreeMap<String, f64>,
}

pub(crate) fn parse_lines(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter_map(|v| {
            let scenario = v.get("scenario")?.as_str()?.to_string();
            let label = v
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let params = v
                .get("params")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.as_str() != "protocol")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let figures = v
                .get("figures")?
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect();
            Some(Row {
                scenario,
                label,
                params,
                figures,
            })
        })
        .collect()
}

/// The median of `values` (mean of the middle two for an even count).
pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn default_figures(scenario: &str) -> Vec<String> {
    let v: &[&str] = match scenario {
        "durable" => &[
            "calls_per_s",
            "latency_p50_us",
            "latency_p99_us",
            "errors",
            "client_cpu_pct",
            "server_cpu_pct",
            "server_events_per_commit",
        ],
        "fanout" => &[
            "sent_per_s",
            "delivered_per_s",
            "delivery_ratio",
            "latency_p50_us",
            "latency_p99_us",
            "client_cpu_pct",
            "server_cpu_pct",
            "server_rss_bytes",
        ],
        "fanout-max" => &[
            "max_rate_per_client",
            "delivered_per_s",
            "latency_p50_us",
            "latency_p99_us",
            "client_cpu_pct",
            "server_cpu_pct",
        ],
        "trace" | "trace-max" => &[
            "max_rate_per_writer",
            "keystrokes_per_s",
            "delivered_per_s",
            "latency_p50_us",
            "latency_p99_us",
            "server_cpu_pct",
            "server_rss_bytes",
        ],
        "connections" => &[
            "connected",
            "connect_p50_us",
            "connect_p99_us",
            "server_rss_per_conn_bytes",
            "wake_delivery_ratio",
            "wake_p99_us",
        ],
        "coldload" => &[
            "doc_updates_found",
            "doc_bytes",
            "first_client_sync_us",
            "sync_p50_us",
            "fill_updates_per_s",
        ],
        "rooms" => &[
            "sent_per_s",
            "delivered_per_s",
            "call_p50_us",
            "call_p99_us",
            "event_p99_us",
            "errors",
        ],
        _ => &[],
    };
    v.iter().map(|s| s.to_string()).collect()
}

fn read_rows(files: &[PathBuf]) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        rows.extend(parse_lines(&text));
    }
    Ok(rows)
}

/// Groups rows by key, keeping first-seen order.
fn group(rows: &[Row], key: impl Fn(&Row) -> String) -> Vec<(String, Vec<&Row>)> {
    let mut out: Vec<(String, Vec<&Row>)> = Vec::new();
    for r in rows {
        let k = key(r);
        match out.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(r),
            None => out.push((k, vec![r])),
        }
    }
    out
}

fn median_of(rows: &[&Row], fig: &str) -> Option<f64> {
    let mut v: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.figures.get(fig).copied())
        .collect();
    median(&mut v)
}

fn table(header: &[String], body: &[Vec<String>], markdown: bool) -> String {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in body {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:w$}", w = widths[i]))
            .collect();
        if markdown {
            format!("| {} |\n", padded.join(" | "))
        } else {
            format!("{}\n", padded.join("  ").trim_end())
        }
    };
    let mut out = line(header);
    if markdown {
        let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", sep.join("-|-")));
    }
    for row in body {
        out.push_str(&line(row));
    }
    out
}

pub(crate) fn summarize(args: &SummarizeArgs) -> anyhow::Result<String> {
    let rows = read_rows(&args.files)?;
    anyhow::ensure!(!rows.is_empty(), "no JSON report lines found");
    let mut out = String::new();
    for (scenario, srows) in group(&rows, |r| r.scenario.clone()) {
        let figures = if args.figures.is_empty() {
            default_figures(&scenario)
        } else {
            args.figures.clone()
        };
        let mut header = vec!["run".to_string(), "n".to_string()];
        header.extend(figures.iter().cloned());
        let owned: Vec<Row> = srows.into_iter().cloned().collect();
        let mut body = Vec::new();
        let run_key = |r: &Row| {
            if r.label.is_empty() {
                r.params.clone()
            } else {
                r.label.clone()
            }
        };
        for (key, runs) in group(&owned, run_key) {
            let mut cells = vec![key, runs.len().to_string()];
            for f in &figures {
                cells.push(
                    median_of(&runs, f)
                        .map_or("-".to_string(), |v| format_value(v, unit_for_key(f))),
                );
            }
            body.push(cells);
        }
        out.push_str(&format!("{scenario} (median of n runs)\n"));
        out.push_str(&table(&header, &body, args.markdown));
        out.push('\n');
    }
    Ok(out)
}

/// Whether a larger value of this figure is better (for the ratio's reading).
fn higher_is_better(fig: &str) -> bool {
    fig.ends_with("_per_s")
        || fig.ends_with("_ratio")
        || fig == "connected"
        || fig == "max_rate_per_client"
}

pub(crate) fn compare(args: &CompareArgs) -> anyhow::Result<String> {
    let rows = read_rows(&args.files)?;
    anyhow::ensure!(!rows.is_empty(), "no JSON report lines found");
    let mut out = String::new();
    for (key, srows) in group(&rows, |r| format!("{} {}", r.scenario, r.params)) {
        let scenario = srows
            .first()
            .map(|r| r.scenario.clone())
            .unwrap_or_default();
        let figures = if args.figures.is_empty() {
            default_figures(&scenario)
        } else {
            args.figures.clone()
        };
        let owned: Vec<Row> = srows.into_iter().cloned().collect();
        let by_label = group(&owned, |r| r.label.clone());
        let labels: Vec<&String> = by_label.iter().map(|(l, _)| l).collect();
        let peers: Vec<&String> = labels
            .iter()
            .copied()
            .filter(|l| **l != args.baseline)
            .collect();
        let mut header = vec!["figure".to_string()];
        header.extend(labels.iter().map(|l| l.to_string()));
        header.extend(peers.iter().map(|p| format!("{}/{p}", args.baseline)));
        let mut body = Vec::new();
        for f in &figures {
            let unit = unit_for_key(f);
            let values: Vec<Option<f64>> =
                by_label.iter().map(|(_, rs)| median_of(rs, f)).collect();
            if values.iter().all(Option::is_none) {
                continue;
            }
            let base = by_label
                .iter()
                .position(|(l, _)| *l == args.baseline)
                .and_then(|i| values[i]);
            let mut cells = vec![format!(
                "{f}{}",
                if higher_is_better(f) { " (↑)" } else { "" }
            )];
            cells.extend(
                values
                    .iter()
                    .map(|v| v.map_or("-".to_string(), |v| format_value(v, unit))),
            );
            for p in &peers {
                let pv = by_label
                    .iter()
                    .position(|(l, _)| l == *p)
                    .and_then(|i| values[i]);
                cells.push(match (base, pv) {
                    (Some(b), Some(p)) if p != 0.0 => format!("{:.2}x", b / p),
                    _ => "-".to_string(),
                });
            }
            body.push(cells);
        }
        out.push_str(&format!("{key}\n"));
        out.push_str(&table(&header, &body, args.markdown));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0]), Some(3.0));
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn parses_report_lines_and_skips_noise() {
        let text = "not json\n{\"scenario\":\"durable\",\"label\":\"x\",\"params\":{\"clients\":1},\"figures\":{\"calls_per_s\":10.0,\"bad\":null}}\n";
        let rows = parse_lines(text);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].params, "clients=1");
        assert_eq!(rows[0].figures.get("calls_per_s"), Some(&10.0));
        assert!(!rows[0].figures.contains_key("bad"));
    }

    #[test]
    fn compare_prints_ratios() {
        let dir = std::env::temp_dir().join(format!("roost-load-cmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let f = dir.join("r.jsonl");
        let line = |label: &str, v: f64| {
            format!("{{\"scenario\":\"fanout\",\"label\":\"{label}\",\"params\":{{\"docs\":1}},\"figures\":{{\"delivered_per_s\":{v}}}}}\n")
        };
        std::fs::write(
            &f,
            line("roost", 300.0) + &line("roost", 100.0) + &line("peer", 100.0),
        )
        .expect("write");
        let out = compare(&CompareArgs {
            files: vec![f.clone()],
            baseline: "roost".into(),
            figures: vec![],
            markdown: false,
        })
        .expect("compare");
        assert!(out.contains("2.00x"), "{out}");
        let out = summarize(&SummarizeArgs {
            files: vec![f],
            figures: vec![],
            markdown: true,
        })
        .expect("summarize");
        assert!(out.contains("| roost "), "{out}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
