"""Rendering of reports and studies: Markdown summary and PNG plots (compute first, render here).

`render_report(report, json_path)` writes beside the report's JSON file:
``<stem>.md`` (summary), ``<stem>.roofline.png`` (ops as points, every roof), and when the
report has them ``<stem>.mrc.png`` (cache hit rates vs capacity), ``<stem>.simd.png`` (SIMD
speed-up bars) and ``<stem>.sweep.png`` (working-set sweep).  Every file is written atomically.
It returns the paths written.  The single plots are public too (`plot_roofline`, `plot_mrc`,
`plot_simd`, `plot_sweep`).  matplotlib is used through its object API (no pyplot global state).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from dlrmprof.fsutil import atomic_path, atomic_write_text
from dlrmprof.profile.roofline import label


def _figure(w: float = 7.5, h: float = 5.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


# -- plots --------------------------------------------------------------------------------------

def plot_roofline(rows: list[Mapping], roofs: Mapping, path, title: str = "") -> Path:
    """Log-log roofline: every roof (stream, random-access, fp32/bf16 compute), ops as points."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    pts = [r for r in rows if r.get("verdict")]
    xs = [r["intensity"] for r in pts] or [1.0]
    lo = min(min(xs) / 4, 0.01)
    hi = max(max(xs) * 4, 1000.0)
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    peak = roofs.get("fp32_gflops") or roofs.get("bf16_gflops") or 1e3
    for key, label, style in (("stream_gbs", "stream", "-"), ("random_gbs", "random access",
                                                                "--")):
        bw = roofs.get(key)
        if bw:
            ax.plot(grid, [min(bw * x, peak) for x in grid], style, color="tab:blue",
                    label=f"{label} {bw:.1f} GB/s")
    for key, label, color in (("fp32_gflops", "fp32 GEMM", "tab:red"),
                              ("bf16_gflops", "bf16 GEMM", "tab:purple")):
        v = roofs.get(key)
        if v:
            ax.axhline(v, color=color, linestyle=":", label=f"{label} {v:.0f} GFLOP/s")
    markers = {"memory-bound": "o", "latency-bound": "s", "compute-bound": "^"}
    many = sum(1 for r in pts if str(r["name"]).startswith("emb.")) > 4
    for r in pts:
        per_table = many and str(r["name"]).startswith("emb.") and r["name"] != "emb.all"
        ax.plot([r["intensity"]], [r["achieved_gflops"]], markers.get(r["verdict"], "x"),
                color="gray" if per_table else "black", markersize=4 if per_table else 6,
                alpha=0.6 if per_table else 1.0)
        if per_table:
            continue   # many tables: one label for them all (below), not 26 overlapping ones
        ax.annotate(f"{r['name']}" + (f" ({r['phase'][0]})" if r.get("phase") != "forward"
                                      else ""),
                    (r["intensity"], r["achieved_gflops"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if many:
        ax.plot([], [], "o", color="gray", markersize=4, label="single tables (emb.C*)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(title or f"roofline ({roofs.get('threads', '?')} threads); "
                 "o memory-, s latency-, ^ compute-bound")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_mrc(cache: Mapping, path, max_ops: int = 6) -> Path:
    """Cumulative hit rate vs capacity: set-associative simulation (solid) and fully-associative
    LRU (dashed) per op, and each table's own miss-ratio curve from the trace (thin line).  With
    many ops only ``emb.all`` and the tables with the lowest last-level hit rate are drawn."""
    fig = _figure(9, 5)
    ax = fig.add_subplot(1, 1, 1)
    sims = {k: v for k, v in (cache.get("simulation") or {}).items() if v.get("levels")}
    title = "cache hit rate vs capacity (simulated)"
    if len(sims) > max_ops:
        worst = sorted((k for k in sims if k != "emb.all"),
                       key=lambda k: sims[k]["levels"][-1]["cumulative_hit_rate"])
        keep = (["emb.all"] if "emb.all" in sims else []) + worst
        sims = {k: sims[k] for k in keep[:max_ops]}
        title += f": emb.all and the {len(sims) - ('emb.all' in sims)} tables with most misses"
    for name, sim in sims.items():
        lv = sim["levels"]
        caps = [sum(x["size_bytes"] for x in lv[:i + 1]) for i in range(len(lv))]
        line, = ax.plot(caps, [x["cumulative_hit_rate"] for x in lv], "o-",
                        label=f"{name} set-assoc")
        if all("fa_cumulative_hit_rate" in x for x in lv):
            ax.plot(caps, [x["fa_cumulative_hit_rate"] for x in lv], "x--",
                    color=line.get_color(), label=f"{name} fully-assoc")
        c = (sim.get("trace_mrc") or {}).get("curve")
        if c and c.get("sizes_bytes"):
            ax.plot(c["sizes_bytes"], c["hit_rates"], "-", color=line.get_color(), alpha=0.4,
                    linewidth=1, label=f"{name} trace MRC")
    for name, m in (cache.get("mrc") or {}).items():
        if m.get("sizes_bytes") and m.get("hit_rates"):
            ax.plot(m["sizes_bytes"], m["hit_rates"], "-", alpha=0.5, linewidth=1,
                    label=f"{name} trace MRC")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("cache capacity (bytes; levels at cumulative L1, L1+L2, ... sizes)")
    ax.set_ylabel("hit rate")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_simd(simd: Mapping, path) -> Path:
    """Speed-up over scalar per op and ISA level (grouped bars)."""
    fig = _figure(8, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ops = simd.get("ops") or []
    levels = [lv["name"] for lv in simd.get("levels") or []]
    width = 0.8 / max(len(levels), 1)
    for j, lvl in enumerate(levels):
        ys = [(o.get("by_level", {}).get(lvl) or {}).get("speedup") or 0 for o in ops]
        ax.bar([i + j * width for i in range(len(ops))], ys, width, label=lvl)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(ops))])
    ax.set_xticklabels([f"{o['op']}\n{o.get('verdict') or ''}" for o in ops], fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("speed-up over scalar")
    ax.set_title("SIMD-width sensitivity")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_sweep(res: Mapping, path) -> Path:
    """GB/s vs working-set size for the gather and the streaming read; cache sizes marked."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    xs = [p["size_bytes"] for p in res["points"]]
    ax.plot(xs, [p["gather_gbs"] for p in res["points"]], "o-", label="gather (embedding bag)")
    ax.plot(xs, [p["read_gbs"] for p in res["points"]], "s-", label="streaming read")
    for c in res.get("caches", []):
        ax.axvline(c["size_bytes"], color="gray", linestyle=":")
        ax.annotate(f"L{c['level']} {_fmt_bytes(c['size_bytes'])}", (c["size_bytes"], 1),
                    xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                    va="top", ha="right")
    for kind in ("gather", "read"):
        for k in (res.get("knees") or {}).get(kind, []):
            ax.axvline(k["at_bytes"], color="tab:red", alpha=0.3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("working set (bytes)")
    ax.set_ylabel("GB/s")
    ax.set_title(f"working-set sweep ({res.get('threads', 1)} thread(s)); red: knees")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# -- Markdown -----------------------------------------------------------------------------------

def _num(x: Any, fmt: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "-"
    return format(x, fmt)


def markdown(report) -> str:
    """A Markdown summary of a `Report`."""
    h = report.host
    cpu = h.get("cpu", {})
    out = [f"# dlrmprof report: {report.config.get('preset', 'run')} on host {report.host_id}",
           "", f"- created {report.created}, dlrmprof {report.tool_version}, schema "
           f"{report.schema_version}",
           f"- CPU: {cpu.get('vendor')} {cpu.get('model_name')}, {cpu.get('logical_cpus')} "
           f"logical CPUs, SIMD {' '.join(cpu.get('simd', []))}",
           "- caches: " + ", ".join(f"L{c['level']} {_fmt_bytes(c['size_bytes'])}"
                                    f"/{c.get('ways')}-way" for c in h.get("caches", [])
                                    if c.get("type") != "instruction"),
           "- config: " + ", ".join(f"{k}={v}" for k, v in report.config.items()
                                     if not isinstance(v, (dict, list)))]
    if report.trace:
        out.append(f"- trace: {report.trace.get('path', '?')} (digest "
                   f"{str(report.trace.get('digest', '?'))[:12]})")
    e2e = report.end_to_end
    if e2e:
        out.append(f"- end to end: {_num(e2e.get('samples_per_s'), ',.0f')} samples/s "
                   f"({e2e.get('source', 'measured')})")
    roofs = (report.roofline or {}).get("roofs") or {}
    if roofs:
        out += ["", "## Ceilings (measured)", "",
                f"stream {_num(roofs.get('stream_gbs'))} GB/s, random access "
                f"{_num(roofs.get('random_gbs'))} GB/s ({_num(roofs.get('random_ns_per_line'))}"
                f" ns/line), DRAM latency {_num(roofs.get('latency_ns'))} ns, fp32 GEMM "
                f"{_num(roofs.get('fp32_gflops'))} GFLOP/s, bf16 GEMM "
                f"{_num(roofs.get('bf16_gflops'))} GFLOP/s at {roofs.get('threads')} threads"]
    rows = (report.roofline or {}).get("rows") or []
    by_name = {(r["name"], r.get("phase")): r for r in rows}
    out += ["", "## Operators", "",
            "| op | phase | backend | median ms | p10-p90 ms | GB/s (eff.) | GB/s (DRAM est.) "
            "| GFLOP/s | FLOP/B | verdict | % of roof |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for op in report.ops:
        t = op["time"]
        v = by_name.get((op["name"], op["phase"]), {})
        out.append(f"| {op['name']} | {op['phase']} | {op['backend']} | "
                   f"{t['median'] * 1e3:.3f} | {t['p10'] * 1e3:.3f}-{t['p90'] * 1e3:.3f} | "
                   f"{_num(v.get('achieved_gbs'))} | {_num(v.get('dram_gbs_est'))} | "
                   f"{_num(v.get('achieved_gflops'))} | {_num(v.get('intensity'))} | "
                   f"{label(v, percent=False)} | {_num(v.get('percent_of_roof'), '.0f')} |")
    notes = [f"{v['name']} ({v.get('phase')}): {v['note']}" for v in rows if v.get("note")]
    if notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    out += ["", "Sources: times measured; bytes and FLOPs counted (cost model); DRAM estimate "
            "simulated (cache study); roofs measured on this host."]
    sim = (report.cache or {}).get("simulation") or {}
    if sim:
        out += ["", "## Cache behaviour (simulated)", "",
                "| op | " + " | ".join(f"L{lv['level']} hit (set-assoc / fully-assoc)"
                                       for lv in next(iter(sim.values()))["levels"])
                + " | DRAM bytes / row bytes |",
                "|---|" + "---|" * (len(next(iter(sim.values()))["levels"]) + 1)]
        for name, s in sim.items():
            cells = [f"{lv['cumulative_hit_rate']:.1%} / "
                     f"{_num(lv.get('fa_cumulative_hit_rate'), '.1%')}" for lv in s["levels"]]
            frac = s["dram_bytes"] / s["row_bytes_total"] if s.get("row_bytes_total") else None
            out.append(f"| {name} | " + " | ".join(cells) + f" | {_num(frac, '.1%')} |")
    cnt = (report.cache or {}).get("counters")
    if cnt:
        out += ["", "Hardware counters: " + ("measured" if cnt.get("available")
                                             else str(cnt.get("reason")))]
    simd = report.simd or {}
    if simd.get("ops"):
        out += ["", "## SIMD-width sensitivity", "", simd_markdown(simd)]
        if simd.get("torch"):
            out += ["", "torch ISA knobs:", "", simd_markdown(simd["torch"])]
    if getattr(report, "serving", None):
        from dlrmprof.profile.serving import ServingSection
        from dlrmprof.profile.serving import markdown as serving_markdown

        out += ["", serving_markdown(ServingSection.from_json(report.serving)).rstrip()]
    noise_ = report.noise or {}
    if noise_:
        out += ["", "## Noise", "", ", ".join(f"{k}: {v}" for k, v in noise_.items()
                                               if not isinstance(v, (dict, list)))]
    return "\n".join(out) + "\n"


def simd_markdown(simd: Mapping) -> str:
    levels = [lv["name"] for lv in simd.get("levels") or []]
    lines = ["| op | verdict | " + " | ".join(levels) + " |",
             "|---|---|" + "---|" * len(levels)]
    for o in simd.get("ops") or []:
        cells = []
        for lvl in levels:
            c = (o.get("by_level") or {}).get(lvl) or {}
            cells.append(f"{c['time_s'] * 1e3:.3f} ms ({c['speedup']:.2f}x)"
                         if c.get("time_s") else (c.get("error") or "-"))
        lines.append(f"| {o['op']} | {o.get('verdict') or '-'} | " + " | ".join(cells) + " |")
    lv_lines = []
    for lv in simd.get("levels") or []:
        what = (f"xmm {lv['asm']['xmm']}, ymm {lv['asm']['ymm']}, zmm {lv['asm']['zmm']}, "
                f"packed FP ops {lv['asm'].get('packed_fp', '?')}" if "asm" in lv else
                ", ".join(f"{k} {v}" for k, v in (lv.get("verify") or {}).items()))
        status = "verified" if lv.get("verified") else "NOT verified"
        lv_lines.append(f"- {lv['name']}: {what} ({status}: expected {lv.get('expect', '?')})")
    held = simd.get("held")
    if "held" not in simd:   # a sub-study (torch) rendered on its own
        return "\n".join(lines + ["", "Levels:"] + lv_lines)
    lv_lines += [f"- note: {n}" for n in simd.get("notes") or []]
    return "\n".join(lines + ["", "Levels (from the generated code):"] + lv_lines + [
        "", f"Expectation (memory/latency-bound ops insensitive, compute-bound ones sensitive): "
            f"{'held' if held else 'did not hold' if held is False else 'not decided'}"
            f"{': ' + simd['statement'] if simd.get('statement') else ''}"])


def render_report(report, json_path) -> list[Path]:
    """Write the Markdown summary and PNG plots beside `json_path`; return the paths."""
    json_path = Path(json_path)
    stem = json_path.with_suffix("")
    written = [Path(f"{stem}.md")]
    atomic_write_text(written[0], markdown(report))
    rl = report.roofline or {}
    if rl.get("rows") and rl.get("roofs"):
        written.append(plot_roofline(rl["rows"], rl["roofs"], f"{stem}.roofline.png"))
    cache = report.cache or {}
    if cache.get("simulation") or cache.get("mrc"):
        written.append(plot_mrc(cache, f"{stem}.mrc.png"))
    if cache.get("sweep", {}).get("points"):
        written.append(plot_sweep(cache["sweep"], f"{stem}.sweep.png"))
    if (report.simd or {}).get("ops"):
        written.append(plot_simd(report.simd, f"{stem}.simd.png"))
    return written
