"""Rank 0 of a hybrid-parallel run: the ranks' reports merged into one, all written.

`merge(payloads, ...)` joins what every rank sent (its report as a dict, its per-iteration op
times, its losses): an op row takes, per iteration, the slowest rank's time (the ranks run in
parallel and meet at every collective) and the sum of the ranks' bytes/FLOPs (the whole job's
work); ``end_to_end.distributed`` compares the ranks.  `write_reports` writes each rank's
report and the merged one atomically, the merged one last.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrmprof.session import sections
from dlrmprof.session.rows import timer_name

_MERGED_KEYS = ("name", "phase", "device", "backend", "time", "bytes", "flops", "kind",
                "shape", "sources")


def rank_report_path(merged: Path, rank: int) -> Path:
    return merged.with_name(f"{merged.stem}.rank{rank}{merged.suffix or '.json'}")


def _merged_rows(reps, payloads: list[dict], n: int) -> list[dict]:
    """One row per (op, phase) any rank timed: slowest rank per iteration, summed work."""
    from dlrmprof.profile.report import op_row

    seen: dict[tuple, list] = {}
    for r, rep in enumerate(reps):
        for row in rep.ops:
            seen.setdefault((row["name"], row["phase"]), []).append((r, row))
    rows = []
    for (name, phase), lst in seen.items():
        tname = timer_name(lst[0][1])
        per = [np.asarray(payloads[r]["per_iter"].get(tname, [0.0] * n)) for r, _ in lst]
        samples = np.max(np.vstack(per), axis=0) if per else np.zeros(n)
        first = lst[0][1]

        def tot(key):
            vals = [row.get(key) for _, row in lst]
            return None if any(v is None for v in vals) else int(sum(vals))

        extra = {k: v for k, v in first.items() if k not in _MERGED_KEYS}
        extra["merge"] = "time: slowest rank per iteration; bytes/flops: sum over ranks"
        extra["per_rank_median_s"] = {str(r): row["time"]["median"] for r, row in lst}
        rows.append(op_row(name, phase=phase, device=first["device"], backend=first["backend"],
                           samples=samples.tolist(), bytes=tot("bytes"), flops=tot("flops"),
                           kind=first.get("kind"), shape=first.get("shape"),
                           flagged=max(row["time"]["flagged"] for _, row in lst),
                           **extra))
    return rows


def _ranks_summary(reps, step_max: np.ndarray) -> dict:
    """``end_to_end.distributed`` of the merged report: the ranks side by side."""
    world = len(reps)
    accts = [rep.end_to_end["distributed"]["accounting"] for rep in reps]
    compute = [a["compute_s"] for a in accts]
    a2a = [a["alltoall_s"] for a in accts]
    steps = [a["step_s"] for a in accts]
    return {
        "world_size": world,
        "ranks": [rep.end_to_end["distributed"] for rep in reps],
        "step_s": float(np.mean(step_max)),
        "alltoall_per_step_s": float(np.mean(a2a)),
        "alltoall_fraction_of_step": float(np.mean(a2a) / np.mean(steps)),
        "comm_per_step_s": float(np.mean([a["comm_s"] for a in accts])),
        "wait_per_step_s": [a["wait_s"] for a in accts],
        "transfer_per_step_s": [a["transfer_s"] for a in accts],
        "compute_per_step_s": compute,
        "load_imbalance_compute": float(max(compute) / np.mean(compute))
        if np.mean(compute) > 0 else 1.0,
        "accounting_error_max": float(max(a["accounting_error"] or 0.0 for a in accts)),
        "hosts": sorted({rep.end_to_end["distributed"]["hostname"] for rep in reps}),
        "definition": "per-step means; load_imbalance_compute = slowest rank's compute / "
                      "mean (1.0 = balanced); wait = time in the pre-collective barrier",
    }


def merge(payloads: list[dict], global_losses: list[float], mode: str):
    """(merged `Report`, the ranks' `Report`s) from what the ranks gathered on rank 0."""
    from dlrmprof.profile.report import Report

    reps = [Report.from_dict(p["report"], where=f"rank {i} report")
            for i, p in enumerate(payloads)]
    n = reps[0].end_to_end["iterations"]
    rows = _merged_rows(reps, payloads, n)
    iter_wall = np.vstack([np.asarray(p["per_iter"]["__iter_wall__"])
                           for p in payloads]).max(axis=0)
    step_max = np.max(np.vstack([np.asarray(p["per_iter"]["step"]) for p in payloads]), axis=0)
    e2e = sections.end_to_end(
        iterations=n, batch=reps[0].end_to_end["batch_size"],
        warmup=reps[0].end_to_end["warmup"], wall_s=float(iter_wall.sum()),
        step_s=float(step_max.sum()), iter_wall=iter_wall.tolist(),
        definition="global samples per second; an iteration lasts as long as its slowest rank",
        distributed=_ranks_summary(reps, step_max))
    config = dict(reps[0].config)
    config["distributed"] = dict(config["distributed"], rank=None, merged_from_ranks=len(reps))
    noise = {"per_rank": [rep.noise for rep in reps],
             "flagged": int(sum(rep.noise.get("flagged", 0) for rep in reps))}
    training = {}
    if mode == "train" and global_losses:
        training = {"losses": global_losses, "first_loss": global_losses[0],
                    "last_loss": global_losses[-1], "lr": config["model"]["lr"],
                    "loss": config["model"]["loss"],
                    "definition": "global loss per step = mean of the ranks' local losses"}
    return Report.new(reps[0].host, rows, config=config, trace=reps[0].trace, end_to_end=e2e,
                      noise=noise, training=training), reps


def write_reports(payloads: list[dict], prep, opts, global_losses: list[float]) -> dict:
    """Rank 0: per-rank reports and the merged one, each written atomically; the merged one
    last, so it exists only when everything before it succeeded."""
    merged, reps = merge(payloads, global_losses, opts.mode)
    if global_losses:
        for i, rep in enumerate(reps):
            reps[i] = rep.replace(training={"local_losses": payloads[i]["losses"],
                                            "global_losses": global_losses})
    if prep.out is not None:
        out = Path(prep.out)
    else:  # reports/<host_id>/<time>-<config>-<device>-<backend>-<N>ranks.json
        d = merged.default_path("reports")
        out = d.with_name(f"{d.stem}-{len(payloads)}ranks{d.suffix}")
    paths = []
    for r, rep in enumerate(reps):
        p = rank_report_path(out, r)
        rep.save(p)
        paths.append(str(p))
    merged.save(out)
    rendered = []
    if getattr(opts, "render", False):
        from dlrmprof.profile.render import render_report

        rendered = [str(p) for p in render_report(merged, out)]
    return {"out": str(out), "rank_reports": paths, "merged": merged.to_dict(),
            "rendered": rendered}
