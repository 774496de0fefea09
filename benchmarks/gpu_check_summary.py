"""The GPU check's table: every cell's row beside nvidia-smi's independent view of the same
window, and what each cell was meant to prove, as PASS / FAIL / — (not measured).

    python benchmarks/gpu_check_summary.py RESULTS_DIR OUT_DIR   (writes OUT/rows.csv)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from bench.report.confdata import load_conf, match_device
from bench.report.data import load_rows
from bench.report.symbols import evidence, verdict

MIB = 2**20
LLAMA2_7B_FP16_WEIGHTS = 6_738_415_616 * 2  # parameters x 2 bytes (the published count)
SMI_TOLERANCE = 16 * MIB  # nvidia-smi reports whole MiB, sampled every 100 ms


def _smi(path: Path, columns: list[str]) -> pd.DataFrame:
    """nvidia-smi's CSV (timestamps in the machine's local time, assumed UTC as in its image)."""
    try:
        df = pd.read_csv(path, names=columns, skipinitialspace=True)
    except (OSError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=columns)
    df["t"] = pd.to_datetime(df["timestamp"], format="%Y/%m/%d %H:%M:%S.%f", utc=True,
                             errors="coerce")
    for col in columns[1:]:
        df[col] = pd.to_numeric(df[col].astype(str).str.extract(r"([\d.]+)")[0],
                                errors="coerce")
    return df.dropna(subset=["t"])


def _window(df: pd.DataFrame, row: dict[str, Any]) -> pd.DataFrame:
    return df[(df["t"] >= row["started_at"]) & (df["t"] <= row["finished_at"])]


def _mib(value: Any) -> str:
    return "—" if value is None else f"{value / MIB:,.0f}"


def _num(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _check(ok: Optional[bool]) -> str:
    return "—" if ok is None else ("PASS" if ok else "FAIL")


def main(results: str, out: str) -> int:
    rows = load_rows(results)
    if not rows:
        print("no rows: no cell finished")
        return 1
    pd.DataFrame(rows).to_csv(Path(out) / "rows.csv", index=False)
    apps = _smi(Path(out) / "smi_apps.csv", ["timestamp", "pid", "used_mib"])
    dev = _smi(Path(out) / "smi_gpu.csv", ["timestamp", "used_mib", "util", "sm_mhz", "power_w"])
    conf = load_conf()
    lines = ["| cell | quant | class | status | weights MiB | context MiB | alloc cap MiB | "
             "peak alloc / reserved MiB | device peak MiB (method) | nvidia-smi MiB (process / "
             "device rise) | decode tok/s | roofline tok/s | TTFT ms | util % | energy J/token | "
             "verdict | note |", "|" + "---|" * 17]
    by_run: dict[str, Any] = {}
    for row in rows:
        win_apps, win_dev = _window(apps, row), _window(dev, row)
        smi_proc = float(win_apps["used_mib"].max()) * MIB if len(win_apps) else None
        smi_rise = (float(win_dev["used_mib"].max() - win_dev["used_mib"].iloc[0]) * MIB
                    if len(win_dev) else None)
        gpu = match_device(conf, row.get("device_name"))
        weights = row.get("weights_bytes")
        roof = (gpu.bandwidth_gbs * 1e9 / weights
                if gpu is not None and gpu.bandwidth_gbs and weights else None)
        cls = conf.gpu(row["gpu_class"]) if row["gpu_class"] != "local" else gpu
        symbol = verdict(evidence([row], conf), cls) if cls is not None else "—"
        status = row["status"] + ("" if row["status"] == "ok" else f" ({row.get('failed_phase')})")
        lines.append(
            f"| {row['run_id']} | {row['quant']} | {row['gpu_class']}"
            f"{' +offload' if row.get('offload') else ''} | {status}"
            f" | {_mib(weights)} | {_mib(row.get('context_bytes'))}"
            f" | {_mib(row.get('allocator_cap_bytes'))}"
            f" | {_mib(row.get('peak_alloc_bytes'))} / {_mib(row.get('peak_reserved_bytes'))}"
            f" | {_mib(row.get('peak_device_bytes'))} ({row.get('device_peak_method')})"
            f" | {_mib(smi_proc)} / {_mib(smi_rise)} | {_num(row.get('decode_tok_s'))}"
            f" | {_num(roof, 0)} | {_num(row.get('ttft_ms'))} | {_num(row.get('gpu_util_pct'), 0)}"
            f" | {_num(row.get('j_per_token'), 3)} | {symbol}"
            f" | {str(row.get('error') or row.get('memory_note') or '')[:120]} |")
        by_run[f"{row['run_id']}/{row['quant']}/{row['gpu_class']}/{bool(row.get('offload'))}"] = (
            row, smi_proc, roof)
    print("\n".join(lines))
    print()
    print(_verdicts(by_run, conf))
    return 0


def _get(by_run: dict[str, Any], key: str) -> Optional[Any]:
    return by_run.get(key, (None, None, None))


def _verdicts(by_run: dict[str, Any], conf: Any) -> str:
    """What each cell was meant to prove, PASS / FAIL / — where it did not run."""
    a, smi_a, roof_a = _get(by_run, "gpucheck/fp16/local/False")
    b, _, _ = _get(by_run, "gpucheck-sync/fp16/local/False")
    c, _, _ = _get(by_run, "gpucheck/fp16/rtx4090-24gb/False")
    d, _, _ = _get(by_run, "gpucheck/fp16/rtx3060-12gb/False")
    e, _, _ = _get(by_run, "gpucheck/fp16/rtx3060-12gb/True")
    h, _, _ = _get(by_run, "gpucheck-pidns/fp16/local/False")
    nf4, _, _ = _get(by_run, "gpucheck/bnb-nf4/local/False")
    int8, _, _ = _get(by_run, "gpucheck/bnb-int8/local/False")
    sd, _, _ = _get(by_run, "gpucheck-sd/fp16/local/False")
    sd8, _, _ = _get(by_run, "gpucheck-sd/fp16/laptop-8gb/False")
    class12 = conf.gpu("rtx3060-12gb").capacity_bytes
    class24 = conf.gpu("rtx4090-24gb").capacity_bytes

    def ok(r: Optional[dict[str, Any]]) -> bool:
        return r is not None and r["status"] == "ok"

    def peak(r: dict[str, Any]) -> int:
        return r.get("peak_device_bytes") or 0

    checks = [
        ("fp16 weights = 13,476,831,232 B",
         None if a is None else ok(a) and a.get("weights_bytes") == LLAMA2_7B_FP16_WEIGHTS),
        ("device peak within 16 MiB of nvidia-smi's process figure",
         None if not ok(a) or smi_a is None or a.get("peak_device_bytes") is None
         else abs(a["peak_device_bytes"] - smi_a) <= SMI_TOLERANCE),
        ("decode below the HBM roofline",
         None if not ok(a) or roof_a is None else a["decode_tok_s"] < roof_a),
        ("events clock / sync clock decode within 0.97-1.05",
         None if not (ok(a) and ok(b)) else 0.97 <= a["decode_tok_s"] / b["decode_tok_s"] <= 1.05),
        ("24 GB class: ok, peak <= class", None if c is None else ok(c) and peak(c) <= class24),
        ("12 GB class: oom", None if d is None else d["status"] == "oom"),
        ("offload under 12 GB: ok, peak <= class",
         None if e is None else ok(e) and bool(e.get("offload")) and peak(e) <= class12),
        ("bnb-nf4 on CUDA ok", None if nf4 is None else ok(nf4)),
        ("bnb-int8 on CUDA ok", None if int8 is None else ok(int8)),
        ("SD 1.5 fp16 on CUDA ok: every step timed, steps sum below the call",
         None if sd is None else ok(sd) and bool(sd.get("step_ms")) and
         sd["step_ms"] * sd["denoise_steps"] / 1000 <= sd["image_call_s"]),
        ("SD 1.5 fp16: a peak per component (text encoder, UNet, VAE), none above the "
         "pipeline's allocator peak",
         None if not ok(sd) else set(dict(sd.get("component_peak_bytes") or {})) >= {
             "text_encoder", "unet", "vae"} and max(dict(sd["component_peak_bytes"]).values())
         <= (sd.get("peak_alloc_bytes") or 0)),
        ("SD 1.5 fp16 under the 8 GB class: ok, peak <= class",
         None if sd8 is None else ok(sd8) and peak(sd8) <= conf.gpu("laptop-8gb").capacity_bytes),
        ("own PID namespace: a device peak, by the device-rise method",
         None if h is None else ok(h) and h.get("device_peak_method") == "nvml-device-rise"),
        ("NVML found the device (gpu_uuid recorded)",
         None if a is None else bool(a.get("gpu_uuid"))),
    ]
    return "\n".join(f"- {_check(result)} {what}" for what, result in checks)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
