//! Bar charts as inline SVG, drawn on the server: no script, readable by a screen reader through
//! the table every chart sits above (the SVG itself is labelled and summarized).

use maud::{html, Markup};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// A "nice" axis maximum at or above `max` (1, 2 or 5 times a power of ten).
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|v| *v >= max).unwrap_or(10.0 * power)
}

/// A number as an axis or tooltip shows it.
pub(crate) fn number(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e12 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Vertical bars, one per label; `title` names the chart for assistive technology.
pub(crate) fn bars(title: &str, unit: &str, points: &[(String, f64)]) -> Markup {
    let max = nice_max(points.iter().map(|(_, v)| *v).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / points.len().max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    // At most ~8 labels under the axis.
    let every = points.len().div_ceil(8).max(1);
    let total: f64 = points.iter().map(|(_, v)| v).sum();
    let summary = format!(
        "{title}: {} in all over {} {}",
        number(total),
        points.len(),
        if points.len() == 1 { "entry" } else { "entries" }
    );
    html! {
        figure class="chart" {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(summary) {
                @for i in 0..=4 {
                    @let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
                    line x1=(LEFT) x2=(WIDTH - 8.0) y1=(y) y2=(y) class="grid" {}
                    text x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" class="axis" { (number(max * f64::from(i) / 4.0)) }
                }
                @for (i, (label, value)) in points.iter().enumerate() {
                    @let h = if max > 0.0 { plot_h * value / max } else { 0.0 };
                    @let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
                    rect x=(x) y=(TOP + plot_h - h) width=(bar) height=(h) class="bar" {
                        title { (label) ": " (number(*value)) " " (unit) }
                    }
                    @if i % every == 0 {
                        text x=(x + bar / 2.0) y=(HEIGHT - 8.0) text-anchor="middle" class="axis" { (short(label)) }
                    }
                }
            }
            figcaption { (title) }
        }
    }
}

/// A label under the axis: days as `MM-DD`, long ids cut.
fn short(label: &str) -> String {
    if label.len() == 10 && label.as_bytes().get(4) == Some(&b'-') {
        return label[5..].to_owned();
    }
    if label.chars().count() > 14 {
        return label.chars().take(13).chain(['…']).collect();
    }
    label.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(17.0), 20.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(nice_max(0.03), 0.05);
    }

    #[test]
    fn bars_scale_to_the_largest_value() {
        let svg = bars("Requests per day", "requests", &[("2026-12-01".into(), 2.0), ("2026-12-02".into(), 4.0)])
            .into_string();
        assert!(svg.contains("aria-label=\"Requests per day: 6 in all over 2 entries\""));
        // 4 of a nice maximum of 5: 80 % of the plot's height.
        let plot_h = HEIGHT - TOP - BOTTOM;
        assert!(svg.contains(&format!("height=\"{}\"", plot_h * 0.8)));
        assert!(svg.contains(">12-02<"));
    }
}
