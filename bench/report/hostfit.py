"""Will it fit in my RAM? Every row's measured host peak against the host-memory classes.

Many readers run llama.cpp on a CPU, and the published guides recommend RAM as well as
VRAM. For a host class with usable RAM C (conf/host/: its RAM times the share one model
process may use, sourced there) and a row's measured peak resident memory P (VmHWM of the
cell's process, the whole process: weights, KV cache, buffers, the runtime): the
compatibility symbols' rules within the usable share. Only the whole RAM is a hard limit:
❌ where P exceeds all of a class's RAM, or where the row ran out of host memory on a host
with no more RAM than the class has (an OOM on a host with total RAM X proves P > X); a P
between the usable share and the whole RAM is a weaker mark of its own, "above the usable
share" (it fits if the OS and other programs leave the room). llama.cpp memory-maps its
weights: the kernel may page them back from disk, so a llama.cpp row says so beside its
mark. Rows that measured no host peak are ❓.
"""

from __future__ import annotations

from typing import Optional, Sequence

from bench.engines.openai.kinds import kinds
from bench.report.confdata import ConfData, HostClass
from bench.report.data import Row, engine_of, is_gpu, model_key, workload_label
from bench.report.fmt import MISSING, md_table, size
from bench.report.provenance import Sources, device_text
from bench.report.symbols import NO, TIGHT, UNKNOWN, peak_symbol

ABOVE_SHARE = f"{TIGHT} above the usable share"
MMAP = "mmap"


def maps_weights(row: Row) -> bool:
    """Whether llama.cpp held the row's weights, memory-mapped from its GGUF file: in
    process, or a server kind bench started on the file (the row's `server` names it)."""
    if row.get("engine") == "llamacpp":
        return True
    kind = kinds().get(str(row.get("server") or "").split(" ", 1)[0])
    return kind is not None and kind.runs_gguf


def host_header(host: HostClass) -> str:
    return f"{host.name} ({host.capacity_bytes / 2**30:.1f} of {host.ram_mib / 1024:.0f} GiB)"


def host_symbol(row: Row, host: HostClass) -> str:
    """The symbol of one row for one host class, from its measured peak or a host OOM."""
    peak = row.get("peak_host_rss_bytes")
    whole = host.ram_bytes
    mapped = f" ({MMAP})" if maps_weights(row) else ""
    if row.get("status") == "ok" and peak is not None:
        if int(peak) > whole:
            return NO + mapped
        if int(peak) > host.capacity_bytes:
            return ABOVE_SHARE + mapped
        return peak_symbol(int(peak), host.capacity_bytes)
    total: Optional[int] = row.get("device_total_bytes")
    if row.get("status") == "oom" and not is_gpu(row) and total is not None:
        return f"{NO} oom" if whole <= int(total) else UNKNOWN
    return UNKNOWN


def table(latest: Sequence[Row], conf: ConfData, sources: Sources) -> str:
    headers = [host_header(h) for h in conf.host_classes]
    records = []
    for row in sorted(latest, key=lambda r: (model_key(r), str(r.get("host")))):
        if row.get("status") not in ("ok", "oom"):
            continue
        record = {"Model": str(row.get("model")), "Engine": engine_of(row),
                  "Quant": str(row.get("quant")), "Workload": workload_label(row),
                  "Measured on": device_text(row),
                  "Peak host RAM": size(row.get("peak_host_rss_bytes")),
                  "Status": str(row.get("status")), "Source": sources.ref(row)}
        record.update({h: host_symbol(row, c)
                       for h, c in zip(headers, conf.host_classes, strict=True)})
        records.append(record)
    columns = ["Model", "Engine", "Quant", "Workload", "Status", "Peak host RAM", *headers,
               "Measured on", "Source"]
    return md_table(records, columns) if records else MISSING


def legend(conf: ConfData) -> str:
    basis = conf.host_classes[0].source if conf.host_classes else ""
    return (
        "Per host class with usable RAM C (RAM × the share one model process may use; "
        f"conf/host/: {basis}) and the row's measured peak resident memory P of the cell's "
        "process (weights, KV cache, buffers and the runtime: torch alone is ~450 MiB): "
        "✅ P ≤ 0.90·C · ⚠️ 0.90·C < P ≤ C · "
        f"{ABOVE_SHARE}: C < P ≤ the class's whole RAM (a weaker mark: it fits if the OS and "
        "other programs leave the room) · ❌ P above the whole RAM, or ran out of host memory "
        "on a machine with no more RAM than the class has (the only hard limit; it assumes no "
        f"swap) · ❓ not measured. ({MMAP}): llama.cpp memory-maps its weights, so the kernel "
        "may page them from disk instead of holding them (slowly): P counts the pages it "
        "held. A GPU row's host peak is what that engine kept in host RAM while the model ran "
        "on the GPU.")
