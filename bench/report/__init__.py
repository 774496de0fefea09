"""The report: reads results/ only, writes reports/. Never runs a model.

Same inputs give byte-identical outputs: rows are sorted, nothing depends on the clock.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from bench.store import read_results

_MIB = 2**20

TABLE_COLUMNS = {
    "model": "Model",
    "weights": "Weights",
    "quant": "Quant",
    "status": "Status",
    "device_name": "Measured on",
    "weights_mib": "Weights (MiB)",
    "peak_device_mib": "Peak device (MiB)",
    "peak_host_rss_mib": "Peak host RSS (MiB)",
    "ttft_ms": "TTFT (ms)",
    "decode_tok_s": "Decode (tok/s)",
    "decode_ms_p50": "p50 (ms/tok)",
    "decode_ms_p90": "p90 (ms/tok)",
    "workload": "Workload",
    "run_id": "Run",
}


def latest_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The newest row of every cell on every host (older rows are its history)."""
    if df.empty:
        return df
    df = df.sort_values(["cell_id", "host", "finished_at", "run_id"])
    return df.groupby(["cell_id", "host"], dropna=False, sort=True).tail(1)


def measurements_table(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in ("weights_bytes", "peak_device_bytes", "peak_host_rss_bytes"):
        out[col.replace("_bytes", "_mib")] = out[col] / _MIB
    out["workload"] = (
        "b" + out["batch_size"].astype("string") + " · " + out["prompt_tokens"].astype("string")
        + "+" + out["new_tokens"].astype("string") + " tok")
    out["status"] = out["status"].where(out["error"].isna(), out["status"] + ": " + out["error"])
    out = out.sort_values(["model", "weights", "bits", "quant", "gpu_class", "run_id"],
                          ascending=[True, True, False, True, True, True])
    out = out[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
    return out.astype(object).where(out.notna(), None)


def _provenance(df: pd.DataFrame) -> str:
    lines = []
    for col in ("run_id", "host", "device_name", "git_sha", "torch", "transformers",
                "bitsandbytes", "cuda", "driver"):
        values = sorted(str(v) for v in df[col].dropna().unique())
        lines.append(f"- {col}: {', '.join(values) if values else 'n/a'}")
    return "\n".join(lines)


def generate(results_dir: str | os.PathLike, reports_dir: str | os.PathLike) -> list[Path]:
    """Write reports/README.md from the Parquet rows; returns the files written."""
    df = latest_rows(read_results(results_dir))
    out_dir = Path(reports_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if df.empty:
        body = "No results yet: run `python -m bench` first.\n"
    else:
        table = measurements_table(df).to_markdown(index=False, floatfmt=".1f", missingval="—")
        body = (f"## Measurements (newest row of each cell)\n\n{table}\n\n"
                f"Memory in MiB (2^20 bytes); TTFT and decode speed are medians over the "
                f"timed repeats; — means not measured.\n\n"
                f"## Provenance\n\n{_provenance(df)}\n")
    path = out_dir / "README.md"
    path.write_text(f"# bench report\n\n{body}", encoding="utf-8")
    return [path]
