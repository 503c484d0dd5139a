//! `lena plot`: metrics of one or more runs drawn as a line chart.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct PlotArgs {
    /// Run directories (or metrics CSV files) to draw, one line each.
    pub(crate) runs: Vec<PathBuf>,
    /// Output path without extension (writes OUT.png and OUT.svg).
    #[arg(long, short = 'o')]
    pub(crate) output: PathBuf,
    /// Column for the x axis (iteration, bits, uploads, latency_seconds, ...).
    #[arg(long, default_value = "iteration")]
    x: String,
    /// Column for the y axis (train_loss, test_accuracy, upload_frequency, ...).
    #[arg(long, default_value = "train_loss")]
    y: String,
    /// Logarithmic x axis.
    #[arg(long)]
    log_x: bool,
    /// Logarithmic y axis.
    #[arg(long)]
    log_y: bool,
    /// Legend entries, one per run in order (default: each run's algorithm name).
    #[arg(long = "label")]
    pub(crate) labels: Vec<String>,
    /// Title (default: "Y vs X").
    #[arg(long)]
    title: Option<String>,
}

pub(crate) fn plot(a: PlotArgs) -> Result<()> {
    anyhow::ensure!(
        !a.runs.is_empty(),
        "lena plot: give at least one run directory"
    );
    anyhow::ensure!(
        a.labels.is_empty() || a.labels.len() == a.runs.len(),
        "lena plot: {} --label for {} runs",
        a.labels.len(),
        a.runs.len()
    );
    let mut series = Vec::new();
    for (i, run) in a.runs.iter().enumerate() {
        let (csv, meta) = if run.is_dir() {
            (run.join("metrics.csv"), Some(run.join("meta.json")))
        } else {
            (run.clone(), None)
        };
        let table = lena_plot::Table::read(&csv)?;
        let col = |name: &str| {
            table.column(name).with_context(|| {
                format!(
                    "{}: no column {}; columns are: {}",
                    csv.display(),
                    lena_data::quote(name),
                    table.names.join(", ")
                )
            })
        };
        let (x, y) = (col(&a.x)?, col(&a.y)?);
        let label = match a.labels.get(i) {
            Some(l) => l.clone(),
            None => meta
                .and_then(|m| std::fs::read_to_string(m).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["label"].as_str().map(String::from))
                .unwrap_or_else(|| run.display().to_string()),
        };
        series.push(lena_plot::Series {
            label,
            points: x.into_iter().zip(y).collect(),
            band: Vec::new(),
        });
    }
    let chart = lena_plot::Chart {
        title: a.title.unwrap_or_else(|| format!("{} vs {}", a.y, a.x)),
        x_label: a.x.clone(),
        y_label: a.y.clone(),
        log_x: a.log_x,
        log_y: a.log_y,
        series,
    };
    let [png, svg] = lena_plot::draw(&chart, &a.output)?;
    #[allow(clippy::print_stdout)]
    {
        println!("wrote {} and {}", png.display(), svg.display());
    }
    Ok(())
}
