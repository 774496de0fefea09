"""Data sets and corpora: files shipped in PyPI wheels (bench.data.packages), the real MMLU
test split (mmlu), bench's invented MMLU-format set (invented_mmlu), the fixed quality text
(text). The lowest layer: it imports nothing of bench's but the atomic writers and paths."""
