"""bench: measure whether an LLM fits on a GPU, how fast it runs, and what quantization costs."""

__version__ = "0.1.0"
