"""The report (issue 5): real rows written by bench.results.store.write_row, real report code,
no mocks.

Every expected figure below is computed by hand from the rows the test writes and the conf/
data files (GPU classes, architecture facts, published claims).
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.core.errors import BenchInputError
from bench.core.intervals import wilson
from bench.core.schema import ARROW_SCHEMA
from bench.report import build_report, generate
from bench.report.claims import SOURCE_TITLES as CLAIM_TITLES
from bench.report.claims import claim_error
from bench.report.confdata import load_conf, match_device
from bench.report.context import least_squares
from bench.report.data import load_rows
from bench.report.regressions import find, find_all
from bench.report.symbols import NO, OK, TIGHT, peak_symbol
from bench.results.store import row_path
from tests.report_rows import A100_40_TOTAL, CPU, MIB, cap, col, make_row, write

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
C_4090 = cap("rtx4090-24gb")
C_5090 = cap("rtx5090-32gb")
C_3060 = cap("rtx3060-12gb")
C_LAPTOP = cap("laptop-8gb")


# ---------------------------------------------------------------- markdown helpers

def md_tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table of a file as a list of {header: cell} rows."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif block:
            header, rows = block[0], block[2:]
            tables.append([dict(zip(header, r, strict=True)) for r in rows])
            block = []
    return tables


def under(text: str, *headings: str) -> str:
    """The part of a markdown file below each heading in turn (`## table-a`, then `### LLM`),
    up to the next heading of the same level or higher."""
    for heading in headings:
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines)
                     if line.lstrip("#").startswith(" ") and line.lstrip("#").strip() == heading)
        level = len(lines[start]) - len(lines[start].lstrip("#"))
        end = next((i for i in range(start + 1, len(lines))
                    if (m := re.match(r"(#+) ", lines[i])) and len(m.group(1)) <= level),
                   len(lines))
        text = "\n".join(lines[start + 1:end])
    return text


def find_row(table: list[dict[str, str]], **match: str) -> dict[str, str]:
    hits = [r for r in table if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, f"{match}: {len(hits)} rows in {[list(r.values())[:4] for r in table]}"
    return hits[0]


def page(reports: Path, name: str, index: int = 0) -> list[dict[str, str]]:
    return md_tables((reports / name).read_text(encoding="utf-8"))[index]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.report", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- a realistic results dir

def write_rich(results: Path) -> None:
    """Several models, quants, hosts and nights; emulated, oom, error, skipped, CPU rows."""
    for night, tok in enumerate((40.0, 40.5, 39.5)):  # history within noise
        write(results, night, weights_bytes=13_476_839_424, peak_device_bytes=14_400_000_000,
              peak_reserved_bytes=14_000_000_000, peak_host_rss_bytes=20_000_000_000,
              ttft_ms=45.0, decode_tok_s=tok, decode_tok_s_stdev=0.5, mmlu_acc=0.46,
              mmlu_stderr=0.004, mmlu_n=14042, eval_set="full", humaneval_pass1=0.125,
              humaneval_n=164)
    write(results, 2, quant="bnb-nf4", weights_bytes=3_800_000_000,
          peak_device_bytes=4_500_000_000, decode_tok_s=25.0, mmlu_acc=0.45,
          mmlu_stderr=0.004, mmlu_n=14042, eval_set="full")
    write(results, 2, gpu_class="rtx4090-24gb", emulated=True, weights_bytes=13_476_839_424,
          peak_device_bytes=14_300_000_000, decode_tok_s=39.0)
    write(results, 2, model="llama2-13b", gpu_class="rtx4090-24gb", emulated=True,
          status="oom", error="CUDA out of memory. Tried to allocate 100.00 MiB")
    write(results, 2, model="llama2-13b", quant="bnb-int8", status="error",
          error="RuntimeError: boom | pipe", error_detail="Traceback ...")
    write(results, 2, model="llama2-70b", status="oom", error="CUDA out of memory")
    write(results, 2, model="llama2-70b", quant="bnb-nf4", weights_bytes=36_000_000_000,
          peak_device_bytes=38_500_000_000, decode_tok_s=12.0)
    write(results, 2, model="tiny-llama", weights="tiny", quant="fp32", eval_set="offline",
          weights_bytes=16_786_432, peak_host_rss_bytes=400_000_000, decode_tok_s=200.0,
          mmlu_acc=0.25, mmlu_stderr=0.01, mmlu_n=1000, **CPU)
    write(results, 2, model="tiny-llama", weights="tiny", quant="bnb-nf4", status="skipped",
          error="needs CUDA: quant=bnb-nf4 runs on CUDA devices only", **CPU)
    write(results, 2, host="a100-box", quant="bf16", device_name="NVIDIA A100-SXM4-40GB",
          device_total_bytes=A100_40_TOTAL, weights_bytes=13_476_839_424,
          peak_device_bytes=None, peak_reserved_bytes=14_100_000_000, decode_tok_s=60.0)
    write(results, 2, host="l40s-box", quant="fp32", device_name="NVIDIA L40S",
          device_total_bytes=48_305_799_168, weights_bytes=26_953_662_464,
          peak_device_bytes=28_000_000_000, decode_tok_s=50.0)


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rich")
    write_rich(root / "results")
    build_report(root / "results", root / "reports")
    return root / "results", root / "reports"


def test_every_table_and_plot_is_linked_from_the_index(rich: tuple[Path, Path]) -> None:
    _, reports = rich
    index = (reports / "README.md").read_text(encoding="utf-8")
    glance = md_tables(index)[0]  # the headline table: symbols per class, details linked
    assert find_row(glance, Model="llama2-7b (synthetic)", Quant="bnb-nf4")[
        col("laptop-8gb")] == OK
    for name in ("compatibility.md", "context.md", "claims.md", "roofline.md", "history.md",
                 "regressions.md", "measurements.md", "figures.md"):
        assert f"]({name})" in index and (reports / name).is_file()
    pngs = sorted((reports / "figures").glob("*.png"))
    assert {p.name for p in pngs} >= {"decode-speed.png", "accuracy-llama2-7b-synthetic.png"}
    for png in pngs:
        assert f"(figures/{png.name})" in index
        assert png.read_bytes().startswith(b"\x89PNG")
        assert b"matplotlib" not in png.read_bytes()  # no "Software" metadata
    for name in ("compatibility.md", "context.md", "claims.md", "roofline.md"):
        text = (reports / name).read_text(encoding="utf-8")
        assert "**Legend.**" in text and "Built from:" in text


# ---------------------------------------------------------------- table 1: symbols

def test_peak_symbol_boundaries_on_real_classes() -> None:
    for c in (g.capacity_bytes for g in load_conf(CONF).gpu_classes):
        nine_tenths = 9 * c // 10  # floor(0.9·C): the largest peak that is still ✅
        assert peak_symbol(nine_tenths, c) == OK
        assert peak_symbol(nine_tenths + 1, c) == TIGHT
        assert peak_symbol(c, c) == TIGHT
        assert peak_symbol(c + 1, c) == NO
    assert C_3060 == 12026 * MIB  # 0.9 × 12026 MiB = 11349157478.4
    assert peak_symbol(11_349_157_478, C_3060) == OK
    assert peak_symbol(11_349_157_479, C_3060) == TIGHT
    # a margin smaller than what the samples may have missed is ⚠️, not ✅
    assert peak_symbol(11_349_157_478 - 100, C_3060, unseen=100) == OK
    assert peak_symbol(11_349_157_478 - 100, C_3060, unseen=101) == TIGHT
    assert peak_symbol(2**30, C_LAPTOP, unseen=None) == TIGHT  # no upper bound: ⚠️ at best
    assert peak_symbol(C_LAPTOP + 1, C_LAPTOP, unseen=None) == NO


def _ten_gib_conf(tmp_path: Path) -> Path:
    """conf/ with one extra class whose 0.9·C is an exact integer (10240 MiB)."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "gpu" / "test-10g.yaml").write_text("name: test-10g\nvram_mib: 10240\n")
    return conf


def test_symbols_at_exact_boundaries_in_the_table(tmp_path: Path) -> None:
    conf, results, reports = _ten_gib_conf(tmp_path), tmp_path / "r", tmp_path / "out"
    cap = 10240 * MIB
    assert 9 * cap % 10 == 0
    peaks = {100: 9 * cap // 10, 200: 9 * cap // 10 + 1, 300: cap, 400: cap + 1}
    for prompt, peak in peaks.items():
        write(results, prompt_tokens=prompt, peak_device_bytes=peak)
    build_report(results, reports, conf_dir=conf)
    table = page(reports, "compatibility.md")
    column = "test-10g (10.0 GiB)"
    got = {p: find_row(table, Workload=f"b1 · {p}+128 tok")[column] for p in peaks}
    assert got == {100: OK, 200: TIGHT, 300: TIGHT, 400: NO}


def test_changing_one_measured_peak_changes_its_symbol(tmp_path: Path) -> None:
    results, reports = tmp_path / "r", tmp_path / "out"
    column = col("rtx4090-24gb")
    write(results, peak_device_bytes=9 * C_4090 // 10)
    build_report(results, reports)
    assert find_row(page(reports, "compatibility.md"), Quant="fp16")[column] == OK
    write(results, peak_device_bytes=9 * C_4090 // 10 + 1)  # same cell and run: overwritten
    build_report(results, reports)
    assert find_row(page(reports, "compatibility.md"), Quant="fp16")[column] == TIGHT


def test_oom_is_no_up_to_its_capacity_and_unknown_above(rich: tuple[Path, Path]) -> None:
    table = page(rich[1], "compatibility.md")
    capped = find_row(table, Model="llama2-13b (synthetic)", Quant="fp16")
    assert [capped[h] for h in (col("laptop-8gb"), col("rtx3060-12gb"),
                                col("rtx4090-24gb"))] == ["❌ oom"] * 3
    assert [capped[h] for h in (col("rtx5090-32gb"), col("a100-40gb"),
                                col("h100-80gb"), col("a100-80gb"))] == ["❓"] * 4
    assert capped["Status"].startswith("oom: CUDA out of memory")
    local = find_row(table, Model="llama2-70b (synthetic)", Quant="fp16")  # H100: 81559 MiB
    assert local[col("h100-80gb")] == "❌ oom" and local[col("a100-80gb")] == "❓"


def test_failures_cpu_rows_and_provenance_are_shown(rich: tuple[Path, Path]) -> None:
    reports = rich[1]
    table = page(reports, "compatibility.md")
    error = find_row(table, Model="llama2-13b (synthetic)", Quant="bnb-int8")
    assert error["Status"] == "error: RuntimeError: boom \\| pipe"
    skipped = find_row(table, Model="tiny-llama (tiny)", Quant="bnb-nf4")
    assert skipped["Status"] == "skipped: needs CUDA: quant=bnb-nf4 runs on CUDA devices only"
    cpu = find_row(table, Model="tiny-llama (tiny)", Quant="fp32")
    assert cpu[col("rtx4090-24gb")] == "❓" and cpu["Decode tok/s"] == "200.0"
    # a GPU-measured row speaks for the group; the uncapped device before the emulated one
    fp16 = find_row(table, Model="llama2-7b (synthetic)", Quant="fp16")
    assert fp16["Measured on"] == "NVIDIA H100 80GB HBM3"
    assert fp16["Peak device"] == "13.41 GiB" and fp16["Decode tok/s"] == "39.5 ± 0.5"
    mmlu_ci, humaneval_ci = wilson(0.46, 14042), wilson(0.125, 164)
    assert fp16["MMLU"] == (f"0.4600 ± 0.0040 [{mmlu_ci[0]:.3f}, {mmlu_ci[1]:.3f}] "
                            f"(n=14042)")
    assert fp16["HumanEval"] == (f"0.1250 ± {math.sqrt(0.125 * 0.875 / 164):.4f} "
                                 f"[{humaneval_ci[0]:.3f}, {humaneval_ci[1]:.3f}] (n=164)")
    assert find_row(table, Quant="bnb-nf4", Model="llama2-7b (synthetic)")[
        "Δ accuracy vs best precision"] == "MMLU −1.00 pp vs fp16"
    reserved = find_row(table, Quant="bf16", **{"Measured on": "NVIDIA A100-SXM4-40GB"})
    assert reserved["Peak device"] == "13.13 GiB †"
    text = (reports / "compatibility.md").read_text(encoding="utf-8")
    src = re.search(r"\[(\d+)\]\(#src-\d+\)", fp16["Source"]).group(1)
    entry = next(line for line in text.splitlines() if f'id="src-{src}"' in line)
    for fact in ("run `2025-03-03`", "host `gpu-box`", "NVIDIA H100 80GB HBM3", "git `0123abcd`",
                 "torch 2.13.0", "transformers 5.23.0", "bitsandbytes 0.49.1", "cuda 12.8",
                 "driver 570.124.06", "cell `llama2-7b_fp16_local_b1_512_128`"):
        assert fact in entry
    assert "(emulated rtx4090-24gb: allocator capped)" in text
    measured = page(reports, "measurements.md")
    assert len(measured) == 11  # every newest row, failures and skips included


def test_offload_column_and_missing_columns_are_tolerated(tmp_path: Path) -> None:
    """Offload rows are classed apart, and a file lacking newer columns still reads."""
    results, reports = tmp_path / "r", tmp_path / "out"
    write(results, model="llama2-13b", gpu_class="rtx4090-24gb", emulated=True, status="oom")
    write(results, model="llama2-13b", gpu_class="rtx4090-24gb", emulated=True,
          cell="llama2-13b_offload", peak_device_bytes=20 * 2**30, offload=True)
    old = make_row(quant="bnb-nf4", cell="old-file", peak_device_bytes=5 * 2**30)
    keep = [n for n in ARROW_SCHEMA.names
            if n not in ("device", "decode_tok_s_stdev", "offload", "accuracy_key")]
    old_record = {k: v for k, v in dataclasses.asdict(old).items() if k in keep}
    pq.write_table(pa.Table.from_pylist([old_record], schema=pa.schema(
        [ARROW_SCHEMA.field(n) for n in keep])), row_path(results, old.run_id, old.cell_id))
    build_report(results, reports)
    table = page(reports, "compatibility.md")
    row = find_row(table, Model="llama2-13b (synthetic)")
    assert row[col("rtx4090-24gb")] == "⚠️ offload"  # OOM without, fits with offload
    assert row[col("rtx3060-12gb")] == "❌ oom"
    # nothing was measured on the bigger classes: no offload verdict is extrapolated there
    assert row[col("rtx5090-32gb")] == row[col("a100-40gb")] == "❓"
    assert find_row(table, Quant="bnb-nf4")[col("rtx4090-24gb")] == OK  # device inferred


# ---------------------------------------------------------------- table 2: max context

def test_max_context_equals_the_hand_computed_value(tmp_path: Path) -> None:
    results, reports = tmp_path / "r", tmp_path / "out"
    # batch 8, contexts 640 and 1664: slope 4e6 B/token, intercept 14e9 − 640 × 4e6 = 11.44e9
    write(results, batch_size=8, prompt_tokens=512, peak_device_bytes=14_000_000_000)
    write(results, batch_size=8, prompt_tokens=1536, peak_device_bytes=18_096_000_000)
    write(results, model="llama2-13b", peak_device_bytes=27_000_000_000)  # one context only
    build_report(results, reports)
    table = page(reports, "context.md")
    row = find_row(table, Model="llama2-7b", Batch="8")
    assert row["Contexts measured (tokens)"] == "640, 1664"
    assert row["Measured slope"] == f"{4e6 / 1024:.1f} KiB/token"
    assert row["Intercept"] == f"{11.44e9 / 2**30:.2f} GiB"
    analytic = 2 * 32 * 32 * (4096 // 32) * 2 * 8  # layers, KV heads, head dim, fp16, batch
    assert row["Analytic KV cache"] == f"{analytic / 1024:.1f} KiB/token"
    assert row["Measured ÷ analytic"] == f"{4e6 / analytic:.2f}"
    assert row[col("rtx3060-12gb")] == f"{(C_3060 - 11_440_000_000) // 4_000_000:,}"
    assert row[col("rtx3060-12gb")] == "292"  # (12,026 MiB − 11.44e9) ÷ 4e6
    assert row[col("rtx4090-24gb")] == "3,476"
    assert row[col("rtx5090-32gb")] == "4,096 (model max)"  # 5559 > 4096
    assert row[col("laptop-8gb")] == "❌ 0"
    single = find_row(table, Model="llama2-13b")
    assert single["Measured slope"] == "❓ missing (1 context length)"
    assert single["Analytic KV cache"] == f"{2 * 40 * 40 * 128 * 2 / 1024:.1f} KiB/token"
    assert single[col("rtx4090-24gb")] == "❓"


def test_least_squares_through_three_points() -> None:
    fit = least_squares([(100, 1_000), (200, 2_100), (300, 2_900)])
    assert fit is not None and fit.slope == pytest.approx(9.5)
    assert fit.intercept == pytest.approx(2000 - 9.5 * 200)
    assert least_squares([(100, 1), (100, 2)]) is None


# ---------------------------------------------------------------- table 3: claims

def test_claim_errors_equal_the_hand_computed_values(rich: tuple[Path, Path]) -> None:
    text = (rich[1] / "claims.md").read_text(encoding="utf-8")
    a, b, c, d = (md_tables(under(text, title, "LLM"))[0] for title in (
        CLAIM_TITLES["table-a"], CLAIM_TITLES["table-b"], CLAIM_TITLES["table-c"],
        CLAIM_TITLES["table-d"]))
    llama7 = find_row(a, Claim="Llama 2 7B")  # claimed 12 GB, measured 14.4 GB (fp16)
    assert llama7["Compared with"] == "llama2-7b fp16"
    assert llama7["Measured peak device"] == "14.40 GB"
    assert (llama7["Claim error"], llama7["Relative error"]) == ("−2.40 GB", "−16.7%")
    assert llama7["rtx4090-24gb: claim / measured"] == "✅ / ✅"
    assert "bnb-nf4 4.50 GB" in llama7["Other quants measured"]
    llama70 = find_row(a, Claim="Llama 2 70B")
    # a ✅ on 32 GB needs at most 3.52 bits per weight (embeddings quantized too): fp16 cannot
    assert llama70["rtx5090-32gb: claim / measured"] == "✅ / ❌ oom ≠ · ≤ 3.52 bpw"
    assert find_row(a, Claim="Mixtral 8x7B")["Measured peak device"] == "❓ not measured"
    ram = find_row(b, Claim="Llama 2 7B")  # 6 GB VRAM / 16 GB RAM vs 14.4 GB / 20 GB
    assert (ram["Claim error"], ram["Relative error"]) == ("−8.40 GB", "−58.3%")
    assert ram["RAM claim error"] == "−4.00 GB"
    nf4 = find_row(c, Claim="65-70B class", **{"Claimed precision": "4bit"})
    assert nf4["Compared with"] == "llama2-70b bnb-nf4"
    assert (nf4["Claim error"], nf4["Relative error"]) == ("−5.50 GB", "−14.3%")
    seven = find_row(c, Claim="7B class (LLaMA-7B)", **{"Claimed precision": "fp16"})
    assert (seven["Claim error"], seven["Relative error"]) == ("−0.40 GB", "−2.8%")
    assert all(r["Measured weights_bytes"] == "❓ not measured" for r in d)
    assert claim_error(35, 40, 37) == 0 and claim_error(35, 40, 42) == -2
    assert claim_error(35, 40, 30) == 5


def test_each_claim_stands_beside_its_lower_bound(tmp_path: Path) -> None:
    """The claims the bound refutes before anything is measured, with the issue's figures:
    Llama 2 7B "12 GB" is below its fp16 weights (13.48 GB); Llama 3.1 405B "120 GB" holds
    only at about 2.2 bits per weight (2.37 with the embeddings quantized) and a ✅ on an
    A100 40GB would need under 0.9, below every scheme bench has; "13 GB" for 13B int8
    (13.34) and "7 GB" for 7B int8 (7.0006) hold within half a unit of their last digit."""
    (tmp_path / "results").mkdir()
    build_report(tmp_path / "results", tmp_path / "reports")
    text = (tmp_path / "reports" / "claims.md").read_text(encoding="utf-8")
    a, c, d = (md_tables(under(text, CLAIM_TITLES[t], "LLM"))[0]
               for t in ("table-a", "table-b", "table-d")[:1] + ("table-c", "table-d"))
    bits = "Most bits/weight for the claim (embeddings at dtype / quantized)"
    seven = find_row(a, Claim="Llama 2 7B")
    assert seven["Lower bound"] == "≥ 13.48 GB"
    assert seven["Bound vs claim"] == "❌ impossible at fp16 (bound above 12.5 GB)"
    assert seven["Bound counts"] == "weights + KV of b1 · 1 token"
    big = find_row(a, Claim="Llama 3.1 405B")
    assert big[bits] == "2.22 / 2.37"
    assert big["a100-40gb: claim / measured"].endswith("bpw ❌ refuted at every scheme")
    # its claimed ❌ on a 24 GB card: not even the fewest bits fit, so the bound proves it
    assert big["rtx4090-24gb: claim / measured"] == "❌ / ❓ · ❌ proved at every scheme"
    # Llama 2 70B's ❌ on 24 GB holds at fp16, yet 2.3 bits per weight could fit
    assert find_row(a, Claim="Llama 2 70B")["rtx4090-24gb: claim / measured"].startswith(
        "❌ / ❓ · ≤ 2.")
    assert find_row(a, Claim="Llama 2 70B")[bits] == "4.55 / 4.64"
    int8 = {"Claimed precision": "int8"}
    assert find_row(c, Claim="13B class (LLaMA-13B)", **int8)["Bound vs claim"] == (
        "possible (bound within 13.5 GB)")
    assert find_row(c, Claim="7B class (LLaMA-7B)", **int8)["Lower bound"] == "≥ 7.00 GB"
    assert find_row(c, Claim="7B class (LLaMA-7B)", **int8)["Bound vs claim"].startswith(
        "possible")
    assert find_row(c, Claim="30B class (LLaMA-30B)", **int8)["Bound vs claim"].startswith(
        "❌ impossible at bnb-int8")
    # table-d: a weights footprint, against the weights alone
    footprint = find_row(d, Claim="Gemma 3 4B (weights footprint)",
                         **{"Claimed precision": "bf16"})
    assert footprint["Bound counts"] == "weights only"
    assert footprint["Lower bound (weights)"] == "≥ 8.60 GB"
    multimodal = md_tables(under(text, CLAIM_TITLES["table-a"], "Multimodal (vision-language)"))[0]
    assert find_row(multimodal, Claim="Kosmos-3")["Lower bound"] == "—"


# ---------------------------------------------------------------- table 4: roofline

def test_roofline_fraction_and_device_matching(rich: tuple[Path, Path]) -> None:
    conf = load_conf(CONF)
    assert match_device(conf, "NVIDIA A100-SXM4-40GB").name == "a100-40gb"
    assert match_device(conf, "NVIDIA A100-SXM4-80GB").name == "a100-80gb"
    assert match_device(conf, "NVIDIA H100 80GB HBM3").name == "h100-80gb"
    assert match_device(conf, "NVIDIA GeForce RTX 4090").name == "rtx4090-24gb"
    assert match_device(conf, "NVIDIA H200").name == "h200-141gb"
    assert match_device(conf, "NVIDIA L4") is None
    table = page(rich[1], "roofline.md")
    a100 = find_row(table, **{"Measured on": "NVIDIA A100-SXM4-40GB"})
    step = 13_476_839_424 + 2 * 32 * 32 * 128 * 2 * (512 + 128 / 2)
    roof = 1555e9 / step
    assert a100["Roofline steps/s"] == f"{roof:.1f}"
    assert a100["Fraction of roofline"] == f"{100 * 60.0 / roof:.1f}%"
    unknown = find_row(table, **{"Measured on": "NVIDIA L40S"})  # no class says its bandwidth
    assert unknown["Fraction of roofline"] == "❓" and unknown["Bandwidth"].startswith("❓")


# ---------------------------------------------------------------- table 6: regressions

def _history(results: Path, newest: dict, **common: object) -> None:
    stdev = newest.get("decode_tok_s_stdev", 1.0)  # the same spread on every night
    for night, tok in enumerate((100.0, 101.0, 99.0, 100.0)):
        write(results, night, decode_tok_s=tok, decode_tok_s_stdev=stdev,
              peak_device_bytes=10 * 2**30, mmlu_acc=0.46, mmlu_stderr=0.004, **common)
    base = dict(decode_tok_s=100.0, decode_tok_s_stdev=stdev, peak_device_bytes=10 * 2**30,
                mmlu_acc=0.46, mmlu_stderr=0.004)
    write(results, 4, **{**base, **common, **newest})


@pytest.mark.parametrize("newest, kinds", [
    ({"decode_tok_s": 95.5}, []),                      # −4.5 < max(3 × 1, 5 % of 100)
    ({"decode_tok_s": 94.0}, ["speed"]),               # −6 > 5
    ({"decode_tok_s": 94.0, "decode_tok_s_stdev": 3.0}, []),  # 3 × 3 > 6: within noise
    ({"peak_device_bytes": 10 * 2**30 + 200 * MIB}, []),          # < 2 % of 10 GiB
    ({"peak_device_bytes": 10 * 2**30 + 210 * MIB}, ["memory"]),  # > 204.8 MiB
    ({"mmlu_acc": 0.45}, []),                          # 0.01 < 2 × √2 × 0.004 = 0.0113
    ({"mmlu_acc": 0.44}, ["accuracy"]),
    ({"status": "oom", "error": "CUDA out of memory"}, ["status"]),
])
def test_regressions_beyond_noise_only(tmp_path: Path, newest: dict, kinds: list[str]) -> None:
    _history(tmp_path, newest)
    assert [r.kind for r in find(load_rows(tmp_path))] == kinds


def test_small_memory_changes_use_the_16_mib_floor(tmp_path: Path) -> None:
    for night, rss in enumerate((100 * MIB, 100 * MIB, 110 * MIB)):
        write(tmp_path / "a", night, peak_host_rss_bytes=rss, **CPU)
    for night, rss in enumerate((100 * MIB, 100 * MIB, 120 * MIB)):
        write(tmp_path / "b", night, peak_host_rss_bytes=rss, **CPU)
    assert find(load_rows(tmp_path / "a")) == []
    assert [r.kind for r in find(load_rows(tmp_path / "b"))] == ["memory"]


def test_fail_on_regression_exit_codes(tmp_path: Path) -> None:
    _history(tmp_path / "bad", {"decode_tok_s": 80.0, "peak_device_bytes": 11 * 2**30})
    _history(tmp_path / "good", {"decode_tok_s": 99.0})
    bad = run_cli(f"results_dir={tmp_path / 'bad'}", f"reports_dir={tmp_path / 'o1'}",
                  "--fail-on-regression")
    assert bad.returncode == 1, bad.stderr
    lines = [ln for ln in bad.stdout.splitlines() if ln.startswith("regression:")]
    assert len(lines) == 2 and "speed" in lines[1] and "memory" in lines[0]
    assert "| memory |" in (tmp_path / "o1" / "regressions.md").read_text(encoding="utf-8")
    plain = run_cli(f"results_dir={tmp_path / 'bad'}", f"reports_dir={tmp_path / 'o2'}")
    assert plain.returncode == 0, plain.stderr
    good = run_cli(f"results_dir={tmp_path / 'good'}", f"reports_dir={tmp_path / 'o3'}",
                   "--fail-on-regression")
    assert good.returncode == 0, good.stderr


def _sampled_history(results: Path, rng: "np.random.Generator", slowdown: float,
                     nights: int = 4, repeats: int = 10, cv: float = 0.03,
                     **newest: object) -> None:
    """`nights` earlier runs and a newest one, each with `repeats` decode samples around
    100 tok/s (Gaussian, coefficient of variation `cv`); the newest is `slowdown` slower."""
    for night in range(nights + 1):
        mean = 100.0 * (1 - slowdown) if night == nights else 100.0
        samples = [float(x) for x in rng.normal(mean, cv * mean, repeats)]
        ttft = [float(x) for x in rng.normal(50.0, 1.0, repeats)]
        fields = dict(decode_tok_s=float(np.median(samples)), decode_tok_s_stdev=cv * mean,
                      decode_tok_s_samples=samples, ttft_ms=float(np.median(ttft)),
                      ttft_ms_samples=ttft, peak_device_bytes=10 * 2**30)
        write(results, night, **{**fields, **(newest if night == nights else {})})


@pytest.mark.parametrize("seed", range(10))
def test_a_real_ten_percent_slowdown_is_flagged_and_noise_is_not(tmp_path: Path,
                                                                 seed: int) -> None:
    """10 samples per run at 3 % noise: every seed flags the slowdown with p < 0.01, no seed
    flags the unchanged cell (the minimum effect keeps a noisy night from paging anyone)."""
    _sampled_history(tmp_path / "slow", np.random.default_rng(seed), slowdown=0.10)
    _sampled_history(tmp_path / "same", np.random.default_rng(seed), slowdown=0.0)
    slow = find(load_rows(tmp_path / "slow"))
    assert [r.kind for r in slow] == ["speed"]
    assert slow[0].p_value is not None and slow[0].p_value < 0.01
    assert "30 repeats" in slow[0].previous  # pooled: the 3 latest earlier runs
    assert find(load_rows(tmp_path / "same")) == []


def test_a_significant_change_below_the_minimum_effect_is_not_a_regression(
        tmp_path: Path) -> None:
    """3 % slower at 0.5 % noise is significant (p ≈ 1e-5) but under the 5 % minimum."""
    _sampled_history(tmp_path, np.random.default_rng(0), slowdown=0.03, cv=0.005)
    rows = load_rows(tmp_path)
    assert find(rows) == []
    _sampled_history(tmp_path / "b", np.random.default_rng(0), slowdown=0.06, cv=0.005)
    assert [r.kind for r in find(load_rows(tmp_path / "b"))] == ["speed"]


def test_slower_ttft_is_its_own_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    _sampled_history(tmp_path, rng, slowdown=0.0,
                     ttft_ms_samples=[float(x) for x in rng.normal(60.0, 1.0, 10)])
    regs = find(load_rows(tmp_path))
    assert [r.kind for r in regs] == ["ttft"] and regs[0].change.startswith("+")


def test_samples_override_the_threshold_rule_and_old_rows_fall_back(tmp_path: Path) -> None:
    """Rows without samples (written before they were stored) keep the noise threshold."""
    _history(tmp_path / "old", {"decode_tok_s": 94.0})
    (reg,) = find(load_rows(tmp_path / "old"))
    assert reg.p_value is None and "no samples stored" in reg.threshold


def test_a_changed_environment_is_not_compared_and_the_page_says_so(tmp_path: Path) -> None:
    """The newest run is 10 % slower but on a new torch: no speed regression against the
    old torch's runs; the regressions page lists the change. A later run on the new torch is
    compared with the new baseline only."""
    rng = np.random.default_rng(2)
    _sampled_history(tmp_path, rng, slowdown=0.10, torch="2.14.0")
    found = find_all(load_rows(tmp_path))
    assert found.regressions == []
    (change,) = found.environment_changes
    assert change.changes == ("torch 2.13.0 → 2.14.0",) and change.compared == 0
    reports = tmp_path / "reports"
    build_report(tmp_path, reports)
    table = page(reports, "regressions.md")
    assert find_row(table, **{"Changed since the previous run": "torch 2.13.0 → 2.14.0"})[
        "Speed and memory compared with"] == "nothing (a new baseline)"
    # two more nights on the new torch, the last one 10 % slower than the first
    samples = [float(x) for x in rng.normal(90.0, 2.7, 10)]
    write(tmp_path, 5, torch="2.14.0", decode_tok_s=90.0, decode_tok_s_samples=samples)
    slower = [float(x) for x in rng.normal(81.0, 2.4, 10)]
    write(tmp_path, 6, torch="2.14.0", decode_tok_s=81.0, decode_tok_s_samples=slower)
    found = find_all(load_rows(tmp_path))
    assert [r.kind for r in found.regressions] == ["speed"]
    assert "runs 2025-03-05, 2025-03-06" in found.regressions[0].previous
    assert found.environment_changes == []


def test_the_regression_table_shows_p_value_effect_and_a_busy_machine(tmp_path: Path) -> None:
    _sampled_history(tmp_path, np.random.default_rng(3), slowdown=0.10, timed_s=10.0,
                     foreign_cpu_s=6.0, load_avg=3.2)
    reports = tmp_path / "reports"
    build_report(tmp_path, reports)
    (reg,) = page(reports, "regressions.md")
    assert reg["Kind"] == "speed" and float(reg["p-value"]) < 0.01
    assert reg["Change"].startswith("−") and reg["Change"].endswith("%")
    assert "busy: other processes used 0.60 cores, load 3.2" in reg["Newest"]
    measured = page(reports, "measurements.md")
    assert measured[0]["Conditions"] == "busy: other processes used 0.60 cores, load 3.2"
    compat_table = page(reports, "compatibility.md")
    assert any("(busy: other processes used 0.60 cores, load 3.2)" in r.get("Decode tok/s", "")
               for r in compat_table)


# ---------------------------------------------------------------- CLI and determinism

def test_bad_key_and_missing_results_dir_exit_2_with_one_line(tmp_path: Path) -> None:
    bad = run_cli("result_dir=x")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "result_dir" in bad.stderr and "results_dir, reports_dir" in bad.stderr
    missing = run_cli(f"results_dir={tmp_path / 'nope'}", f"reports_dir={tmp_path / 'o'}")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "results_dir=" in missing.stderr and not (tmp_path / "o").exists()
    with pytest.raises(BenchInputError):
        generate(tmp_path / "nope", tmp_path / "o")


def test_same_inputs_give_the_same_bytes(rich: tuple[Path, Path], tmp_path: Path) -> None:
    results, reports = rich
    first = snapshot(reports)
    assert any(name.endswith(".png") for name in first) and len(first) >= 12
    build_report(results, reports)
    assert snapshot(reports) == first
    shutil.rmtree(reports)
    build_report(results, reports)
    assert snapshot(reports) == first
    fresh = run_cli(f"results_dir={results}", f"reports_dir={tmp_path / 'other'}")
    assert fresh.returncode == 0, fresh.stderr
    assert snapshot(tmp_path / "other") == first  # another process, another hash seed


def test_empty_results_dir(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    files = generate(tmp_path / "results", tmp_path / "reports")
    assert tmp_path / "reports" / "README.md" in files
    assert "No results yet" in (tmp_path / "reports" / "README.md").read_text(encoding="utf-8")
    assert "Published claims" in (tmp_path / "reports" / "claims.md").read_text(encoding="utf-8")


def test_an_offload_oom_says_nothing_of_smaller_classes(tmp_path: Path) -> None:
    """An offload run that ran out of memory under a 24 GiB budget is ❌ offload there, and
    nowhere else: the smaller classes were not measured."""
    results, reports = tmp_path / "r", tmp_path / "out"
    write(results, model="llama2-70b", gpu_class="rtx4090-24gb", emulated=True, status="oom",
          cell="llama2-70b_offload", offload=True)
    build_report(results, reports)
    row = find_row(page(reports, "compatibility.md"), Model="llama2-70b (synthetic)")
    assert row[col("rtx4090-24gb")] == "❌ offload"
    assert row[col("laptop-8gb")] == row[col("rtx3060-12gb")] == "❓"
    assert row[col("a100-80gb")] == "❓"


# ---------------------------------------------------------------- planned cells, the bound

def test_an_empty_results_dir_reports_what_the_bound_proves(tmp_path: Path) -> None:
    """Before anything is measured, the compatibility page lists the conf's sweeps with the
    certain verdicts: Llama 2 7B fp16 (>= 13.48 GB of weights) cannot fit 8 or 12 GB cards,
    Llama 3.1 405B fits no class at any scheme, ❓ where the bound decides nothing."""
    (tmp_path / "results").mkdir()
    build_report(tmp_path / "results", tmp_path / "reports")
    text = (tmp_path / "reports" / "compatibility.md").read_text(encoding="utf-8")
    planned = md_tables(under(text, "Planned, not measured yet: what the lower bound proves",
                              "LLM"))[0]
    heads = {g.name: f"{g.name} ({g.vram_mib / 1024:.1f} GiB)" for g in load_conf().gpu_classes}
    fp16 = find_row(planned, Model="llama2-7b", Quant="fp16")
    assert fp16["Lower bound"] == "≥ 13.81 GB" and fp16["Engine"] == "hf"
    assert fp16[heads["laptop-8gb"]] == fp16[heads["rtx3060-12gb"]] == "❌ certain"
    assert fp16[heads["rtx4090-24gb"]] == "❓"
    assert "6.74B params at float16" in fp16["Basis"] and "639 tokens" in fp16["Basis"]
    for quant in ("fp16", "bnb-int8", "bnb-nf4"):
        row = find_row(planned, Model="llama31-405b", Quant=quant)
        assert all(row[h] == "❌ certain" for h in heads.values()), row
    # 38.6 GB of nf4 weights and cache: above 90 % of an A100 40GB's 39.5 GiB, ✅ impossible
    assert find_row(planned, Model="llama31-70b", Quant="bnb-nf4")[heads["a100-40gb"]] == (
        "⚠️ at best")
    diffusion = md_tables(under(text, "Planned, not measured yet: what the lower bound proves",
                                "Diffusion (image and video generation)"))[0]
    assert find_row(diffusion, Model="sdxl-base", Quant="fp16")["Basis"].startswith(
        "weights only")
    assert "no offload" in text and "prompt + new − 1" in text


def test_a_measured_cell_replaces_its_planned_one_and_a_row_below_its_bound_is_flagged(
        tmp_path: Path) -> None:
    results = tmp_path / "results"
    write(results, weights_bytes=13_476_839_424, peak_device_bytes=14_400_000_000,
          predicted_weights_bytes=13_476_831_232, predicted_peak_bytes=13_811_851_264)
    write(results, quant="bnb-nf4", weights_bytes=1_000_000_000, peak_device_bytes=3_000_000_000,
          predicted_weights_bytes=3_762_000_000, predicted_peak_bytes=4_097_443_840)
    build_report(results, tmp_path / "reports")
    text = (tmp_path / "reports" / "compatibility.md").read_text(encoding="utf-8")
    planned = md_tables(under(text, "Planned, not measured yet: what the lower bound proves",
                              "LLM"))[0]
    assert not [r for r in planned if r["Model"] == "llama2-7b" and r["Quant"] in
                ("fp16", "bnb-nf4")]  # measured: the measured table speaks for them
    assert find_row(planned, Model="llama2-7b", Quant="bnb-int8")
    measured = md_tables(under(text, "LLM"))[0]
    nf4 = find_row(measured, Model="llama2-7b (synthetic)", Quant="bnb-nf4")
    assert "❗ below its lower bound (weights 953.7 MiB, bound 3.50 GiB)" in nf4["Status"]
    assert "(device peak 2.79 GiB, bound 3.82 GiB)" in nf4["Status"]
    assert "below its lower bound" not in find_row(measured, Model="llama2-7b (synthetic)",
                                                   Quant="fp16")["Status"]


def test_host_classes_are_certain_only_against_the_whole_ram() -> None:
    """The usable share (60 % of a 16 GiB desktop) is advice, the whole RAM a limit."""
    from bench.report.confdata import HostClass
    from bench.report.hostfit import ABOVE_SHARE, host_symbol

    desktop = HostClass("desktop-16gb", 16384, 0.6, "")
    gib = 2**30

    def ok(peak: float, engine: str = "hf") -> dict:
        return {"status": "ok", "peak_host_rss_bytes": int(peak * gib), "engine": engine}

    assert host_symbol(ok(8), desktop) == OK  # 8 <= 0.9 x 9.6
    assert host_symbol(ok(9.5), desktop) == TIGHT
    assert host_symbol(ok(12), desktop) == ABOVE_SHARE  # above 9.6, within 16: not a ❌
    assert host_symbol(ok(17), desktop) == NO
    assert host_symbol(ok(12, "llamacpp"), desktop) == f"{ABOVE_SHARE} (mmap)"
    served = {**ok(12, "openai"), "server": "llama_server at http://127.0.0.1:8080 serving m"}
    assert host_symbol(served, desktop) == f"{ABOVE_SHARE} (mmap)"  # the GGUF file, mapped
    vllm = {**served, "server": "vllm at http://127.0.0.1:8000 serving m"}
    assert host_symbol(vllm, desktop) == ABOVE_SHARE
    oom = {"status": "oom", "device_total_bytes": 32 * gib, "engine": "hf", "gpu_class": "local"}
    assert host_symbol(oom, desktop) == f"{NO} oom"  # more than 32 GiB: more than 16
    assert host_symbol({**oom, "device_total_bytes": 12 * gib}, desktop) == "❓"
