"""Report op rows from a timer: measured samples joined with counted bytes and FLOPs.

`op_rows(timer, prep, nnz_mean)` gives one row per timed op of the model step (the names the
trainer's `timer.op(...)` calls use) with its work from `kernels.cost`; one process and every
rank of a hybrid-parallel run use it alike (a rank passes its local batch and its own tables).
`per_iter` sums an op's samples per iteration, which the rank accounting and the merge of the
ranks' reports need.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def split_contaminated(samples: list[float], bad: np.ndarray) -> tuple[list[float], int, bool]:
    """Drop contaminated samples when enough clean ones remain (>= half, >= 3)."""
    n_bad = int(bad.sum())
    if n_bad == 0:
        return samples, 0, False
    clean = [s for s, b in zip(samples, bad) if not b]
    if len(clean) >= max(3, len(samples) // 2):
        return clean, n_bad, True
    return samples, n_bad, False


def per_iter(timer, name: str, n: int) -> np.ndarray:
    """Per-iteration sum of op `name`'s samples (zeros if it never ran)."""
    if name not in timer.names:
        return np.zeros(n)
    o = timer._ops[name]
    it = np.asarray(o.iters, np.int64)
    keep = (it >= 0) & (it < n)
    return np.bincount(it[keep], weights=np.asarray(o.samples)[keep], minlength=n)[:n]


def timer_name(row: dict) -> str:
    """The timer op a report row was made from (inverse of the names in `op_rows`)."""
    name, phase = row["name"], row["phase"]
    if name == "emb.all":
        return "emb" if phase == "forward" else "emb_update"
    if name.startswith("emb."):
        return name if phase == "forward" else "emb_update." + name[4:]
    return name


def _dense_spec(prep, sgd_in_backward: bool) -> dict[str, tuple]:
    """timer name -> (row name, phase, kind, cost or None, shape) for the ops that are not
    embedding lookups or updates."""
    from dlrmprof import kernels

    cfg, dtype = prep.config, prep.opts.mlp_dtype
    B, D, T = cfg.batch_size, cfg.embedding_dim, cfg.num_tables
    n_params = sum(a * b + b for a, b in zip(cfg.bottom_mlp[:-1], cfg.bottom_mlp[1:])) + \
        sum(a * b + b for a, b in zip(cfg.top_layers[:-1], cfg.top_layers[1:]))
    sgd = kernels.Cost(2 * 4 * n_params, 4 * n_params, 2 * n_params)  # read p, grad; write p
    backward = kernels.cost("interaction_backward", batch=B, tables=T, dim=D)
    for layers in (cfg.bottom_mlp, cfg.top_layers):
        for a, b in zip(layers[:-1], layers[1:]):
            backward = backward + kernels.cost("linear_backward", batch=B, in_features=a,
                                               out_features=b)
    if sgd_in_backward:
        backward = backward + sgd
    return {
        "data": ("data", "data", "other", None, {"B": B}),
        "to_device": ("to_device", "data", "other", None, {"B": B}),
        "bottom_mlp": ("bottom_mlp", "forward", "mlp",
                       kernels.cost("mlp", batch=B, sizes=list(cfg.bottom_mlp)),
                       {"B": B, "sizes": list(cfg.bottom_mlp), "dtype": dtype}),
        "interaction": ("interaction", "forward", "interaction",
                        kernels.cost("interaction", batch=B, tables=T, dim=D),
                        {"B": B, "T": T, "D": D}),
        "top_mlp": ("top_mlp", "forward", "mlp",
                    kernels.cost("mlp", batch=B, sizes=list(cfg.top_layers)),
                    {"B": B, "sizes": list(cfg.top_layers), "dtype": dtype}),
        "loss": ("loss", "forward", "loss", None, {"B": B}),
        "sigmoid": ("sigmoid", "forward", "other", None, {"B": B}),
        "backward": ("backward", "backward", "other", backward,
                     {"B": B, "note": "MLP layers (grad_x and grad_weight, as the cost model "
                                      "counts them) + interaction backward" +
                                      (" + the MLPs' dense SGD, fused into their backward"
                                       if sgd_in_backward else "")}),
        "optimizer": ("optimizer", "optimizer", "other", None if sgd_in_backward else sgd,
                      {"params": 0 if sgd_in_backward else n_params,
                       "note": "no dense parameters left to update: the MLPs' SGD ran in "
                               "their backward" if sgd_in_backward else
                               "dense SGD: read p and grad, write p"}),
        "step": ("step", "step", "other", None, {"B": B}),
    }


def _emb_spec(prep, nnz_mean: list[float]) -> dict[str, tuple]:
    """The embedding ops' entries (all tables, then each table; lookup and sparse update):
    the forward reads rows at their packed size, the update writes fp32 master rows."""
    from dlrmprof import kernels
    from dlrmprof.kernels.quant import row_bytes as packed_row_bytes

    cfg, opts = prep.config, prep.opts
    B, D, T = cfg.batch_size, cfg.embedding_dim, cfg.num_tables
    emb_dtype = opts.emb_dtype
    row_b = packed_row_bytes(emb_dtype, D)
    fwd, upd = [], []
    for t, table in enumerate(cfg.tables):
        nnz = int(round(nnz_mean[t]))
        fwd.append(kernels.cost("embedding_bag", batch=B, dim=D, nnz=nnz, mode=table.pooling,
                                row_bytes=row_b))
        upd.append(kernels.cost("embedding_bag_sgd", batch=B, dim=D, nnz=nnz,
                                mode=table.pooling))
    fp32 = dict(row_bytes=D * 4, emb_dtype="fp32", lines_per_lookup=kernels.lines_per_row(D * 4))
    spec: dict[str, tuple] = {}
    spec["emb"] = ("emb.all", "forward", "embedding_bag", sum(fwd[1:], fwd[0]),
                   {"B": B, "D": D, "tables": T, "nnz": int(round(sum(nnz_mean))),
                    "rows": sum(t.rows for t in cfg.tables), "row_bytes": row_b,
                    "emb_dtype": emb_dtype, "lines_per_lookup": kernels.lines_per_row(row_b),
                    "fused": opts.fused_tables, "calls": 1 if opts.fused_tables else T})
    spec["emb_update"] = ("emb.all", "optimizer", "embedding_bag_sgd", sum(upd[1:], upd[0]),
                          dict(spec["emb"][4], **fp32))
    if emb_dtype != "fp32":   # the fp32 master rows are updated, then the touched rows packed
        spec["emb_update"][4]["note"] = (f"sparse SGD on the fp32 master rows, then the touched "
                                         f"rows re-packed into {emb_dtype} (timed inside this row)")
    for t, table in enumerate(cfg.tables):
        shape = {"B": B, "D": D, "nnz": int(round(nnz_mean[t])), "rows": table.rows,
                 "row_bytes": row_b, "emb_dtype": emb_dtype,
                 "lines_per_lookup": kernels.lines_per_row(row_b), "table": table.name}
        spec[f"emb.{table.name}"] = (f"emb.{table.name}", "forward", "embedding_bag", fwd[t],
                                     shape)
        spec[f"emb_update.{table.name}"] = (f"emb.{table.name}", "optimizer",
                                            "embedding_bag_sgd", upd[t], dict(shape, **fp32))
    return spec


def _op_backend(name: str, kind: str, phase: str, backend: str) -> str:
    """Which implementation ran a row: the run's kernel backend for the embedding ops (and
    the numba interaction), numpy for host-side data work, torch for the rest."""
    if kind in ("embedding_bag", "embedding_bag_sgd") or name == "step" or \
            (kind == "interaction" and backend == "numba"):
        return backend
    if phase == "data":
        return "numpy"  # host-side: cutting batches, synthesis, tensor wrapping
    return "torch"


def op_rows(timer, prep, nnz_mean: list[float],
            sgd_in_backward: bool = False) -> tuple[list[dict], dict[str, Any]]:
    """Report rows for every timed op, with counted bytes/FLOPs from `kernels.cost`, and
    {row/phase: samples dropped as contaminated}.

    `sgd_in_backward`: the MLPs' dense SGD ran inside their backward (`DLRMTrain`'s default),
    so its work is counted under ``backward`` and ``optimizer`` has no counted work of its own.
    """
    from dlrmprof.profile.report import op_row

    dev = "cuda" if prep.device.startswith("cuda") else "cpu"
    flags = timer.noise.flags(timer.iteration) if timer.noise is not None else \
        np.zeros(timer.iteration, bool)
    spec = _dense_spec(prep, sgd_in_backward)
    spec.update(_emb_spec(prep, nnz_mean))
    rows = []
    dropped = {}
    for name in timer.names:
        if name not in spec:
            continue
        row_name, phase, kind, cost, shape = spec[name]
        o = timer._ops[name]
        it = np.asarray(o.iters, np.int64)
        bad = flags[np.clip(it, 0, max(len(flags) - 1, 0))] if len(flags) else \
            np.zeros(len(it), bool)
        samples, n_bad, was_dropped = split_contaminated(list(o.samples), bad)
        if was_dropped:
            dropped[row_name + "/" + phase] = n_bad
        rows.append(op_row(row_name, phase=phase, device=dev,
                           backend=_op_backend(name, kind, phase, prep.backend),
                           samples=samples, bytes=None if cost is None else cost.bytes,
                           flops=None if cost is None else cost.flops, kind=kind, shape=shape,
                           flagged=n_bad, dropped_contaminated=was_dropped,
                           timer=timer.method_of(name)))
    return rows, dropped
