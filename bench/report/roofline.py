"""Table 4, decode speed vs the memory-bandwidth limit of the GPU it ran on.

Each decode step reads every weight once plus the KV cache of the whole batch, so a device
with bandwidth B cannot exceed B ÷ (weights + KV at the mean decode context) steps per
second; measured decode tok/s ÷ batch is set against that roofline. The bandwidth is that
of the physical device (matched by name to conf/gpu): an emulated class only caps memory,
not speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from bench.report.confdata import ConfData, GpuClass, kv_bytes_per_token, match_device
from bench.report.data import Row, engine_of, is_gpu, is_text, model_key, workload_label
from bench.report.fmt import md_table, num, pct, size
from bench.report.provenance import Sources, device_text
from bench.report.symbols import UNKNOWN


@dataclass(frozen=True)
class Roofline:
    row: Row
    bandwidth_gbs: Optional[float]
    how: str  # where the bandwidth comes from
    kv_bytes: Optional[float]  # KV cache at the mean decode context, whole batch
    bytes_per_step: Optional[float]
    limit_steps_s: Optional[float]  # roofline, decode steps (tokens per sequence) per second
    measured_steps_s: Optional[float]

    @property
    def fraction(self) -> Optional[float]:
        if self.limit_steps_s is None or self.measured_steps_s is None:
            return None
        return self.measured_steps_s / self.limit_steps_s


def bandwidth_class(row: Row, conf: ConfData) -> tuple[Optional[GpuClass], str]:
    """The class whose bandwidth the row ran at: the device's name, else its own class."""
    by_name = match_device(conf, row.get("device_name"))
    if by_name is not None and by_name.bandwidth_gbs is not None:
        return by_name, "device name"
    own = conf.gpu(row.get("gpu_class"))
    if own is not None and own.bandwidth_gbs is not None and not row.get("emulated"):
        return own, "gpu class"
    return None, ""


def bandwidth(row: Row, conf: ConfData) -> tuple[Optional[float], str]:
    """GB/s of the device the row ran on, and where the figure comes from: the device's own
    (NVML's memory clock and bus width, gpu_peak_bandwidth_gbs), else its conf/gpu class."""
    own = row.get("gpu_peak_bandwidth_gbs")
    if own:
        return float(own), "the device's own, NVML"
    gpu, how = bandwidth_class(row, conf)
    return (gpu.bandwidth_gbs, f"{gpu.name}, by {how}") if gpu is not None else (None, "")


def mean_decode_context(row: Row) -> Optional[float]:
    """Tokens in the cache on average while decoding: prompt + half the generated tokens."""
    if row.get("prompt_tokens") is None or row.get("new_tokens") is None:
        return None
    return row["prompt_tokens"] + row["new_tokens"] / 2


def roofline(row: Row, conf: ConfData) -> Roofline:
    gbs, how = bandwidth(row, conf)
    per_token = kv_bytes_per_token(conf, row)
    ctx = mean_decode_context(row)
    kv = per_token * ctx if per_token is not None and ctx is not None else None
    weights = row.get("weights_bytes")
    step_bytes = weights + kv if weights is not None and kv is not None else None
    limit = gbs * 1e9 / step_bytes if gbs and step_bytes else None
    tok, batch = row.get("decode_tok_s"), row.get("batch_size")
    measured = tok / batch if tok is not None and batch else None
    return Roofline(row, gbs, how, kv, step_bytes, limit, measured)


def build(latest: Sequence[Row], conf: ConfData) -> list[Roofline]:
    rows = [r for r in latest if r.get("status") == "ok" and is_gpu(r) and is_text(r)
            and r.get("decode_tok_s") is not None]
    return [roofline(r, conf) for r in sorted(rows, key=lambda r: (model_key(r),
                                                                   str(r.get("device_name")),
                                                                   str(r.get("host"))))]


def table(rows: Sequence[Roofline], sources: Sources) -> str:
    columns = ["Model", "Engine", "Quant", "Workload", "Measured on", "Bandwidth", "Weights",
               "KV cache at mean context", "Roofline steps/s", "Measured tok/s ÷ batch",
               "Fraction of roofline", "Source"]
    records = []
    for r in rows:
        bw = (f"{r.bandwidth_gbs:g} GB/s ({r.how})" if r.bandwidth_gbs
              else f"{UNKNOWN} no conf/gpu class matches the device")
        records.append({
            "Model": str(r.row.get("model")), "Engine": engine_of(r.row),
            "Quant": str(r.row.get("quant")),
            "Workload": workload_label(r.row), "Measured on": device_text(r.row),
            "Bandwidth": bw, "Weights": size(r.row.get("weights_bytes")),
            "KV cache at mean context": size(r.kv_bytes) if r.kv_bytes is not None
            else f"{UNKNOWN} no architecture facts",
            "Roofline steps/s": num(r.limit_steps_s) if r.limit_steps_s else UNKNOWN,
            "Measured tok/s ÷ batch": num(r.measured_steps_s),
            "Fraction of roofline": pct(r.fraction) if r.fraction is not None else UNKNOWN,
            "Source": sources.ref(r.row)})
    return md_table(records, columns) if records else "_(no GPU rows with a decode speed)_"


LEGEND = (
    "GPU rows of text tasks only (a CPU has no conf/gpu bandwidth; an image pipeline does "
    "not decode tokens). Roofline = bandwidth ÷ bytes read per "
    "decode step, where a step reads all weights (weights_bytes) once plus the KV cache of "
    "the whole batch at the mean decode context (prompt + new/2 tokens; analytic size from "
    "conf/model and the quant's dtype); bandwidth in decimal GB/s. The bandwidth is the "
    "physical device's: its own peak from NVML (2 × its maximum memory clock × its bus "
    "width, `gpu_peak_bandwidth_gbs`) where the row has it, else the conf/gpu class its "
    "device_name is (a class's `devices`, else every word of the name in the class's name "
    "and card); a non-emulated row falls back to its own gpu class; an emulated row "
    "(allocator cap on a bigger card) without either, or gpu_class=local on an unknown "
    "device, is ❓. Fraction = "
    "(measured decode tok/s ÷ batch) ÷ roofline; dequantization kernels, launch overhead "
    "and small batches keep it below 100%."
)
