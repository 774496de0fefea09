"""Formatting: units for readers, and markdown tables rendered by tabulate (via pandas).

Every cell is formatted to a string before rendering, and tabulate's number parsing is off,
so a value is printed exactly as formatted here (no float re-rounding, no alignment
guesses), which keeps the markdown byte-stable.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import pandas as pd

MISSING = "—"
MIB = 2**20
GIB = 2**30


def plain(text: Any) -> str:
    """One line of data as literal text: an error message's "<...>" must not become HTML."""
    return " ".join(str(text).split()).replace("<", "&lt;").replace(">", "&gt;")


def escape(text: Any) -> str:
    """One line, with the characters that would break a markdown table cell escaped."""
    return plain(text).replace("|", "\\|")


def md_table(records: Sequence[dict[str, str]], columns: Sequence[str]) -> str:
    """A GitHub markdown table of already-formatted cells (empty -> a one-line note)."""
    if not records:
        return "_(no rows)_"
    frame = pd.DataFrame([{c: escape(r.get(c, MISSING)) for c in columns} for r in records],
                         columns=list(columns))
    return frame.to_markdown(index=False, disable_numparse=True, stralign="left")


def size(nbytes: Optional[float]) -> str:
    """Bytes for humans: MiB below 1 GiB, else GiB (binary units, as nvidia-smi uses)."""
    if nbytes is None:
        return MISSING
    if abs(nbytes) < GIB:
        return f"{nbytes / MIB:.1f} MiB"
    return f"{nbytes / GIB:.2f} GiB"


def gb(nbytes: Optional[float]) -> str:
    """Decimal gigabytes (10^9 bytes), the unit of the published claims."""
    return MISSING if nbytes is None else f"{nbytes / 1e9:.2f} GB"


def num(value: Optional[float], digits: int = 1) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def seconds(value: Optional[float]) -> str:
    """Three significant figures, whatever the scale: a denoising step is milliseconds, a
    video's call minutes."""
    if value is None:
        return MISSING
    digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
    return f"{value:.{digits}f}"


def signed(value: Optional[float], digits: int = 1, unit: str = "") -> str:
    if value is None:
        return MISSING
    text = f"{value:+.{digits}f}{unit}"
    return text.replace("-", "−")


def pct(value: Optional[float], digits: int = 1) -> str:
    return MISSING if value is None else f"{100 * value:.{digits}f}%"


def bullet_list(items: Sequence[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def section(title: str, *parts: str, level: int = 2) -> str:
    """A heading followed by its non-empty parts, separated by blank lines."""
    body = "\n\n".join(p.strip("\n") for p in parts if p)
    return f"{'#' * level} {title}\n\n{body}\n"


def document(title: str, *sections: str) -> str:
    """A whole markdown file: title, sections, exactly one trailing newline."""
    text = f"# {title}\n\n" + "\n".join(s.rstrip("\n") + "\n" for s in sections if s)
    return text.rstrip("\n") + "\n"
