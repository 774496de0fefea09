"""Exceptions with a meaning for the row: bad input, a cell that cannot run here, an OOM."""


class BenchInputError(ValueError):
    """Bad configuration or override: reported as one line naming the key, before any work."""


class SchemeRefused(BenchInputError):
    """The chosen engine cannot run the cell's scheme: bad input when the user named both; a
    scheme of the default sweep's left out when they named the engine only."""


class SkipCell(Exception):
    """The cell cannot run here (needs CUDA, a missing extra): a `skipped` row with the reason."""


class OutOfMemory(Exception):
    """An engine ran out of device or host memory (an `oom` row): raised where the engine's
    own error is not recognisable as one (llama.cpp's failed allocations, say)."""


def one_line(exc: BaseException, limit: int = 500) -> str:
    """`Type: first line of the message`, for a row's `error` column (the traceback's tail
    goes to `error_detail`)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:limit]


def is_oom(exc: BaseException) -> bool:
    """Out of device or host memory, recognisable without the engine (an engine knows more
    of its library's messages: Engine.is_oom)."""
    return isinstance(exc, (OutOfMemory, MemoryError)) or "out of memory" in str(exc).lower()
