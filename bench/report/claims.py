"""Table 3, claims vs measured: the published tables (conf/claims/) beside bench's numbers.

Each claim row is mapped to one conf/model + conf/quant (conf/claims/mapping.yaml) and set
beside the measured row of that model × quant (the most lenient workload measured: smallest
batch and context, since a claim names none). Claims nothing measured are listed with ❓;
claims naming a model that was never published (mapping.yaml's no_checkpoint) say so and
what exists instead, since no measurement can ever come. Each source's claims are listed
under the families the compatibility table uses (LLM, multimodal, diffusion), by the task
the claim is about. Claimed GB are read as decimal gigabytes (10^9 bytes).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import yaml

from bench.report.claimbound import (
    ClaimBound,
    bits_text,
    claim_bound,
    claim_text,
    class_text,
)
from bench.report.compat import CompatRow, mmlu_text
from bench.report.confdata import ConfData
from bench.report.data import (
    FAMILIES,
    context_tokens,
    engine_of,
    fallback_mark,
    family_of,
    pixels,
    scheme_label,
    workload_label,
)
from bench.report.fmt import MISSING, gb, md_table, section, signed
from bench.report.provenance import Sources
from bench.report.symbols import NO, OK, TIGHT, UNKNOWN

CLAIM_SYMBOLS = {"yes": OK, "tight": TIGHT, "no": NO}
SOURCE_TITLES = {
    "table-a": "GPU compatibility claims (table-a): VRAM required and fits per GPU",
    "table-b": "VRAM and RAM per model (table-b)",
    "table-c": "VRAM per model size and precision (table-c)",
    "table-d": "Weights footprint, get_memory_footprint (table-d) vs weights_bytes",
}


@dataclass(frozen=True)
class Claim:
    source: str
    model: str
    hf_id_hint: str
    quant: str
    low_gb: Optional[float]
    high_gb: Optional[float]
    ram_gb: Optional[float]
    fits: dict[str, str]  # gpu class -> yes | tight | no
    note: str
    task: str = "text-generation"  # what the claimed model does (its family's heading)
    high_text: str = ""  # the claimed upper figure as written (its last digit's unit counts)


@dataclass(frozen=True)
class Mapping:
    models: dict[tuple[str, str], tuple[str, str]]  # (source, claim) -> (model, note)
    precisions: dict[str, str]
    # (source, claim) -> what exists instead, for a claimed model with no public checkpoint
    no_checkpoint: dict[tuple[str, str], str] = field(default_factory=dict)


def _float(text: str) -> Optional[float]:
    return float(text) if text.strip() else None


def load_claims(path: Path) -> list[Claim]:
    """The published claims, in file order; class columns are the non-field columns."""
    if not path.is_file():
        return []
    fixed = {"source", "model", "hf_id_hint", "task", "quant", "claimed_vram_gb_low",
             "claimed_vram_gb_high", "claimed_ram_gb", "note"}
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [Claim(r["source"], r["model"], r.get("hf_id_hint") or "", r["quant"],
                  _float(r.get("claimed_vram_gb_low", "")),
                  _float(r.get("claimed_vram_gb_high", "")),
                  _float(r.get("claimed_ram_gb", "")),
                  {k.replace("_", "-"): v for k, v in r.items() if k not in fixed and v},
                  r.get("note") or "", r.get("task") or "text-generation",
                  (r.get("claimed_vram_gb_high") or r.get("claimed_vram_gb_low") or "").strip())
            for r in rows]


def load_mapping(path: Path) -> Mapping:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    models = {(m["source"], m["claim"]): (m["model"], m.get("note", ""))
              for m in (data or {}).get("models", [])}
    missing = {(m["source"], m["claim"]): str(m.get("note", ""))
               for m in (data or {}).get("no_checkpoint", [])}
    return Mapping(models, dict((data or {}).get("precisions", {})), missing)


def bench_model(claim: Claim, mapping: Mapping, conf_dir: Path) -> tuple[Optional[str], str]:
    """(conf/model name, note): the explicit mapping first, else the same hub id."""
    if (claim.source, claim.model) in mapping.models:
        return mapping.models[(claim.source, claim.model)]
    if claim.hf_id_hint:
        for path in sorted((conf_dir / "model").glob("*.yaml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if data.get("hf_id") == claim.hf_id_hint:
                return str(data.get("name", path.stem)), "same hub id"
    return None, ""


def claim_error(low: float, high: float, measured: float) -> float:
    """Claimed − measured against the nearer end of the claimed range (0 inside it)."""
    if measured < low:
        return low - measured
    if measured > high:
        return high - measured
    return 0.0


def pick(rows: Sequence[CompatRow], model: str, quant: str) -> Optional[CompatRow]:
    """The measured row a claim is compared with: one with device evidence, most lenient
    workload (smallest batch, then context or resolution), real weights before synthetic,
    transformers (what the guides assume) before other engines."""
    found = [r for r in rows if r.rep.get("model") == model and r.rep.get("quant") == quant]

    def rank(r: CompatRow) -> tuple[int, int, int, int, int, int]:
        ev = r.evidence
        has = ev.peak is not None or bool(ev.oom_caps) or ev.offload_peak is not None
        return (0 if has else 1, r.rep.get("batch_size") or 0, context_tokens(r.rep) or 0,
                pixels(r.rep), 0 if r.rep.get("weights") == "real" else 1,
                0 if engine_of(r.rep) == "hf" else 1)
    return sorted(found, key=rank)[0] if found else None


def _range(low: Optional[float], high: Optional[float]) -> str:
    if low is None:
        return MISSING
    return f"{low:g} GB" if high in (None, low) else f"{low:g}–{high:g} GB"


def _error_cells(low: Optional[float], high: Optional[float],
                 measured: Optional[int]) -> tuple[str, str]:
    if low is None or measured is None or measured <= 0:
        return MISSING, MISSING
    err = claim_error(low, high if high is not None else low, measured / 1e9)
    return signed(err, 2, " GB"), signed(100 * err / (measured / 1e9), 1, "%")


def _others(rows: Sequence[CompatRow], model: str, quant: str, metric: str) -> str:
    """The model's other measured quants (for 'unspecified' claims)."""
    seen: dict[str, str] = {}
    for r in rows:
        q = scheme_label(r.rep)
        if r.rep.get("model") == model and r.rep.get("quant") != quant and q not in seen:
            value = r.rep.get("weights_bytes") if metric == "weights" else r.evidence.peak
            seen[q] = f"{q} {gb(value)}" if value is not None else f"{q} {UNKNOWN}"
    return ", ".join(seen[q] for q in sorted(seen)) or MISSING


NO_CHECKPOINT = "no public checkpoint"


def _no_checkpoint_record(claim: Claim, instead: str, columns: Sequence[str],
                          classes: Sequence[str], measured_col: str) -> dict[str, str]:
    """A claim about a model that was never published: nothing to measure, and what exists."""
    text = f"{NO_CHECKPOINT}: {instead}" if instead else NO_CHECKPOINT
    rec = {c: MISSING for c in columns}
    rec.update({"Claim": claim.model, "Claimed precision": claim.quant, "Compared with": text,
                "Claimed": _range(claim.low_gb, claim.high_gb), measured_col: NO_CHECKPOINT,
                "Note": claim.note or MISSING})
    for k in classes:
        rec[f"{k}: claim / measured"] = (f"{CLAIM_SYMBOLS.get(claim.fits.get(k, ''), MISSING)}"
                                         f" / {MISSING}")
    return rec


def _bound_cells(cb: Optional[ClaimBound], claim: Claim, quant: str,
                 fewest: int) -> dict[str, str]:
    """The claim beside its model's lower bound at the precision the claim implies."""
    if cb is None:
        return {}
    capacity = float(claim.high_text) * 1e9
    return {"Lower bound" + (" (weights)" if cb.weights_only else ""): f"≥ {cb.bytes / 1e9:.2f} GB",
            "Bound vs claim": claim_text(cb, claim.high_text, quant, fewest),
            "Most bits/weight for the claim (embeddings at dtype / quantized)":
                f"{bits_text(cb.bits_for(capacity))} / "
                f"{bits_text(cb.bits_for(capacity, embeddings_quantized=True))}",
            "Bound counts": cb.workload}


def table(claims: Sequence[Claim], source: str, rows: Sequence[CompatRow], mapping: Mapping,
          conf: ConfData, sources: Sources) -> str:
    """One markdown table for one published source."""
    subset = [c for c in claims if c.source == source]
    classes = sorted({k for c in subset for k in c.fits}, key=lambda k: (
        conf.gpu(k).vram_mib if conf.gpu(k) else 0, k))
    weights_only = source == "table-d"
    measured_col = "Measured " + ("weights_bytes" if weights_only else "peak device")
    columns = ["Claim", "Claimed precision", "Compared with", "Claimed",
               "Lower bound" + (" (weights)" if weights_only else ""), "Bound vs claim",
               "Most bits/weight for the claim (embeddings at dtype / quantized)",
               "Bound counts", measured_col,
               "Claim error", "Relative error", *(f"{k}: claim / measured" for k in classes)]
    if any(c.ram_gb is not None for c in subset):
        columns += ["Claimed RAM", "Measured peak host RAM", "RAM claim error"]
    columns += ["Measured MMLU (95 % interval)", "Other quants measured", "Workload", "Note",
                "Source"]
    records = []
    fewest = min(conf.quant_bits.values(), default=2)
    for claim in subset:
        instead = mapping.no_checkpoint.get((claim.source, claim.model))
        if instead is not None:
            records.append(_no_checkpoint_record(claim, instead, columns, classes,
                                                 measured_col))
            continue
        model, map_note = bench_model(claim, mapping, conf.conf_dir)
        quant = mapping.precisions.get(claim.quant)
        row = pick(rows, model, quant) if model and quant else None
        compared = (f"{model} {scheme_label(row.rep) + fallback_mark(row.rep) if row else quant}"
                    if model and quant else
                    f"{UNKNOWN} no bench model" if not model else f"{UNKNOWN} unmapped")
        if model and conf.model_tasks and model not in conf.model_tasks:
            compared += " (no conf/model of it yet)"
        rec = {"Claim": claim.model, "Claimed precision": claim.quant, "Compared with": compared,
               "Claimed": _range(claim.low_gb, claim.high_gb),
               "Note": "; ".join(n for n in (claim.note, map_note) if n) or MISSING}
        cb = (claim_bound(conf, model, quant, weights_only)
              if model and quant and claim.high_text else None)
        rec.update(_bound_cells(cb, claim, quant or "", fewest))
        measured = None
        if row is not None:
            measured = row.rep.get("weights_bytes") if weights_only else row.evidence.peak
            rec["Workload"] = workload_label(row.rep)
            rec["Source"] = sources.refs(row.group)
        if row is None:
            rec[measured_col] = f"{UNKNOWN} not measured"
        elif measured is None:
            rec[measured_col] = f"{UNKNOWN} not measured" + (
                f" (oom at {gb(max(row.evidence.oom_caps))})" if row.evidence.oom_caps else "")
        else:
            rec[measured_col] = gb(measured) + (" †" if not weights_only
                                                and row.evidence.peak_source == "reserved"
                                                else "")
        rec["Claim error"], rec["Relative error"] = _error_cells(claim.low_gb, claim.high_gb,
                                                                 measured)
        for k in classes:
            said = CLAIM_SYMBOLS.get(claim.fits.get(k, ""), MISSING)
            got = row.symbols.get(k, UNKNOWN) if row is not None else UNKNOWN
            differs = said != MISSING and not got.startswith(UNKNOWN) and not got.startswith(
                said)
            gpu = conf.gpu(k)
            bound = (class_text(cb, claim.fits.get(k, ""), gpu.capacity_bytes, fewest)
                     if cb is not None and gpu is not None else "")
            rec[f"{k}: claim / measured"] = f"{said} / {got}" + (" ≠" if differs else "") + bound
        if "Claimed RAM" in columns:
            ram = row.rep.get("peak_host_rss_bytes") if row is not None else None
            rec["Claimed RAM"] = _range(claim.ram_gb, claim.ram_gb)
            rec["Measured peak host RAM"] = gb(ram) if ram is not None else (
                f"{UNKNOWN} not measured")
            rec["RAM claim error"] = _error_cells(claim.ram_gb, claim.ram_gb, ram)[0]
        # what the claimed precision costs, with its uncertainty (a claim names memory only)
        rec["Measured MMLU (95 % interval)"] = (mmlu_text(row.acc) if row is not None
                                                else MISSING)
        rec["Other quants measured"] = (_others(rows, model, quant, "weights" if weights_only
                                                else "peak")
                                        if claim.quant == "unspecified" and model else MISSING)
        records.append(rec)
    return md_table(records, columns)


def sections(claims: Sequence[Claim], rows: Sequence[CompatRow], mapping: Mapping,
             conf: ConfData, sources: Sources) -> list[str]:
    """One section per published source, its claims under a heading per family."""
    parts = []
    for source in sorted({c.source for c in claims}):
        subset = [c for c in claims if c.source == source]
        tables = [section(family.title, table(members, source, rows, mapping, conf, sources),
                          level=3)
                  for family in FAMILIES
                  if (members := [c for c in subset if family_of(c.task) is family])]
        parts.append(section(SOURCE_TITLES.get(source, source), *tables, level=2))
    return parts


LEGEND = (
    "Claimed figures are the published ones (conf/claims/published-claims.csv), in decimal "
    "GB (10^9 bytes); measured figures are converted to the same unit. Claim error = claimed "
    "− measured, against the nearer end of a claimed range (0 when the measurement falls "
    "inside it); relative error = claim error ÷ measured. Negative = the claim understates "
    "what the model needs. Compared with: the conf/model and conf/quant the claim maps to "
    "(conf/claims/mapping.yaml); an 'unspecified' precision is compared with fp16 and the "
    "model's other measured quants are listed beside it. Per GPU class: the claim's symbol "
    "(yes ✅, tight ⚠️, no ❌) / bench's measured symbol by the rules of the compatibility "
    "table; ≠ marks a disagreement. Measured peak device = NVML per-process peak (†: allocator "
    "reserved peak) at the stated workload; table-d's get_memory_footprint is compared with "
    "weights_bytes (summed tensor storage). ❓ not measured: no bench model maps to the "
    "claim, or no row measured it yet. No public checkpoint: the claimed model was never "
    "published, so nothing can measure it; the row names what exists instead. Claims are "
    "grouped as the compatibility table is (LLM, multimodal vision-language, diffusion), by "
    "the task of the claimed model. Measured MMLU: the compared row's letter-form accuracy "
    "with its standard error, 95 % Wilson interval and n (cloze beside it where measured): "
    "what the claimed precision costs, which no claim states. Lower bound: what the "
    "claimed model must hold at least at the precision the claim implies (unspecified: "
    "fp16; int8: bnb-int8; 4bit: bnb-nf4), from its architecture facts alone — weights at "
    "the scheme's nominal bits, embeddings and head at the dtype, plus the KV cache of one "
    "token (a claim names no context); table-d's footprint against the weights alone. It "
    "only errs low (no scales, activations, CUDA context or allocator; no offload, no swap). "
    "Bound vs claim: ❌ impossible only where the bound is above the claim by more than half "
    "a unit of its last stated digit (\"13 GB\" holds to 13.5 GB); 'at every scheme bench "
    "has' where even the fewest bits bench quantizes to would not fit. Most bits/weight: the "
    "highest nominal bits per weight at which the model could still fit the claimed figure, "
    "with the embeddings and head at the dtype (bnb, GPTQ, AWQ) / quantized too (GGUF). Per "
    "GPU class, after a claimed ✅ (peak within 0.90·C), ⚠️ (within C) or ❌ the claimed "
    "precision cannot fit: the most bits per weight that could, a ✅/⚠️ refuted and a ❌ "
    "proved where that is below every scheme bench has."
)
