"""What the servers on the cell's GGUF file share (llama.cpp's own llama-server,
llama-cpp-python's server): the file, built untimed first as the llama.cpp engine builds it,
what it holds, and the device buffers llama.cpp's log says it allocated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from bench.engines.openai.kinds import ServerKind, read_log

if TYPE_CHECKING:
    from bench.core.config import BenchConfig
    from bench.engines.llamacpp.files import GgufFile


@dataclass(frozen=True)
class GgufServer(ServerKind):
    runs_gguf: bool = True
    gpu_runtime: Optional[str] = None

    def needs_preparing(self, cfg: "BenchConfig") -> bool:
        from bench.engines.llamacpp import needs_preparing

        return needs_preparing(cfg)

    def prepare(self, cfg: "BenchConfig") -> dict[str, Any]:
        from bench.engines.base import cpu_threads
        from bench.engines.llamacpp.files import ensure_file

        made = ensure_file(cfg, cpu_threads(cfg))
        return {"quantize_s": made.quantize_s} if made.quantize_s is not None else {}

    def file(self, cfg: "BenchConfig") -> "GgufFile":
        from bench.engines.llamacpp.files import prepared_file

        return prepared_file(cfg)

    def served_file(self, cfg: "BenchConfig") -> Optional[Path]:
        return self.file(cfg).path

    def device_buffers(self, log_path: Path) -> Optional[int]:
        from bench.engines.llamacpp.buffers import device_buffers

        return device_buffers(read_log(log_path))


def gguf_bytes(path: Path) -> int:
    """The file's tensor data (what llama.cpp's llama_model_size counts)."""
    from gguf import GGUFReader

    return int(sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors))
