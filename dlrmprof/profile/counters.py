"""Hardware performance counters through Linux perf_event (the `perf stat` tool).

`availability()` says whether cycles/instructions/LLC events can be read here, and if not,
why ("not available on this host: <reason>"); it never raises.  `measure(fn)` counts events
while `fn()` runs in this process (by attaching `perf stat -p <pid>`), or returns the same
``{"available": False, "reason": ...}`` shape when counters are not readable.  Every figure from
here has ``source: "measured"`` (hardware counters).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import time
from typing import Any, Callable

EVENTS = ("cycles", "instructions", "LLC-loads", "LLC-load-misses", "cache-references",
          "cache-misses")


def parse_perf_csv(text: str) -> dict[str, float | None]:
    """Parse `perf stat -x,` output: value,unit,event,... ; '<not supported>' -> None."""
    out: dict[str, float | None] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 3 or line.startswith("#"):
            continue
        value, event = parts[0].strip(), parts[2].strip()
        if not event:
            continue
        event = event.split(":")[0]
        if value.startswith("<"):
            out[event] = None
        else:
            try:
                out[event] = float(value)
            except ValueError:
                continue
    return out


def _paranoid(root) -> int | None:
    try:
        with open(os.path.join(str(root), "proc/sys/kernel/perf_event_paranoid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def availability(root: str | os.PathLike = "/") -> dict:
    """``{"available": bool, "reason": str|None, "events": {event: bool}, "paranoid": int}``."""
    paranoid = _paranoid(root)
    if str(root) != "/":
        # a canned tree: we can say what the kernel setting allows, not probe the PMU
        ok = paranoid is not None and paranoid <= 2
        return {"available": None, "reason": "canned host tree: not probed", "events": {},
                "paranoid": paranoid, "allowed_by_paranoid": ok}
    return dict(_probe_live(), paranoid=paranoid)


@functools.lru_cache(maxsize=1)
def _probe_live() -> dict:
    perf = shutil.which("perf")
    if perf is None:
        return {"available": False, "reason": "the `perf` tool is not installed", "events": {}}
    try:
        r = subprocess.run([perf, "stat", "-x,", "-e", ",".join(EVENTS), "true"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "reason": f"perf stat failed: {exc}", "events": {}}
    vals = parse_perf_csv(r.stderr)
    events = {e: vals.get(e) is not None for e in EVENTS}
    if any(events.values()):
        return {"available": True, "reason": None, "events": events}
    if not vals:
        msg = (r.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return {"available": False, "reason": f"perf stat: {msg}", "events": events}
    return {"available": False,
            "reason": "perf_event exposes no hardware events (<not supported>; "
                      "typical of a VM without a virtual PMU)", "events": events}


def measure(fn: Callable[[], Any], events: tuple[str, ...] = EVENTS) -> dict:
    """Count `events` while fn() runs (perf attached to this process).

    Returns ``{"available": True, "counts": {event: value|None}, "wall_s": s, "derived":
    {ipc, llc_miss_ratio}, "source": "measured"}`` or ``{"available": False, "reason": ...}``
    (fn is not run then).  Counts include this process's other threads during the window.
    """
    av = availability()
    if not av.get("available"):
        return {"available": False,
                "reason": f"not available on this host: {av.get('reason')}"}
    proc = subprocess.Popen([shutil.which("perf"), "stat", "-x,", "-e", ",".join(events),
                             "-p", str(os.getpid())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.1)  # let perf attach
    t0 = time.perf_counter()
    try:
        fn()
    finally:
        wall = time.perf_counter() - t0
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    counts = parse_perf_csv(err)
    derived = {}
    if counts.get("cycles") and counts.get("instructions") is not None:
        derived["ipc"] = counts["instructions"] / counts["cycles"]
    if counts.get("LLC-loads") and counts.get("LLC-load-misses") is not None:
        derived["llc_miss_ratio"] = counts["LLC-load-misses"] / counts["LLC-loads"]
    return {"available": True, "counts": counts, "wall_s": wall, "derived": derived,
            "source": "measured"}
