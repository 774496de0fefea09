"""Figures (PNG): accuracy vs peak memory, decode speed per scheme, nightly history per cell,
and for diffusion, memory by resolution and image quality vs memory.

Byte-stable by construction: the Agg canvas directly (no pyplot state, no GUI backend, and
the host application's backend is left alone), matplotlib's default style restored inside
an rc_context (a user's matplotlibrc cannot leak in), a fixed dpi, a fixed svg hash salt,
and no "Software" entry in the PNG metadata.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import matplotlib
import matplotlib.dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.report.compat import CompatRow
from bench.report.data import (
    Row,
    context_tokens,
    is_gpu,
    is_text,
    measured_through_speed,
    memory_saving,
    newest_first,
    offload_mode,
    pixels,
    scheme_label,
    task_of,
    types_label,
    workload_label,
)
from bench.report.history import multi_run, plot_name
from bench.report.regressions import cell_label, memory_metric
from bench.tasks import tasks

DPI = 100
GIB = 2**30
_RC = {"svg.hashsalt": "bench-report", "path.simplify": False, "font.size": 9}


@contextmanager
def style() -> Iterator[None]:
    """Matplotlib's defaults plus ours, whatever the process had set; restored afterwards."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_RC)
        yield


@dataclass(frozen=True)
class Plot:
    path: Path
    caption: str


def save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def short_device(row: Row) -> str:
    """The device name without vendor prefixes, for axis labels."""
    name = str(row.get("device_name") or ("GPU" if is_gpu(row) else "CPU"))
    for prefix in ("NVIDIA GeForce ", "NVIDIA ", "cpu: "):
        name = name.removeprefix(prefix)
    return ("CPU " if not is_gpu(row) else "") + name + (" (emulated)" if row.get("emulated")
                                                         else "")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both less memory and higher accuracy (by memory)."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _first_per_scheme(rows: Sequence[CompatRow], metric: str,
                      label: Callable[[Row], str] = scheme_label) -> dict[str, CompatRow]:
    """Per scheme (`label`), the row with `metric` at the smallest batch and context (or
    resolution)."""
    best: dict[str, CompatRow] = {}
    for r in sorted(rows, key=lambda r: (r.rep.get("batch_size") or 0,
                                         context_tokens(r.rep) or 0, pixels(r.rep))):
        if r.acc is not None and r.acc.get(metric) is not None:
            best.setdefault(label(r.rep), r)
    return best


def _accuracy_points(rows: Sequence[CompatRow]) -> tuple[list[tuple[str, float, float,
                                                                    Optional[float]]], str]:
    """(quant, memory bytes, acc, stderr) per quant, and which memory figure is on the axis."""
    best = _first_per_scheme(rows, "mmlu_acc")
    use_peak = bool(best) and all(r.evidence.peak is not None for r in best.values())
    axis = "measured peak device memory (GiB)" if use_peak else (
        "weights memory (GiB; no device peak for every quant)")
    points = []
    for quant, r in sorted(best.items()):
        memory = r.evidence.peak if use_peak else r.rep.get("weights_bytes")
        if memory is not None and r.acc is not None:
            points.append((quant, float(memory), float(r.acc["mmlu_acc"]),
                           r.acc.get("mmlu_stderr")))
    return points, axis


def _by_model(rows: Sequence[CompatRow]) -> dict[tuple[str, str], list[CompatRow]]:
    """Text models' rows by model and weights (MMLU and KL are about generated tokens)."""
    out: dict[tuple[str, str], list[CompatRow]] = defaultdict(list)
    for r in rows:
        if is_text(r.rep):
            out[(str(r.rep.get("model")), str(r.rep.get("weights")))].append(r)
    return dict(sorted(out.items()))


def _has_quality(group: Sequence[CompatRow]) -> bool:
    return any(r.acc is not None and r.acc.get("kld_mean") is not None for r in group)


def lowest_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both less memory and lower loss (by memory)."""
    return [(x, -y) for x, y in pareto_front([(x, -y) for x, y in points])]


def _quality_points(rows: Sequence[CompatRow], metric: str = "kld_mean",
                    label: Callable[[Row], str] = scheme_label,
                    ) -> tuple[list[tuple[str, float, float]], str]:
    """(scheme, memory bytes, metric) per scheme: the device peak when every scheme has
    one, else the peak host RAM (CPU rows)."""
    best = _first_per_scheme(rows, metric, label)
    use_device = bool(best) and all(r.evidence.peak is not None for r in best.values())
    axis = ("measured peak device memory (GiB)" if use_device
            else "measured peak host RAM (GiB)")
    points = []
    for scheme, r in sorted(best.items()):
        memory = r.evidence.peak if use_device else r.rep.get("peak_host_rss_bytes")
        if memory is not None and r.acc is not None:
            types = types_label(r.rep)
            points.append((scheme + (f"\n{types}" if types else ""), float(memory),
                           float(r.acc[metric])))
    return points, axis


def _memory_scatter(points: Sequence[tuple[str, float, float]],
                    front: Sequence[tuple[float, float]], axis: str) -> tuple[Any, Any]:
    """A labelled point per scheme against measured memory (GiB), and the Pareto front of
    those no other beats on both; the caller labels the y axis and the title."""
    fig = figure(6.5, 4.5)
    ax = fig.add_subplot()
    for scheme, x, y in points:
        ax.plot([x / GIB], [y], "o")
        ax.annotate(scheme, (x / GIB, y), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.step([x / GIB for x, _ in front], [y for _, y in front], where="post",
            color="black", linewidth=1, label="Pareto front")
    ax.set_xlabel(axis)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15)  # room for the labels of the outermost points
    ax.legend(loc="best")  # where it hides no point
    return fig, ax


def quality_plots(rows: Sequence[CompatRow], out_dir: Path) -> list[Plot]:
    """One quality-vs-memory plot per model with KL measured: KL divergence from the
    reference against the measured peak, every engine's schemes on one axis, and the
    Pareto front of the schemes no other beats on both."""
    plots = []
    for (model, weights), group in _by_model(rows).items():
        points, axis = _quality_points(group)
        if not points:
            continue
        with style():
            fig, ax = _memory_scatter(points, lowest_front([(x, y) for _, x, y in points]),
                                      axis)
            ax.set_yscale("symlog", linthresh=1e-3)  # the reference sits at exactly 0
            ax.set_ylabel("mean KL divergence from the reference (nats/token)")
            ax.set_title(f"{model} ({weights}): quality vs memory per scheme and engine")
            path = save(fig, out_dir / f"quality-{safe_name(model)}-{safe_name(weights)}.png")
        plots.append(Plot(path, f"{model} ({weights}): KL divergence vs {axis}, Pareto front "
                                f"of schemes and engines"))
    return plots


def accuracy_plots(rows: Sequence[CompatRow], out_dir: Path) -> tuple[list[Plot], list[str]]:
    """One accuracy-vs-memory plot per model without KL measured (those get a quality plot);
    notes for models without either."""
    plots, notes = [], []
    for (model, weights), group in _by_model(rows).items():
        if _has_quality(group):
            continue
        points, axis = _accuracy_points(group)
        if not points:
            notes.append(f"{model} ({weights}): no MMLU or KL measured, no accuracy plot")
            continue
        with style():
            fig = figure(6, 4)
            ax = fig.add_subplot()
            for quant, x, y, err in points:
                ax.errorbar(x / GIB, y, yerr=err, fmt="o", capsize=3, label=quant)
                ax.annotate(quant, (x / GIB, y), textcoords="offset points", xytext=(4, 4))
            front = pareto_front([(x, y) for _, x, y, _ in points])
            ax.step([x / GIB for x, _ in front], [y for _, y in front], where="post",
                    color="black", linewidth=1, label="Pareto front")
            ax.set_xlabel(axis)
            ax.set_ylabel("MMLU accuracy")
            ax.set_title(f"{model} ({weights}): accuracy vs memory per quantization")
            ax.grid(True, alpha=0.3)
            path = save(fig, out_dir / f"accuracy-{safe_name(model)}-{safe_name(weights)}.png")
        plots.append(Plot(path, f"{model} ({weights}): MMLU vs {axis}, Pareto front of "
                                f"quantizations"))
    return plots, notes


def speed_plot(rows: Sequence[CompatRow], out_dir: Path) -> Optional[Plot]:
    """Decode tok/s of every measured row, grouped by model, one bar per scheme/workload."""
    bars = [(f"{r.rep.get('model')} · {scheme_label(r.rep)} · {workload_label(r.rep)} · "
             f"{short_device(r.rep)}", float(r.rep["decode_tok_s"]),
             r.rep.get("decode_tok_s_stdev"))
            for r in rows if r.rep.get("status") == "ok" and r.rep.get("decode_tok_s") is not None]
    if not bars:
        return None
    with style():
        fig = figure(8, 1.5 + 0.3 * len(bars))
        ax = fig.add_subplot()
        ys = list(range(len(bars)))[::-1]
        ax.barh(ys, [b[1] for b in bars], xerr=[b[2] or 0 for b in bars], capsize=2,
                color="tab:blue")
        ax.set_yticks(ys, [b[0] for b in bars])
        ax.set_xlabel("decode tok/s (median ± stdev; on the device each row ran on)")
        ax.set_title("Decode speed per quantization scheme")
        ax.grid(True, axis="x", alpha=0.3)
        path = save(fig, out_dir / "decode-speed.png")
    return Plot(path, "Decode tok/s per model × quantization × workload")


def _pipeline_modes(row: Row) -> str:
    """' · vae_tiling · offload=model' for a diffusion row run with memory-saving modes."""
    modes = [*memory_saving(row)]
    if offload_mode(row) not in ("none", "on"):
        modes.append(f"offload={offload_mode(row)}")
    elif offload_mode(row) == "on":
        modes.append("offload")
    return "".join(f" · {m}" for m in modes)


def _image_scheme(row: Row) -> str:
    """What one line or point of a diffusion plot stands for: model, scheme, modes."""
    return f"{row.get('model')} · {scheme_label(row)}{_pipeline_modes(row)}"


def memory_by_resolution(latest: Sequence[Row], out_dir: Path) -> list[Plot]:
    """Diffusion: measured peak memory against pixels per image, a line per model × scheme
    (× memory-saving modes, batch, frames and device); GPU rows' device peak and CPU rows'
    host RAM on plots of their own, since they are different memories."""
    lines: dict[tuple[str, str], dict[int, Row]] = defaultdict(dict)
    for row in newest_first(latest):
        if (not is_text(row) and measured_through_speed(row) and pixels(row)
                and memory_metric(row)[0] is not None):
            frames = f" · {row['video_frames']} frames" if row.get("video_frames") else ""
            line = (f"{_image_scheme(row)} · b{row.get('batch_size')}{frames} · "
                    f"{short_device(row)}")
            lines[("device" if is_gpu(row) else "host", line)].setdefault(pixels(row), row)
    plots = []
    for kind, axis in (("device", "measured peak device memory (GiB; GPU rows)"),
                       ("host", "measured peak host RAM (GiB; CPU rows)")):
        mine = sorted((line, pts) for (k, line), pts in lines.items() if k == kind)
        if not mine:
            continue
        with style():
            fig = figure(7.5, 4.8)
            ax = fig.add_subplot()
            for line, pts in mine:
                ordered = [pts[n] for n in sorted(pts)]
                xs = [pixels(r) / 1e6 for r in ordered]
                ys = [(memory_metric(r)[0] or 0) / GIB for r in ordered]
                ax.plot(xs, ys, marker="o", label=line)
                for x, y, r in zip(xs, ys, ordered, strict=True):
                    ax.annotate(f"{r['image_height']}×{r['image_width']}", (x, y),
                                textcoords="offset points", xytext=(3, 3), fontsize=7)
            ax.set_xlabel("megapixels per image (height × width ÷ 10^6)")
            ax.set_ylabel(axis)
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.margins(x=0.15)
            ax.legend(fontsize=7, loc="best")
            ax.set_title("Diffusion: peak memory by resolution, per model and scheme")
            path = save(fig, out_dir / f"diffusion-memory-{kind}.png")
        plots.append(Plot(path, f"Diffusion: {axis.split(' (')[0]} by resolution, per model "
                                f"and scheme"))
    return plots


def image_quality_plots(rows: Sequence[CompatRow], out_dir: Path) -> list[Plot]:
    """Per image task with PSNR measured: PSNR against the reference vs measured peak memory,
    a point per model × scheme (× memory-saving modes), and their Pareto front."""
    plots = []
    for task in (name for name, t in tasks().items() if not t.generates_tokens):
        points, axis = _quality_points([r for r in rows if task_of(r.rep) == task], "psnr_db",
                                       _image_scheme)
        if not points:
            continue
        with style():
            fig, ax = _memory_scatter(points, pareto_front([(x, y) for _, x, y in points]),
                                      axis)
            ax.set_ylabel("PSNR against the reference (dB; identical = 100)")
            ax.set_title(f"{task}: image quality vs memory per scheme")
            path = save(fig, out_dir / f"image-quality-{task}.png")
        plots.append(Plot(path, f"{task}: PSNR vs {axis}, Pareto front of schemes"))
    return plots


def _xs(hist: Sequence[Row]) -> tuple[list[object], bool]:
    if all(r.get("started_at") is not None for r in hist):
        return [r["started_at"].replace(tzinfo=None) for r in hist], True
    return list(range(1, len(hist) + 1)), False


def history_plots(rows: Sequence[Row], out_dir: Path) -> list[Plot]:
    """Per cell with two or more runs: decode tok/s (image tasks: seconds per image) and peak
    memory over started_at."""
    plots = []
    for hist in multi_run(rows):
        new = hist[-1]
        xs, dated = _xs(hist)
        column, speed_label = (("decode_tok_s", "decode tok/s") if is_text(new)
                               else ("image_s", "seconds per image (video: per frame)"))
        speed = [(x, r[column]) for x, r in zip(xs, hist, strict=True)
                 if r.get("status") == "ok" and r.get(column) is not None]
        mem = [(x, v / GIB) for x, r in zip(xs, hist, strict=True)
               if r.get("status") == "ok" and (v := memory_metric(r)[0]) is not None]
        failed = [x for x, r in zip(xs, hist, strict=True) if r.get("status") != "ok"]
        with style():
            fig = figure(7, 5)
            ax1, ax2 = fig.subplots(2, 1, sharex=True)
            mem_label = f"{memory_metric(new)[1] or 'peak memory'} (GiB)"
            for ax, series, label in ((ax1, speed, speed_label), (ax2, mem, mem_label)):
                if series:
                    ax.plot([p[0] for p in series], [p[1] for p in series], marker="o")
                for x in failed:
                    ax.axvline(x, color="tab:red", linestyle="--", linewidth=1)
                ax.set_ylim(bottom=0)  # a flat line must look flat, not like a cliff
                ax.set_ylabel(label)
                ax.grid(True, alpha=0.3)
            ax2.ticklabel_format(axis="y", useOffset=False, style="plain")
            if dated:
                locator = mdates.AutoDateLocator()
                ax2.xaxis.set_major_locator(locator)
                ax2.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
            ax2.set_xlabel("started_at (UTC)" if dated else "run")
            ax1.set_title(f"{cell_label(new)} on {new.get('host')}\n(red dashes: failed runs)")
            path = save(fig, out_dir / plot_name(new))
        plots.append(Plot(path, f"History of {cell_label(new)} on {new.get('host')}"))
    return plots
