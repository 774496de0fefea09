"""The one exception type that means "the user's input is wrong" (printed as one line)."""


class BenchInputError(ValueError):
    """Bad configuration or override: reported as one line naming the key, before any work."""
