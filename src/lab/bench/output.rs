//! `georep bench`'s report as a table for people and as an SVG chart
//! (plotters): throughput per run, or per concurrency level with `--sweep`.

use std::fmt::Write as _;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::runner::{BenchReport, RunKind, RunResult};
use crate::units::human_bytes;
use crate::units::table;

/// The aligned report.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::new();
    let c = &report.corpus;
    let _ = writeln!(
        out,
        "corpus {} (seed {}): {} repositories, {} tags, {} manifests, {} unique blobs, {} (largest {})",
        c.name,
        c.seed,
        c.repositories,
        c.tags,
        c.manifests,
        c.unique_blobs,
        human_bytes(c.unique_blob_bytes),
        human_bytes(c.largest_blob_bytes)
    );
    let m = &report.machine;
    let _ = writeln!(
        out,
        "{} regions ({}) from {} ({}); machine: {} CPUs, {} memory, {}\n",
        report.regions.len(),
        report.regions.join(", "),
        report.primary,
        report.target,
        m.cpus,
        m.memory_bytes
            .map(human_bytes)
            .unwrap_or_else(|| "?".into()),
        m.os
    );
    let headers = [
        "RUN",
        "CONC",
        "ROUND",
        "WALL S",
        "MIB/S",
        "×RAW",
        "×SKOPEO",
        "REQ PRIMARY",
        "REQ REPLICAS",
        "PEAK RSS",
        "CPU S",
        "REG CPU S",
        "CHECK",
    ];
    let mut rows: Vec<Vec<String>> = vec![headers.iter().map(|s| s.to_string()).collect()];
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
    for r in &report.runs {
        rows.push(vec![
            r.kind.label().to_owned(),
            r.concurrency.map_or("-".into(), |c| c.to_string()),
            r.round.to_string(),
            format!("{:.2}", r.wall_secs),
            opt(r.mib_per_sec, 1),
            opt(r.ratio_to_raw, 2),
            opt(r.ratio_to_skopeo, 2),
            r.requests
                .as_ref()
                .map_or("-".into(), |q| q.primary_total().to_string()),
            r.requests
                .as_ref()
                .map_or("-".into(), |q| q.replica_total().to_string()),
            r.peak_rss_bytes.map_or("-".into(), human_bytes),
            opt(r.cpu_secs, 2),
            opt(r.registry_cpu_secs, 2),
            check(r),
        ]);
    }
    let right = [
        false, true, true, true, true, true, true, true, true, true, true, true, false,
    ];
    out.push_str(&table(&rows, &right));

    if let Some(source) = report.runs.iter().find_map(|r| r.requests.as_ref()) {
        let _ = writeln!(out, "\nrequests by kind ({}):", source.source);
        for r in &report.runs {
            let Some(q) = &r.requests else { continue };
            let kinds = |m: &std::collections::BTreeMap<String, u64>| {
                if m.is_empty() {
                    return "none".to_owned();
                }
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "  {:<13} {:<7} regions: {}; primary: {}",
                r.kind.label(),
                r.concurrency.map_or(String::new(), |c| format!("c={c}")),
                kinds(&q.replicas),
                kinds(&q.primary)
            );
        }
    }

    let s = &report.summary;
    out.push('\n');
    for l in &s.georep_vs_raw {
        let _ = writeln!(
            out,
            "georep / raw at {} blobs in flight: {:.2}{} ({:.1} vs {:.1} MiB/s)",
            l.concurrency,
            l.mean,
            if (l.max - l.min) > 0.005 {
                format!(" (rounds {:.2}–{:.2})", l.min, l.max)
            } else {
                String::new()
            },
            l.georep_mib_per_sec,
            l.raw_mib_per_sec
        );
    }
    if let Some(v) = s.georep_vs_skopeo {
        let _ = writeln!(
            out,
            "georep / skopeo: {v:.2} (georep at {} blobs in flight)",
            s.compared_level
        );
    }
    if let Some(n) = s.noop_replica_requests {
        let _ = writeln!(out, "no-op sync: {n} requests to the regions");
    }
    if let Some(b) = s.georep_peak_rss_bytes {
        let _ = writeln!(out, "georep peak RSS: {}", human_bytes(b));
    }
    let _ = writeln!(
        out,
        "verification: {}",
        if s.all_verified {
            "every run left every region identical to the primary"
        } else {
            "FAILED for some runs (see CHECK)"
        }
    );
    for n in &report.notes {
        let _ = writeln!(out, "note: {n}");
    }
    for r in report.runs.iter().filter(|r| r.error.is_some()) {
        let _ = writeln!(
            out,
            "{} {}: {}",
            r.kind.label(),
            r.concurrency.map_or(String::new(), |c| format!("c={c}")),
            r.error.as_deref().unwrap_or_default()
        );
    }
    out
}

fn check(r: &RunResult) -> String {
    match (&r.error, r.verified) {
        (None, true) => "ok".to_owned(),
        (Some(_), true) => "FAILED (copy)".to_owned(),
        (_, false) => "FAILED (verify)".to_owned(),
    }
}

const COLORS: [RGBColor; 3] = [
    RGBColor(90, 90, 90),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
];

/// The chart as SVG text: bars of mean MiB/s per kind of run, or with
/// several concurrency levels, MiB/s per level for raw and georep (skopeo,
/// which has no such knob, as a flat line).
pub fn svg(report: &BenchReport) -> anyhow::Result<String> {
    let mut levels: Vec<usize> = report.runs.iter().filter_map(|r| r.concurrency).collect();
    levels.sort_unstable();
    levels.dedup();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (860, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let title = format!(
            "georep bench: {} corpus ({}), {} regions",
            report.corpus.name,
            human_bytes(report.corpus.unique_blob_bytes),
            report.regions.len()
        );
        if levels.len() > 1 {
            sweep_chart(&root, &title, report, &levels)?;
        } else {
            bar_chart(&root, &title, report)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(out)
}

fn mean_mib(report: &BenchReport, kind: RunKind, level: Option<usize>) -> Option<f64> {
    let v: Vec<f64> = report
        .runs
        .iter()
        .filter(|r| r.kind == kind && (level.is_none() || r.concurrency == level))
        .filter_map(|r| r.mib_per_sec)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn bar_chart(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    report: &BenchReport,
) -> anyhow::Result<()> {
    let bars: Vec<(&str, f64, RGBColor)> = [RunKind::Raw, RunKind::Georep, RunKind::Skopeo]
        .into_iter()
        .zip(COLORS)
        .filter_map(|(k, c)| Some((k.label(), mean_mib(report, k, None)?, c)))
        .collect();
    let top = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..bars.len().saturating_sub(1)).into_segmented(),
            0f64..top,
        )
        .map_err(plot_error)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.to_owned()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_desc("MiB/s (unique blob bytes / wall)")
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v, c))| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                c.filled(),
            );
            bar.set_margin(0, 0, 30, 30);
            bar
        }))
        .map_err(plot_error)?;
    let label =
        TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v, _))| {
            Text::new(
                format!("{v:.0} MiB/s"),
                (SegmentValue::CenterOf(i), *v + top * 0.01),
                label.clone(),
            )
        }))
        .map_err(plot_error)?;
    Ok(())
}

fn sweep_chart(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    report: &BenchReport,
    levels: &[usize],
) -> anyhow::Result<()> {
    let series: Vec<(RunKind, Vec<(usize, f64)>)> = [RunKind::Raw, RunKind::Georep]
        .into_iter()
        .map(|k| {
            let points = levels
                .iter()
                .enumerate()
                .filter_map(|(i, l)| Some((i, mean_mib(report, k, Some(*l))?)))
                .collect();
            (k, points)
        })
        .collect();
    let skopeo = mean_mib(report, RunKind::Skopeo, None);
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .chain(skopeo)
        .fold(1.0, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..levels.len().saturating_sub(1)).into_segmented(),
            0f64..top,
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("blobs in flight")
        .y_desc("MiB/s (unique blob bytes / wall)")
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => levels.get(*i).map(|l| l.to_string()).unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    for ((kind, points), color) in series.iter().zip(COLORS) {
        let pts: Vec<(SegmentValue<usize>, f64)> = points
            .iter()
            .map(|(i, v)| (SegmentValue::CenterOf(*i), *v))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
            .map_err(plot_error)?
            .label(kind.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(plot_error)?;
    }
    if let Some(s) = skopeo {
        let color = COLORS[2];
        chart
            .draw_series(LineSeries::new(
                [
                    (SegmentValue::CenterOf(0), s),
                    (SegmentValue::CenterOf(levels.len() - 1), s),
                ],
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label("skopeo")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}
