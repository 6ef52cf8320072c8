"""Rendering of reports and studies: Markdown summary and PNG plots (compute first, render here).

`render_report(report, json_path)` writes beside the report's JSON file:
``<stem>.md`` (summary), ``<stem>.roofline.png`` (ops as points, every roof), and when the
report has them ``<stem>.mrc.png`` (cache hit rates vs capacity), ``<stem>.simd.png`` (SIMD
speed-up bars) and ``<stem>.sweep.png`` (working-set sweep).  Every file is written atomically.
It returns the paths written.  The single plots are public too (`plot_roofline`, `plot_mrc`,
`plot_simd`, `plot_sweep`).  matplotlib is used through its object API (no pyplot global state).

Everything here reads the typed report (`dlrmprof.profile.model.ReportModel`); each table
says in a comment which field it prints and which function computed it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from dlrmprof import fmt
from dlrmprof.fsutil import atomic_path, atomic_write_text
from dlrmprof.profile.ceilings_model import Roofs
from dlrmprof.profile.model import ReportModel, Verdict
from dlrmprof.profile.study_model import CacheSection, SimdStudy, SweepResult


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


def _model(report) -> ReportModel:
    """The typed report (a `Report` is typed here; a `ReportModel` passes through)."""
    return report if isinstance(report, ReportModel) else ReportModel.of(report)


def _study(simd) -> SimdStudy:
    return simd if isinstance(simd, SimdStudy) else SimdStudy.from_json(simd, "simd")


# -- plots --------------------------------------------------------------------------------------

def plot_roofline(rows: list[Verdict], roofs: Roofs, path, title: str = "") -> Path:
    """Log-log roofline: every roof (stream, random-access, fp32/bf16 compute), ops as points
    (`RooflineSection.rows`, from `roofline.verdicts`)."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    pts = [r for r in rows if r.verdict]
    xs = [r.intensity for r in pts] or [1.0]
    lo = min(min(xs) / 4, 0.01)
    hi = max(max(xs) * 4, 1000.0)
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    peak = roofs.fp32_gflops or roofs.bf16_gflops or 1e3
    for bw, label, style in ((roofs.stream_gbs, "stream", "-"),
                             (roofs.random_gbs, "random access", "--")):
        if bw:
            ax.plot(grid, [min(bw * x, peak) for x in grid], style, color="tab:blue",
                    label=f"{label} {bw:.1f} GB/s")
    for v, label, color in ((roofs.fp32_gflops, "fp32 GEMM", "tab:red"),
                            (roofs.bf16_gflops, "bf16 GEMM", "tab:purple")):
        if v:
            ax.axhline(v, color=color, linestyle=":", label=f"{label} {v:.0f} GFLOP/s")
    markers = {"memory-bound": "o", "latency-bound": "s", "compute-bound": "^"}
    many = sum(1 for r in pts if str(r.name).startswith("emb.")) > 4
    for r in pts:
        per_table = many and str(r.name).startswith("emb.") and r.name != "emb.all"
        ax.plot([r.intensity], [r.achieved_gflops], markers.get(r.verdict, "x"),
                color="gray" if per_table else "black", markersize=4 if per_table else 6,
                alpha=0.6 if per_table else 1.0)
        if per_table:
            continue   # many tables: one label for them all (below), not 26 overlapping ones
        ax.annotate(f"{r.name}" + (f" ({r.phase[0]})" if r.phase != "forward" else ""),
                    (r.intensity, r.achieved_gflops), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if many:
        ax.plot([], [], "o", color="gray", markersize=4, label="single tables (emb.C*)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("GFLOP/s")
    threads = "?" if roofs.threads is None else roofs.threads
    ax.set_title(title or f"roofline ({threads} threads); "
                 "o memory-, s latency-, ^ compute-bound")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_mrc(cache: CacheSection, path, max_ops: int = 6) -> Path:
    """Cumulative hit rate vs capacity: set-associative simulation (solid) and fully-associative
    LRU (dashed) per op, and each table's own miss-ratio curve from the trace (thin line).  With
    many ops only ``emb.all`` and the tables with the lowest last-level hit rate are drawn."""
    fig = _figure(9, 5)
    ax = fig.add_subplot(1, 1, 1)
    sims = {k: v for k, v in cache.simulation.items() if v.levels}
    title = "cache hit rate vs capacity (simulated)"
    if len(sims) > max_ops:
        worst = sorted((k for k in sims if k != "emb.all"),
                       key=lambda k: sims[k].levels[-1].cumulative_hit_rate)
        keep = (["emb.all"] if "emb.all" in sims else []) + worst
        sims = {k: sims[k] for k in keep[:max_ops]}
        title += f": emb.all and the {len(sims) - ('emb.all' in sims)} tables with most misses"
    for name, sim in sims.items():
        lv = sim.levels
        caps = [sum(x.size_bytes for x in lv[:i + 1]) for i in range(len(lv))]
        line, = ax.plot(caps, [x.cumulative_hit_rate for x in lv], "o-",
                        label=f"{name} set-assoc")
        if all(x.fa_cumulative_hit_rate is not None for x in lv):
            ax.plot(caps, [x.fa_cumulative_hit_rate for x in lv], "x--",
                    color=line.get_color(), label=f"{name} fully-assoc")
        c = sim.trace_mrc.curve if sim.trace_mrc else None
        if c and c.sizes_bytes:
            ax.plot(c.sizes_bytes, c.hit_rates, "-", color=line.get_color(), alpha=0.4,
                    linewidth=1, label=f"{name} trace MRC")
    for name, m in cache.mrc.items():
        if m.sizes_bytes and m.hit_rates:
            ax.plot(m.sizes_bytes, m.hit_rates, "-", alpha=0.5, linewidth=1,
                    label=f"{name} trace MRC")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("cache capacity (bytes; levels at cumulative L1, L1+L2, ... sizes)")
    ax.set_ylabel("hit rate")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_simd(simd: SimdStudy | Mapping, path) -> Path:
    """Speed-up over scalar per op and ISA level (grouped bars; `simd.run_simd`)."""
    simd = _study(simd)
    fig = _figure(8, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ops = simd.ops
    levels = [lv.name for lv in simd.levels]
    width = 0.8 / max(len(levels), 1)
    for j, lvl in enumerate(levels):
        ys = [(o.by_level.get(lvl) and o.by_level[lvl].speedup) or 0 for o in ops]
        ax.bar([i + j * width for i in range(len(ops))], ys, width, label=lvl)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(ops))])
    ax.set_xticklabels([f"{o.op}\n{o.verdict or ''}" for o in ops], fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("speed-up over scalar")
    ax.set_title("SIMD-width sensitivity")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_sweep(res: Mapping | SweepResult, path) -> Path:
    """GB/s vs working-set size for the gather and the streaming read (`sweep.run_sweep`);
    cache sizes marked."""
    r = res if isinstance(res, SweepResult) else SweepResult.from_json(res, "sweep")
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    xs = [p.size_bytes for p in r.points]
    ax.plot(xs, [p.gather_gbs for p in r.points], "o-", label="gather (embedding bag)")
    ax.plot(xs, [p.read_gbs for p in r.points], "s-", label="streaming read")
    for c in r.caches:
        ax.axvline(c.size_bytes, color="gray", linestyle=":")
        ax.annotate(f"L{c.level} {fmt.size(c.size_bytes)}", (c.size_bytes, 1),
                    xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                    va="top", ha="right")
    for k in r.knees.gather + r.knees.read:
        ax.axvline(k.at_bytes, color="tab:red", alpha=0.3)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("working set (bytes)")
    ax.set_ylabel("GB/s")
    ax.set_title(f"working-set sweep ({r.threads} thread(s)); red: knees")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# -- Markdown -----------------------------------------------------------------------------------

def markdown(report) -> str:
    """A Markdown summary of a `Report` (or `ReportModel`): one block per section below."""
    m = _model(report)
    out = _header_lines(m) + _ceiling_lines(m) + _op_lines(m) + _cache_lines(m.cache)
    if m.simd.ops:
        out += ["", "## SIMD-width sensitivity", "", simd_markdown(m.simd)]
        torch = m.simd.torch_study()
        if torch is not None:
            out += ["", "torch ISA knobs:", "", simd_markdown(torch)]
    if m.serving is not None:
        from dlrmprof.profile.serving import markdown as serving_markdown

        out += ["", serving_markdown(m.serving).rstrip()]
    if not m.noise.is_empty():
        # Noise: every single-valued field of the noise record (profile/noise.py)
        out += ["", "## Noise", "", ", ".join(f"{k}: {v}" for k, v in m.noise.scalars())]
    return "\n".join(out) + "\n"


def _header_lines(m: ReportModel) -> list[str]:
    """Host (Host: host.collect), config (RunConfig: the run's options), trace
    (TraceSummary), end to end (EndToEnd: samples/s measured by the run loop)."""
    cpu = m.host.cpu
    preset = "run" if m.config.preset is None else m.config.preset
    out = [f"# dlrmprof report: {preset} on host {m.host_id}",
           "", f"- created {m.created}, dlrmprof {m.tool_version}, schema {m.schema_version}",
           f"- CPU: {cpu.vendor} {cpu.model_name}, {cpu.logical_cpus} logical CPUs, "
           f"SIMD {' '.join(cpu.simd or [])}",
           "- caches: " + ", ".join(f"L{c.level} {fmt.size(c.size_bytes)}/{c.ways}-way"
                                    for c in m.host.data_caches()),
           "- config: " + ", ".join(f"{k}={v}" for k, v in m.config.scalars())]
    if not m.trace.is_empty():
        digest = "?" if m.trace.digest is None else m.trace.digest
        out.append(f"- trace: {'?' if m.trace.path is None else m.trace.path} (digest "
                   f"{str(digest)[:12]})")
    e2e = m.end_to_end
    if not e2e.is_empty():
        out.append(f"- end to end: {fmt.num(e2e.samples_per_s, ',.0f')} samples/s "
                   f"({e2e.source or 'measured'})")
    return out


def _ceiling_lines(m: ReportModel) -> list[str]:
    """The roofs the verdicts used: RooflineSection.roofs (ceilings.roofs_for, raised where an
    op ran above one, see roofline.section)."""
    roofs = m.roofline.roofs
    if roofs is None or roofs.is_empty():
        return []
    return ["", "## Ceilings (measured)", "",
            f"stream {fmt.num(roofs.stream_gbs)} GB/s, random access "
            f"{fmt.num(roofs.random_gbs)} GB/s ({fmt.num(roofs.random_ns_per_line)} ns/line), "
            f"DRAM latency {fmt.num(roofs.latency_ns)} ns, fp32 GEMM "
            f"{fmt.num(roofs.fp32_gflops)} GFLOP/s, bf16 GEMM "
            f"{fmt.num(roofs.bf16_gflops)} GFLOP/s at {roofs.threads} threads"]


def _op_lines(m: ReportModel) -> list[str]:
    """Operators: times from OpRow.time (TimeStats, report.time_stats); every other column
    from its Verdict (roofline.verdict_for): achieved_gbs, dram_gbs_est, achieved_gflops,
    intensity, label(), percent_of_roof."""
    verdicts = m.roofline.by_key()
    out = ["", "## Operators", "",
           "| op | phase | backend | median ms | p10-p90 ms | GB/s (eff.) | GB/s (DRAM est.) "
           "| GFLOP/s | FLOP/B | verdict | % of roof |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for op in m.ops:
        t = op.time
        v = verdicts.get(op.key) or Verdict()
        out.append(f"| {op.name} | {op.phase} | {op.backend} | "
                   f"{t.median * 1e3:.3f} | {t.p10 * 1e3:.3f}-{t.p90 * 1e3:.3f} | "
                   f"{fmt.num(v.achieved_gbs)} | {fmt.num(v.dram_gbs_est)} | "
                   f"{fmt.num(v.achieved_gflops)} | {fmt.num(v.intensity)} | "
                   f"{v.label(percent=False)} | {fmt.num(v.percent_of_roof, '.0f')} |")
    notes = [f"{v.name} ({v.phase}): {v.note}" for v in m.roofline.rows if v.note]
    if notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return out + ["", "Sources: times measured; bytes and FLOPs counted (cost model); DRAM "
                  "estimate simulated (cache study); roofs measured on this host."]


def _cache_lines(cache: CacheSection) -> list[str]:
    """Cache behaviour: per op, SimLevel.cumulative_hit_rate / fa_cumulative_hit_rate and
    OpCacheSim.dram_fraction (cachesim.simulate_op); counters (counters.availability)."""
    out: list[str] = []
    sim = cache.simulation
    if sim:
        first = next(iter(sim.values())).levels
        out += ["", "## Cache behaviour (simulated)", "",
                "| op | " + " | ".join(f"L{lv.level} hit (set-assoc / fully-assoc)"
                                       for lv in first) + " | DRAM bytes / row bytes |",
                "|---|" + "---|" * (len(first) + 1)]
        for name, s in sim.items():
            cells = [f"{lv.cumulative_hit_rate:.1%} / {fmt.num(lv.fa_cumulative_hit_rate, '.1%')}"
                     for lv in s.levels]
            out.append(f"| {name} | " + " | ".join(cells)
                       + f" | {fmt.num(s.dram_fraction, '.1%')} |")
    cnt = cache.counters
    if cnt is not None and not cnt.is_empty():
        out += ["", "Hardware counters: " + ("measured" if cnt.available else str(cnt.reason))]
    return out


def simd_markdown(simd: SimdStudy | Mapping) -> str:
    """Per op and ISA level: SimdCell.time_s and speedup (simd.run_simd); per level what the
    generated code showed (AsmCounts) or the knobs reported (SimdLevel.verify)."""
    simd = _study(simd)
    levels = [lv.name for lv in simd.levels]
    lines = ["| op | verdict | " + " | ".join(levels) + " |",
             "|---|---|" + "---|" * len(levels)]
    for o in simd.ops:
        cells = []
        for lvl in levels:
            c = o.by_level.get(lvl)
            cells.append(f"{c.time_s * 1e3:.3f} ms ({c.speedup:.2f}x)" if c and c.time_s
                         else ((c and c.error) or "-"))
        lines.append(f"| {o.op} | {o.verdict or '-'} | " + " | ".join(cells) + " |")
    lv_lines = []
    for lv in simd.levels:
        a = lv.asm
        what = (f"xmm {a.xmm}, ymm {a.ymm}, zmm {a.zmm}, packed FP ops "
                f"{'?' if a.packed_fp is None else a.packed_fp}" if a is not None else
                ", ".join(f"{k} {v}" for k, v in (lv.verify or {}).items()))
        status = "verified" if lv.verified else "NOT verified"
        lv_lines.append(f"- {lv.name}: {what} ({status}: expected "
                        f"{'?' if lv.expect is None else lv.expect})")
    if simd.is_sub_study:   # a sub-study (torch) rendered on its own
        return "\n".join(lines + ["", "Levels:"] + lv_lines)
    lv_lines += [f"- note: {n}" for n in simd.notes or []]
    held = simd.held
    return "\n".join(lines + ["", "Levels (from the generated code):"] + lv_lines + [
        "", f"Expectation (memory/latency-bound ops insensitive, compute-bound ones sensitive): "
            f"{'held' if held else 'did not hold' if held is False else 'not decided'}"
            f"{': ' + simd.statement if simd.statement else ''}"])


def render_report(report, json_path) -> list[Path]:
    """Write the Markdown summary and PNG plots beside `json_path`; return the paths."""
    m = _model(report)
    json_path = Path(json_path)
    stem = json_path.with_suffix("")
    written = [Path(f"{stem}.md")]
    atomic_write_text(written[0], markdown(m))
    rl = m.roofline
    if rl.rows and rl.roofs is not None and not rl.roofs.is_empty():
        written.append(plot_roofline(rl.rows, rl.roofs, f"{stem}.roofline.png"))
    if m.cache.simulation or m.cache.mrc:
        written.append(plot_mrc(m.cache, f"{stem}.mrc.png"))
    if m.cache.sweep is not None and m.cache.sweep.points:
        written.append(plot_sweep(m.cache.sweep, f"{stem}.sweep.png"))
    if m.simd.ops:
        written.append(plot_simd(m.simd, f"{stem}.simd.png"))
    return written
