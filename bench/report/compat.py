"""Table 1, GPU compatibility: one row per model × quant × workload, symbols from measurements.

A row gathers the newest row of every cell (per host) with that model, weights, quant and
workload: the same workload may have been measured with gpu=local on one machine and
under several class caps on another. The representative row (GPU-measured first) gives
the peak, speed and device; every other row still counts as evidence (an OOM under a
cap is a ❌) and is listed as a source, so nothing is silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from bench.report.confdata import ConfData, GpuClass
from bench.report.data import (
    BUSY_CORES,
    FAMILIES,
    Family,
    Row,
    busy_note,
    device_peak,
    engine_of,
    fallback_mark,
    family_of,
    is_gpu,
    is_offload,
    map_column,
    measured_through_speed,
    memory_saving,
    model_key,
    newest_first,
    offload_mode,
    one_line,
    task_of,
    workload_key,
    workload_label,
)
from bench.report.fmt import MISSING, md_table, num, seconds, section, signed, size
from bench.report.provenance import Sources, device_text
from bench.report.symbols import LEGEND, Evidence, evidence, verdict
from bench.report.uncertainty import interval_text, paired

_EVAL_RANK = {"full": 0, "offline-all": 1, "quick": 2, "offline": 3, "offline-small": 4}


@dataclass(frozen=True)
class CompatRow:
    """One model × quant × workload with the evidence and symbols derived from its rows."""

    group: tuple[Row, ...]  # newest row of each cell/host, representative first
    rep: Row
    evidence: Evidence
    symbols: dict[str, str]  # gpu class -> symbol text
    acc: Optional[Row]  # the row whose accuracy is shown

    @property
    def peak_row(self) -> Optional[Row]:
        return self.evidence.peak_row

    @property
    def family(self) -> Family:
        return family_of(task_of(self.rep))


def _rep_rank(row: Row) -> int:
    """Which row speaks for the group: a GPU-measured peak first, failures and skips last
    (a row that stopped after its memory and speed counts as measured)."""
    status, gpu = row.get("status"), is_gpu(row)
    if measured_through_speed(row):
        status = "ok"
    if status == "ok" and gpu:
        has_peak = device_peak(row)[0] is not None
        return (0 if not is_offload(row) else 1) if has_peak else 2
    if status == "oom" and gpu:
        return 3
    if status == "ok":
        return 4
    return 6 if status == "skipped" else 5


def representative(group: Sequence[Row]) -> Row:
    """Best-ranked row; among equals an uncapped device before an emulated one, then newest."""
    ranked = newest_first(group)
    return sorted(ranked, key=lambda r: (_rep_rank(r), bool(r.get("emulated"))))[0]


def _has_accuracy(row: Row) -> bool:
    return row.get("status") == "ok" and (bool(map_column(row, "accuracy")) or any(
        row.get(c) is not None for c in ("mmlu_acc", "mmlu_cloze_acc", "humaneval_pass1",
                                         "kld_mean", "psnr_db")))


def accuracy_row(group: Sequence[Row]) -> Optional[Row]:
    """The row whose accuracy is shown: the fullest eval set, then the newest."""
    scored = newest_first(r for r in group if _has_accuracy(r))
    ranked = sorted(scored, key=lambda r: _EVAL_RANK.get(str(r.get("eval_set")), 5))
    return ranked[0] if ranked else None


def group_rows(latest: Sequence[Row]) -> list[list[Row]]:
    """Rows of one model × weights × engine × scheme × workload (× diffusion memory-saving
    modes other than offload, which measure another pipeline); offload rows join the rest as
    evidence of the same one."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in latest:
        key = (row.get("model"), row.get("weights"), engine_of(row), row.get("quant"),
               *workload_key(row), memory_saving(row))
        groups.setdefault(key, []).append(row)
    return sorted(groups.values(), key=lambda g: model_key(g[0]))


def build(latest: Sequence[Row], conf: ConfData) -> list[CompatRow]:
    """The compatibility rows, in table order."""
    out = []
    for group in group_rows(latest):
        ev = evidence(group, conf)
        rep = ev.peak_row or representative(group)  # the peak shown is the rep's own
        others = [r for r in sorted(newest_first(group), key=_rep_rank) if r is not rep]
        symbols = {g.name: verdict(ev, g) for g in conf.gpu_classes}
        out.append(CompatRow((rep, *others), rep, ev, symbols, accuracy_row(group)))
    return out


def class_header(gpu: GpuClass) -> str:
    return f"{gpu.name} ({gpu.vram_mib / 1024:.1f} GiB)"


def _status(row: CompatRow) -> str:
    parts = []
    for r in row.group:
        text = str(r.get("status"))
        if r.get("status") != "ok":
            where = "" if r is row.rep else f" @ {r.get('gpu_class')}"
            reason = f": {one_line(r['error'], 70)}" if r.get("error") else ""
            text = f"{text}{where}{reason}"
        elif r is not row.rep and row.rep.get("status") == "ok":
            continue  # agreeing rows are in Source; only disagreement is news here
        else:
            text += "" if r is row.rep else f" @ {r.get('gpu_class')}"
        parts.append(text + "".join(f" · {BELOW_BOUND} ({what})" for what in below_bound(r)))
    return "; ".join(parts)


BELOW_BOUND = "❗ below its lower bound"


def below_bound(row: Row) -> list[str]:
    """What a row measured below the lower bound its own architecture implies: a bug in the
    measurement or in the bound, shown on the row (never dropped)."""
    out = []
    weights, floor = row.get("weights_bytes"), row.get("predicted_weights_bytes")
    if weights is not None and floor is not None and weights < floor:
        out.append(f"weights {size(weights)}, bound {size(floor)}")
    peak, peak_floor = device_peak(row)[0], row.get("predicted_peak_bytes")
    if (peak is not None and peak_floor is not None and is_gpu(row) and not is_offload(row)
            and peak < peak_floor):
        out.append(f"device peak {size(peak)}, bound {size(peak_floor)}")
    return out


def _peak_text(row: CompatRow) -> str:
    ev = row.evidence
    if ev.peak is not None:
        text = size(ev.peak) + (" †" if ev.peak_source == "reserved" else "")
        if ev.peak_source == "need" and ev.peak_row is not None:
            text += f" (needs; reserved {size(ev.peak_row.get('peak_device_bytes'))})"
        return text
    if ev.offload_peak is not None:
        return f"{size(ev.offload_peak)} (offload)"
    if ev.oom_caps:
        return f"oom at {size(max(ev.oom_caps))}"
    if any(is_gpu(r) and r.get("status") == "ok" for r in row.group):
        return f"{MISSING} (not recorded)"
    if any(is_gpu(r) for r in row.group):
        return f"{MISSING} (not measured)"
    return f"{MISSING} (CPU only)" if any(r.get("device") for r in row.group) else MISSING


def _with_busy(text: str, rep: Row) -> str:
    note = busy_note(rep)
    return text if note is None else f"{text} ({note})"


def _speed(rep: Row) -> tuple[str, str]:
    measured = measured_through_speed(rep)
    if not measured or rep.get("decode_tok_s") is None:
        return MISSING, num(rep.get("ttft_ms")) if measured else MISSING
    tok = num(rep["decode_tok_s"])
    if rep.get("decode_tok_s_stdev") is not None:
        tok += f" ± {rep['decode_tok_s_stdev']:.1f}"
    return _with_busy(tok, rep), num(rep.get("ttft_ms"))


def image_unit(row: Row) -> str:
    """What image_s counts: a frame of a video, else an image."""
    return "frame" if row.get("video_frames") else "image"


def image_speed(rep: Row) -> tuple[str, str]:
    """(seconds per image or frame ± the calls' spread scaled to one, seconds per denoising
    step)."""
    per, call = rep.get("image_s"), rep.get("image_call_s")
    if not measured_through_speed(rep) or per is None:
        return MISSING, MISSING
    text = f"{seconds(per)} s/{image_unit(rep)}"
    if rep.get("image_call_s_stdev") is not None and call:
        text += f" ± {seconds(rep['image_call_s_stdev'] * per / call)}"
    step = rep.get("step_ms")
    return (_with_busy(text, rep),
            f"{seconds(step / 1000)} s/step" if step is not None else MISSING)


def _n(row: Row, key: str, column: Optional[str] = None) -> Optional[int]:
    """Items scored for task/metric `key` (the generic map), else the task's own column."""
    counts = map_column(row, "accuracy_n")
    if counts.get(key):
        return int(counts[key])
    return int(row[column]) if column and row.get(column) else None


# An accuracy the sweep's second stage has yet to measure (accuracy_last)
PENDING = "pending: runs after every cell's speed, memory and quality"


def _absent(row: Optional[Row]) -> str:
    return PENDING if row is not None and row.get("accuracy_pending") else MISSING


def mmlu_text(row: Optional[Row]) -> str:
    if row is None or row.get("mmlu_acc") is None:
        return _absent(row)
    err = f" ± {row['mmlu_stderr']:.4f}" if row.get("mmlu_stderr") is not None else ""
    n = _n(row, "mmlu/acc", "mmlu_n")
    text = f"{row['mmlu_acc']:.4f}{err}{interval_text(row['mmlu_acc'], n)}"
    text += f" (n={n})" if n else ""
    if row.get("mmlu_cloze_acc") is not None:
        cloze_n = _n(row, "mmlu_cloze/acc", "mmlu_n")
        cloze = row["mmlu_cloze_acc"]
        text += f"; cloze {cloze:.4f}{interval_text(cloze, cloze_n)}"
    return text


def image_quality_text(row: Optional[Row]) -> str:
    """PSNR and SSIM of the images against the reference's (same prompt, seed, latents)."""
    if row is None or row.get("psnr_db") is None:
        return MISSING
    text = f"PSNR {row['psnr_db']:.2f} dB"
    if row.get("ssim") is not None:
        text += f" · SSIM {row['ssim']:.4f}"
    if row.get("quality_reference"):
        text += f" (vs {row['quality_reference']})"
    return text


def quality_text(row: Optional[Row]) -> str:
    """KL divergence against the reference, top-1 agreement and perplexity, in one cell."""
    if row is None or row.get("kld_mean") is None:
        return MISSING
    text = f"KL {row['kld_mean']:.4f}"
    if row.get("kld_p99") is not None:
        text += f" (p99 {row['kld_p99']:.3f})"
    if row.get("top1_agree") is not None:
        text += f" · top-1 {100 * row['top1_agree']:.1f} %"
    if row.get("ppl") is not None:
        delta = f" ({signed(row['ppl_delta'], 3)})" if row.get("ppl_delta") is not None else ""
        err = f" ± {row['ppl_stderr']:.3f}" if row.get("ppl_stderr") is not None else ""
        text += f" · PPL {row['ppl']:.3f}{err}{delta}"
    return text


def humaneval_stderr(row: Row) -> Optional[float]:
    """Binomial standard error of pass@1 (one greedy sample per problem)."""
    p, n = row.get("humaneval_pass1"), row.get("humaneval_n")
    if p is None or not n:
        return None
    return math.sqrt(p * (1 - p) / n)


def humaneval_text(row: Optional[Row]) -> str:
    if row is None or row.get("humaneval_pass1") is None:
        return _absent(row)
    se = humaneval_stderr(row)
    err = f" ± {se:.4f}" if se is not None else ""
    n = _n(row, "humaneval/pass@1", "humaneval_n")
    return (f"{row['humaneval_pass1']:.4f}{err}{interval_text(row['humaneval_pass1'], n)}"
            + (f" (n={n})" if n else ""))


# accuracy keys (task/metric) with columns of their own; every other one is rendered
# generically (other_accuracy_text)
OWN_COLUMNS = {"mmlu/acc": ("mmlu_acc", "MMLU"), "mmlu_cloze/acc": ("mmlu_cloze_acc", None),
               "humaneval/pass@1": ("humaneval_pass1", "HumanEval")}


def accuracy_value(row: Row, key: str) -> Optional[float]:
    """A row's figure for task/metric `key`: its own column where it has one, else the
    generic map."""
    column = OWN_COLUMNS.get(key, (None, None))[0]
    if column is not None and row.get(column) is not None:
        return float(row[column])
    value = map_column(row, "accuracy").get(key)
    return float(value) if value is not None else None


def other_accuracy_text(row: Optional[Row]) -> str:
    """Every accuracy figure beyond MMLU and HumanEval (an accuracy task from conf), each
    with its 95 % interval and count: `task/metric 0.5000 [0.401, 0.599] (n=96)`."""
    if row is None:
        return MISSING
    values = map_column(row, "accuracy")
    parts = []
    for key in sorted(k for k in values if k not in OWN_COLUMNS):
        value, n = float(values[key]), _n(row, key)
        parts.append(f"{key} {value:.4f}{interval_text(value, n)}" + (f" (n={n})" if n else ""))
    return "; ".join(parts) or _absent(row)


def baseline(latest: Sequence[Row], acc: Row, key: str) -> Optional[Row]:
    """The same model's best-precision ok row (highest bits) at the same eval set, with a
    figure for task/metric `key`."""
    same = [r for r in latest if r.get("status") == "ok" and accuracy_value(r, key) is not None
            and all(r.get(k) == acc.get(k) for k in ("model", "weights", "eval_set"))]
    ranked = sorted(newest_first(same), key=lambda r: (-(r.get("bits") or 0),
                                                        str(r.get("quant"))))
    return ranked[0] if ranked else None


def delta_text(latest: Sequence[Row], acc: Optional[Row]) -> str:
    if acc is None:
        return MISSING
    parts = []
    others = sorted(k for k in map_column(acc, "accuracy") if k not in OWN_COLUMNS)
    labelled = [(k, label) for k, (_, label) in OWN_COLUMNS.items() if label]
    for key, label in [*labelled, *((k, k) for k in others)]:
        value = accuracy_value(acc, key)
        if value is None:
            continue
        base = baseline(latest, acc, key)
        if base is None or (base.get("quant"), engine_of(base)) == (acc.get("quant"),
                                                                    engine_of(acc)):
            parts.append(f"{label} baseline")
        else:
            diff = 100 * (value - (accuracy_value(base, key) or 0.0))
            other = f" ({engine_of(base)})" if engine_of(base) != engine_of(acc) else ""
            pair = paired(base, acc, key)
            verdict = f": {pair.verdict()}" if pair is not None else ""
            parts.append(f"{label} {signed(diff, 2, ' pp')} vs {base.get('quant')}{other}"
                         f"{verdict}")
    return "; ".join(parts) if parts else MISSING


def _model(row: Row) -> str:
    weights = row.get("weights")
    return f"{row.get('model')}" + (f" ({weights})" if weights not in (None, "real") else "")


def _saving_text(row: CompatRow) -> str:
    """The diffusion memory-saving modes of the group, and the offload modes its rows ran."""
    modes = " + ".join(memory_saving(row.rep)) or "none"
    offloads = sorted({offload_mode(r) for r in row.group})
    return f"{modes} · offload: {', '.join(offloads)}"


TEXT_COLUMNS = ["Model", "Engine", "Quant", "Workload", "Status", "Peak device", "Weights",
                "Peak host RAM", "{classes}", "Decode tok/s", "TTFT ms", "Measured on", "MMLU",
                "HumanEval", "Other accuracy", "Quality vs reference", "Eval set",
                "Δ accuracy vs best precision",
                "Source"]
IMAGE_COLUMNS = ["Model", "Task", "Engine", "Quant", "Memory saving", "Workload", "Status",
                 "Peak device", "Weights", "Peak host RAM", "{classes}",
                 "Seconds per image (video: per frame)", "Seconds per step", "Measured on",
                 "Quality vs reference", "Source"]


def _speed_column(family: Family) -> str:
    return family.speed_label


def _columns_of(family: Family, template: Sequence[str]) -> list[str]:
    """A family's columns: its template, its speed under the header its task declares."""
    return [family.speed_label if name in ("Decode tok/s", "Seconds per image (video: per "
                                           "frame)") else name for name in template]


def _columns(template: Sequence[str], headers: Sequence[str]) -> list[str]:
    return [c for name in template for c in (headers if name == "{classes}" else [name])]


def _record(row: CompatRow, latest: Sequence[Row], conf: ConfData,
            sources: Optional[Sources]) -> dict[str, str]:
    """Every cell a family's table may show for one compatibility row."""
    rep = row.rep
    record = {"Model": _model(rep), "Task": task_of(rep), "Engine": engine_of(rep),
              "Quant": str(rep.get("quant")) + fallback_mark(rep),
              "Workload": workload_label(rep),
              "Status": _status(row), "Peak device": _peak_text(row),
              "Weights": size(rep.get("weights_bytes")),
              "Peak host RAM": size(rep.get("peak_host_rss_bytes")),
              "Measured on": device_text(rep)}
    record.update({class_header(g): row.symbols[g.name] for g in conf.gpu_classes})
    if not row.family.generates_tokens:
        per_image, per_step = image_speed(rep)
        record.update({"Memory saving": _saving_text(row), _speed_column(row.family): per_image,
                       "Seconds per step": per_step,
                       "Quality vs reference": image_quality_text(row.acc)})
    else:
        tok, ttft = _speed(rep)
        if row.family.speed_column != "decode_tok_s":  # a token task timed otherwise
            value = rep.get(row.family.speed_column)
            tok = num(value) if measured_through_speed(rep) and value is not None else MISSING
        record.update({
            row.family.speed_label: tok, "TTFT ms": ttft, "MMLU": mmlu_text(row.acc),
            "HumanEval": humaneval_text(row.acc), "Other accuracy": other_accuracy_text(row.acc),
            "Quality vs reference": quality_text(row.acc),
            "Eval set": str(row.acc.get("eval_set") or MISSING) if row.acc else MISSING,
            "Δ accuracy vs best precision": delta_text(latest, row.acc)})
    if sources is not None:
        record["Source"] = sources.refs(row.group)
    return record


def _by_family(rows: Sequence[CompatRow], level: int,
               render: Callable[[Family, list[CompatRow]], str]) -> str:
    """A heading per family (LLM, multimodal, diffusion), as the published tables group
    models, each with its own rows; a family with none says so."""
    parts = []
    for family in FAMILIES:
        members = [r for r in rows if r.family is family]
        body = render(family, members) if members else "_(nothing measured yet)_"
        parts.append(section(family.title, body, level=level))
    return "\n".join(parts)


def table(rows: Sequence[CompatRow], latest: Sequence[Row], conf: ConfData,
          sources: Sources) -> str:
    headers = [class_header(g) for g in conf.gpu_classes]

    def render(family: Family, members: list[CompatRow]) -> str:
        template = TEXT_COLUMNS if family.generates_tokens else IMAGE_COLUMNS
        return md_table([_record(r, latest, conf, sources) for r in members],
                        _columns(_columns_of(family, template), headers))
    return _by_family(rows, 2, render)


def reference_notes(rows: Sequence[CompatRow]) -> str:
    """Beside the quality column: what each model's reference is, and, where its weights are
    themselves a quantized file (the packaged SmolLM2 is a Q4_1 GGUF), that every scheme
    then requantizes values already on that grid, so its KL is not what quantizing the
    original 16-bit checkpoint costs."""
    seen: dict[tuple[str, str], str] = {}
    for r in rows:
        acc = r.acc
        if acc is None or not acc.get("quality_reference"):
            continue
        key = (str(acc.get("model")), str(acc.get("weights")))
        if key in seen:
            continue
        text = f"**{key[0]} ({key[1]})**: KL against {one_line(acc['quality_reference'], 240)}"
        if key[1] == "packaged":
            text += (". These weights are already quantized (a published GGUF file, "
                     "dequantized): every other scheme requantizes values that sit on that "
                     "grid, so the KL column reads smaller than quantizing the original "
                     "16-bit checkpoint would")
        seen[key] = text + "."
    if not seen:
        return ""
    return "Quality references:\n\n" + "\n".join(f"- {t}" for t in seen.values()) + "\n"


def summary_table(rows: Sequence[CompatRow], conf: ConfData) -> str:
    """The headline view for reports/README.md: status and symbols only (details elsewhere)."""
    headers = [class_header(g) for g in conf.gpu_classes]

    def render(family: Family, members: list[CompatRow]) -> str:
        columns = ["Model", "Engine", "Quant", "Workload", "Status", "Peak device", *headers,
                   _speed_column(family), "Measured on"]
        return md_table([_record(r, [], conf, None) for r in members], columns)
    return _by_family(rows, 3, render)


TABLE_LEGEND = (
    LEGEND + " Rows: newest row of each cell (per host) for a model × quant × workload "
    "(b = batch, prompt+generated tokens); a GPU-measured row speaks for the group "
    "(Peak device, speed, Measured on), the others are evidence and are listed in Status "
    "and Source. ❗ below its lower bound: a row whose weights_bytes or device peak is "
    "below the bound its architecture implies (predicted_*_bytes; see the planned cells "
    "below) — a bug in the measurement or in the bound, kept on the row. Memory in binary "
    "units (MiB/GiB). Decode tok/s = batch × (new − 1) / decode "
    "time, median ± stdev over repeats ((busy: …) when other processes used more "
    f"than {BUSY_CORES} cores on average while it was timed, or other processes were on the "
    "GPU), and TTFT (median ms) on the "
    "device named in "
    "Measured on — an emulated row ran on a bigger card with its allocator capped, so its "
    "speed is that card's. MMLU: letter accuracy ± stderr (n questions), and the "
    "continuation (cloze) form's accuracy; HumanEval: pass@1 ± binomial stderr √(p(1−p)/n) "
    "(n problems). Quality vs reference: as llama.cpp's perplexity --kl-divergence, on a fixed "
    "real text scored by every engine: mean KL divergence of the next-token distribution from "
    "the model's reference precision (nats per token; p99 = 99th percentile), the share of "
    "positions whose most likely token is unchanged, and perplexity (Δ vs the reference); the "
    "reference row reads KL 0, top-1 100 %. Diffusion (text-to-image, image-to-video): "
    "Workload = images per prompt (b), resolution and denoising steps (and frames); "
    "seconds per image (per frame of a video) = one call's median seconds ÷ its images "
    "(frames), ± the calls' stdev scaled alike; seconds per step = the median denoising "
    "step (the denoiser, both halves of classifier-free guidance, the scheduler); Quality "
    "vs reference: PSNR (dB; identical images are capped at 100) and SSIM of the images "
    "against the reference precision's from the same prompt, seed and initial latents. "
    "Memory saving: VAE tiling / slicing and attention slicing (each its own row), and the "
    "offload modes the row's runs used (engine.offload model / sequential: ⚠️ offload where "
    "only they fit). Δ accuracy: "
    "percentage points against the same model's highest-bits ok row at the same eval set. "
    "Source links to the rows used (run, host, device, versions, cell)."
)
