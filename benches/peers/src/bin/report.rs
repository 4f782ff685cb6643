//! `report RESULTS.tsv CHART.svg`: the tables and chart of benches/compare.sh.
//!
//! Reads the raw measurements compare.sh wrote, one per line:
//! `section<TAB>point<TAB>server<TAB>round<TAB>value<TAB>errors`, and prints
//! Markdown tables of the medians per point and server, each with its ratio
//! to revecho at the same point and the min–max spread over the rounds.
//! Draws the `cpu_us` section as a chart of those ratios into CHART.svg.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitCode;

use plotters::prelude::*;

/// What each section measures, for the table's headings.
const SECTIONS: [(&str, &str); 5] = [
    (
        "cpu_us",
        "Server CPU per connection, µs (utime+stime of the server process)",
    ),
    (
        "callgrind_ir",
        "Instructions per connection in the server's user space (callgrind)",
    ),
    (
        "rss_kib",
        "RSS growth per idle connection, KiB (VmRSS before and while they are held)",
    ),
    (
        "idle_effect",
        "Exchange latency p50 with and without 5,000 idle connections, µs",
    ),
    (
        "idle_ratio",
        "The same as a ratio: p50 among idle connections ÷ p50 without, within each round",
    ),
];

/// One point's measurements of one server.
#[derive(Debug, Default)]
struct Series {
    values: Vec<f64>,
    errors: u64,
}

/// Measurements in order of first appearance: section → point → server.
type Table = Vec<(String, Vec<(String, Vec<(String, Series)>)>)>;

fn entry<'t, T: Default>(list: &'t mut Vec<(String, T)>, key: &str) -> &'t mut T {
    let index = match list.iter().position(|(name, _)| name == key) {
        Some(index) => index,
        None => {
            list.push((key.to_string(), T::default()));
            list.len() - 1
        }
    };
    &mut list[index].1
}

fn parse(text: &str) -> Result<Table, String> {
    let mut table: Table = Vec::new();
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
    {
        let fields: Vec<&str> = line.split('\t').collect();
        let [section, point, server, _round, value, errors] = fields[..] else {
            return Err(format!(
                "line {}: expected 6 tab-separated fields: {line:?}",
                number + 1
            ));
        };
        let value: f64 = value
            .parse()
            .map_err(|e| format!("line {}: value {value:?}: {e}", number + 1))?;
        let errors: u64 = errors
            .parse()
            .map_err(|e| format!("line {}: errors {errors:?}: {e}", number + 1))?;
        let series = entry(entry(entry(&mut table, section), point), server);
        series.values.push(value);
        series.errors += errors;
    }
    Ok(table)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn format_value(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The Markdown tables.
fn markdown(table: &Table) -> String {
    let mut text = String::new();
    for (section, points) in table {
        let heading = SECTIONS
            .iter()
            .find(|(name, _)| name == section)
            .map_or(section.as_str(), |s| s.1);
        text.push_str(&format!("\n**{heading}**\n\n"));
        text.push_str("| point | server | median | × revecho | min–max | rounds | errors |\n");
        text.push_str("|---|---|---:|---:|---:|---:|---:|\n");
        for (point, servers) in points {
            let reference = servers.iter().find(|(server, _)| server.starts_with("revecho"));
            let reference = reference.map(|(_, series)| median(&series.values));
            for (server, series) in servers {
                let value = median(&series.values);
                let ratio = reference
                    .filter(|r| *r > 0.0)
                    .map_or("–".into(), |r| format!("{:.2}", value / r));
                let low = series.values.iter().copied().fold(f64::INFINITY, f64::min);
                let high = series.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                text.push_str(&format!(
                    "| {point} | {server} | {} | {ratio} | {}–{} | {} | {} |\n",
                    format_value(value),
                    format_value(low),
                    format_value(high),
                    series.values.len(),
                    series.errors
                ));
            }
        }
    }
    text
}

/// The `cpu_us` ratios to revecho, one line per peer across the points.
fn chart(table: &Table, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let Some((_, points)) = table.iter().find(|(section, _)| section == "cpu_us") else {
        return Ok(());
    };
    let mut ratios: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (index, (_, servers)) in points.iter().enumerate() {
        let Some(reference) = servers.iter().find(|(server, _)| server.starts_with("revecho")) else {
            continue;
        };
        let reference = median(&reference.1.values);
        for (server, series) in servers {
            // "revecho --linger 0" and "revecho" are one line: revecho.
            let name = if server.starts_with("revecho") {
                "revecho"
            } else {
                server.as_str()
            };
            ratios
                .entry(name.to_string())
                .or_default()
                .push((index as f64, median(&series.values) / reference));
        }
    }
    let highest = ratios
        .values()
        .flatten()
        .map(|&(_, ratio)| ratio)
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let labels: Vec<String> = points.iter().map(|(point, _)| point.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Server CPU per connection, relative to revecho (lower is cheaper)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(280)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..labels.len() as f64 - 0.5, 0f64..highest * 1.1)?;
    chart
        .configure_mesh()
        .x_labels(labels.len())
        .x_label_style(("sans-serif", 12).into_font().transform(FontTransform::Rotate90))
        .x_label_formatter(&|x| {
            let index = x.round();
            if (x - index).abs() > 0.01 || index < 0.0 {
                return String::new();
            }
            labels.get(index as usize).cloned().unwrap_or_default()
        })
        .y_desc("× revecho's CPU per connection")
        .draw()?;
    for (color_index, (server, line)) in ratios.iter().enumerate() {
        let color = Palette99::pick(color_index).to_rgba();
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))?
            .label(server.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(line.iter().map(|&point| Circle::new(point, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [results, svg] = &args[..] else {
        eprintln!("usage: report RESULTS.tsv CHART.svg");
        return ExitCode::from(2);
    };
    let table = match std::fs::read_to_string(results)
        .map_err(|e| e.to_string())
        .and_then(|text| parse(&text))
    {
        Ok(table) => table,
        Err(message) => {
            eprintln!("error: {results}: {message}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", markdown(&table));
    if let Err(e) = chart(&table, svg) {
        eprintln!("error: cannot draw {svg}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_spreads_come_out_of_the_raw_lines() {
        let table = parse(
            "cpu_us\t13 B\trevecho\t1\t10\t0\n\
             cpu_us\t13 B\tC epoll\t1\t9\t0\n\
             cpu_us\t13 B\trevecho\t2\t12\t0\n\
             cpu_us\t13 B\tC epoll\t2\t9\t1\n\
             cpu_us\t13 B\trevecho\t3\t30\t0\n",
        )
        .unwrap();
        let text = markdown(&table);
        assert!(
            text.contains("| 13 B | revecho | 12.00 | 1.00 | 10.00–30.00 | 3 | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("| 13 B | C epoll | 9.00 | 0.75 | 9.00–9.00 | 2 | 1 |"),
            "{text}"
        );
    }

    #[test]
    fn a_malformed_line_is_an_error_with_its_number() {
        assert!(
            parse("cpu_us\tonly three\tfields\n")
                .unwrap_err()
                .starts_with("line 1:")
        );
    }
}
