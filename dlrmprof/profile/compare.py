"""Compare reports side by side: compute rows first (`compare`), render second (`markdown`,
`plot`; JSON is the computed dict itself).

Reports are loaded through `Report.load` (older schema versions upgraded, newer refused, bad
files a one-line UserError).  Reports must describe the same experiment: their configs must
agree on everything except the keys in `MAY_DIFFER` (what a comparison is for: host, device,
backend, threads, SIMD level...) and on the trace digest; otherwise `check_compatible` refuses,
naming the first mismatch, unless forced.  This also serves "virtual hosts": one machine at two
SIMD levels or thread counts, or numba vs torch.

The first report is the baseline: ``ratio`` = time / baseline time (> 1 slower).  A difference
is *within noise* when the two ops' p10..p90 intervals overlap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from dlrmprof.errors import UserError
from dlrmprof.profile.report import Report

# config keys (at any depth: "run.threads" counts as "threads") that may differ between the
# reports of one comparison; the trace *path* may differ too (its digest is compared instead)
MAY_DIFFER = frozenset({"device", "backend", "threads", "torch_threads", "simd", "simd_level",
                        "isa", "num_threads", "out", "output", "report", "report_dir",
                        "chrome_trace", "host", "label", "repeats", "warmup", "iters",
                        "noise_budget_s", "torch_knobs", "trace", "render", "roofline",
                        "cache_study"})
# serve-bench reports (config mode "serve") may also differ in what a serving comparison sets
# side by side: instance count, batch policy (the model's batch size is the largest batch)
SERVING_MAY_DIFFER = MAY_DIFFER | {"serving", "instances_info", "batch_size"}

# host facts shown in the header: (label, getter)
_FACTS = (
    ("CPU", lambda r: f"{r.host.get('cpu', {}).get('vendor')} "
                      f"{r.host.get('cpu', {}).get('model_name')}"),
    ("arch", lambda r: r.host.get("cpu", {}).get("arch")),
    ("logical CPUs", lambda r: r.host.get("cpu", {}).get("logical_cpus")),
    ("SIMD", lambda r: " ".join(r.host.get("cpu", {}).get("simd", [])) or None),
    ("caches", lambda r: ", ".join(f"L{c['level']} {c['size_bytes'] // 1024} KiB"
                                   for c in r.host.get("caches", [])
                                   if c.get("type") != "instruction") or None),
    ("memory GiB", lambda r: round((r.host.get("memory") or {}).get("total_bytes", 0) / 2**30)
     or None),
    ("NUMA nodes", lambda r: len((r.host.get("numa") or {}).get("nodes", [])) or None),
    ("GPU", lambda r: ", ".join(g.get("name", "?") for g in r.host.get("gpu", [])) or None),
    ("kernel", lambda r: (r.host.get("os") or {}).get("kernel")),
    ("torch", lambda r: (r.host.get("software") or {}).get("torch")),
    ("numba", lambda r: (r.host.get("software") or {}).get("numba")),
    ("host id", lambda r: r.host_id),
    ("device", lambda r: r.config.get("device")),
    ("backend", lambda r: r.config.get("backend")),
    ("threads", lambda r: r.config.get("threads")),
    ("iterations", lambda r: (r.config.get("run") or {}).get("iters")),
    ("SIMD level", lambda r: r.config.get("simd_level") or r.config.get("simd")),
    ("stream GB/s", lambda r: _round((r.roofline or {}).get("roofs", {}).get("stream_gbs"))),
    ("random GB/s", lambda r: _round((r.roofline or {}).get("roofs", {}).get("random_gbs"))),
    ("fp32 GFLOP/s", lambda r: _round((r.roofline or {}).get("roofs", {}).get("fp32_gflops"))),
)


def _round(x):
    return None if x is None else float(f"{x:.3g}")


def load_all(paths: Sequence[str | Path]) -> list[Report]:
    """Load every report first (so a bad file stops everything before any output)."""
    if len(paths) < 2:
        raise UserError("compare needs at least two reports")
    reports = [Report.load(p) for p in paths]
    for p, r in zip(paths, reports):
        if not r.ops and not getattr(r, "serving", None):
            # a serve-bench report without per-op probes still has its serving figures
            raise UserError(f"{p}: field ops: expected at least one op row (or a serving "
                            f"section) to compare, got none")
    return reports


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def check_compatible(reports: Sequence[Report], names: Sequence[str], force: bool = False
                     ) -> list[str]:
    """Mismatches between configs (and trace digests); UserError unless `force`."""
    base = reports[0]
    serving = all(r.config.get("mode") == "serve" for r in reports)
    may_differ = SERVING_MAY_DIFFER if serving else MAY_DIFFER

    def comparable(cfg: dict) -> dict:
        return {k: v for k, v in _flat(cfg).items()
                if not may_differ.intersection(k.split("."))}
    bflat = comparable(base.config)
    problems = []
    for r, name in zip(reports[1:], names[1:]):
        flat = comparable(r.config)
        for key in sorted(set(bflat) | set(flat)):
            if bflat.get(key) != flat.get(key):
                problems.append(f"config {key}: {bflat.get(key)!r} in {names[0]} vs "
                                f"{flat.get(key)!r} in {name}")
        d0, d1 = base.trace.get("digest"), r.trace.get("digest")
        if d0 and d1 and d0 != d1:
            problems.append(f"trace digest: {str(d0)[:12]} in {names[0]} vs {str(d1)[:12]} "
                            f"in {name}")
    if problems and not force:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"reports describe different experiments: {problems[0]}{more}; "
                        f"use --force to compare anyway")
    return problems


def _verdict_rows(r: Report) -> dict[tuple, dict]:
    rows = (r.roofline or {}).get("rows") or []
    return {(v.get("name"), v.get("phase")): v for v in rows}


def _overlap(a: dict, b: dict) -> bool:
    return not (a["p90"] < b["p10"] or b["p90"] < a["p10"])


def compare(reports: Sequence[Report], names: Sequence[str] | None = None, *,
            force: bool = False) -> dict:
    """The comparison as plain data (see module docstring)."""
    names = list(names or [f"report{i}" for i in range(len(reports))])
    mismatches = check_compatible(reports, names, force=force)
    facts_shared, facts_diff = {}, {}
    for label, get in _FACTS:
        vals = []
        for r in reports:
            try:
                vals.append(get(r))
            except (TypeError, KeyError, AttributeError):
                vals.append(None)
        if all(v is None for v in vals):
            continue
        if all(v == vals[0] for v in vals):
            facts_shared[label] = vals[0]
        else:
            facts_diff[label] = vals
    keys: list[tuple] = []
    for r in reports:
        for op in r.ops:
            k = (op["name"], op["phase"])
            if k not in keys:
                keys.append(k)
    verdicts = [_verdict_rows(r) for r in reports]
    rows = []
    for key in keys:
        cells = []
        for r, vmap in zip(reports, verdicts):
            op = r.op(*key)
            if op is None:
                cells.append(None)
                continue
            t = op["time"]
            v = vmap.get(key, {})
            med = t["median"]
            cells.append({
                "time_s": med, "p10": t["p10"], "p90": t["p90"], "n": t["n"],
                "achieved_gbs": v.get("achieved_gbs", (op["bytes"] / med / 1e9
                                                       if op.get("bytes") and med else None)),
                "achieved_gflops": v.get("achieved_gflops", (op["flops"] / med / 1e9
                                                             if op.get("flops") and med
                                                             else None)),
                "verdict": v.get("verdict"), "percent_of_roof": v.get("percent_of_roof"),
                "overhead_dominated": bool(v.get("overhead_dominated")),
                "backend": op.get("backend"), "device": op.get("device"),
                "timer": op.get("timer")})
        base = cells[0]
        for c in cells[1:]:
            if c is None or base is None:
                continue
            c["ratio"] = c["time_s"] / base["time_s"] if base["time_s"] else None
            c["within_noise"] = _overlap(c, base)
        if base is not None:
            base["ratio"] = 1.0
            base["within_noise"] = True
        vs = {c["verdict"] for c in cells if c is not None and c.get("verdict")}
        timers = [c.get("timer") for c in cells if c is not None]
        rows.append({"name": key[0], "phase": key[1], "cells": cells,
                     "verdict_changes": len(vs) > 1,
                     # e.g. per-table figures from inside one kernel call (tsc) against
                     # perf_counter around a call per table: not the same quantity
                     "timer_differs": len({t for t in timers if t is not None}) > 1})
    e2e = []
    for r in reports:
        e2e.append((r.end_to_end or {}).get("samples_per_s"))
    serving = _serving(reports, names)
    return {"reports": names, "baseline": names[0], "forced_mismatches": mismatches,
            "serving": serving,
            "schema_versions": [r.loaded_from_version for r in reports],
            "hosts": {"shared": facts_shared, "differ": facts_diff}, "ops": rows,
            "verdict_changes": [f"{r['name']} ({r['phase']})" for r in rows
                                if r["verdict_changes"]],
            "timer_differs": [f"{r['name']} ({r['phase']})" for r in rows
                              if r["timer_differs"]],
            "end_to_end": {"samples_per_s": e2e,
                           "ratio": [None if (x is None or not e2e[0]) else x / e2e[0]
                                     for x in e2e]}}


def _serving(reports: Sequence[Report], names: Sequence[str]) -> list[dict]:
    """Per report with a ``serving`` section: its config (host, instances, placement, batch
    policy), latency-bounded throughput and p50/p99 per offered rate."""
    from dlrmprof.profile.serving import ServingSection

    out = []
    for r, n in zip(reports, names):
        if not r.serving:
            continue
        sec = ServingSection.from_json(r.serving, f"{n}: serving")
        inter = sec.interference
        out.append({"report": n, "host_id": r.host_id, "label": sec.label,
                    "instances": sec.instances, "placement": sec.placement.get("mode"),
                    "policy": sec.policy.get("label"), "slo_s": sec.slo_s,
                    "latency_bounded_qps": sec.latency_bounded_qps,
                    "points": [{"offered_qps": p.offered_qps, "p50": p.latency.p50,
                                "p99": p.latency.p99, "meets_slo": p.meets_slo}
                               for p in sec.points],
                    "interference": {c.group: c.factor for c in inter.classes}
                    if inter is not None else {}})
    return out


def serving_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    out = ["", "## Serving", "",
           "| report | host | instances | batch policy | latency-bounded q/s | p99 ms by "
           "offered q/s | interference |", "|---|---|---|---|---|---|---|"]
    for s in rows:
        pts = ", ".join(f"{p['offered_qps']:g}: " + ("-" if p["p99"] is None else
                                                       f"{p['p99'] * 1e3:.1f}")
                        for p in s["points"])
        inter = ", ".join(f"{k} {v:.2f}x" for k, v in s["interference"].items()) or "-"
        lbt = s["latency_bounded_qps"]
        out.append(f"| {s['report']} | {s['host_id']} | {s['instances']} ({s['placement']}) | "
                   f"{s['policy']} | {'none' if lbt is None else format(lbt, 'g')} | {pts} | "
                   f"{inter} |")
    return out


# -- renderers ----------------------------------------------------------------------------------

def _n(x, fmt=".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, fmt)


def _timers_of(res: dict) -> list[str]:
    """Per report, the timing methods of the rows whose method differs between reports."""
    out = []
    for i in range(len(res["reports"])):
        ts = sorted({row["cells"][i]["timer"] for row in res["ops"] if row.get("timer_differs")
                     and row["cells"][i] is not None and row["cells"][i].get("timer")})
        out.append("/".join(ts) or "-")
    return out


def markdown(res: dict) -> str:
    names = res["reports"]
    out = ["# dlrmprof compare", "",
           f"Baseline: {names[0]}.  Ratio = time / baseline time (> 1 is slower); "
           "`~` marks a difference within measured noise (p10..p90 intervals overlap)."]
    if res["forced_mismatches"]:
        out += ["", "**Compared with --force despite:** " + "; ".join(res["forced_mismatches"])]
    up = [v for v in res["schema_versions"] if v is not None]
    if up and len(set(up)) > 1:
        out += ["", "Schema versions on disk: " + ", ".join(
            f"{n}: v{v}" for n, v in zip(names, res["schema_versions"])) + " (upgraded)"]
    out += ["", "## Hosts", "", "Shared: " + ("; ".join(f"{k} {v}" for k, v in
                                                     res["hosts"]["shared"].items()) or "none")]
    if res["hosts"]["differ"]:
        out += ["", "| fact | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k, vals in res["hosts"]["differ"].items():
            out.append(f"| {k} | " + " | ".join(_n(v) if isinstance(v, float) else str(v)
                                                for v in vals) + " |")
    out += ["", "## Operators", "",
            "| op | phase | " + " | ".join(f"{n} ms" for n in names) + " | "
            + " | ".join(f"ratio {n}" for n in names[1:]) + " | "
            + " | ".join(f"GB/s {n}" for n in names) + " | "
            + " | ".join(f"GFLOP/s {n}" for n in names) + " | "
            + " | ".join(f"verdict {n}" for n in names) + " |",
            "|---|---|" + "---|" * (5 * len(names) - 1)]
    for row in res["ops"]:
        cells = row["cells"]
        times = [_n(c["time_s"] * 1e3, ".3f") if c else "-" for c in cells]
        ratios = []
        for c in cells[1:]:
            if not c or c.get("ratio") is None:
                ratios.append("-")
            else:
                ratios.append(f"{'~' if c['within_noise'] else ''}{c['ratio']:.2f}x")
        gbs = [_n(c.get("achieved_gbs")) if c else "-" for c in cells]
        gfl = [_n(c.get("achieved_gflops")) if c else "-" for c in cells]
        ver = [((("overhead (" + c["verdict"] + ")") if c.get("overhead_dominated")
                 else (c.get("verdict") or "-"))
                + (f" ({c['percent_of_roof']:.0f}%)" if c.get("percent_of_roof") is not None
                   else "")) if c else "-" for c in cells]
        name = f"**{row['name']}**" if row["verdict_changes"] else row["name"]
        if row.get("timer_differs"):
            name += " †"
        out.append(f"| {name} | {row['phase']} | " + " | ".join(times + ratios + gbs + gfl + ver)
                   + " |")
    if res.get("timer_differs"):
        out += ["", "† timed differently in these reports (" + ", ".join(
            f"{n}: {t}" for n, t in zip(names, _timers_of(res))) + "): the times are not the "
            "same quantity (e.g. `tsc`: inside one kernel call for all tables, without the "
            "call overhead that `perf_counter` around a call per table includes)."]
    if res["verdict_changes"]:
        out += ["", "**Verdict changes between hosts:** " + ", ".join(res["verdict_changes"])]
    else:
        out += ["", "No op changes verdict between these reports."]
    out += serving_markdown(res.get("serving") or [])
    e = res["end_to_end"]
    if any(x is not None for x in e["samples_per_s"]):
        out += ["", "End to end (samples/s, higher is better; ratio = throughput / baseline's): "
                + ", ".join(f"{n} {_n(x, ',.0f')}" + (f" ({r:.2f}x)" if r is not None and i else "")
            for i, (n, x, r) in enumerate(zip(names, e["samples_per_s"], e["ratio"])))]
    return "\n".join(out) + "\n"


def plot(res: dict, path) -> Path:
    """Grouped bars: each op's median time per report (log scale), verdict changes starred."""
    from dlrmprof.profile.render import _figure, _save
    names = res["reports"]
    rows = res["ops"]
    fig = _figure(max(6.0, 0.7 * len(rows) + 3), 4.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(names)
    for j, n in enumerate(names):
        ys = [(r["cells"][j] or {}).get("time_s", 0) * 1e3 if r["cells"][j] else 0
              for r in rows]
        ax.bar([i + j * width for i in range(len(rows))], ys, width, label=n)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([("* " if r["verdict_changes"] else "") + r["name"] for r in rows],
                       rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median time per call (ms)")
    ax.set_title("dlrmprof compare (* verdict changes)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_serving(reports: Sequence[Report], names: Sequence[str], path) -> Path | None:
    """Latency (p50, p99) vs offered load, one colour per report with a serving section."""
    from dlrmprof.profile.serving import ServingSection, plot_latency_load

    configs = [(f"{n}: {r.serving.get('instances')} inst, "
                f"{(r.serving.get('policy') or {}).get('label')}",
                ServingSection.from_json(r.serving, f"{n}: serving"))
               for r, n in zip(reports, names) if r.serving]
    return plot_latency_load(configs, path) if configs else None
