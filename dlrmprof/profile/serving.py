"""The report's ``serving`` section (`dlrmprof serve-bench`), as typed dataclasses.

Every class has ``to_json()`` (plain JSON values) and ``from_json(d, where)`` (validates and
raises a one-line `UserError` naming the field).  Times are seconds.  A latency that the run
cannot bound (a percentile that falls on a query still unanswered at the drain deadline) is
``None``.  Where each figure comes from is in ``ServingSection.sources``.

    ServingSection
      points: [LoadPoint]            one per offered rate (the sweep)
        latency / wait / service: Percentiles
        reference: Percentiles       the same queries replayed through an ideal queue (below)
        instances: [InstanceFigures]
      interference: Interference     per-op time solo vs co-located, by verdict class
        rows: [InterferenceRow], classes: [InterferenceClass]

*Reference*: the recorded batches, each with its measured service time, replayed through an
ideal dispatcher (no lateness, no message passing) and the same number of FIFO servers; the
gap between measured and reference percentiles is what the harness itself added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from dlrmprof import fmt
from dlrmprof.errors import UserError

PCTS = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))


def _bad(where: str, name: str, expected: str, got: Any) -> UserError:
    g = repr(got)
    return UserError(f"{where}: field {name}: expected {expected}, got "
                     f"{g[:57] + '...' if len(g) > 60 else g}")


def _num(d: dict, key: str, where: str, *, optional: bool = False, integer: bool = False):
    v = d.get(key)
    if v is None and optional:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool) or not math.isfinite(v):
        raise _bad(where, key, "an integer" if integer else "a number"
                   + (" or null" if optional else ""), v)
    return v


def _obj(d: Any, where: str) -> dict:
    if not isinstance(d, dict):
        g = repr(d)
        raise UserError(f"{where}: expected an object, got {g[:57] + '...' if len(g) > 60 else g}")
    return d


def _list(d: dict, key: str, where: str) -> list:
    v = d.get(key, [])
    if not isinstance(v, list):
        raise _bad(where, key, "a list", v)
    return v


@dataclass(frozen=True)
class Percentiles:
    """p50/p90/p95/p99/p99.9 and mean of n values (seconds); None where unbounded."""

    n: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    p999: float | None

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: Any, where: str) -> "Percentiles":
        d = _obj(d, where)
        return cls(_num(d, "n", where, integer=True),
                   *(_num(d, k, f"{where}", optional=True)
                     for k in ("mean", "p50", "p90", "p95", "p99", "p999")))


@dataclass(frozen=True)
class InstanceFigures:
    instance: int
    cores: list
    batches: int
    samples: int
    busy_fraction: float             # service time / the point's span
    service: Percentiles             # per batch

    def to_json(self) -> dict:
        return {"instance": self.instance, "cores": list(self.cores), "batches": self.batches,
                "samples": self.samples, "busy_fraction": self.busy_fraction,
                "service": self.service.to_json()}

    @classmethod
    def from_json(cls, d: Any, where: str) -> "InstanceFigures":
        d = _obj(d, where)
        return cls(_num(d, "instance", where, integer=True), _list(d, "cores", where),
                   _num(d, "batches", where, integer=True),
                   _num(d, "samples", where, integer=True), _num(d, "busy_fraction", where),
                   Percentiles.from_json(d.get("service"), f"{where}.service"))


@dataclass(frozen=True)
class LoadPoint:
    """One offered rate: what was offered and achieved, latencies and where they went."""

    offered_qps: float
    achieved_qps: float              # queries dispatched / their dispatch span
    completed_qps: float             # answers inside the measurement window / its length
    samples_per_s: float
    queries: int                     # in the schedule
    measured: int                    # after the warm-up
    unfinished: int                  # measured queries unanswered at the drain deadline
    dispatch_late: Percentiles       # dispatch time - scheduled arrival
    latency: Percentiles             # answer - scheduled arrival
    wait: Percentiles                # latency - service of the query's last batch
    service: Percentiles             # per query: service of its last batch
    reference: Percentiles           # ideal-queue replay of the same batches
    batch_sizes: dict                # {"counts": {size: n}, "mean", "min", "max", "batches"}
    meets_slo: bool
    instances: list = field(default_factory=list)    # [InstanceFigures]
    noise: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Percentiles):
                v = v.to_json()
            elif f.name == "instances":
                v = [x.to_json() for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_json(cls, d: Any, where: str) -> "LoadPoint":
        d = _obj(d, where)
        kw: dict[str, Any] = {}
        for f in fields(cls):
            w = f"{where}.{f.name}"
            if f.type == "Percentiles":
                kw[f.name] = Percentiles.from_json(d.get(f.name), w)
            elif f.name == "instances":
                kw[f.name] = [InstanceFigures.from_json(x, f"{w}[{i}]")
                              for i, x in enumerate(_list(d, f.name, where))]
            elif f.type in ("dict",):
                kw[f.name] = _obj(d.get(f.name, {}), w)
            elif f.type == "bool":
                if not isinstance(d.get(f.name), bool):
                    raise _bad(where, f.name, "true or false", d.get(f.name))
                kw[f.name] = d[f.name]
            else:
                kw[f.name] = _num(d, f.name, where, integer=f.type == "int")
        return cls(**kw)


@dataclass(frozen=True)
class InterferenceRow:
    op: str
    phase: str
    kind: str | None
    verdict: str | None              # roofline verdict of the solo run (None: no roofline)
    solo_s: float                    # median per call, one instance alone
    colocated_s: float               # median per call over all co-located instances
    factor: float                    # colocated / solo
    within_noise: bool               # the p10..p90 intervals overlap

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: Any, where: str) -> "InterferenceRow":
        d = _obj(d, where)
        for k in ("op", "phase"):
            if not isinstance(d.get(k), str):
                raise _bad(where, k, "a string", d.get(k))
        return cls(d["op"], d["phase"], d.get("kind"), d.get("verdict"),
                   _num(d, "solo_s", where), _num(d, "colocated_s", where),
                   _num(d, "factor", where), bool(d.get("within_noise")))


@dataclass(frozen=True)
class InterferenceClass:
    group: str                       # verdict (or op kind without a roofline)
    ops: list
    solo_s: float                    # summed medians
    colocated_s: float
    factor: float                    # colocated_s / solo_s (time-weighted)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: Any, where: str) -> "InterferenceClass":
        d = _obj(d, where)
        return cls(str(d.get("group")), _list(d, "ops", where), _num(d, "solo_s", where),
                   _num(d, "colocated_s", where), _num(d, "factor", where))


@dataclass(frozen=True)
class Interference:
    instances: int
    batch: int
    iters: int
    grouped_by: str                  # "verdict" or "kind"
    rows: list                       # [InterferenceRow]
    classes: list                    # [InterferenceClass]
    noise_solo: dict
    noise_colocated: dict

    def to_json(self) -> dict:
        return {"instances": self.instances, "batch": self.batch, "iters": self.iters,
                "grouped_by": self.grouped_by, "rows": [r.to_json() for r in self.rows],
                "classes": [c.to_json() for c in self.classes],
                "noise_solo": self.noise_solo, "noise_colocated": self.noise_colocated}

    @classmethod
    def from_json(cls, d: Any, where: str) -> "Interference":
        d = _obj(d, where)
        return cls(_num(d, "instances", where, integer=True),
                   _num(d, "batch", where, integer=True), _num(d, "iters", where, integer=True),
                   str(d.get("grouped_by")),
                   [InterferenceRow.from_json(x, f"{where}.rows[{i}]")
                    for i, x in enumerate(_list(d, "rows", where))],
                   [InterferenceClass.from_json(x, f"{where}.classes[{i}]")
                    for i, x in enumerate(_list(d, "classes", where))],
                   _obj(d.get("noise_solo", {}), f"{where}.noise_solo"),
                   _obj(d.get("noise_colocated", {}), f"{where}.noise_colocated"))


@dataclass(frozen=True)
class ServingSection:
    model: str
    device: str
    instances: int
    threads: int                     # per instance
    placement: dict                  # launcher.Placement.to_json()
    policy: dict                     # batcher.Policy.to_json()
    arrivals: dict
    sizes: dict
    duration_s: float
    warmup_s: float
    slo_s: float
    seed: int
    points: list                     # [LoadPoint], by offered rate
    latency_bounded_qps: float | None   # highest offered rate whose p99 met the SLO
    interference: Interference | None = None
    sources: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return (f"{self.instances} inst ({self.placement.get('mode')}), "
                f"{self.policy.get('label')}")

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["points"] = [p.to_json() for p in self.points]
        out["interference"] = None if self.interference is None else \
            self.interference.to_json()
        return out

    @classmethod
    def from_json(cls, d: Any, where: str = "<report>.serving") -> "ServingSection":
        d = _obj(d, where)
        if not isinstance(d.get("model"), str) or not isinstance(d.get("device"), str):
            raise _bad(where, "model", "a string (and device a string)", d.get("model"))
        inter = d.get("interference")
        return cls(d["model"], d["device"], _num(d, "instances", where, integer=True),
                   _num(d, "threads", where, integer=True),
                   _obj(d.get("placement"), f"{where}.placement"),
                   _obj(d.get("policy"), f"{where}.policy"),
                   _obj(d.get("arrivals"), f"{where}.arrivals"),
                   _obj(d.get("sizes"), f"{where}.sizes"),
                   _num(d, "duration_s", where), _num(d, "warmup_s", where),
                   _num(d, "slo_s", where), _num(d, "seed", where, integer=True),
                   [LoadPoint.from_json(x, f"{where}.points[{i}]")
                    for i, x in enumerate(_list(d, "points", where))],
                   _num(d, "latency_bounded_qps", where, optional=True),
                   None if inter is None else Interference.from_json(inter,
                                                                      f"{where}.interference"),
                   _obj(d.get("sources", {}), f"{where}.sources"))


# -- rendering ------------------------------------------------------------------------------
def markdown(sec: ServingSection) -> str:
    """The section as Markdown: one row per offered rate, then interference by class."""
    out = [f"## Serving: {sec.label}", "",
           f"{sec.model} on {sec.device}; {sec.instances} instance(s) x {sec.threads} "
           f"thread(s), {sec.placement.get('note', '')}.  Arrivals "
           f"{sec.arrivals.get('describe')}; query sizes {sec.sizes.get('describe')}; "
           f"{sec.duration_s:g} s per rate, the first {sec.warmup_s:g} s not counted; "
           f"SLO p99 <= {sec.slo_s * 1e3:g} ms.", "",
           "| offered q/s | achieved q/s | completed q/s | samples/s | p50 ms | p90 | p95 | "
           "p99 | p99.9 | wait p50 | service p50 | ref. p99 | mean batch | unfinished | "
           "other cores | SLO |",
           "|" + "---|" * 16]
    for p in sec.points:
        L = p.latency
        out.append(
            f"| {p.offered_qps:g} | {p.achieved_qps:.1f} | {p.completed_qps:.1f} | "
            f"{p.samples_per_s:,.0f} | {fmt.ms(L.p50)} | {fmt.ms(L.p90)} | {fmt.ms(L.p95)} | "
            f"{fmt.ms(L.p99)} | {fmt.ms(L.p999)} | {fmt.ms(p.wait.p50)} | "
            f"{fmt.ms(p.service.p50)} | "
            f"{fmt.ms(p.reference.p99)} | {p.batch_sizes.get('mean') or 0:.0f} | {p.unfinished} | "
            f"{p.noise.get('other_cores_mean', float('nan')):.2f} | "
            f"{'met' if p.meets_slo else 'missed'} |")
    if sec.instances > 1 and sec.points:
        out += ["", "Per instance (batches, busy fraction of the point, service p50 ms):", "",
                "| offered q/s | " + " | ".join(f"instance {i.instance} (cores "
                                                 f"{','.join(map(str, i.cores))})"
                                                 for i in sec.points[0].instances) + " |",
                "|---|" + "---|" * len(sec.points[0].instances)]
        for p in sec.points:
            out.append(f"| {p.offered_qps:g} | " + " | ".join(
                f"{i.batches}, {i.busy_fraction:.0%}, {fmt.ms(i.service.p50)}"
                for i in p.instances) + " |")
    lbt = sec.latency_bounded_qps
    below = [p.offered_qps for p in sec.points
             if lbt is not None and p.offered_qps < lbt and not p.meets_slo]
    out += ["", f"Latency-bounded throughput (highest offered rate with p99 <= "
                f"{sec.slo_s * 1e3:g} ms): " + ("none of the rates" if lbt is None
                                                  else f"{lbt:g} queries/s")
            + (f" (but {', '.join(f'{r:g}' for r in below)} q/s missed: not monotone, see "
               f"the other processes' cores)" if below else "")]
    few = [p.offered_qps for p in sec.points if p.measured < 1000]
    if few:
        out.append(f"p99.9 rests on fewer than 1000 queries at {', '.join(f'{r:g}' for r in few)}"
                   f" q/s (a longer --duration tightens it).")
    inter = sec.interference
    if inter is not None and inter.classes:
        out += ["", f"### Co-location interference ({inter.instances} instances, batch "
                    f"{inter.batch}, {inter.iters} iterations each; by {inter.grouped_by})", "",
                "| class | ops | solo ms | co-located ms | factor |", "|---|---|---|---|---|"]
        for c in inter.classes:
            ops = ", ".join(c.ops[:4]) + (f" (+{len(c.ops) - 4})" if len(c.ops) > 4 else "")
            out.append(f"| {c.group} | {ops} | {fmt.ms(c.solo_s)} | {fmt.ms(c.colocated_s)} | "
                       f"{c.factor:.2f}x |")
        ns, nc = inter.noise_solo, inter.noise_colocated
        out += ["", f"Noise (other processes' cores, mean): solo "
                    f"{ns.get('other_cores_mean', float('nan')):.2f}, co-located "
                    f"{nc.get('other_cores_mean', float('nan')):.2f} of {nc.get('cpus')} CPUs."]
    return "\n".join(out) + "\n"


def plot_latency_load(configs: list[tuple[str, ServingSection]], path,
                      percentiles: tuple[str, ...] = ("p50", "p99")):
    """Latency percentiles vs offered load (log latency axis): one line per (config,
    percentile); the SLO as a dashed line.  An unbounded percentile is drawn at the top edge."""
    from dlrmprof.profile.render import _figure, _save

    fig = _figure(8, 5)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"p50": ":", "p90": "-.", "p95": "--", "p99": "-", "p999": "-"}
    vals = [getattr(p.latency, q) for _, sec in configs for p in sec.points
            for q in percentiles if getattr(p.latency, q)]
    slo_max = max(sec.slo_s for _, sec in configs)
    top = max(vals + [slo_max]) * 1.5 * 1e3
    bottom = min(vals + [slo_max]) / 1.5 * 1e3
    for i, (label, sec) in enumerate(configs):
        color = f"C{i % 10}"
        xs = [p.offered_qps for p in sec.points]
        for q in percentiles:
            ys = [(getattr(p.latency, q) * 1e3 if getattr(p.latency, q) is not None else top)
                  for p in sec.points]
            ax.plot(xs, ys, styles.get(q, "-"), marker="o", color=color, markersize=3,
                    label=f"{label} {q}")
    for slo in sorted({sec.slo_s for _, sec in configs}):
        ax.axhline(slo * 1e3, color="gray", linestyle="--", linewidth=0.8)
        ax.annotate(f"SLO {slo * 1e3:g} ms", (1, slo * 1e3), xycoords=("axes fraction", "data"),
                    fontsize=7, va="bottom", ha="right")
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.set_xlabel("offered load (queries/s)")
    ax.set_ylabel("latency (ms, from scheduled arrival)")
    ax.set_title("latency vs offered load (measured; unbounded points at the top)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)
