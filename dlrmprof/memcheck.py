"""Memory check before allocating: estimate what a step needs, compare with what is available.

Sizes come from files and options (a trace header's row counts, a YAML config, --table-rows,
--length); a size beyond memory must be refused in one line before `torch.empty` / numpy try
to allocate it (which ends in a traceback, or in the OOM killer).  The estimates are the
arrays the step allocates (counted), the available memory is psutil's ``available`` (or the
GPU's free memory); at most `FRACTION` of it may be planned, the rest is headroom for
everything not counted.
"""

from __future__ import annotations

from typing import Sequence

from dlrmprof.errors import UserError

FRACTION = 0.8


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a new allocation can get now: host RAM (psutil ``available``) or, for a CUDA
    device, the GPU's free memory; None when it cannot be read."""
    if device.startswith("cuda"):
        try:
            import torch

            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception:  # noqa: BLE001  (no driver, no device: nothing to compare against)
            return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001
        return None


def fmt_bytes(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def check_fits(items: Sequence[tuple[str, int]], *, what: str, hint: str,
               available: int | None = None, device: str = "cpu") -> None:
    """`items`: (name, bytes) of everything the step will hold at once.  UserError naming the
    largest item, the bytes and `hint` (the option that lowers them) when their sum exceeds
    `FRACTION` of the available memory.  Does nothing when the available memory is unknown."""
    avail = available_bytes(device) if available is None else available
    if avail is None or not items:
        return
    total = sum(int(b) for _, b in items)
    if total <= FRACTION * avail:
        return
    name, biggest = max(items, key=lambda it: it[1])
    where = "GPU" if device.startswith("cuda") else "host"
    others = f" ({fmt_bytes(total)} in all)" if total > 1.05 * biggest else ""
    raise UserError(f"{name}: {what} needs {fmt_bytes(biggest)} ({biggest} bytes){others}, "
                    f"more than {FRACTION:.0%} of the {fmt_bytes(avail)} this {where} has "
                    f"available; {hint}")


def max_rows_that_fit(rows: Sequence[int], row_bytes: int, available: int) -> int:
    """The largest per-table row cap N with sum(min(rows, N)) * row_bytes within `FRACTION`
    of `available` (at least 1)."""
    budget = FRACTION * available / max(row_bytes, 1)
    lo, hi = 1, max(max(rows), 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(r, mid) for r in rows) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo
