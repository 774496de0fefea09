"""Throughput against latency per model x engine: what concurrent clients of each engine
saw (the picture vLLM's serving benchmark and GuideLLM draw), beside its memory.

Every ok row with a throughput is a point: servers at each `workload.concurrency` measured,
in-process engines at one client. Rows are grouped by model, weights, engine (with its
server), scheme and per-request workload; within a group, by clients.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from bench.report.data import (
    Row,
    concurrency_of,
    device_peak,
    engine_of,
    fallback_mark,
    is_gpu,
    is_text,
    model_key,
)
from bench.report.fmt import MISSING, md_table, num, size
from bench.report.provenance import Sources

COLUMNS = ("Model", "Engine", "Quant", "Request", "Clients", "Throughput tok/s", "Requests/s",
           "TTFT p50 ms", "TTFT p90 ms", "ITL p50 ms", "ITL p90 ms", "ITL p99 ms",
           "Decode tok/s per request", "Server's own decode tok/s (÷ client's)", "E2E p50 ms",
           "Errors", "Peak memory", "KV cache (server)", "Slots", "Source")


def _request(row: Row) -> str:
    return f"{row.get('prompt_tokens')}+{row.get('new_tokens')} tok"


def series(latest: Sequence[Row]) -> dict[tuple[Any, ...], list[Row]]:
    """(model, weights, engine, quant, request, device) -> its rows by clients."""
    out: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for row in sorted(latest, key=model_key):
        if row.get("status") != "ok" or not is_text(row) or row.get("throughput_tok_s") is None:
            continue
        key = (str(row.get("model")), str(row.get("weights")), engine_of(row),
               str(row.get("quant")), _request(row), str(row.get("device_name")))
        out[key].append(row)
    return {k: sorted(v, key=concurrency_of) for k, v in out.items()}


def _memory(row: Row) -> str:
    if is_gpu(row):
        return size(device_peak(row)[0]) + " device"
    peak = row.get("peak_host_rss_bytes")
    return size(peak) + " host" if peak is not None else MISSING


def _kv(row: Row) -> str:
    tokens = row.get("server_kv_cache_tokens")
    if tokens is None:
        return MISSING
    seqs = row.get("server_max_concurrency")
    return f"{tokens:,} tok" + (f" ({seqs:.1f}× max-length sequences)" if seqs else "")


def _server_own(row: Row) -> str:
    """The engine's own decode rate (llama-server's `timings`, llama.cpp's perf counters)
    and its ratio to what the client measured: above 1, the time the client saw includes
    more than the server's decoding (HTTP, streaming, scheduling)."""
    own, client = row.get("engine_decode_tok_s"), row.get("decode_tok_s")
    if own is None:
        return MISSING
    return num(own) + (f" (× {own / client:.2f})" if client else "")


def _slots(row: Row) -> str:
    """llama-server's slots, context per slot, and what they held while timed."""
    slots = row.get("server_slots")
    if slots is None:
        return MISSING
    parts = [f"{slots} × {row['server_slot_ctx']:,} tok" if row.get("server_slot_ctx")
             else f"{slots}"]
    if row.get("server_deferred_max") is not None:
        parts.append(f"deferred ≤ {row['server_deferred_max']}")
    if row.get("server_kv_use_max") is not None:
        parts.append(f"KV ≤ {100 * row['server_kv_use_max']:.0f} %")
    if row.get("server_busy_slots_per_decode") is not None:
        parts.append(f"{row['server_busy_slots_per_decode']:.2f} slots/decode")
    return ", ".join(parts)


def _errors(row: Row) -> str:
    n = row.get("request_errors") or 0
    short = row.get("tokens_short") or 0
    parts = [f"{n} failed"] if n else []
    if short:
        parts.append(f"{short} tokens short")
    return ", ".join(parts) or "0"


def table(latest: Sequence[Row], sources: Sources) -> str:
    records = []
    for (model, _, engine, quant, request, _), rows in series(latest).items():
        for row in rows:
            records.append({
                "Model": model, "Engine": engine, "Quant": quant + fallback_mark(row),
                "Request": request,
                "Clients": str(concurrency_of(row)),
                "Throughput tok/s": num(row.get("throughput_tok_s")),
                "Requests/s": num(row.get("requests_per_s"), 2),
                "TTFT p50 ms": num(row.get("ttft_ms")), "TTFT p90 ms": num(row.get("ttft_ms_p90")),
                "ITL p50 ms": num(row.get("itl_ms_p50"), 2),
                "ITL p90 ms": num(row.get("itl_ms_p90"), 2),
                "ITL p99 ms": num(row.get("itl_ms_p99"), 2),
                "Decode tok/s per request": num(row.get("decode_tok_s")),
                "Server's own decode tok/s (÷ client's)": _server_own(row),
                "E2E p50 ms": num(row.get("e2e_ms_p50")), "Errors": _errors(row),
                "Peak memory": _memory(row), "KV cache (server)": _kv(row),
                "Slots": _slots(row),
                "Source": sources.ref(row)})
    return md_table(records, COLUMNS) if records else "_(no row has a throughput yet)_"


def plots_of(latest: Sequence[Row], out_dir: Path) -> list[Any]:
    """Throughput vs TTFT and vs inter-token latency, a line per engine, per model."""
    from bench.report import plots

    groups = series(latest)
    by_model: dict[str, list[tuple[tuple[Any, ...], list[Row]]]] = defaultdict(list)
    for key, rows in groups.items():
        by_model[key[0]].append((key, rows))
    made = []
    for model, lines in sorted(by_model.items()):
        with plots.style():
            fig = plots.figure(9, 4.4)
            axes = fig.subplots(1, 2)
            for (_, _, engine, quant, request, _device), rows in lines:
                label = f"{engine} · {quant} · {request} · {plots.short_device(rows[0])}"
                xs = [float(r["throughput_tok_s"]) for r in rows]
                for ax, column in zip(axes, ("ttft_ms", "itl_ms_p50"), strict=True):
                    ys = [float(r[column]) if r.get(column) is not None else float("nan")
                          for r in rows]
                    ax.plot(xs, ys, marker="o", label=label)
                    for x, y, r in zip(xs, ys, rows, strict=True):
                        ax.annotate(str(concurrency_of(r)), (x, y), fontsize=7,
                                    textcoords="offset points", xytext=(3, 3))
            for ax, what in zip(axes, ("TTFT median ms (log scale)",
                                       "inter-token latency median ms"), strict=True):
                ax.set_xlabel("throughput, generated tok/s (all clients)")
                ax.set_ylabel(what)
                ax.grid(True, alpha=0.3)
            axes[0].set_yscale("log")  # queueing makes it grow by orders of magnitude
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncols=2)
            fig.suptitle(f"{model}: throughput vs latency (labels: clients at once)")
            path = plots.save(fig, out_dir / f"serving-{plots.safe_name(model)}.png")
        made.append(plots.Plot(path, f"{model}: throughput vs latency per engine"))
    return made


LEGEND = (
    "One line per model × engine (openai:<server> for servers: openai:llama_server is "
    "llama.cpp's own llama-server, parallel slots with continuous batching; "
    "openai:llama_cpp is llama-cpp-python's server, one request at a time) × scheme × request "
    "(prompt+generated tokens) × device. Clients: workload.concurrency, each sending the "
    "request back-to-back (in-process engines: one). Throughput: tokens generated by all "
    "clients over the wall time from the first request sent to the last one done. TTFT and "
    "E2E (request sent to last byte) per request, ITL = gap between streamed tokens, all "
    "over every timed request; Decode tok/s per request is the median request's rate after "
    "its first token. Errors: failed requests and tokens not generated (rates count only "
    "generated tokens). Peak memory: the model's processes (a server's whole tree). KV "
    "cache: what the server says it made room for (vLLM). Server's own decode tok/s: the "
    "median request's rate by the engine's own counters (llama-server's `timings`, "
    "llama.cpp's perf context; raw sums in the row's engine_timings), × its ratio to the "
    "client's figure. Slots (llama-server): slots × context per slot, the most requests "
    "waiting for a slot at once and the largest share of the slots' context held while "
    "timed (sampled every 0.25 s from /metrics and /slots), and slots advanced per decode "
    "call (continuous batching; 1.00 = one sequence at a time)."
)
