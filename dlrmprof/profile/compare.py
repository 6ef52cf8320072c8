"""Compare reports side by side: compute first (`compare` -> a typed `Comparison`), render
second (`markdown`, `plot`; JSON is ``Comparison.to_json()``).

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

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dlrmprof import fmt
from dlrmprof.errors import UserError
from dlrmprof.profile.model import OpRow, ReportModel, RunConfig, Verdict
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

# -- the comparison, typed ----------------------------------------------------------------------

@dataclass(frozen=True)
class OpCell:
    """One report's figures for one op: time stats from its `OpRow`, rates and verdict from
    its `Verdict` (or counted bytes / FLOPs over the median time where it has none)."""

    time_s: float
    p10: float
    p90: float
    n: int
    achieved_gbs: float | None
    achieved_gflops: float | None
    verdict: str | None
    percent_of_roof: float | None
    overhead_dominated: bool
    backend: str | None
    device: str | None
    timer: str | None
    compared: bool = False         # ratio and within_noise are set (the baseline has the op)
    ratio: float | None = None     # time / baseline time
    within_noise: bool | None = None

    @classmethod
    def of(cls, op: OpRow, v: Verdict | None) -> "OpCell":
        v = v or Verdict()
        t = op.time
        return cls(time_s=t.median, p10=t.p10, p90=t.p90, n=t.n,
                   achieved_gbs=op.achieved_gbs() if v.achieved_gbs is None else v.achieved_gbs,
                   achieved_gflops=(op.achieved_gflops() if v.achieved_gflops is None
                                    else v.achieved_gflops),
                   verdict=v.verdict, percent_of_roof=v.percent_of_roof,
                   overhead_dominated=bool(v.overhead_dominated), backend=op.backend,
                   device=op.device, timer=op.timer)

    def against(self, base: "OpCell") -> "OpCell":
        """This cell with its ratio to `base` and whether the two differ within noise (their
        p10..p90 intervals overlap)."""
        if self is base:
            return dataclasses.replace(self, compared=True, ratio=1.0, within_noise=True)
        return dataclasses.replace(
            self, compared=True, ratio=self.time_s / base.time_s if base.time_s else None,
            within_noise=not (self.p90 < base.p10 or base.p90 < self.p10))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        del d["compared"]
        if not self.compared:
            del d["ratio"], d["within_noise"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "OpCell":
        return cls(**d, compared="ratio" in d)


@dataclass(frozen=True)
class OpComparison:
    name: str
    phase: str
    cells: list                    # [OpCell | None], None where a report lacks the op
    verdict_changes: bool
    timer_differs: bool

    def to_json(self) -> dict:
        return {"name": self.name, "phase": self.phase,
                "cells": [None if c is None else c.to_json() for c in self.cells],
                "verdict_changes": self.verdict_changes, "timer_differs": self.timer_differs}

    @classmethod
    def from_json(cls, d: dict) -> "OpComparison":
        return cls(**dict(d, cells=[None if c is None else OpCell.from_json(c)
                                    for c in d["cells"]]))


@dataclass(frozen=True)
class ServingPoint:
    offered_qps: float
    p50: float | None              # seconds; None where the run could not bound it
    p99: float | None
    meets_slo: bool


@dataclass(frozen=True)
class ServingRow:
    """One report's serving figures (`ServingSection`): p50/p99 per offered rate."""

    report: str
    host_id: str
    label: str
    instances: int
    placement: str | None
    policy: str | None
    slo_s: float
    latency_bounded_qps: float | None
    points: list                   # [ServingPoint]
    interference: dict             # verdict class -> co-located / solo time

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Comparison:
    """Reports side by side; the first is the baseline.  ``to_json()`` is the ``--json``
    output of `dlrmprof compare`."""

    reports: list                  # the names
    baseline: str
    forced_mismatches: list
    serving: list                  # [ServingRow]
    schema_versions: list          # each report's version on disk
    hosts_shared: dict             # fact -> value
    hosts_differ: dict             # fact -> [value per report]
    ops: list                      # [OpComparison]
    verdict_changes: list          # "name (phase)"
    timer_differs: list
    samples_per_s: list            # end to end, per report
    samples_per_s_ratio: list      # throughput / the baseline's

    def to_json(self) -> dict:
        return {"reports": self.reports, "baseline": self.baseline,
                "forced_mismatches": self.forced_mismatches,
                "serving": [s.to_json() for s in self.serving],
                "schema_versions": self.schema_versions,
                "hosts": {"shared": self.hosts_shared, "differ": self.hosts_differ},
                "ops": [r.to_json() for r in self.ops],
                "verdict_changes": self.verdict_changes, "timer_differs": self.timer_differs,
                "end_to_end": {"samples_per_s": self.samples_per_s,
                               "ratio": self.samples_per_s_ratio}}

    @classmethod
    def from_json(cls, d: dict) -> "Comparison":
        return cls(reports=d["reports"], baseline=d["baseline"],
                   forced_mismatches=d["forced_mismatches"],
                   serving=[ServingRow(**dict(s, points=[ServingPoint(**p)
                                                         for p in s["points"]]))
                            for s in d["serving"]],
                   schema_versions=d["schema_versions"], hosts_shared=d["hosts"]["shared"],
                   hosts_differ=d["hosts"]["differ"],
                   ops=[OpComparison.from_json(r) for r in d["ops"]],
                   verdict_changes=d["verdict_changes"], timer_differs=d["timer_differs"],
                   samples_per_s=d["end_to_end"]["samples_per_s"],
                   samples_per_s_ratio=d["end_to_end"]["ratio"])


def _cpu(m: ReportModel) -> str:
    return f"{m.host.cpu.vendor} {m.host.cpu.model_name}"


def _caches(m: ReportModel) -> str | None:
    return ", ".join(f"L{c.level} {c.size_bytes // 1024} KiB"
                     for c in m.host.data_caches()) or None


def _gpus(m: ReportModel) -> str | None:
    return ", ".join("?" if g.name is None else g.name for g in m.host.gpu) or None


def _roof(key: str):
    return lambda m: _round(getattr(m.roofline.roofs, key)) if m.roofline.roofs else None


# host facts shown in the header: (label, getter of the typed report)
_FACTS = (
    ("CPU", _cpu),
    ("arch", lambda m: m.host.cpu.arch),
    ("logical CPUs", lambda m: m.host.cpu.logical_cpus),
    ("SIMD", lambda m: " ".join(m.host.cpu.simd) or None),
    ("caches", _caches),
    ("memory GiB", lambda m: round((m.host.memory_bytes or 0) / 2**30) or None),
    ("NUMA nodes", lambda m: m.host.numa_nodes or None),
    ("GPU", _gpus),
    ("kernel", lambda m: m.host.os.kernel if m.host.os else None),
    ("torch", lambda m: m.host.software.torch if m.host.software else None),
    ("numba", lambda m: m.host.software.numba if m.host.software else None),
    ("host id", lambda m: m.host_id),
    ("device", lambda m: m.config.device),
    ("backend", lambda m: m.config.backend),
    ("threads", lambda m: m.config.threads),
    ("iterations", lambda m: m.config.iters),
    ("SIMD level", lambda m: m.config.simd_level or m.config.simd),
    ("stream GB/s", _roof("stream_gbs")),
    ("random GB/s", _roof("random_gbs")),
    ("fp32 GFLOP/s", _roof("fp32_gflops")),
)


def _round(x):
    return None if x is None else float(f"{x:.3g}")


def load_all(paths: Sequence[str | Path]) -> list[ReportModel]:
    """Load and type every report first (so a bad file stops everything before any output,
    with one line naming the file and the field)."""
    if len(paths) < 2:
        raise UserError("compare needs at least two reports")
    reports = [Report.load(p) for p in paths]
    for p, r in zip(paths, reports):
        if not r.ops and not getattr(r, "serving", None):
            # a serve-bench report without per-op probes still has its serving figures
            raise UserError(f"{p}: field ops: expected at least one op row (or a serving "
                            f"section) to compare, got none")
    return [ReportModel.of(r, str(p)) for p, r in zip(paths, reports)]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def check_compatible(reports: Sequence[Report | ReportModel], names: Sequence[str],
                     force: bool = False) -> list[str]:
    """Mismatches between configs (and trace digests); UserError unless `force`."""
    models = [_model(r) for r in reports]
    base = models[0]
    serving = all(m.config.mode == "serve" for m in models)
    may_differ = SERVING_MAY_DIFFER if serving else MAY_DIFFER

    def comparable(cfg: RunConfig) -> dict:
        return {k: v for k, v in _flat(cfg.to_json()).items()
                if not may_differ.intersection(k.split("."))}
    bflat = comparable(base.config)
    problems = []
    for m, name in zip(models[1:], names[1:]):
        flat = comparable(m.config)
        for key in sorted(set(bflat) | set(flat)):
            if bflat.get(key) != flat.get(key):
                problems.append(f"config {key}: {bflat.get(key)!r} in {names[0]} vs "
                                f"{flat.get(key)!r} in {name}")
        d0, d1 = base.trace.digest, m.trace.digest
        if d0 and d1 and d0 != d1:
            problems.append(f"trace digest: {str(d0)[:12]} in {names[0]} vs {str(d1)[:12]} "
                            f"in {name}")
    if problems and not force:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"reports describe different experiments: {problems[0]}{more}; "
                        f"use --force to compare anyway")
    return problems


def _model(r: Report | ReportModel) -> ReportModel:
    return r if isinstance(r, ReportModel) else ReportModel.of(r)


def compare(reports: Sequence[Report | ReportModel], names: Sequence[str] | None = None, *,
            force: bool = False) -> Comparison:
    """The comparison, typed (`Comparison`; its ``to_json()`` is what ``--json`` prints)."""
    names = list(names or [f"report{i}" for i in range(len(reports))])
    models = [_model(r) for r in reports]
    mismatches = check_compatible(models, names, force=force)
    shared, differ = _host_facts(models)
    keys: list[tuple] = []
    for m in models:
        for op in m.ops:
            if op.key not in keys:
                keys.append(op.key)
    verdicts = [m.roofline.by_key() for m in models]
    rows = [_op_comparison(key, models, verdicts) for key in keys]
    e2e = [m.end_to_end.samples_per_s for m in models]
    return Comparison(
        reports=names, baseline=names[0], forced_mismatches=mismatches,
        serving=_serving(models, names),
        schema_versions=[m.loaded_from_version for m in models],
        hosts_shared=shared, hosts_differ=differ, ops=rows,
        verdict_changes=[f"{r.name} ({r.phase})" for r in rows if r.verdict_changes],
        timer_differs=[f"{r.name} ({r.phase})" for r in rows if r.timer_differs],
        samples_per_s=e2e,
        samples_per_s_ratio=[None if (x is None or not e2e[0]) else x / e2e[0] for x in e2e])


def _host_facts(models: Sequence[ReportModel]) -> tuple[dict, dict]:
    """Host facts (`_FACTS`) split into those every report shares and those that differ."""
    shared, differ = {}, {}
    for label, get in _FACTS:
        vals = []
        for m in models:
            try:
                vals.append(get(m))
            except (TypeError, KeyError, AttributeError):
                vals.append(None)
        if all(v is None for v in vals):
            continue
        if all(v == vals[0] for v in vals):
            shared[label] = vals[0]
        else:
            differ[label] = vals
    return shared, differ


def _op_comparison(key: tuple, models: Sequence[ReportModel],
                   verdicts: Sequence[dict]) -> OpComparison:
    """One op across the reports: each report's cell, ratios against the first."""
    cells: list[OpCell | None] = []
    for m, vmap in zip(models, verdicts):
        op = m.op(*key)
        cells.append(None if op is None else OpCell.of(op, vmap.get(key)))
    base = cells[0]
    if base is not None:
        cells = [c if c is None else c.against(base) for c in cells]
    vs = {c.verdict for c in cells if c is not None and c.verdict}
    timers = {c.timer for c in cells if c is not None and c.timer is not None}
    # e.g. per-table figures from inside one kernel call (tsc) against perf_counter around
    # a call per table: not the same quantity
    return OpComparison(name=key[0], phase=key[1], cells=cells, verdict_changes=len(vs) > 1,
                        timer_differs=len(timers) > 1)


def _serving(models: Sequence[ReportModel], names: Sequence[str]) -> list[ServingRow]:
    """Per report with a ``serving`` section: its config (host, instances, placement, batch
    policy), latency-bounded throughput and p50/p99 per offered rate."""
    out = []
    for m, n in zip(models, names):
        sec = m.serving
        if sec is None:
            continue
        inter = sec.interference
        out.append(ServingRow(
            report=n, host_id=m.host_id, label=sec.label, instances=sec.instances,
            placement=sec.placement.get("mode"), policy=sec.policy.get("label"),
            slo_s=sec.slo_s, latency_bounded_qps=sec.latency_bounded_qps,
            points=[ServingPoint(p.offered_qps, p.latency.p50, p.latency.p99, p.meets_slo)
                    for p in sec.points],
            interference={c.group: c.factor for c in inter.classes} if inter is not None
            else {}))
    return out


def serving_markdown(rows: list[ServingRow]) -> list[str]:
    """Serving: ServingRow per report (from its ServingSection, serving.bench)."""
    if not rows:
        return []
    out = ["", "## Serving", "",
           "| report | host | instances | batch policy | latency-bounded q/s | p99 ms by "
           "offered q/s | interference |", "|---|---|---|---|---|---|---|"]
    for s in rows:
        pts = ", ".join(f"{p.offered_qps:g}: " + ("-" if p.p99 is None else
                                                   f"{p.p99 * 1e3:.1f}")
                        for p in s.points)
        inter = ", ".join(f"{k} {v:.2f}x" for k, v in s.interference.items()) or "-"
        lbt = s.latency_bounded_qps
        out.append(f"| {s.report} | {s.host_id} | {s.instances} ({s.placement}) | "
                   f"{s.policy} | {'none' if lbt is None else format(lbt, 'g')} | {pts} | "
                   f"{inter} |")
    return out


# -- renderers ----------------------------------------------------------------------------------

def _timers_of(res: Comparison) -> list[str]:
    """Per report, the timing methods of the rows whose method differs between reports."""
    out = []
    for i in range(len(res.reports)):
        ts = sorted({row.cells[i].timer for row in res.ops if row.timer_differs
                     and row.cells[i] is not None and row.cells[i].timer})
        out.append("/".join(ts) or "-")
    return out


def markdown(res: Comparison) -> str:
    """The comparison as Markdown: hosts (`_FACTS`), one row per op (`OpComparison`), serving,
    end to end (EndToEnd.samples_per_s of each report)."""
    names = res.reports
    out = ["# dlrmprof compare", "",
           f"Baseline: {names[0]}.  Ratio = time / baseline time (> 1 is slower); "
           "`~` marks a difference within measured noise (p10..p90 intervals overlap)."]
    if res.forced_mismatches:
        out += ["", "**Compared with --force despite:** " + "; ".join(res.forced_mismatches)]
    up = [v for v in res.schema_versions if v is not None]
    if up and len(set(up)) > 1:
        out += ["", "Schema versions on disk: " + ", ".join(
            f"{n}: v{v}" for n, v in zip(names, res.schema_versions)) + " (upgraded)"]
    out += _host_lines(res) + _op_lines(res)
    if res.timer_differs:
        out += ["", "† timed differently in these reports (" + ", ".join(
            f"{n}: {t}" for n, t in zip(names, _timers_of(res))) + "): the times are not the "
            "same quantity (e.g. `tsc`: inside one kernel call for all tables, without the "
            "call overhead that `perf_counter` around a call per table includes)."]
    if res.verdict_changes:
        out += ["", "**Verdict changes between hosts:** " + ", ".join(res.verdict_changes)]
    else:
        out += ["", "No op changes verdict between these reports."]
    out += serving_markdown(res.serving)
    if any(x is not None for x in res.samples_per_s):
        out += ["", "End to end (samples/s, higher is better; ratio = throughput / baseline's): "
                + ", ".join(f"{n} {fmt.num(x, ',.0f')}" + (f" ({r:.2f}x)" if r is not None and i
                                                           else "")
                            for i, (n, x, r) in enumerate(zip(names, res.samples_per_s,
                                                              res.samples_per_s_ratio)))]
    return "\n".join(out) + "\n"


def _host_lines(res: Comparison) -> list[str]:
    names = res.reports
    out = ["", "## Hosts", "", "Shared: " + ("; ".join(f"{k} {v}" for k, v in
                                                     res.hosts_shared.items()) or "none")]
    if res.hosts_differ:
        out += ["", "| fact | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k, vals in res.hosts_differ.items():
            out.append(f"| {k} | " + " | ".join(fmt.num(v) if isinstance(v, float) else str(v)
                                                for v in vals) + " |")
    return out


def _verdict_text(c: OpCell) -> str:
    text = f"overhead ({c.verdict})" if c.overhead_dominated else (c.verdict or "-")
    return text + (f" ({c.percent_of_roof:.0f}%)" if c.percent_of_roof is not None else "")


def _op_lines(res: Comparison) -> list[str]:
    """Per op and report: OpCell.time_s (OpRow.time.median), ratio (OpCell.against),
    achieved_gbs / achieved_gflops and verdict (the report's Verdict, roofline.verdict_for)."""
    names = res.reports
    out = ["", "## Operators", "",
           "| op | phase | " + " | ".join(f"{n} ms" for n in names) + " | "
           + " | ".join(f"ratio {n}" for n in names[1:]) + " | "
           + " | ".join(f"GB/s {n}" for n in names) + " | "
           + " | ".join(f"GFLOP/s {n}" for n in names) + " | "
           + " | ".join(f"verdict {n}" for n in names) + " |",
           "|---|---|" + "---|" * (5 * len(names) - 1)]
    for row in res.ops:
        cells = row.cells
        times = [fmt.num(c.time_s * 1e3, ".3f") if c else "-" for c in cells]
        ratios = ["-" if not c or c.ratio is None else
                  f"{'~' if c.within_noise else ''}{c.ratio:.2f}x" for c in cells[1:]]
        gbs = [fmt.num(c.achieved_gbs) if c else "-" for c in cells]
        gfl = [fmt.num(c.achieved_gflops) if c else "-" for c in cells]
        ver = [_verdict_text(c) if c else "-" for c in cells]
        name = f"**{row.name}**" if row.verdict_changes else row.name
        if row.timer_differs:
            name += " †"
        out.append(f"| {name} | {row.phase} | " + " | ".join(times + ratios + gbs + gfl + ver)
                   + " |")
    return out


def plot(res: Comparison, path) -> Path:
    """Grouped bars: each op's median time per report (log scale), verdict changes starred."""
    from dlrmprof.profile.render import _figure, _save
    names = res.reports
    rows = res.ops
    fig = _figure(max(6.0, 0.7 * len(rows) + 3), 4.8)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(names)
    for j, n in enumerate(names):
        ys = [r.cells[j].time_s * 1e3 if r.cells[j] else 0 for r in rows]
        ax.bar([i + j * width for i in range(len(rows))], ys, width, label=n)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([("* " if r.verdict_changes else "") + r.name for r in rows],
                       rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median time per call (ms)")
    ax.set_title("dlrmprof compare (* verdict changes)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_serving(reports: Sequence[Report | ReportModel], names: Sequence[str],
                 path) -> Path | None:
    """Latency (p50, p99) vs offered load, one colour per report with a serving section."""
    from dlrmprof.profile.serving import plot_latency_load

    configs = [(f"{n}: {m.serving.instances} inst, {m.serving.policy.get('label')}", m.serving)
               for m, n in zip(map(_model, reports), names) if m.serving is not None]
    return plot_latency_load(configs, path) if configs else None
