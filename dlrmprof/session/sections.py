"""The report sections every run builds the same way: end to end, noise, config.

One process, one rank of a hybrid-parallel run and the ranks' merged report all make these
three sections here, so a figure such as ``samples_per_s`` means the same in each (their
``definition`` strings say what differs: whose iterations, which batch).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

DROP_POLICY = ("a row drops its contaminated samples when at least half (and 3) stay "
               "clean; otherwise it keeps all and reports how many were flagged")


def end_to_end(*, iterations: int, batch: int, warmup: int, wall_s: float, step_s: float,
               iter_wall: Sequence[float], definition: str, data_s: float | None = None,
               distributed: dict | None = None) -> dict[str, Any]:
    """Samples per second over the timed iterations (`wall_s`: data loading + model step)
    and over the model step alone (`step_s`); with `data_s`, the data loading's own rate and
    share of the time."""
    from dlrmprof.profile.report import time_stats

    n, B = iterations, batch
    out: dict[str, Any] = {"samples_per_s": n * B / wall_s,
                           "model_samples_per_s": n * B / step_s}
    if data_s is not None:
        out["data_samples_per_s"] = n * B / data_s if data_s > 0 else None
        out["data_fraction"] = data_s / wall_s if wall_s > 0 else None
    out.update({"iterations": n, "batch_size": B, "warmup": warmup, "wall_s": wall_s,
                "time": time_stats(list(iter_wall)), "definition": definition,
                "source": "measured"})
    if distributed is not None:
        out["distributed"] = distributed
    return out


def noise(timer, rows: list[dict], dropped: dict) -> dict[str, Any]:
    """Other processes' CPU use while timing (the timer's noise record), how many op samples
    it flagged, and which rows dropped their contaminated samples (`DROP_POLICY`)."""
    out = dict(timer.noise.summary()) if timer.noise is not None else {}
    out["flagged"] = int(sum(r["time"]["flagged"] for r in rows))
    out["dropped"] = dropped
    out["policy"] = DROP_POLICY
    return out


def config(opts, cfg, *, device: str, backend: str, source, **extra) -> dict[str, Any]:
    """The options as given, the model they built, and where the batches came from."""
    import torch

    out = {"run": dataclasses.asdict(opts), "model": cfg.to_dict(), "device": device,
           "backend": backend, "mode": opts.mode, "data": opts.data,
           "threads": opts.threads, "batch_size": cfg.batch_size, "preset": cfg.name,
           "mlp_dtype": opts.mlp_dtype, "emb_dtype": opts.emb_dtype,
           "torch_threads": torch.get_num_threads(), "source": source.describe(), **extra}
    out["run"]["input"] = list(opts.input)
    return out
