"""The GPU check's table: every cell's row beside nvidia-smi's independent view of the same
window, what each cell was meant to prove as PASS / FAIL / — (not measured), and the
software stack it proved it on.

    python benchmarks/gpu_check_summary.py RESULTS_DIR OUT_DIR   (writes OUT/rows.csv)

Each check reads a row for what it really means: `weights_bytes` is the summed storage of
every parameter and buffer (Llama's rotary tables are float32 buffers beside the fp16
weights), so it is checked against the architecture built on the meta device, and the
architecture's parameters against the published count.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.core.sizes import DTYPE_BYTES  # noqa: E402
from bench.report.confdata import ConfData, load_conf, match_device  # noqa: E402
from bench.report.data import load_rows, newest_first  # noqa: E402
from bench.report.roofline import bandwidth  # noqa: E402
from bench.report.symbols import NO, OK, evidence, verdict  # noqa: E402
from benchmarks.gpu_check import CELLS, LLAMA  # noqa: E402

MIB = 2**20
SMI_TOLERANCE = 16 * MIB  # nvidia-smi reports whole MiB, sampled every 100 ms
CLOCK_AGREEMENT = (0.97, 1.05)  # events clock ÷ sync clock, decode tok/s
CAPACITY_AGREEMENT = 0.005  # conf/gpu's capacity against the card's CUDA total
# The stack a check proves: distributions, and the pyproject range each should fall in.
STACK = ("torch", "transformers", "accelerate", "bitsandbytes", "diffusers", "numpy",
         "hydra-core", "omegaconf", "nvidia-ml-py", "pandas", "pyarrow")
Row = dict[str, Any]


def _smi(path: Path, columns: list[str]) -> pd.DataFrame:
    """nvidia-smi's CSV (timestamps in the machine's local time, assumed UTC as in its image)."""
    try:
        df = pd.read_csv(path, names=columns, skipinitialspace=True)
    except (OSError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=columns + ["t"])
    df["t"] = pd.to_datetime(df["timestamp"], format="%Y/%m/%d %H:%M:%S.%f", utc=True,
                             errors="coerce")
    for col in columns[1:]:
        df[col] = pd.to_numeric(df[col].astype(str).str.extract(r"([\d.]+)")[0],
                                errors="coerce")
    return df.dropna(subset=["t"])


def _window(df: pd.DataFrame, row: Row) -> pd.DataFrame:
    return df[(df["t"] >= row["started_at"]) & (df["t"] <= row["finished_at"])]


def _mib(value: Any) -> str:
    return "—" if value is None or value != value else f"{value / MIB:,.0f}"


def _num(value: Any, digits: int = 1) -> str:
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def _check(ok: Optional[bool]) -> str:
    return "—" if ok is None else ("PASS" if ok else "FAIL")


# --- what a row should hold ----------------------------------------------------------------


def expected_weights(arch: Any, dtype: str) -> tuple[int, int]:
    """(parameters, bytes) of the architecture built on the meta device: every parameter at
    the scheme's dtype (tied ones once) plus every buffer at its own dtype, which is what a
    row's weights_bytes sums for an unquantized scheme."""
    from bench.weights.arch import meta_model, parameter_count

    model = meta_model(arch)
    params = parameter_count(model)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return params, params * DTYPE_BYTES[dtype] + buffers


def weights_check(row: Optional[Row], conf: ConfData) -> Optional[bool]:
    """An unquantized row's weights_bytes equals its architecture's parameters at the
    scheme's dtype plus its buffers, and the architecture has the published parameter
    count (None: no ok row)."""
    if row is None or row.get("status") != "ok" or row.get("weights_bytes") is None:
        return None
    arch = conf.models[str(row["model"])]
    params, expected = expected_weights(arch, conf.quant_dtypes[str(row["quant"])])
    return params == arch.params and int(row["weights_bytes"]) == expected


@dataclass(frozen=True)
class Found:
    """The newest row of each cell of the check, and nvidia-smi's figures for its window."""

    rows: dict[str, Row]
    smi_process: dict[str, Optional[float]]

    def row(self, name: str) -> Optional[Row]:
        return self.rows.get(name)

    def ok(self, name: str) -> bool:
        row = self.rows.get(name)
        return row is not None and row["status"] == "ok"


def find(rows: list[Row], apps: pd.DataFrame) -> Found:
    by_cell: dict[str, Row] = {}
    smi: dict[str, Optional[float]] = {}
    for cell in CELLS:
        mine = newest_first(r for r in rows if cell.finds(r))
        if mine:
            by_cell[cell.name] = mine[0]
            window = _window(apps, mine[0])
            smi[cell.name] = float(window["used_mib"].max()) * MIB if len(window) else None
    return Found(by_cell, smi)


def _peak(row: Row) -> int:
    return int(row.get("peak_device_bytes") or 0)


def checks(found: Found, conf: ConfData) -> list[tuple[str, Optional[bool]]]:
    """What each cell was meant to prove: PASS, FAIL, or None where it did not run."""
    a, d = found.row("a-fp16"), found.row("d-12gb")

    def when(names: tuple[str, ...], test: Callable[[], bool]) -> Optional[bool]:
        """None unless every named cell has a row; then the test (False if it raises)."""
        if any(found.row(n) is None for n in names):
            return None
        try:
            return bool(test())
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return False

    def cls(name: str) -> Any:
        gpu = conf.gpu(name)
        assert gpu is not None, name
        return gpu

    card = match_device(conf, a.get("device_name")) if a else None
    roof_gbs = bandwidth(a, conf)[0] if a else None
    weights = a.get("weights_bytes") if a else None
    smi_a = found.smi_process.get("a-fp16")
    sd = found.row("i-sd15") or {}
    llama = conf.models[LLAMA]
    return [
        (f"fp16 weights = the meta-built architecture's {llama.params:,} parameters x 2 B "
         f"+ its float32 buffers", weights_check(a, conf)),
        ("the measuring card is a conf/gpu class whose capacity is its CUDA total (within "
         f"{100 * CAPACITY_AGREEMENT:.1f} %, not above it)",
         when(("a-fp16",), lambda: card is not None and 0 <= int(a["device_total_bytes"])
              - card.capacity_bytes <= CAPACITY_AGREEMENT * card.capacity_bytes)),
        ("device peak within 16 MiB of nvidia-smi's process figure",
         None if not found.ok("a-fp16") or smi_a is None or a.get("peak_device_bytes") is None
         else abs(a["peak_device_bytes"] - smi_a) <= SMI_TOLERANCE),
        ("NVML's 10 ms samples saw at least the context plus the allocator's peak "
         "(peak_device_unseen_bytes = 0)",
         when(("a-fp16",), lambda: found.ok("a-fp16")
              and a.get("peak_device_unseen_bytes") == 0)),
        ("the CUDA context, measured after the first matmuls, is between 100 MiB and 2 GiB",
         when(("a-fp16",), lambda: 100 * MIB <= int(a["context_bytes"]) <= 2048 * MIB)),
        ("decode below the HBM roofline (the device's own bandwidth from NVML)",
         None if not found.ok("a-fp16") or not roof_gbs or not weights
         else a["decode_tok_s"] < roof_gbs * 1e9 / weights),
        ("NVML's peak bandwidth within 10 % of the card's conf/gpu figure",
         when(("a-fp16",), lambda: card is not None and card.bandwidth_gbs is not None
              and abs(a["gpu_peak_bandwidth_gbs"] / card.bandwidth_gbs - 1) <= 0.10)),
        ("on its own card the fp16 cell is ✅",
         when(("a-fp16",), lambda: card is not None
              and verdict(evidence([a], conf), card) == OK)),
        (f"events clock / sync clock decode within {CLOCK_AGREEMENT[0]}-{CLOCK_AGREEMENT[1]}",
         when(("a-fp16", "b-sync"), lambda: found.ok("a-fp16") and found.ok("b-sync") and
              CLOCK_AGREEMENT[0] <= a["decode_tok_s"] / found.rows["b-sync"]["decode_tok_s"]
              <= CLOCK_AGREEMENT[1])),
        ("24 GB class: ok, allocator capped at the class less the context, peak <= class",
         when(("c-24gb",), lambda: found.ok("c-24gb") and _peak(found.rows["c-24gb"])
              <= cls("rtx4090-24gb").capacity_bytes and found.rows["c-24gb"][
                  "allocator_cap_bytes"] + found.rows["c-24gb"]["context_bytes"]
              == cls("rtx4090-24gb").capacity_bytes)),
        ("12 GB class: oom, and the table says ❌ oom for it",
         when(("d-12gb",), lambda: d["status"] == "oom"
              and verdict(evidence([d], conf), cls("rtx3060-12gb")) == f"{NO} oom")),
        ("offload under 12 GB: ok, offloaded, peak <= class",
         when(("e-offload",), lambda: found.ok("e-offload")
              and bool(found.rows["e-offload"].get("offload"))
              and _peak(found.rows["e-offload"]) <= cls("rtx3060-12gb").capacity_bytes)),
        ("bnb-nf4 on CUDA ok", when(("f-nf4",), lambda: found.ok("f-nf4"))),
        ("bnb-int8 on CUDA ok", when(("g-int8",), lambda: found.ok("g-int8"))),
        ("SD 1.5 fp16 on CUDA ok: every step timed, steps sum below the call",
         when(("i-sd15",), lambda: found.ok("i-sd15") and bool(sd.get("step_ms"))
              and sd["step_ms"] * sd["denoise_steps"] / 1000 <= sd["image_call_s"])),
        ("SD 1.5 fp16: a peak per component (text encoder, UNet, VAE), none above the "
         "pipeline's allocator peak",
         when(("i-sd15",), lambda: found.ok("i-sd15") and set(dict(
             sd.get("component_peak_bytes") or {})) >= {"text_encoder", "unet", "vae"}
             and max(dict(sd["component_peak_bytes"]).values())
             <= (sd.get("peak_alloc_bytes") or 0))),
        ("SD 1.5 fp16 under the 8 GB class: ok, peak <= class",
         when(("j-sd15-8gb",), lambda: found.ok("j-sd15-8gb")
              and _peak(found.rows["j-sd15-8gb"]) <= cls("laptop-8gb").capacity_bytes)),
        ("own PID namespace: a device peak, by the device-rise method",
         when(("h-pidns",), lambda: found.ok("h-pidns")
              and found.rows["h-pidns"].get("device_peak_method") == "nvml-device-rise")),
        ("NVML found the device (gpu_uuid recorded)",
         when(("a-fp16",), lambda: bool(a.get("gpu_uuid")))),
    ]


# --- the stack ---------------------------------------------------------------------------


def _ranges() -> dict[str, str]:
    """pyproject's range of each dependency ("torch" -> ">=2.13,<2.14")."""
    import tomllib
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        req = Requirement(dep)
        out[req.name] = ",".join(sorted(map(str, req.specifier), key=lambda x: x[0] != ">"))
    return out


def stack(rows: list[Row]) -> str:
    """The versions this check ran on, each against pyproject's range: what it proved is
    the CUDA paths on this stack (a version outside the range is marked)."""
    from packaging.specifiers import SpecifierSet

    ranges = _ranges()
    lines = ["| component | version here | pyproject's range | inside |", "|---|---|---|---|"]
    for dist in STACK:
        try:
            version: Optional[str] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = None
        wanted = ranges.get(dist, "")
        inside = ("—" if version is None or not wanted
                  else "yes" if SpecifierSet(wanted).contains(version, prereleases=True)
                  else "**no**")
        lines.append(f"| {dist} | {version or 'not installed'} | {wanted or '—'} | {inside} |")
    first = next(iter(newest_first(rows)), {})
    for what, column in (("CUDA (torch's build)", "cuda"), ("NVIDIA driver", "driver"),
                         ("CUDA the driver supports", "cuda_driver"), ("Python", "python"),
                         ("device", "device_name")):
        lines.append(f"| {what} | {first.get(column) or '—'} | | |")
    return "\n".join(lines)


def table(rows: list[Row], found: Found, dev: pd.DataFrame, conf: ConfData) -> str:
    head = ["| cell | status | weights MiB | context MiB | alloc cap MiB | peak alloc / reserved "
            "MiB | device peak MiB (method, unseen) | nvidia-smi MiB (process / device rise) | "
            "decode tok/s | TTFT ms | kernels ran % | energy J/token | note |",
            "|" + "---|" * 13]
    names = {id(r): n for n, r in found.rows.items()}
    for row in newest_first(rows):
        win = _window(dev, row)
        rise = (float(win["used_mib"].max() - win["used_mib"].iloc[0]) * MIB
                if len(win) else None)
        status = row["status"] + ("" if row["status"] == "ok"
                                  else f" ({row.get('failed_phase')})")
        name = names.get(id(row), f"{row['run_id']}/{row['quant']}/{row['gpu_class']}")
        head.append(
            f"| {name} | {status} | {_mib(row.get('weights_bytes'))}"
            f" | {_mib(row.get('context_bytes'))} | {_mib(row.get('allocator_cap_bytes'))}"
            f" | {_mib(row.get('peak_alloc_bytes'))} / {_mib(row.get('peak_reserved_bytes'))}"
            f" | {_mib(row.get('peak_device_bytes'))} ({row.get('device_peak_method')}, "
            f"{_mib(row.get('peak_device_unseen_bytes'))})"
            f" | {_mib(found.smi_process.get(name))} / {_mib(rise)}"
            f" | {_num(row.get('decode_tok_s'))} | {_num(row.get('ttft_ms'))}"
            f" | {_num(row.get('gpu_kernel_time_pct'), 0)} | {_num(row.get('j_per_token'), 3)}"
            f" | {str(row.get('error') or row.get('memory_note') or '')[:120]} |")
    return "\n".join(head)


def main(results: str, out: str) -> int:
    rows = load_rows(results) if Path(results).exists() else []
    if not rows:
        print("no rows: no cell finished")
        return 1
    pd.DataFrame(rows).to_csv(Path(out) / "rows.csv", index=False)
    apps = _smi(Path(out) / "smi_apps.csv", ["timestamp", "pid", "used_mib"])
    dev = _smi(Path(out) / "smi_gpu.csv", ["timestamp", "used_mib", "util", "sm_mhz", "power_w"])
    conf = load_conf()
    found = find(rows, apps)
    print(table(rows, found, dev, conf))
    print()
    print("\n".join(f"- {_check(result)} {what}" for what, result in checks(found, conf)))
    missing = [c.name for c in CELLS if c.name not in found.rows]
    if missing:
        print(f"\nCells without a row (skipped for time, or their invocation failed: "
              f"cells.log says): {', '.join(missing)}")
    print("\n**Stack proved.** What ran here, against pyproject's ranges (the CPU tests run "
          "inside them):\n")
    print(stack(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
