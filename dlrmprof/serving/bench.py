"""What `dlrmprof serve-bench` does, as a library: options in, a `Report` with a ``serving``
section out.

`ServeOptions` holds the serving options beside the run options (`RunOptions`, shared with
`dlrmprof run`: config, trace, data, backend, device, threads, seed...); `prepare_serve` checks
everything and builds every schedule before any process starts; `execute` starts the
instances, probes per-op times solo and co-located, sweeps the offered rates, and assembles the
report.  Nothing here prints: `say(str)` is the command's callback.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dlrmprof.errors import UserError
from dlrmprof.serving.batcher import Policy
from dlrmprof.serving.loadgen import ArrivalSpec, Schedule, SizeSpec, make_schedule

PROBE_ROUNDS = 3   # solo / co-located probe alternations


@dataclass(frozen=True)
class ServeOptions:
    rates: tuple[float, ...] = (50.0,)
    duration: float = 10.0
    warmup: float = 2.0
    instances: int = 1
    max_batch: int = 1024
    max_wait: float = 0.002
    slo: float = 0.060
    arrivals: ArrivalSpec = ArrivalSpec()
    sizes: SizeSpec = SizeSpec()
    probe_iters: int = 30
    drain: float = 10.0
    pin: bool = True

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["arrivals"] = self.arrivals.to_json()
        d["sizes"] = self.sizes.to_json()
        return d


@dataclass
class PreparedServe:
    run: Any                       # session.prepare.Prepared (options checked, inputs loaded)
    serve: ServeOptions
    policy: Policy
    schedules: list[Schedule]


def prepare_serve(run_opts, serve: ServeOptions) -> PreparedServe:
    """Check every option, load the inputs and make the schedules; UserError on a bad one."""
    from dlrmprof.session.prepare import prepare

    if not serve.rates and serve.arrivals.kind != "file":
        raise UserError("--rate: give at least one rate (queries/s)")
    for name, v in (("--duration", serve.duration), ("--drain", serve.drain)):
        if not v > 0:
            raise UserError(f"{name} must be positive, got {v:g}")
    if not 0 <= serve.warmup < serve.duration:
        raise UserError(f"--warmup must be >= 0 and below --duration {serve.duration:g} s, "
                        f"got {serve.warmup:g}")
    if not serve.slo > 0:
        raise UserError(f"--slo must be positive, got {serve.slo * 1e3:g} ms")
    if serve.instances < 1:
        raise UserError(f"--instances must be at least 1, got {serve.instances}")
    if serve.probe_iters < 0:
        raise UserError(f"--probe-iters must be >= 0, got {serve.probe_iters}")
    policy = Policy(serve.max_batch, serve.max_wait)
    if run_opts.data not in ("trace", "random", "kaggle"):
        raise UserError(f"--data: expected trace, random or kaggle, got {run_opts.data!r}")
    # the run's batch size is the largest batch an instance will see
    probe_iters = PROBE_ROUNDS * -(-serve.probe_iters // PROBE_ROUNDS)
    prep = prepare(dataclasses.replace(run_opts, mode="infer", batch_size=serve.max_batch,
                                       iters=max(1, probe_iters), warmup=0,
                                       cache_study=False, simd=False))
    rates: list[float | None] = list(serve.rates) or [None]
    schedules = [make_schedule(r, serve.duration, serve.arrivals, serve.sizes,
                               seed=run_opts.seed + k) for k, r in enumerate(rates)]
    for s in schedules:
        if s.num_queries < 2:
            raise UserError(f"--rate {s.rate:g} x --duration {serve.duration:g} s gives "
                            f"{s.num_queries} query; a point needs at least 2")
    return PreparedServe(prep, serve, policy, sorted(schedules, key=lambda s: s.rate))


def execute(ps: PreparedServe, say: Callable[[str], None] = lambda s: None):
    """Run the probes and the sweep; returns (Report, ServingSection)."""
    from dlrmprof.serving import results as R
    from dlrmprof.serving.launcher import Launcher
    from dlrmprof.serving.worker import ModelSpec

    prep, serve = ps.run, ps.serve
    spec = ModelSpec("dlrm", prep.opts)
    say(f"starting {serve.instances} instance(s), each building its own model "
        f"({sum(t.nbytes for t in prep.config.tables) / 2**20:.0f} MiB of tables)")
    points, probes = [], {}
    with Launcher(spec, serve.instances, prep.opts.threads, pin=serve.pin) as la:
        say(f"placement: {la.placement.note}")
        if serve.probe_iters:
            say(f"per-op probe: {serve.probe_iters} batches of {serve.max_batch}, one instance "
                f"alone" + (", then all co-located" if serve.instances > 1 else "") +
                f", in {PROBE_ROUNDS} interleaved rounds")
            probes = _probe_rounds(la, serve)
        for s in ps.schedules:
            say(f"offered {s.rate:g} queries/s for {serve.duration:g} s ({s.num_queries} "
                f"queries)")
            raw = la.run_point(s, ps.policy, drain_s=serve.drain)
            p = R.point_figures(raw, warmup_s=serve.warmup, slo_s=serve.slo,
                                instances=serve.instances, placement=la.placement.to_json())
            say(f"  p50 {_ms(p.latency.p50)}  p99 {_ms(p.latency.p99)}  "
                f"({'meets' if p.meets_slo else 'misses'} the SLO), mean batch "
                f"{p.batch_sizes.get('mean') or 0:.0f}, unfinished {p.unfinished}")
            points.append(p)
        placement, info = la.placement.to_json(), la.info
    return _report(ps, points, probes, placement, info, say)


def _probe_rounds(la, serve: ServeOptions) -> dict:
    """Solo and co-located probes alternated round by round (the host's drift hits both
    alike); every instance's samples joined across rounds, each round's noise kept."""
    per = max(1, -(-serve.probe_iters // PROBE_ROUNDS))
    acc: dict[str, dict] = {"solo": {}, "colocated": {}}
    noise: dict[str, list] = {"solo": [], "colocated": []}
    for _ in range(PROBE_ROUNDS):
        phases = [("solo", [0])]
        if serve.instances > 1:
            phases.append(("colocated", list(range(serve.instances))))
        for phase, which in phases:
            got = la.probe(which, serve.max_batch, per)
            noise[phase].append(got.pop("noise"))
            for inst, (ops, nnz, wall) in got.items():
                _join(acc[phase], inst, ops, nnz, wall, per)
    out = {}
    for phase, by_inst in acc.items():
        if not by_inst:
            continue
        rounds = noise[phase]
        cores = [r.get("other_cores_mean") for r in rounds if r.get("windows")]
        out[phase] = {inst: (v["ops"], (v["nnz"] / v["n"]).tolist() if v["n"] else [],
                             v["wall"]) for inst, v in by_inst.items()}
        out[phase]["noise"] = {"rounds": rounds, "cpus": rounds[0].get("cpus"),
                               "other_cores_mean": sum(cores) / len(cores) if cores else None,
                               "source": "measured (psutil /proc/stat minus the instances' "
                                         "CPU time), per round"}
    return out


def _join(acc: dict, inst: int, ops: dict, nnz: list, wall: float, per: int) -> None:
    import numpy as np

    v = acc.setdefault(inst, {"ops": {}, "nnz": 0, "n": 0, "wall": 0.0})
    off = v["n"]
    for name, (samples, iters, method) in ops.items():
        s, it, _ = v["ops"].setdefault(name, ([], [], method))
        s.extend(samples)
        it.extend(i + off for i in iters)
    v["nnz"] = v["nnz"] + np.asarray(nnz or [0.0]) * per
    v["n"] += per
    v["wall"] += wall


def _ms(x) -> str:
    return "unbounded" if x is None else f"{x * 1e3:.2f} ms"


def _report(ps: PreparedServe, points, probes: dict, placement: dict, info: list, say):
    from dlrmprof.profile import host as hostmod
    from dlrmprof.profile.report import Report
    from dlrmprof.profile.serving import ServingSection
    from dlrmprof.serving import results as R

    prep, serve = ps.run, ps.serve
    say("collecting the host fingerprint")
    fp = hostmod.collect()
    rows, sections, inter = [], {}, None
    if "solo" in probes:
        rows, coloc = _probe_rows(prep, probes)
        verdicts = {}
        if prep.opts.roofline:
            sections.update(_roofline(rows, fp, prep, say))
            verdicts = {(v.get("name"), v.get("phase")): v
                        for v in sections["roofline"].get("rows") or [] if v.get("verdict")}
        if coloc:
            inter = R.interference(rows, coloc, verdicts, instances=serve.instances,
                                   batch=serve.max_batch, iters=prep.opts.iters,
                                   noise_solo=probes["solo"]["noise"],
                                   noise_coloc=probes["colocated"]["noise"])
    sec = ServingSection(
        model=f"DLRM {prep.config.name} ({prep.backend})", device=prep.device,
        instances=serve.instances, threads=prep.opts.threads, placement=placement,
        policy=ps.policy.to_json(), arrivals=serve.arrivals.to_json(),
        sizes=serve.sizes.to_json(), duration_s=serve.duration, warmup_s=serve.warmup,
        slo_s=serve.slo, seed=prep.opts.seed, points=points,
        latency_bounded_qps=R.latency_bounded(points), interference=inter,
        sources={"latency": "measured (CLOCK_MONOTONIC timestamps across processes)",
                 "reference": "replayed (recorded batches and service times, ideal queue)",
                 "per_op": "measured (closed-loop probe, perf_counter / cuda events)",
                 "noise": "measured (psutil /proc/stat minus the instances' CPU time)"})
    config = {"run": dataclasses.asdict(prep.opts), "serving": serve.to_json(),
              "model": prep.config.to_dict(), "device": prep.device, "backend": prep.backend,
              "mode": "serve", "data": prep.opts.data, "threads": prep.opts.threads,
              "preset": prep.config.name, "batch_size": serve.max_batch, "instances_info": info}
    config["run"]["input"] = list(prep.opts.input)
    noise = {"points": [p.noise for p in points],
             "probe": {k: v["noise"] for k, v in probes.items()}}
    report = Report.new(fp, rows, config=config, trace=prep.trace_info, noise=noise,
                        serving=sec.to_json(), **sections)
    return report, sec


def _probe_rows(prep, probes: dict) -> tuple[list[dict], list[list[dict]]]:
    """Report op rows (the run command's `op_rows`) for the solo and co-located probes."""
    from dlrmprof.session.rows import op_rows
    from dlrmprof.serving.worker import rebuild_timer

    iters = prep.opts.iters

    def rows_of(got) -> list[dict]:
        ops, nnz, _ = got
        timer = rebuild_timer(ops, iters, prep.device)
        return op_rows(timer, prep, nnz)[0]

    solo = rows_of(probes["solo"][0])
    coloc = []
    if "colocated" in probes:
        coloc = [rows_of(v) for k, v in probes["colocated"].items() if k != "noise"]
    return solo, coloc


def _roofline(rows, fp, prep, say) -> dict:
    from dlrmprof.profile import ceilings as ceil
    from dlrmprof.profile import roofline

    if ceil.load_cached(fp["host_id"]) is None:
        say("measuring this host's ceilings (once; cached per host)")
    c, _ = ceil.load_or_probe(fp, progress=lambda m: say(f"  ceilings: {m}"))
    return {"ceilings": c, "roofline": roofline.section(rows, c, threads=prep.opts.threads,
                                                        host=fp, device=prep.device)}


def default_out(report) -> Path:
    p = report.default_path("reports")
    cfg = report.serving
    return p.with_name(p.stem + f"-serve-{cfg['instances']}x-b{cfg['policy']['max_batch']}"
                                f"-w{cfg['policy']['max_wait_s'] * 1e3:g}ms.json")
