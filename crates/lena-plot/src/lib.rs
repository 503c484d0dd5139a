//! Figures from lena's metrics files: line charts written as PNG and SVG with plotters.
//!
//! Must not depend on: any other `lena-*` crate. It reads metrics as CSV columns by name, so
//! it plots any file with a header line (the simulator's `metrics.csv`, a reproduction's
//! tables) and knows nothing of algorithms.
//!
//! Text is drawn with DejaVu Sans, embedded in the crate (`assets/`, with its licence), so
//! figures need no system fonts or font libraries.

pub mod stats;

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        err: std::io::Error,
    },
    /// A CSV file is not what was expected.
    #[error("{path}:{line}: {what}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// Drawing failed.
    #[error("drawing {path}: {what}")]
    Draw {
        /// The figure being drawn.
        path: PathBuf,
        /// The backend's message.
        what: String,
    },
    /// Nothing to draw.
    #[error("{0}")]
    Empty(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A CSV table: named columns of numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Column names, from the header line.
    pub names: Vec<String>,
    /// Rows of values, one per data line.
    pub rows: Vec<Vec<f64>>,
}

impl Table {
    /// Reads a CSV file whose first line names the columns and whose other lines are numbers
    /// (an empty cell reads as NaN: a value the row does not have).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| Error::Io {
            path: path.into(),
            err,
        })?;
        Self::parse(&text, path)
    }

    /// [`Table::read`] on text already in memory (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(Error::Csv {
                path: path.into(),
                line: 1,
                what: "empty file, expected a header line".into(),
            });
        };
        let names: Vec<String> = header.split(',').map(|s| s.trim().to_string()).collect();
        let mut rows = Vec::new();
        for (i, line) in lines {
            // An empty cell is a value the row does not have (drawn as a gap).
            let row: std::result::Result<Vec<f64>, _> = line
                .split(',')
                .map(|v| match v.trim() {
                    "" => Ok(f64::NAN),
                    v => v.parse::<f64>(),
                })
                .collect();
            let row = row.map_err(|e| Error::Csv {
                path: path.into(),
                line: i + 1,
                what: format!("not a number: {e}"),
            })?;
            if row.len() != names.len() {
                return Err(Error::Csv {
                    path: path.into(),
                    line: i + 1,
                    what: format!("{} values for {} columns", row.len(), names.len()),
                });
            }
            rows.push(row);
        }
        Ok(Self { names, rows })
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(self.rows.iter().map(|r| r[i]).collect())
    }
}

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry (named as in the paper: LENA-B, LENA-M-2, ...).
    pub label: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// A shaded band around the line, e.g. a 95% confidence interval over seeds: `(x, low,
    /// high)` in drawing order (empty: no band).
    pub band: Vec<(f64, f64, f64)>,
}

/// A line chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis (non-positive x values are left out).
    pub log_x: bool,
    /// Logarithmic y axis (non-positive y values are left out). A log axis whose data span
    /// less than a decade is drawn linear (it would have no tick labels).
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

/// Width and height of the figures, pixels.
pub const SIZE: (u32, u32) = (900, 600);

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        )
        .map_err(|_| ())
        .expect("the embedded font is a valid TrueType file");
    });
}

/// Draws `chart` to `stem.png` and `stem.svg` (directories are created); returns both paths.
pub fn draw(chart: &Chart, stem: &Path) -> Result<[PathBuf; 2]> {
    register_font();
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|err| Error::Io {
            path: dir.into(),
            err,
        })?;
    }
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        plot(chart, &root, &png)?;
        root.present().map_err(|e| draw_err(&png, e))?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        plot(chart, &root, &svg)?;
        root.present().map_err(|e| draw_err(&svg, e))?;
    }
    Ok([png, svg])
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Draw {
        path: path.into(),
        what: e.to_string(),
    }
}

/// The points a chart can show on its axes.
fn visible(chart: &Chart) -> Vec<Vec<(f64, f64)>> {
    chart
        .series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|(x, y)| {
                    x.is_finite()
                        && y.is_finite()
                        && (!chart.log_x || *x > 0.0)
                        && (!chart.log_y || *y > 0.0)
                })
                .collect()
        })
        .collect()
}

/// Each series' band as `[(x, low), (x, high)]` pairs the axes can show.
fn visible_bands(chart: &Chart) -> Vec<Vec<[(f64, f64); 2]>> {
    let ok = |x: f64, y: f64| {
        x.is_finite() && y.is_finite() && (!chart.log_x || x > 0.0) && (!chart.log_y || y > 0.0)
    };
    chart
        .series
        .iter()
        .map(|s| {
            s.band
                .iter()
                .filter(|(x, lo, hi)| ok(*x, *lo) && ok(*x, *hi))
                .map(|&(x, lo, hi)| [(x, lo), (x, hi)])
                .collect()
        })
        .collect()
}

/// A tick label: plain for moderate numbers, `2.5e9` style for large and tiny ones.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.1e}");
        s.replace(".0e", "e")
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn range(v: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in v {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if lo == hi {
        if log {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo - 0.5, hi + 0.5)
        }
    } else if log {
        (lo, hi)
    } else {
        let pad = 0.02 * (hi - lo);
        (lo - pad, hi + pad)
    }
}

fn plot<DB: DrawingBackend>(chart: &Chart, root: &DrawingArea<DB, Shift>, path: &Path) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let pts = visible(chart);
    if pts.iter().all(|p| p.is_empty()) {
        return Err(Error::Empty(format!(
            "{}: no points to draw{}",
            chart.title,
            if chart.log_x || chart.log_y {
                " on log axes"
            } else {
                ""
            }
        )));
    }
    let bands = visible_bands(chart);
    let all = || {
        pts.iter()
            .flatten()
            .copied()
            .chain(bands.iter().flatten().flat_map(|b| b.iter().copied()))
    };
    let x = range(all().map(|p| p.0), chart.log_x);
    let y = range(all().map(|p| p.1), chart.log_y);
    // A log axis within one decade has no tick label: such an axis is drawn linear.
    let log_x = chart.log_x && x.1 / x.0 >= 10.0;
    let log_y = chart.log_y && y.1 / y.0 >= 10.0;
    let x = if log_x == chart.log_x {
        x
    } else {
        range(all().map(|p| p.0), false)
    };
    let y = if log_y == chart.log_y {
        y
    } else {
        range(all().map(|p| p.1), false)
    };
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70);
    // Four axis combinations, one code path each (plotters types differ per axis kind).
    macro_rules! body {
        ($ctx:expr) => {{
            let mut ctx = $ctx;
            ctx.configure_mesh()
                .light_line_style(TRANSPARENT)
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str())
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| draw_err(path, e))?;
            for (i, band) in bands.iter().enumerate() {
                if band.len() < 2 {
                    continue;
                }
                // The band as one polygon: along the low edge, back along the high one.
                let outline: Vec<(f64, f64)> = band
                    .iter()
                    .map(|b| b[0])
                    .chain(band.iter().rev().map(|b| b[1]))
                    .collect();
                ctx.draw_series(std::iter::once(Polygon::new(
                    outline,
                    Palette99::pick(i).mix(0.18).filled(),
                )))
                .map_err(|e| draw_err(path, e))?;
            }
            for (i, (s, p)) in chart.series.iter().zip(&pts).enumerate() {
                let color = Palette99::pick(i).to_rgba().stroke_width(2);
                ctx.draw_series(LineSeries::new(p.iter().copied(), color))
                    .map_err(|e| draw_err(path, e))?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(
                            vec![(x, y), (x + 20, y)],
                            Palette99::pick(i).stroke_width(2),
                        )
                    });
            }
            ctx.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| draw_err(path, e))?;
        }};
    }
    let build = |e: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| draw_err(path, e);
    match (log_x, log_y) {
        (false, false) => body!(
            builder
                .build_cartesian_2d(x.0..x.1, y.0..y.1)
                .map_err(build)?
        ),
        (true, false) => {
            body!(
                builder
                    .build_cartesian_2d((x.0..x.1).log_scale(), y.0..y.1)
                    .map_err(build)?
            )
        }
        (false, true) => {
            body!(
                builder
                    .build_cartesian_2d(x.0..x.1, (y.0..y.1).log_scale())
                    .map_err(build)?
            )
        }
        (true, true) => body!(
            builder
                .build_cartesian_2d((x.0..x.1).log_scale(), (y.0..y.1).log_scale())
                .map_err(build)?
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick(1e9), "1e9");
        assert_eq!(tick(2.5e10), "2.5e10");
        assert_eq!(tick(300.0), "300");
        assert_eq!(tick(0.85), "0.85");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(2e-5), "2e-5");
    }

    #[test]
    fn tables_parse_and_reject_bad_lines() {
        let t = Table::parse("a,b\n1,2\n3,4e1\n", Path::new("t.csv")).unwrap();
        assert_eq!(t.column("b"), Some(vec![2.0, 40.0]));
        assert_eq!(t.column("c"), None);
        let e = Table::parse("a,b\n1,2\n3\n", Path::new("t.csv")).unwrap_err();
        assert_eq!(e.to_string(), "t.csv:3: 1 values for 2 columns");
        let e = Table::parse("a,b\n1,x\n", Path::new("t.csv")).unwrap_err();
        assert!(e.to_string().starts_with("t.csv:2: not a number"), "{e}");
        assert!(Table::parse("", Path::new("t.csv")).is_err());
    }

    #[test]
    fn draws_png_and_svg_on_every_axis_kind() {
        let dir = tempfile::tempdir().unwrap();
        for (log_x, log_y) in [(false, false), (true, false), (false, true), (true, true)] {
            let chart = Chart {
                title: "loss".into(),
                x_label: "iterations".into(),
                y_label: "train loss".into(),
                log_x,
                log_y,
                series: vec![
                    Series {
                        label: "LENA-B".into(),
                        points: (0..50)
                            .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
                            .collect(),
                        band: (0..50)
                            .map(|i| {
                                let y = 1.0 / (1.0 + i as f64);
                                (i as f64, 0.8 * y, 1.25 * y)
                            })
                            .collect(),
                    },
                    Series {
                        label: "DGD-B".into(),
                        points: (0..50)
                            .map(|i| (i as f64, 0.9 / (1.0 + i as f64)))
                            .collect(),
                        band: Vec::new(),
                    },
                ],
            };
            let stem = dir.path().join(format!("fig-{log_x}-{log_y}"));
            let [png, svg] = draw(&chart, &stem).unwrap();
            let png_bytes = std::fs::read(&png).unwrap();
            assert_eq!(&png_bytes[1..4], b"PNG");
            let svg_text = std::fs::read_to_string(&svg).unwrap();
            assert!(svg_text.contains("LENA-B") && svg_text.contains("<svg"));
            // The first series' band is one filled polygon.
            assert_eq!(svg_text.matches("<polygon").count(), 1, "{svg_text:.300}");
        }
        // Nothing positive on a log axis is an error, not an empty picture.
        let chart = Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: false,
            log_y: true,
            series: vec![Series {
                label: "a".into(),
                points: vec![(0.0, 0.0), (1.0, -1.0)],
                band: Vec::new(),
            }],
        };
        assert!(matches!(
            draw(&chart, &dir.path().join("e")),
            Err(Error::Empty(_))
        ));
    }
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
