"""Running the model: device and memory checks, threads, the trainer, the timed loop.

This is the model side of `dlrmprof run` (what to build, how a step is driven and timed);
`dlrmprof.session` prepares the inputs around it and assembles the report from what
`timed_loop` measured.  The training/inference step itself is called in one place:
`timed_loop` -> `dlrm.train.run_loop` -> the trainer's `train_step` / `infer_step`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dlrmprof.dlrm.config import DLRMConfig
from dlrmprof.errors import UserError


def check_device(device: str) -> str:
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA GPU is visible to torch on this host "
                            f"(torch {torch.__version__}, CUDA build: "
                            f"{torch.version.cuda or 'no'})")
        return device
    raise UserError(f"--device: expected cpu or cuda, got {device!r}")


def check_table_memory(config: DLRMConfig, device: str) -> None:
    """Refuse (one line naming the table, the bytes and --max-rows) embedding tables that do
    not fit in the memory available now, before the model allocates them."""
    from dlrmprof import memcheck

    avail = memcheck.available_bytes(device)
    if avail is None:
        return
    row_bytes = config.embedding_dim * 4
    fit = memcheck.max_rows_that_fit([t.rows for t in config.tables], row_bytes, avail)
    memcheck.check_fits([(f"table {t.name} ({t.rows} rows x {t.dim} x 4 B)", t.nbytes)
                         for t in config.tables],
                        what="the embedding table", available=avail, device=device,
                        hint=f"cap every table with --max-rows {fit} (or fewer rows in the "
                             "trace / config)")


def set_threads(threads: int, backend: str) -> None:
    """Give torch (and numba, for the numba backend) `threads` threads; UserError when numba
    was started with fewer (NUMBA_NUM_THREADS is fixed per process)."""
    import torch

    torch.set_num_threads(threads)
    if backend == "numba":
        import numba

        if threads > numba.config.NUMBA_NUM_THREADS:
            raise UserError(f"--threads {threads}: numba was started with at most "
                            f"{numba.config.NUMBA_NUM_THREADS} threads (NUMBA_NUM_THREADS)")
        numba.set_num_threads(threads)


def build_trainer(config: DLRMConfig, *, backend: str, device: str, seed: int,
                  fused_tables: bool = False, mlp_dtype: str = "fp32",
                  emb_dtype: str = "fp32"):
    """The DLRM of `config` (`build_dlrm`) inside its single-process trainer (`DLRMTrain`)."""
    from dlrmprof.dlrm.model import build_dlrm
    from dlrmprof.dlrm.train import DLRMTrain

    model = build_dlrm(config, backend=backend, device=device, seed=seed,
                       fused_tables=fused_tables, mlp_dtype=mlp_dtype, emb_dtype=emb_dtype)
    return DLRMTrain(model, config.lr)


def held_out_evaluator(trainer, train_data, test_data) -> Callable[[int, list], dict]:
    """`evaluate(step, recent_losses)` for `run_loop`: the model on the held-out and the
    training rows at this step (the learning curve of a `--data kaggle` training run)."""

    def evaluate(step: int, recent: list[float]) -> dict:
        m = trainer.evaluate(test_data)
        t = trainer.evaluate(train_data)
        return {"step": step, "train_logloss": t["logloss"], "train_accuracy": t["accuracy"],
                "recent_batch_loss": float(np.mean(recent)) if recent else None,
                "test_logloss": m["logloss"], "test_accuracy": m["accuracy"],
                "test_auc": m["auc"]}

    return evaluate


def timed_loop(trainer, source, *, mode: str, iters: int, warmup: int, device: str,
               threads: int, progress: Callable[[int], None] | None = None,
               evaluate: Callable | None = None, eval_every: int = 0, graph=None,
               profile_iters: int = 50):
    """(timer, loop, profile_timer): `warmup` untimed then `iters` timed steps of `trainer` on
    `source`, every op timed by one `OpTimer` (`threads`: the cores this run counts as its own
    when it flags other processes' CPU use).  With `graph` (a `dlrm.graphs.GraphInfo`,
    enabled) the timed steps replay a CUDA graph and `profile_timer` times the ops of
    min(iters, profile_iters) eager steps after them; otherwise `profile_timer` is None."""
    from dlrmprof.dlrm.train import run_loop
    from dlrmprof.profile.timers import OpTimer

    timer = OpTimer(device=device, threads=threads)
    ptimer = OpTimer(device=device, threads=threads) if graph is not None and graph.enabled \
        else None
    loop = run_loop(trainer, source, mode=mode, iters=iters, warmup=warmup, timer=timer,
                    progress=progress, evaluate=evaluate, eval_every=eval_every, graph=graph,
                    profile_timer=ptimer, profile_iters=min(iters, profile_iters))
    return timer, loop, ptimer
