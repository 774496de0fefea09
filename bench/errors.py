"""The one exception type that means "the user's input is wrong" (printed as one line)."""


class BenchInputError(ValueError):
    """Bad configuration or override: reported as one line naming the key, before any work."""


class SkipCell(Exception):
    """The cell cannot run here (needs CUDA, a missing extra): a `skipped` row with the reason."""
