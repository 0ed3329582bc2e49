//! The latency plot: `latency.svg`.
//!
//! Top: acknowledgement latency p50 and p99 per window over the measured
//! phase, with the kill of a primary marked and the outage (kill to first
//! acknowledgement by the new primary) shaded. Bottom: delivery latency
//! p50 and p99 per window (by acknowledgement time), same cluster and
//! cross cluster. Both use a logarithmic millisecond axis: a failover
//! stall is hundreds of times a normal acknowledgement.
//!
//! plotters' SVG backend writes text as SVG `<text>`, so no font files
//! are needed on the machine that draws it.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::limits::{PLOT_HEIGHT_PX, PLOT_WIDTH_PX};
use crate::stats::Window;

/// The lowest and highest latency the axes show, in ms.
const AXIS_MIN_MS: f64 = 0.05;
const AXIS_MAX_FLOOR_MS: f64 = 10.0;

pub struct PlotInput<'a> {
    pub title: String,
    /// Seconds the measured phase lasted.
    pub duration_s: f64,
    pub ack: &'a [Window],
    pub delivery_same: &'a [Window],
    pub delivery_cross: &'a [Window],
    /// Seconds into the phase of the kill, and of the first
    /// acknowledgement after it.
    pub kill_at_s: Option<f64>,
    pub outage_end_s: Option<f64>,
}

/// The points of one percentile series, cut into runs of windows that
/// have samples (an empty window breaks the line rather than joining its
/// neighbours across it).
pub fn segments(
    windows: &[Window],
    pick: fn(&Window) -> Option<f64>,
    width_s: f64,
) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for w in windows {
        match pick(w) {
            Some(v) => current.push((w.start_s + width_s / 2.0, v.max(AXIS_MIN_MS))),
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn axis_max(series: &[&[Window]]) -> f64 {
    let max = series
        .iter()
        .flat_map(|s| s.iter())
        .filter_map(|w| w.p99_ms)
        .fold(0.0f64, f64::max);
    (max * 1.5).max(AXIS_MAX_FLOOR_MS)
}

fn width_s(windows: &[Window]) -> f64 {
    match windows {
        [a, b, ..] => b.start_s - a.start_s,
        _ => 0.1,
    }
}

pub fn write_svg(path: &Path, input: &PlotInput) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root
        .titled(&input.title, ("sans-serif", 22))
        .map_err(plot_err)?;
    let panels = root.split_evenly((2, 1));
    draw_panel(
        &panels[0],
        "post acknowledgement latency (per window)",
        input,
        &[
            ("ack p50", input.ack, pick_p50, BLUE),
            ("ack p99", input.ack, pick_p99, RED),
        ],
    )?;
    draw_panel(
        &panels[1],
        "delivery latency, acknowledgement to follower's stream (per window of acknowledgement)",
        input,
        &[
            ("same-cluster p50", input.delivery_same, pick_p50, GREEN),
            (
                "same-cluster p99",
                input.delivery_same,
                pick_p99,
                RGBColor(0, 100, 0),
            ),
            ("cross-cluster p50", input.delivery_cross, pick_p50, MAGENTA),
            (
                "cross-cluster p99",
                input.delivery_cross,
                pick_p99,
                RGBColor(120, 0, 160),
            ),
        ],
    )?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn pick_p50(w: &Window) -> Option<f64> {
    w.p50_ms
}

fn pick_p99(w: &Window) -> Option<f64> {
    w.p99_ms
}

type Series<'a> = (&'a str, &'a [Window], fn(&Window) -> Option<f64>, RGBColor);

fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    caption: &str,
    input: &PlotInput,
    series: &[Series],
) -> anyhow::Result<()> {
    let all: Vec<&[Window]> = series.iter().map(|s| s.1).collect();
    let y_max = axis_max(&all);
    let x_max = input.duration_s.max(0.1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (AXIS_MIN_MS..y_max).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured phase")
        .y_desc("milliseconds (log)")
        .draw()
        .map_err(plot_err)?;
    if let (Some(kill), Some(end)) = (input.kill_at_s, input.outage_end_s) {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(kill, AXIS_MIN_MS), (end, y_max)],
                RED.mix(0.12).filled(),
            )))
            .map_err(plot_err)?
            .label(format!("outage {:.0} ms", (end - kill) * 1000.0))
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], RED.mix(0.12).filled()));
    }
    if let Some(kill) = input.kill_at_s {
        chart
            .draw_series(LineSeries::new(
                [(kill, AXIS_MIN_MS), (kill, y_max)],
                BLACK.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(format!("kill -9 of the primary at {kill:.1} s"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    }
    for &(name, windows, pick, color) in series {
        let w = width_s(windows);
        let mut labelled = false;
        for seg in segments(windows, pick, w) {
            let drawn = chart
                .draw_series(LineSeries::new(seg, color.stroke_width(1)))
                .map_err(plot_err)?;
            if !labelled {
                drawn
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                labelled = true;
            }
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(start_s: f64, p50: Option<f64>) -> Window {
        Window {
            start_s,
            count: p50.map_or(0, |_| 1),
            p50_ms: p50,
            p99_ms: p50.map(|v| v * 2.0),
        }
    }

    #[test]
    fn empty_windows_break_the_line() {
        let windows = [
            w(0.0, Some(1.0)),
            w(0.1, None),
            w(0.2, Some(2.0)),
            w(0.3, Some(0.0)),
        ];
        let s = segments(&windows, pick_p50, 0.1);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].len(), 1);
        assert_eq!(s[1][1].1, AXIS_MIN_MS, "zero is drawn at the axis floor");
    }

    #[test]
    fn an_svg_is_written_without_fonts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.svg");
        let windows: Vec<Window> = (0..50)
            .map(|i| w(i as f64 * 0.1, Some(1.0 + i as f64)))
            .collect();
        let input = PlotInput {
            title: "test".into(),
            duration_s: 5.0,
            ack: &windows,
            delivery_same: &windows,
            delivery_cross: &[],
            kill_at_s: Some(2.0),
            outage_end_s: Some(2.6),
        };
        write_svg(&path, &input).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("outage 600 ms"));
        assert!(svg.contains("ack p99"));
    }
}
