"""Roofline verdicts: why each op runs as fast as it does on this host.

For an ops row (see `dlrmprof.profile.report`) with ``bytes`` and ``flops`` (counted, from the
kernels' cost model) and a measured median time, against the host's measured ceilings
(`dlrmprof.profile.ceilings`):

* arithmetic intensity ``I = flops / bytes``;
* achieved GB/s (*effective*: every byte the cost model counts, i.e. every lookup as if from
  DRAM, FBGEMM's convention; it can exceed the hardware when lookups hit in cache) and GFLOP/s;
* *estimated DRAM* GB/s, when a cache study gives the op's predicted DRAM bytes (lookups that hit
  in cache removed); this one must not exceed the streaming roof (``dram_exceeds_roof`` flags it);
* the memory roof: **random-access** (independent random cache-line reads) for gathers
  (embedding kinds) whose rows come from DRAM, else **stream** (STREAM-style bandwidth);
  a gather whose table (``shape.rows * shape.row_bytes``) fits in the last-level cache is
  cache-resident (stream roof); a larger one counts as from DRAM when the cache study predicts
  >= half its row bytes from DRAM, or, without a cache study, always;
* attainable GFLOP/s = min(compute roof, I x memory roof); the **governing roof** is whichever is
  lower (``"stream"``, ``"random"`` or ``"compute"``); verdict ``memory-bound`` (stream),
  ``latency-bound`` (random), ``compute-bound`` (compute);
* ``percent_of_roof`` = achieved GFLOP/s / attainable GFLOP/s x 100 (equivalently achieved GB/s
  over the memory roof for memory-side ops).  Ops without bytes or flops get verdict None and a
  ``reason``.

Public entry points: `verdicts(ops_rows, ceilings, cache=None, threads=None)` -> list of dicts,
and `section(...)` -> the report's ``roofline`` section.
"""

from __future__ import annotations

from typing import Any, Mapping

from dlrmprof.profile.ceilings import roofs_for
from dlrmprof.profile.model import Verdict

RANDOM_KINDS = ("embedding_bag", "embedding_bag_sgd")
VERDICTS = {"stream": "memory-bound", "random": "latency-bound", "compute": "compute-bound"}

# An op is called overhead-dominated when it reaches less than OVERHEAD_PERCENT of its roof
# and either one kernel call takes less than OVERHEAD_CALL_S, or one call's work would take
# less than OVERHEAD_WORK_S at the roof: then the fixed cost of a call (a few microseconds
# on CPU; a launch, argument marshalling and Python on GPU, tens to hundreds of
# microseconds) sets the time, not the memory system or the ALUs.  The second test is the
# one that holds on a GPU: a batch-128 lookup there takes tens to hundreds of microseconds a
# call for work that HBM does in nanoseconds.
OVERHEAD_PERCENT = 20.0
OVERHEAD_CALL_S = 20e-6
OVERHEAD_WORK_S = 5e-6


def _is_random(row: Mapping) -> bool:
    kind = row.get("kind") or ""
    if kind in RANDOM_KINDS:
        return True
    return kind == "" and str(row.get("name", "")).startswith("emb.")


def _llc(ceilings: Mapping, host: Mapping | None) -> int | None:
    if host:
        from dlrmprof.profile.host import data_caches
        dc = data_caches(host.get("caches", []))
        if dc:
            return int(dc[-1]["size_bytes"])
    return ceilings.get("llc_bytes")


def _table_bytes(row: Mapping) -> int | None:
    shape = row.get("shape") or {}
    if shape.get("table_bytes"):
        return int(shape["table_bytes"])
    rows = shape.get("rows")
    rb = shape.get("row_bytes") or (shape.get("D", 0) * shape.get("elem_bytes", 4)
                                    if shape.get("D") else None)
    if rows and rb:
        return int(rows * rb)
    return None


def verdict_for(row: Mapping, roofs: Mapping, *, cache: Mapping | None = None,
                llc_bytes: int | None = None) -> dict:
    """One op row against one set of roofs (`ceilings.roofs_for(...)`): a dict with the keys of
    `dlrmprof.profile.model.Verdict` (the report stores it as it is; readers type it)."""
    shape = row.get("shape") or {}
    t = (row.get("time") or {}).get("median")
    b, f = row.get("bytes"), row.get("flops")
    out: dict[str, Any] = {"name": row.get("name"), "phase": row.get("phase"),
                           "kind": row.get("kind"), "device": row.get("device"),
                           "backend": row.get("backend"), "time_s": t, "bytes": b, "flops": f,
                           "threads": roofs.get("threads")}
    if not t or t <= 0 or not b or f is None:
        out.update(verdict=None, reason="no measured time" if not t else
                   "no byte/FLOP counts from the cost model")
        return out
    dtype = shape.get("dtype") or row.get("dtype") or "fp32"
    compute = roofs["bf16_gflops"] if str(dtype) in ("bf16", "bfloat16") else roofs["fp32_gflops"]
    intensity = f / b
    ach_gbs = b / t / 1e9
    ach_gflops = f / t / 1e9
    out.update(intensity=intensity, achieved_gbs=ach_gbs, achieved_gflops=ach_gflops,
               compute_roof_gflops=compute, compute_roof=f"{dtype} GEMM")
    dram_frac = None
    if cache and cache.get("dram_bytes") is not None and cache.get("row_bytes_total"):
        dram_frac = cache["dram_bytes"] / cache["row_bytes_total"]
    memroof, mem_gbs, why = _memory_roof(row, roofs, dram_frac, llc_bytes)
    mem_attainable = intensity * mem_gbs
    if mem_attainable < compute:
        governing, attainable = memroof, mem_attainable
    else:
        governing, attainable, why = "compute", compute, (
            f"intensity {intensity:.1f} FLOP/B above the ridge {compute / mem_gbs:.1f}")
    pct = 100.0 * ach_gflops / attainable if attainable else None
    out.update(memory_roof=memroof, memory_roof_gbs=mem_gbs, ridge_intensity=compute / mem_gbs,
               attainable_gflops=attainable, governing_roof=governing,
               verdict=VERDICTS[governing], why=why, percent_of_roof=pct,
               percent_of_stream=100.0 * ach_gbs / roofs["stream_gbs"])
    # above a measured roof: for compute and streaming roofs this means the ceiling was
    # under-measured (e.g. probed while other processes held the cores); for the random roof
    # it means lookups hit in cache more than the roof assumes (effective bandwidth)
    out["exceeds_roof"] = bool(pct is not None and pct > 105.0)
    if out["exceeds_roof"]:
        out["note"] = _exceeds_note(shape, governing)
    _judge_overhead(out, t / (shape.get("calls") or 1), pct, governing)
    has_dram = bool(cache and cache.get("dram_bytes") is not None)
    if has_dram:
        dram_gbs = cache["dram_bytes"] / t / 1e9
        out.update(dram_bytes_est=cache["dram_bytes"], dram_gbs_est=dram_gbs,
                   dram_fraction_est=dram_frac,
                   percent_of_roof_dram=100.0 * dram_gbs / mem_gbs,
                   dram_exceeds_roof=dram_gbs > 1.05 * roofs["stream_gbs"])
    out["sources"] = {"time": "measured", "bytes": "counted", "flops": "counted",
                      "roofs": "measured",
                      **({"dram_bytes_est": "simulated"} if has_dram else {})}
    return out


def _memory_roof(row: Mapping, roofs: Mapping, dram_frac: float | None,
                 llc_bytes: int | None) -> tuple[str, float, str]:
    """(roof, GB/s, why): random-access for gathers whose rows come from DRAM, else stream."""
    if not (_is_random(row) and roofs.get("random_gbs")):
        return "stream", roofs["stream_gbs"], "streaming access"
    tb = _table_bytes(row)
    if tb is not None and llc_bytes and tb <= llc_bytes:
        # the whole table fits in the LLC: it stays resident across iterations, whatever
        # a single pass's compulsory misses say
        return "stream", roofs["stream_gbs"], (
            f"gather over {tb / 2**20:.2f} MiB of table <= LLC {llc_bytes / 2**20:.0f} MiB "
            "(cache-resident)")
    if dram_frac is not None:
        why = f"gather; cache simulation predicts {dram_frac:.0%} of row bytes from DRAM"
        if dram_frac < 0.5:
            return "stream", roofs["stream_gbs"], why
    elif tb is not None and llc_bytes:
        why = f"gather over {tb / 2**20:.1f} MiB of table > LLC {llc_bytes / 2**20:.0f} MiB"
    else:
        why = "gather; table size unknown, assumed to exceed the caches"
    return "random", roofs["random_gbs"], why


def _exceeds_note(shape: Mapping, governing: str) -> str:
    """Why an op ran above its roof (see verdict_for)."""
    if governing != "random":
        return ("achieved exceeds the measured " + governing + " roof: the ceiling was "
                "probably measured under contention; re-probe with "
                "`dlrmprof host --probe --refresh` on a quiet machine")
    row_bytes = shape.get("row_bytes") or 0
    lines = -(-int(row_bytes) // 64) if row_bytes else 0
    return ("achieved exceeds the measured random roof: " + (
        f"rows of {lines} adjacent cache lines: the random-access probe fetches single "
        "lines, while a row's neighbouring lines come in together (the hardware "
        "fetches adjacent lines), and hot rows hit in cache; " if lines > 1 else "") +
        "lookups hit in cache more than a random-access roof assumes, or the roof was "
        "measured under contention (`dlrmprof host --probe --refresh`)")


def _judge_overhead(out: dict, per_call: float, pct: float | None, governing: str) -> None:
    """Far below every roof with only microseconds per kernel call, or with a call's work
    worth microseconds at the roof: the fixed cost of a call (dispatch, launch, argument
    handling, Python) dominates, not the memory system or the ALUs."""
    out["per_call_s"] = per_call
    out["roof_time_per_call_s"] = per_call * pct / 100.0 if pct is not None else None
    out["overhead_dominated"] = bool(
        pct is not None and pct < OVERHEAD_PERCENT
        and (per_call < OVERHEAD_CALL_S or out["roof_time_per_call_s"] < OVERHEAD_WORK_S))
    if out["overhead_dominated"]:
        out["note"] = (f"{pct:.0f}% of the {governing} roof at {per_call * 1e6:.1f} us per "
                       f"kernel call, whose work would take "
                       f"{out['roof_time_per_call_s'] * 1e6:.2g} us at the roof: per-call "
                       "overhead (dispatch, launch, argument handling, Python) dominates; a "
                       "larger batch, or all tables in one call, shows what the hardware does")


def label(v: Mapping | Verdict | None, percent: bool = True) -> str:
    """A verdict as tables print it (`model.Verdict.label`): "memory-bound (12% of roof)", or
    "overhead-dominated (0% of memory-bound roof)" when a call's fixed cost sets the time."""
    if not v:
        return "-"
    return (v if isinstance(v, Verdict) else Verdict.from_json(v, "verdict")).label(percent)


def _row_roofs(ceilings: Mapping, threads: int | None, row: Mapping,
               raised: Mapping) -> dict:
    dev = str(row.get("device") or "cpu")
    roofs = dict(roofs_for(ceilings, threads, device=dev))
    kind = "cuda" if dev.startswith("cuda") else "cpu"
    for (k_dev, key), value in raised.items():
        if k_dev == kind and roofs.get(key) is not None and value > roofs[key]:
            roofs[key] = value
    return roofs


def _judge(row: Mapping, roofs: dict, cache: Mapping | None, llc: int | None) -> dict:
    """verdict_for, but a gather above the random-access roof (its rows span adjacent lines
    or hit in cache) is judged against the streaming roof, where it is bounded."""
    v = verdict_for(row, roofs, cache=cache, llc_bytes=llc)
    if v.get("governing_roof") == "random" and (v.get("percent_of_roof") or 0) > 100.0:
        first = v
        v = verdict_for(row, dict(roofs, random_gbs=None), cache=cache, llc_bytes=llc)
        v["percent_of_random_roof"] = first["percent_of_roof"]
        v["why"] = (f"{first['why']}; above the random-access roof "
                    f"({first['percent_of_roof']:.0f}%), so judged against the streaming roof")
        v["note"] = first.get("note", "")
    return v


def _stale_key(v: Mapping) -> str | None:
    """The roof an op ran above (a ceiling is an upper bound: it was under-measured)."""
    if (v.get("percent_of_roof") or 0) <= 100.0:
        return None
    if v["governing_roof"] == "compute":
        return "bf16_gflops" if str(v.get("compute_roof", "")).startswith(("bf16", "bfloat16")) \
            else "fp32_gflops"
    return "stream_gbs"


def verdicts(ops_rows, ceilings: Mapping, cache: Mapping | None = None,
             threads: int | None = None, host: Mapping | None = None,
             stale: list | None = None) -> list[dict]:
    """Verdict dicts for every op row, in order; no verdict is above 100% of its roof.

    ``cache``: optional ``{op name: {"dram_bytes": predicted DRAM bytes, "row_bytes_total":
    bytes of all looked-up rows}}`` (what `cachesim.simulate_op` returns per op).
    ``threads``: the thread count the ops ran with (picks the matching roofs; default: the
    most threads measured).  ``host``: the fingerprint, for the LLC size.
    An op measured above a streaming or compute roof shows that roof was under-measured
    (probed under load): the roof is raised to what the op reached, every op is judged
    against the raised roof, and ``stale`` (a list, if given) gets one entry per raised roof.
    """
    llc = _llc(ceilings, host)
    raised: dict[tuple[str, str], float] = {}
    by: dict[tuple[str, str], dict] = {}
    for _ in range(2):          # measured roofs, then the raised ones
        out = []
        for row in ops_rows:
            try:
                roofs = _row_roofs(ceilings, threads, row, raised)
            except KeyError as exc:
                out.append({"name": row.get("name"), "phase": row.get("phase"),
                            "verdict": None, "reason": str(exc.args[0])})
                continue
            out.append(_judge(row, roofs, (cache or {}).get(row.get("name")), llc))
        new = False
        for v in out:
            key = _stale_key(v) if v.get("verdict") else None
            if key is None:
                continue
            kind = "cuda" if str(v.get("device") or "cpu").startswith("cuda") else "cpu"
            reached = v["achieved_gflops"] if key.endswith("gflops") else v["achieved_gbs"]
            if reached > raised.get((kind, key), 0.0):
                raised[(kind, key)] = reached
                by[(kind, key)] = {"roof": key, "device": kind, "reached": reached,
                                   "op": v["name"], "phase": v["phase"],
                                   "measured": v["compute_roof_gflops"] if
                                   key.endswith("gflops") else v["memory_roof_gbs"]}
                new = True
        if not new:
            break
    for v in out:
        pct = v.get("percent_of_roof")
        if pct is not None and pct > 100.0:          # only rounding is left above 100
            v["percent_of_roof"] = 100.0
        kind = "cuda" if str(v.get("device") or "cpu").startswith("cuda") else "cpu"
        gov = v.get("governing_roof")
        key = (None if not gov else
               "stream_gbs" if gov == "stream" else
               ("bf16_gflops" if str(v.get("compute_roof", "")).startswith("bf16")
                else "fp32_gflops") if gov == "compute" else None)
        if key and (kind, key) in by:
            b = by[(kind, key)]
            v["ceiling_raised"] = True
            v["exceeds_roof"] = False
            v["note"] = (f"the measured {key} ceiling ({b['measured']:.1f}) was stale: "
                         f"{b['op']}/{b['phase']} reached {b['reached']:.1f}; judged against "
                         "that (the probe ran under load, or that op's data stayed in cache; "
                         "re-probe on a quiet machine: `dlrmprof host --probe --refresh`)")
    if stale is not None:
        stale.extend(by.values())
    return out


def section(ops_rows, ceilings: Mapping, cache: Mapping | None = None,
            threads: int | None = None, host: Mapping | None = None,
            device: str = "cpu") -> dict:
    """The report's ``roofline`` section: rows plus the roofs of the run's device (a CUDA
    run's plot and summary show the GPU's roofs, not the host CPU's).  ``stale_ceilings``
    lists roofs an op ran above (raised to what it reached; ``roofs`` holds the raised
    values, ``measured_roofs`` the probe's)."""
    stale: list = []
    rows = verdicts(ops_rows, ceilings, cache=cache, threads=threads, host=host, stale=stale)
    try:
        roofs = roofs_for(ceilings, threads, device=device)
    except KeyError:  # no ceilings for this device: the rows say why, no roofs to draw
        roofs = {}
    measured = dict(roofs)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    for st in stale:
        if st["device"] == kind and roofs.get(st["roof"]) is not None:
            roofs[st["roof"]] = max(roofs[st["roof"]], st["reached"])
    return {"rows": rows, "roofs": roofs, "measured_roofs": measured, "device": device,
            "stale_ceilings": stale, "source": "measured roofs, counted work" +
            ("; stale roofs raised to what an op reached" if stale else "")}
