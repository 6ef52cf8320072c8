"""How figures are written in tables and summaries: one place for every command and renderer.

Each helper turns a number (or None, for a figure the run could not produce) into the text the
tables print; "-" stands for a missing figure except in `size`, whose callers print "?".
"""

from __future__ import annotations

import math

MISSING = "-"


def size(n: float | None) -> str:
    """Bytes in binary units: ``512 B``, ``32 KiB``, ``1.5 MiB``, ``24.0 GiB`` (whole numbers
    without decimals); ``?`` for an unknown size."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # not reached: the loop returns at TiB


def num(x: float | None, spec: str = ".3g") -> str:
    """`x` in format `spec`; "-" for None, NaN or infinity."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return MISSING
    return format(x, spec)


def seconds(s: float | None) -> str:
    """A duration with the unit that keeps three significant digits: s, ms or us."""
    if s is None:
        return MISSING
    if s >= 1e-1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def ms(s: float | None, *, unit: bool = False, missing: str = MISSING) -> str:
    """Seconds as milliseconds with two decimals (``12.34``, or ``12.34 ms`` with `unit`);
    `missing` for None (e.g. a latency the run could not bound)."""
    return missing if s is None else f"{s * 1e3:.2f}" + (" ms" if unit else "")


def percent(x: float | None, spec: str = ".1f") -> str:
    """A fraction (0.25) as a percentage (``25.0%``); "-" for None."""
    return MISSING if x is None else f"{100 * x:{spec}}%"
