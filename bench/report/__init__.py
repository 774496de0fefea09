"""The report: reads results/ (every run, every host) and conf/ data, writes reports/.

Never runs a model. Same inputs give byte-identical outputs: rows are sorted by explicit
keys, nothing depends on the clock or on file-system order, and the figures are rendered
deterministically (see plots.py). Delete reports/, rerun, and the same bytes come back.

One module per job: data (rows, tasks and their families), confdata (conf/), symbols
(✅/⚠️/❌/❓), compat (table 1, a heading per family), context (table 2), claims (table 3),
roofline (table 4), plots (figures), regressions (history, table 6), efficiency (energy),
provenance (sources and "built from"), measurements (raw rows). The token pages (context,
roofline, serving, efficiency) take text-task rows only; image tasks have their own columns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from bench.core.schema import STATUSES
from bench.report import (
    claims,
    compat,
    context,
    efficiency,
    history,
    hostfit,
    measurements,
    planned,
    plots,
    regressions,
    roofline,
    serving,
)
from bench.report.confdata import ConfData, load_conf
from bench.report.data import Row, distinct, latest_rows, load_rows
from bench.report.fmt import bullet_list, document, section
from bench.report.provenance import Sources, built_from, sources_section
from bench.report.symbols import LEGEND as SYMBOL_LEGEND

FIGURES = "figures"


@dataclass(frozen=True)
class Report:
    files: list[Path]
    regressions: list[regressions.Regression]


def _page(title: str, intro: str, body: str, legend: str, rows: Sequence[Row],
          sources: Sources) -> str:
    """A table file: the table, its legend, what it was built from, and its sources."""
    return document(title, intro, body, f"**Legend.** {legend}",
                    section("Provenance", built_from(rows), level=3), sources_section(sources))


def _write(path: Path, text: str, written: list[Path]) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")
    written.append(path)


def _compat_page(rows: list[compat.CompatRow], latest: list[Row], conf: ConfData) -> str:
    src = Sources()
    body = compat.table(rows, latest, conf, src)
    notes = compat.reference_notes(rows)
    body += f"\n{notes}" if notes else ""
    measured = {(str(r.get("model")), str(r.get("quant"))) for r in latest}
    ahead = planned.unmeasured(planned.planned_cells(conf), measured)
    if ahead:
        body += ("\n\n" + section("Planned, not measured yet: what the lower bound proves",
                                  planned.table(ahead, conf), planned.LEGEND, level=2))
    return _page("GPU compatibility (measured)",
                 "One row per model × quantization × workload; one column per GPU class in "
                 "conf/gpu/. Every symbol of the measured table comes from a measured peak or "
                 "a measured OOM; the planned cells below it, not measured yet, from a lower "
                 "bound that can only err low (❌ certain, ⚠️ at best, else ❓). Rows "
                 "are grouped as the published tables group models: LLM (text-generation), "
                 "multimodal (image-text-to-text) and diffusion (text-to-image, "
                 "image-to-video).",
                 body, compat.TABLE_LEGEND, src.rows, src)


def _host_page(latest: list[Row], conf: ConfData) -> str:
    src = Sources()
    body = hostfit.table(latest, conf, src)
    return _page("Host RAM compatibility (measured)",
                 "Will it fit in my RAM? Every row's measured peak host RAM against the "
                 "host-memory classes in conf/host/ (CPU rows: the whole model in RAM).",
                 body, hostfit.legend(conf), src.rows, src)


def _context_page(latest: list[Row], conf: ConfData) -> str:
    src = Sources()
    body = context.table(context.build(latest, conf), conf, src)
    return _page("Max context per GPU class",
                 "Longest context (prompt + generated tokens per sequence) each class holds, "
                 "from the measured growth of peak memory with context.",
                 body, context.LEGEND, src.rows, src)


def _claims_page(rows: list[compat.CompatRow], conf: ConfData) -> str:
    claim_dir = conf.conf_dir / "claims"
    all_claims = claims.load_claims(claim_dir / "published-claims.csv")
    mapping = claims.load_mapping(claim_dir / "mapping.yaml")
    src = Sources()
    parts = claims.sections(all_claims, rows, mapping, conf, src) or [
        "_(no published claims in conf/claims/published-claims.csv)_"]
    return document("Published claims vs measured",
                    "The hand-written tables users read today, row by row, beside bench's "
                    "measurement of the same model and precision.",
                    f"**Legend.** {claims.LEGEND}", *parts,
                    section("Provenance", built_from(src.rows), level=3),
                    sources_section(src))


def _roofline_page(latest: list[Row], conf: ConfData) -> str:
    src = Sources()
    body = roofline.table(roofline.build(latest, conf), src)
    return _page("Decode speed vs the memory-bandwidth limit",
                 "How close each GPU row's decode speed comes to the bound set by reading "
                 "the weights and KV cache once per step.", body, roofline.LEGEND, src.rows, src)


def _measurements_page(latest: list[Row]) -> str:
    src = Sources()
    body = measurements.table(latest, src)
    return _page("All measurements (newest row of each cell per host)", "", body,
                 measurements.LEGEND, src.rows, src)


def _serving_page(latest: list[Row], serving_plots: list[plots.Plot]) -> str:
    src = Sources()
    body = serving.table(latest, src)
    figs = "\n\n".join(f"![{p.caption}]({FIGURES}/{p.path.name})" for p in serving_plots)
    return _page("Serving: throughput vs latency", "What clients of each engine saw, alone "
                 "and several at once (servers: engine=openai, workload.concurrency).",
                 body + ("\n\n" + figs if figs else ""), serving.LEGEND, src.rows, src)


def _efficiency_page(latest: list[Row], figure: Optional[plots.Plot],
                     note: Optional[str]) -> str:
    src = Sources()
    body = efficiency.table(latest, src)
    body += (f"\n\n![{figure.caption}]({FIGURES}/{figure.path.name})" if figure
             else f"\n\n_{note}_")
    return _page("Energy efficiency", "Joules per generated token and tokens per joule "
                 "beside decode speed, from hardware energy counters.", body,
                 efficiency.LEGEND, src.rows, src)


def _history_page(rows: list[Row], history_plots: list[plots.Plot]) -> str:
    src = Sources()
    names = {p.path.name for p in history_plots}
    body = history.history_table(rows, src, FIGURES, names)
    used = [r for h in history.multi_run(rows) for r in h]
    return _page("History (successive runs of each cell per host)",
                 "Each cell's runs on one host, oldest to newest; the plots show decode tok/s "
                 "and peak memory over started_at.", body, history.LEGEND, used, src)


def _regressions_page(found: regressions.Findings) -> str:
    src = Sources()
    body = history.regression_table(found.regressions, src)
    changed = section("Environment changes (not compared across)",
                      history.environment_table(found.environment_changes, src))
    gaps = section("Cells without a verdict",
                   history.no_verdict_table(found.no_verdict, src))
    noise = section("Run-to-run noise (what the speed test can see)",
                    history.noise_table(found.noise))
    used = [*(r.row for r in found.regressions),
            *(r for c in found.environment_changes for r in (c.row, c.previous)),
            *(g.row for g in found.no_verdict)]
    return _page("Regressions (newest run vs its history)", "",
                 "\n\n".join((body, changed, gaps, noise)), history.LEGEND, used, src)


def _figures_page(figs: list[plots.Plot], notes: list[str], rows: list[Row]) -> str:
    parts = [f"### {p.caption}\n\n![{p.caption}]({FIGURES}/{p.path.name})" for p in figs]
    if notes:
        parts.append(section("Skipped plots", bullet_list(notes), level=3))
    return document("Figures", *(parts or ["_(nothing measured to plot yet)_"]),
                    section("Provenance", built_from(rows), level=3))


def _index(latest: list[Row], rows: list[Row], regs: list[regressions.Regression],
           figs: list[plots.Plot], history_plots: list[plots.Plot],
           compat_rows: list[compat.CompatRow], conf: ConfData) -> str:
    """reports/README.md: what was measured, and a link to every table and plot."""
    if not rows:
        summary = "No results yet: run `python -m bench` first."
    else:
        counts = {s: sum(1 for r in latest if r.get("status") == s) for s in
                  STATUSES}
        summary = (f"{len(rows)} result rows from {len(distinct(rows, 'run_id'))} runs on "
                   f"{len(distinct(rows, 'host'))} hosts; newest row per cell and host: "
                   + ", ".join(f"{n} {s}" for s, n in counts.items()) + ". "
                   + f"Regressions: {len(regs)}.")
    tables = bullet_list([
        "[GPU compatibility](compatibility.md) — ✅/⚠️/❌/❓ per GPU class from measured peaks, "
        "per family (LLM, multimodal, diffusion), with speed, accuracy or image quality and "
        "the row each figure came from",
        "[Host RAM compatibility](host.md) — ✅/⚠️/❌/❓ per host-memory class from the "
        "measured peak host RAM (will it fit in my RAM?)",
        "[Max context per GPU class](context.md) — measured bytes per token vs analytic KV "
        "cache, longest context per class",
        "[Published claims vs measured](claims.md) — the seeds' tables beside bench's numbers",
        "[Decode speed vs bandwidth roofline](roofline.md)",
        "[Serving: throughput vs latency](serving.md) — clients at once, per engine and server",
        "[Energy efficiency](efficiency.md) — tokens per joule beside decode speed",
        f"[Regressions](regressions.md) — {len(regs)} found",
        "[History](history.md) — successive runs of each cell",
        "[All measurements](measurements.md) — every newest row, failures included",
        "[Figures](figures.md)",
    ])
    plot_links = bullet_list([f"[{p.caption}]({FIGURES}/{p.path.name})"
                              for p in [*figs, *history_plots]]) or "_(no plots yet)_"
    glance = section("At a glance", compat.summary_table(compat_rows, conf),
                     f"**Legend.** {SYMBOL_LEGEND} Sources, speed and accuracy for every row: "
                     f"[compatibility.md](compatibility.md).") if compat_rows else ""
    return document("bench report", summary, glance, section("Tables", tables),
                    section("Plots", plot_links), section("Provenance", built_from(rows)))


def _remove_stale(directory: Path, keep: set[Path]) -> None:
    """Old figures of cells that are gone would otherwise linger in reports/figures/."""
    if directory.is_dir():
        for path in sorted(directory.glob("*.png")):
            if path not in keep:
                path.unlink()


def build_report(results_dir: str | os.PathLike, reports_dir: str | os.PathLike,
                 conf_dir: Optional[str | os.PathLike] = None) -> Report:
    """Write every table and figure; returns the files and the regressions found."""
    conf = load_conf(conf_dir)
    rows = load_rows(results_dir)
    latest = latest_rows(rows)
    out = Path(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / FIGURES
    compat_rows = compat.build(latest, conf)
    found = regressions.find_all(rows)
    regs = found.regressions
    acc_plots, notes = plots.accuracy_plots(compat_rows, fig_dir)
    speed = plots.speed_plot(compat_rows, fig_dir)
    figs = [*plots.quality_plots(compat_rows, fig_dir), *acc_plots, *([speed] if speed else []),
            *plots.memory_by_resolution(latest, fig_dir),
            *plots.image_quality_plots(compat_rows, fig_dir)]
    history_plots = plots.history_plots(rows, fig_dir)
    serving_plots = serving.plots_of(latest, fig_dir)
    energy_plot, energy_note = efficiency.plot(latest, fig_dir)
    if not any(r.acc is not None and r.acc.get("mmlu_acc") is not None for r in compat_rows):
        notes.insert(0, "accuracy vs memory: no row has mmlu_acc, so no accuracy plot")
    written: list[Path] = []
    pages = {
        "compatibility.md": _compat_page(compat_rows, latest, conf),
        "host.md": _host_page(latest, conf),
        "context.md": _context_page(latest, conf),
        "claims.md": _claims_page(compat_rows, conf),
        "roofline.md": _roofline_page(latest, conf),
        "serving.md": _serving_page(latest, serving_plots),
        "efficiency.md": _efficiency_page(latest, energy_plot, energy_note),
        "regressions.md": _regressions_page(found),
        "history.md": _history_page(rows, history_plots),
        "measurements.md": _measurements_page(latest),
        "figures.md": _figures_page(figs, notes, latest),
        "README.md": _index(latest, rows, regs, figs, history_plots, compat_rows, conf),
    }
    for name, text in pages.items():
        _write(out / name, text, written)
    pngs = [p.path for p in [*figs, *history_plots, *serving_plots,
                             *([energy_plot] if energy_plot else [])]]
    _remove_stale(fig_dir, set(pngs))
    return Report(sorted(written + pngs), regs)


def generate(results_dir: str | os.PathLike, reports_dir: str | os.PathLike,
             conf_dir: Optional[str | os.PathLike] = None) -> list[Path]:
    """Regenerate reports/ from the Parquet rows (the sweep app calls this after a sweep)."""
    return build_report(results_dir, reports_dir, conf_dir).files
