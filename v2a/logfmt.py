"""Numbers in log lines: 5 significant digits, and a mapping as ``name value, name value`` instead of a raw dict.

Files keep full precision (log.csv, metrics.json, per_clip.csv); only what a person reads is rounded.
"""

from __future__ import annotations

from typing import Any, Mapping


def g5(x: Any) -> str:
    """A number with 5 significant digits (``0.08083058753516865`` -> ``0.080831``); None -> ``-``; a bool, an int
    or anything else as it is."""
    if x is None:
        return "-"
    if isinstance(x, float) or (hasattr(x, "dtype") and getattr(x, "ndim", 1) == 0 and x.dtype.kind == "f"):
        return f"{float(x):.5g}"
    return str(x)


def pairs(values: Mapping[str, Any]) -> str:
    """``{'clips': 5, 'fd': 0.0808305}`` -> ``clips 5, fd 0.080831`` (the values through :func:`g5`)."""
    return ", ".join(f"{k} {g5(v)}" for k, v in values.items())
