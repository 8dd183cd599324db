//! `bench-report`: the last step of `make bench`. Reads what the benchmarks wrote in
//! target/bench/ (pagetables.json, dbtier.json, dbtier-nested.json, postgres.json,
//! postgres-nested.json, regions.json, boot.json and their .md reports) and writes target/bench/report.md, report.json and PNG
//! plots; the page-table and database-tier plots are also copied to docs/
//! (bench-pagetables.png, bench-dbtier.png), which the README shows. A benchmark that did
//! not run is said so in the report, not made up.

use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The font the plots are labelled with (Debian's fonts-dejavu-core, from `make toolchain`).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const WAYS: [&str; 5] = ["mshare B, PMD tables", "mshare B, PTE tables", "mshare C", "memfd", "hugetlb"];
const COLORS: [RGBColor; 5] = [
    RGBColor(204, 121, 167),
    RGBColor(0, 114, 178),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn read_json(dir: &Path, name: &str) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
}

fn read_text(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

/// The rows of pagetables.json for one size, by way: (N, figure) points.
fn series(rows: &[Value], size: u64, way: &str, figure: &str) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r["way"] == way && r["size_bytes"].as_u64() == Some(size))
        .filter_map(|r| Some((r["procs"].as_f64()?, r[figure].as_f64()?)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// A log-log line chart of `figure` against N, one line per way.
fn plot_ways(path: &Path, title: &str, y_label: &str, rows: &[Value], size: u64, figure: &str) -> Result<(), String> {
    let lines: Vec<(usize, Vec<(f64, f64)>)> = WAYS
        .iter()
        .enumerate()
        .map(|(i, way)| (i, series(rows, size, way, figure).into_iter().map(|(n, v)| (n, v.max(1.0))).collect()))
        .collect();
    let max_n = lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.0)).fold(1.0, f64::max);
    let max_v = lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.1)).fold(10.0, f64::max);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(46)
        .y_label_area_size(80)
        .build_cartesian_2d((1.0..max_n * 1.5).log_scale(), (1.0..max_v * 3.0).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("processes (N)")
        .y_desc(y_label)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    // The first ways are drawn last, on top: mshare's lines lie on hugetlb's at 0 (drawn as 1).
    for (i, line) in lines.into_iter().rev() {
        let color = COLORS[i];
        draw_line(&mut chart, line, WAYS[i], color)?;
    }
    draw_legend(&mut chart)?;
    root.present().map_err(|e| e.to_string())
}

/// One labelled line with its points marked.
fn draw_line<'a, DB: DrawingBackend + 'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, DB, CT>,
    points: Vec<(f64, f64)>,
    label: &str,
    color: RGBColor,
) -> Result<(), String> {
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
        .map_err(|e| e.to_string())?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled()))).map_err(|e| e.to_string())?;
    Ok(())
}

/// The legend, top left.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| e.to_string())
}

/// A labelled line of a plot: label, (x, y) points, colour.
type Line<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// A linear chart of lines against K VMs.
fn plot_against_vms(path: &Path, caption: &str, y_label: &str, lines: Vec<Line<'_>>) -> Result<(), String> {
    plot_lines(path, caption, ("VMs (K)", true), y_label, lines)
}

/// A linear chart of lines; `x` is the x axis's label and whether it gets a tick per whole
/// number (a few VMs) or the default ticks (clients).
fn plot_lines(path: &Path, caption: &str, x: (&str, bool), y_label: &str, lines: Vec<Line<'_>>) -> Result<(), String> {
    let max_k = lines.iter().flat_map(|(_, l, _)| l.iter().map(|p| p.0)).fold(1.0, f64::max);
    let max_v = lines.iter().flat_map(|(_, l, _)| l.iter().map(|p| p.1)).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(46)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_k + 1.0, 0.0..max_v * 1.15)
        .map_err(|e| e.to_string())?;
    let (x_desc, tick_per_unit) = x;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_label)
        // One tick per VM count: the default halves would print each K twice.
        .x_labels(if tick_per_unit { max_k as usize + 2 } else { 10 })
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, points, color) in lines {
        draw_line(&mut chart, points, name, color)?;
    }
    draw_legend(&mut chart)?;
    root.present().map_err(|e| e.to_string())
}

/// Host memory growth against K VMs, shared against private copies.
fn plot_regions(path: &Path, rows: &[Value]) -> Result<(), String> {
    let line = |key: &str| -> Vec<(f64, f64)> {
        rows.iter().filter_map(|r| Some((r["vms"].as_f64()?, r[key].as_f64()?))).collect()
    };
    let lines = vec![
        ("shared region (mshare-vmm)", line("shared_growth_mib"), COLORS[0]),
        ("private copies", line("private_growth_mib"), COLORS[2]),
    ];
    plot_against_vms(path, "Host memory: K VMs touching a 1 GiB region", "VMM RSS growth, MiB", lines)
}

/// The database tier's ways, in the order its report lists them.
const DB_WAYS: [&str; 4] = ["private", "private-thp", "mshare-c", "mshare-b"];

/// Host memory of the database tier's fleets against K VMs, one line per way, at the
/// largest database and reader count that ran.
fn plot_dbtier(path: &Path, rows: &[Value]) -> Result<(), String> {
    let size = rows.iter().filter_map(|r| r["size_mib"].as_u64()).max().ok_or("no rows")?;
    let n = rows.iter().filter_map(|r| r["readers_per_vm"].as_u64()).max().ok_or("no rows")?;
    let line = |way: &str| -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| {
                r["way"] == way && r["size_mib"].as_u64() == Some(size) && r["readers_per_vm"].as_u64() == Some(n)
            })
            .filter_map(|r| Some((r["vms"].as_f64()?, r["fleet_pss_mib"].as_f64()?)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    };
    let lines = DB_WAYS.iter().enumerate().map(|(i, w)| (*w, line(w), COLORS[(i + 2) % COLORS.len()])).collect();
    let caption = format!("LMDB tier: host memory, K VMs x {n} readers, {size} MiB database");
    plot_against_vms(path, &caption, "fleet PSS (QEMU processes), MiB", lines)
}

/// PostgreSQL's ways, in the order its report lists them.
const PG_WAYS: [(&str, &str); 4] =
    [("mmap", "mmap (4 KiB)"), ("huge", "huge_pages=on"), ("mshare-c", "mshare C"), ("mshare-b", "mshare B")];

/// PostgreSQL: page tables per connected backend against N clients, one line per way.
fn plot_postgres(path: &Path, rows: &[Value]) -> Result<(), String> {
    let line = |way: &str| -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r["way"] == way)
            .filter_map(|r| Some((r["clients"].as_f64()?, r["pagetables_per_backend_kib"].as_f64()?)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    };
    let lines =
        PG_WAYS.iter().enumerate().map(|(i, (w, label))| (*label, line(w), COLORS[(i + 2) % COLORS.len()])).collect();
    plot_lines(
        path,
        "PostgreSQL: page tables per backend (pgbench -S)",
        ("clients (N)", false),
        "PageTables growth per backend, KiB",
        lines,
    )
}

/// Copies plot `name` from `dir` to the repository's docs/ as `bench-NAME`, where `shown_as`
/// shows it; a copy that fails is said, not fatal.
fn show_in_docs(dir: &Path, root: &Path, name: &str, shown_as: &str) {
    let shown = root.join("docs").join(format!("bench-{name}"));
    if let Err(e) = std::fs::copy(dir.join(name), &shown) {
        eprintln!("bench-report: copying {name} to {} ({shown_as}): {e}", shown.display());
    }
}

/// A figure as the tables print it: whole numbers without a fraction.
fn number(value: &Value) -> String {
    match value.as_f64() {
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => value.to_string(),
    }
}

fn headline(rows: &[Value]) -> Option<(String, Value)> {
    let size = rows.iter().filter_map(|r| r["size_bytes"].as_u64()).max()?;
    let n = rows.iter().filter(|r| r["size_bytes"].as_u64() == Some(size)).filter_map(|r| r["procs"].as_u64()).max()?;
    let cell = |way: &str, key: &str| {
        rows.iter()
            .find(|r| r["way"] == way && r["size_bytes"].as_u64() == Some(size) && r["procs"].as_u64() == Some(n))
            .map_or_else(|| "-".to_owned(), |r| number(&r[key]))
    };
    let mut table = format!(
        "Headline: {n} processes each mapping {} MiB and touching every page, one guest.\n\n\
         | way | PageTables growth, KiB | VmPTE growth per process, KiB | minor faults, all {n} | ms per process to map and touch |\n|---|---|---|---|---|\n",
        size >> 20
    );
    let mut json = Vec::new();
    for way in WAYS {
        table += &format!(
            "| {way} | {} | {} | {} | {} |\n",
            cell(way, "pagetables_kib"),
            cell(way, "vmpte_kib"),
            cell(way, "faults"),
            cell(way, "ms_per_proc")
        );
        json.push(json!({ "way": way, "pagetables_kib": cell(way, "pagetables_kib"), "faults": cell(way, "faults") }));
    }
    Some((table, json!({ "procs": n, "size_bytes": size, "ways": json })))
}

fn main() {
    let root = repo_root();
    let dir = root.join("target").join("bench");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    if let Ok(font) = std::fs::read(FONT) {
        // The font lives as long as the process: plotters wants it 'static.
        let _ = register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()));
    } else {
        eprintln!("bench-report: {FONT} missing (run make toolchain); plots will have no text");
    }
    let pagetables = read_json(&dir, "pagetables.json");
    let regions = read_json(&dir, "regions.json");
    let boot = read_json(&dir, "boot.json");
    let stage2 = read_json(&dir, "stage2.json");
    let dbtier = read_json(&dir, "dbtier.json");
    let dbtier_nested = read_json(&dir, "dbtier-nested.json");
    let postgres = read_json(&dir, "postgres.json");
    let postgres_nested = read_json(&dir, "postgres-nested.json");
    let pt_rows: Vec<Value> = pagetables.as_ref().and_then(|p| p["rows"].as_array().cloned()).unwrap_or_default();
    let mut plots = Vec::new();
    if let Some(size) = pt_rows.iter().filter_map(|r| r["size_bytes"].as_u64()).max() {
        let mib = size >> 20;
        for (file, title, label, figure) in [
            (
                "pagetables.png",
                format!("Guest page-table memory, N processes x {mib} MiB"),
                "PageTables growth, KiB",
                "pagetables_kib",
            ),
            ("faults.png", format!("Minor faults, N processes x {mib} MiB"), "minor faults, all N", "faults"),
            ("connect.png", format!("Time to map and touch {mib} MiB (per process)"), "ms per process", "ms_per_proc"),
        ] {
            match plot_ways(&dir.join(file), &title, label, &pt_rows, size, figure) {
                Ok(()) => plots.push(file),
                Err(e) => eprintln!("bench-report: {file}: {e}"),
            }
        }
        if plots.contains(&"pagetables.png") {
            show_in_docs(&dir, &root, "pagetables.png", "the README's plot");
        }
    }
    if let Some(rows) = regions.as_ref().and_then(|r| r["rows"].as_array()) {
        match plot_regions(&dir.join("regions.png"), rows) {
            Ok(()) => plots.push("regions.png"),
            Err(e) => eprintln!("bench-report: regions.png: {e}"),
        }
    }

    if let Some(rows) = dbtier.as_ref().and_then(|r| r["rows"].as_array()) {
        match plot_dbtier(&dir.join("dbtier.png"), rows) {
            Ok(()) => {
                plots.push("dbtier.png");
                show_in_docs(&dir, &root, "dbtier.png", "the README's plot");
            }
            Err(e) => eprintln!("bench-report: dbtier.png: {e}"),
        }
    }

    if let Some(rows) = postgres.as_ref().and_then(|r| r["rows"].as_array()) {
        match plot_postgres(&dir.join("postgres.png"), rows) {
            Ok(()) => {
                plots.push("postgres.png");
                show_in_docs(&dir, &root, "postgres.png", "docs/preload.md's plot");
            }
            Err(e) => eprintln!("bench-report: postgres.png: {e}"),
        }
    }

    let head = headline(&pt_rows);
    let section = |name: &str, what: &str| {
        read_text(&dir, name).map_or_else(
            || format!("## {what}\n\nNot run (its report, {name}, is missing).\n"),
            |t| t.replace("\n# ", "\n## ").replacen("# ", "## ", 1),
        )
    };
    let mut report = String::from(
        "# mshare-vmm benchmark report\n\n\
         Written by `make bench`. Every figure has its machine, mode and sizes beside it in its section. Where this machine \
         distorts: its KVM (kvm_pvm) emulates guest kernel code, so guest user space runs under QEMU TCG here and every time \
         (boot, map-and-touch, wall) is emulation-bound, 10-100x a real host's; page-table bytes, fault counts, host memory \
         and KVM counters are counts that do not depend on it.\n\n",
    );
    if let Some((table, _)) = &head {
        report += table;
        report += "\n";
    }
    for plot in &plots {
        report += &format!("![{plot}]({plot})\n\n");
    }
    let sga = pagetables.as_ref().map(|p| &p["sga_anchor"]);
    let gib = |key: &str| {
        sga.and_then(|a| a[key].as_f64()).map_or_else(
            || "not measured".to_owned(),
            |g| if g >= 1.0 { format!("{g:.1} GiB") } else { format!("{:.1} MiB", g * 1024.0) },
        )
    };
    report += &format!(
        "## Anchors\n\n\
         - The upstream series' motivation: 1,500 processes over a 300 GiB SGA pay about 880 GiB of PTEs. Scaled from \
         this run's exact per-GiB figures ({}; VmPTE per process, shared tables once, see the page-table section): memfd \
         {}, mshare B with PTE tables {}, with PMD tables {}.\n",
        sga.and_then(|a| a["from"].as_str()).unwrap_or("page-table bench not run"),
        gib("memfd_gib"),
        gib("mshare_b_gib"),
        gib("mshare_b_pmd_gib"),
    );
    report +=
        "- The only published mshare benchmark (PostgreSQL, 16,000 clients): 50-70 s to connect with fork-shared \
               memory against 6 s with msharefs, and 1.35-1.45x throughput. The same database, unmodified, four ways, is \
               the PostgreSQL section (its table beside ours); the time per process to map and touch a region \
               (connect.png) and the database tier's connect storm are the other figures near it.\n\n";
    report += &section("pagetables.md", "Page tables");
    report += "\n";
    report += &section("dbtier.md", "Database tier");
    report += "\n";
    report += &section("postgres.md", "PostgreSQL");
    report += "\n";
    report += &section("postgres-nested.md", "PostgreSQL under mshare-vmm (nested KVM host)");
    report += "\n";
    report += &section("dbtier-nested.md", "Database tier under mshare-vmm (nested KVM host)");
    report += "\n";
    report += &section("regions.md", "Shared regions across VMs");
    report += "\n";
    report += &section("stage2.md", "Stage-2 tables shared between VMs (nested KVM host)");
    report += "\n";
    report += &section("boot.md", "Boot");
    std::fs::write(dir.join("report.md"), &report).unwrap_or_else(|e| panic!("report.md: {e}"));
    let json = json!({
        "headline": head.map(|h| h.1),
        "pagetables": pagetables,
        "dbtier": dbtier,
        "dbtier_nested": dbtier_nested,
        "postgres": postgres,
        "postgres_nested": postgres_nested,
        "regions": regions,
        "stage2": stage2,
        "boot": boot,
        "plots": plots,
    });
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&json).unwrap_or_default() + "\n")
        .unwrap_or_else(|e| panic!("report.json: {e}"));
    println!("bench-report: wrote {} (and report.json, {})", dir.join("report.md").display(), plots.join(", "));
}
