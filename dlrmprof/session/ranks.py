"""One rank of a hybrid-parallel run: join the process group, run, report.

`run_rank(opts, dopts)` runs in every process that `session.launch` (or plain `torchrun`)
started: it prepares the same inputs as a single-process run (`session.prepare`), takes the
table placement from rank 0 (`make_plan`), runs the timed loop of `dlrm.distributed`'s
`DistributedTrain` (`dlrm.runner.timed_loop`), builds this rank's report with the same rows
and sections as one process plus the exchange's rows and a time accounting, and sends it to
rank 0, which writes every rank's report and the merged one (`session.merge`).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dlrmprof.dlrm import runner
from dlrmprof.dlrm.distributed import (COMM_OPS, TOP_LEVEL, DistributedTrain,
                                       check_global_batch, resolve_backend)
from dlrmprof.errors import UserError
from dlrmprof.session import sections
from dlrmprof.session.prepare import make_source, prepare
from dlrmprof.session.rows import op_rows, per_iter

_PEER_GRACE_S = 2.0  # a rank failing with a non-user error waits this long before exiting


class RankFailed(UserError):
    """A rank failed or died during a distributed run (one line, exit code 1)."""

    exit_code = 1


def user_failure(rank: int, text: str) -> RankFailed:
    """One line for a rank's user error (bad input: exit code 2, as in one process)."""
    if not text.startswith("rank "):
        text = f"rank {rank}: {text}"
    err = RankFailed(text + "; all ranks stopped")
    err.exit_code = 2
    return err


def exit_failure(rank: int, pid, exitcode, written: str = "report") -> RankFailed:
    """One line for a rank that died by a signal (negative `exitcode`) or exited with an error
    code: which rank, its pid, and that the others were stopped with nothing `written`."""
    if exitcode is not None and exitcode < 0:
        import signal

        try:
            how = f"died ({signal.Signals(-exitcode).name}) mid-run"
        except ValueError:
            how = f"died (signal {-exitcode}) mid-run"
    else:
        how = f"exited with code {exitcode}"
    return RankFailed(f"rank {rank} (pid {pid}) {how}; the other ranks were stopped and no "
                      f"{written} was written")


@dataclass(frozen=True)
class DistOptions:
    """How to start and run the ranks (the `run --nproc` options)."""

    nproc: int = 1                      # processes per node
    nnodes: int = 1
    rdzv_endpoint: str | None = None    # host:port of the c10d rendezvous (default: standalone)
    rdzv_id: str | None = None          # job id shared by all nodes (default: a fresh uuid)
    rdzv_timeout_s: float = 60.0        # how long nodes wait for each other to join
    backend: str = "auto"               # gloo on CPU, nccl on CUDA
    timeout_s: float = 120.0            # process-group timeout: no collective waits longer
    shard_by: str = "both"
    miss_penalty: float = 10.0
    barriers: bool = True               # time a wait (1-element all-reduce) before collectives


# -- environment ---------------------------------------------------------------------------
def under_torchrun(env: dict | None = None) -> bool:
    """True in a process started by torchrun / elastic_launch (its rank is in the env)."""
    env = os.environ if env is None else env
    return all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def rank_env(env: dict | None = None) -> dict:
    env = os.environ if env is None else env
    world = int(env["WORLD_SIZE"])
    return {"rank": int(env["RANK"]), "world_size": world,
            "local_rank": int(env.get("LOCAL_RANK", 0)),
            "local_world_size": int(env.get("LOCAL_WORLD_SIZE", world)),
            "master": f"{env.get('MASTER_ADDR')}:{env.get('MASTER_PORT')}",
            "run_id": env.get("TORCHELASTIC_RUN_ID")}


# -- sharding --------------------------------------------------------------------------------
def make_plan(prep, world_size: int, local_world_size: int, dopts: DistOptions):
    """The table placement for `prep` (a `session.prepare.Prepared`) over `world_size`
    ranks, balanced by the tables' expected lookup cost at this host's cache share."""
    from dlrmprof.dlrm import sharding as S

    cfg = prep.config
    llc, sharing = S.last_level_cache_bytes()
    per_rank = None
    if llc:
        # ranks on this host split the cache (at most one share per CPU sharing it)
        per_rank = int(llc // max(1, min(local_world_size, sharing)))
    if prep.trace is not None and prep.opts.data == "trace":
        loads = S.table_loads(cfg.tables, profiles=list(prep.trace.profiles),
                              cache_bytes=per_rank, miss_penalty=dopts.miss_penalty,
                              source="trace profile")
    elif prep.opts.data == "kaggle" and prep.train_data is not None:
        from dlrmprof.tracegen import build_profile

        sp = prep.train_data.sparse
        profiles = [build_profile(t.name, sp[:, i], rows=t.rows)
                    for i, t in enumerate(cfg.tables)]
        loads = S.table_loads(cfg.tables, profiles=profiles, cache_bytes=per_rank,
                              miss_penalty=dopts.miss_penalty, source="criteo rows")
    else:
        lookups = None
        if prep.trace is not None:  # random indices, the trace's bag lengths
            lookups = [p.accesses / max(1, p.num_bags) for p in prep.trace.profiles]
        loads = S.table_loads(cfg.tables, lookups=lookups, cache_bytes=per_rank,
                              miss_penalty=dopts.miss_penalty)
    return S.plan_tables(loads, world_size, by=dopts.shard_by, cache_bytes=per_rank,
                         miss_penalty=dopts.miss_penalty)


# -- the rank's own rows and accounting ----------------------------------------------------------
def _collective_shape(name: str, exchange, n_iters: int, world: int, shape: dict) -> tuple:
    """(kind, bytes per step or None) of a timed collective; `shape` gets its bus bytes."""
    if name.startswith("wait."):
        shape["note"] = ("1-element all-reduce before the collective: time waiting for "
                         "the slowest rank plus one latency")
        return "barrier", None
    kind = "alltoall" if name.startswith("alltoall") else "allreduce"
    rec = exchange.bytes.get(name, [])
    if not rec:
        return kind, None
    it = np.array([i for i, _ in rec], np.int64)
    b = np.array([v for _, v in rec], np.float64)
    keep = (it >= 0) & (it < n_iters)
    per_step = np.bincount(it[keep], weights=b[keep], minlength=n_iters)[:n_iters]
    nbytes = int(round(float(np.median(per_step))))
    factor = (world - 1) / world if kind == "alltoall" else 2 * (world - 1) / world
    shape.update({"bytes_per_step": nbytes, "bus_factor": factor,
                  "bus_bytes": int(round(nbytes * factor)),
                  "bytes_convention": "nccl-tests: per-rank data size (algbw = bytes / time)"})
    return kind, nbytes


def comm_rows(timer, exchange, n_iters: int, world: int, device: str) -> list[dict]:
    """Rows for the exchange's timed ops: the collectives and the waits before them (phase
    ``comm``), the pooled rows' re-layout and DDP's forward (phase ``forward``)."""
    from dlrmprof.profile.report import op_row

    flags = timer.noise.flags(n_iters) if timer.noise is not None else np.zeros(n_iters, bool)
    rows = []
    for name in COMM_OPS + ("alltoall.layout", "dense_forward"):
        if name not in timer.names:
            continue
        calls = len(timer._ops[name].samples) / max(1, n_iters)
        shape = {"calls_per_step": calls, "world_size": world}
        if name in ("alltoall.layout", "dense_forward"):
            phase, kind, nbytes = "forward", "other", None
            shape["note"] = ("pooled rows put back in global table order" if name ==
                             "alltoall.layout" else "DDP forward: bottom MLP, interaction, "
                                                    "top MLP and DDP's own bookkeeping")
        else:
            phase = "comm"
            kind, nbytes = _collective_shape(name, exchange, n_iters, world, shape)
        backend = "torch" if phase == "forward" else "torch.distributed"
        rows.append(op_row(name, phase=phase, device=device, backend=backend,
                           samples=per_iter(timer, name, n_iters).tolist(), bytes=nbytes,
                           kind=kind, shape=shape, flagged=int(flags.sum()),
                           timer=timer.method))
    return rows


def accounting(timer, n: int) -> dict:
    """Where a rank's step went: compute, waiting for the slowest rank, transfers, untimed."""
    step = per_iter(timer, "step", n)
    top = sum((per_iter(timer, k, n) for k in TOP_LEVEL), np.zeros(n))
    comm = sum((per_iter(timer, k, n) for k in COMM_OPS), np.zeros(n))
    wait = sum((per_iter(timer, k, n) for k in COMM_OPS if k.startswith("wait.")),
               np.zeros(n))
    compute = top - comm
    per = {k: float(np.mean(per_iter(timer, k, n))) for k in COMM_OPS}
    s = float(np.mean(step))
    return {
        "step_s": s,
        "step_median_s": float(np.median(step)),
        "comm_s": float(np.mean(comm)),
        "wait_s": float(np.mean(wait)),
        "transfer_s": float(np.mean(comm - wait)),
        "compute_s": float(np.mean(compute)),
        "unaccounted_s": float(np.mean(step - top)),
        "accounting_error": float(abs(np.mean(step - top)) / s) if s > 0 else None,
        "alltoall_s": per["alltoall.fwd"] + per["alltoall.bwd"],
        "allreduce_s": per["allreduce"],
        "per_op_s": per,
        "definition": "per-step means; compute = top-level op timers minus the collectives "
                      "timed inside them (backward holds the gradient all-to-all and the "
                      "all-reduce); unaccounted = step - (compute + comm)",
    }


# -- one rank's run ----------------------------------------------------------------------------
def _init_group(backend: str, dopts: DistOptions, rank: int, device: str):
    import torch
    import torch.distributed as dist

    kw = {}
    if backend == "nccl":
        kw["device_id"] = torch.device(device)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=dopts.timeout_s),
                                **kw)
    except (RuntimeError, TimeoutError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"rank {rank}: rendezvous failed ({type(exc).__name__}: {first}); "
                        f"the other ranks did not join within {dopts.timeout_s:g} s or the "
                        f"master address is unreachable") from None


def run_rank(opts, dopts: DistOptions, *, progress: Callable[[int], None] | None = None,
             keep_weights: bool = False, fingerprint: bool = True) -> dict:
    """Run this process's rank (rank and world from the environment, set by torchrun or
    `launch`).  Rank 0 writes the per-rank reports and the merged one; every rank returns
    ``{"rank", "losses" (global, per timed step), "summary" (rank 0), "weights" (if asked)}``.
    """
    import torch
    import torch.distributed as dist

    env = rank_env()
    rank, world = env["rank"], env["world_size"]
    device = opts.device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"rank {rank}: --device {device}: no CUDA GPU is visible")
        device = f"cuda:{env['local_rank']}"
        torch.cuda.set_device(device)
    try:
        backend = resolve_backend(dopts.backend, device)
    except UserError as exc:
        raise UserError(f"rank {rank}: {exc}") from None
    _init_group(backend, dopts, rank, device)
    try:
        return _run_rank(opts, dopts, env, device, backend, progress, keep_weights, fingerprint)
    except UserError as exc:
        msg = str(exc)
        raise UserError(msg if msg.startswith(f"rank {rank}:") else f"rank {rank}: {msg}") \
            from None
    except Exception as exc:
        text = str(exc)
        if world > 1 and ("Timed out" in text or "timed out" in text or "Watchdog" in text):
            first = text.strip().splitlines()[0][:160]
            raise RankFailed(f"rank {rank}: a collective waited longer than --dist-timeout "
                             f"{dopts.timeout_s:g} s (another rank is stuck or far slower): "
                             f"{first}") from None
        if world > 1:
            # usually the consequence of another rank failing ("connection closed by peer"):
            # give the launcher a moment to see and report that rank's failure first
            time.sleep(_PEER_GRACE_S)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _prepare_rank(opts, dopts: DistOptions, env: dict, device: str):
    """(Prepared, plan) on this rank: the single-process checks and inputs, then the
    placement rank 0 made (its host's cache size) broadcast to every rank."""
    import torch.distributed as dist

    rank, world = env["rank"], env["world_size"]
    ropts = dataclasses.replace(opts, device="cpu" if device == "cpu" else "cuda",
                                out=opts.out if rank == 0 else None,
                                roofline=False, cache_study=False)
    prep = prepare(ropts)
    prep.device = device
    cfg = prep.config
    if world > cfg.num_tables:  # every rank finds this itself (no rank waits on another)
        raise UserError(f"{world} ranks but only {cfg.num_tables} embedding tables: table-wise "
                        f"sharding needs at least one table per rank")
    check_global_batch(cfg.batch_size, world)
    plan_box = [make_plan(prep, world, env["local_world_size"], dopts) if rank == 0 else None]
    dist.broadcast_object_list(plan_box, src=0)
    return prep, plan_box[0]


def _run_rank(opts, dopts, env, device, backend, progress, keep_weights, fingerprint) -> dict:
    import torch.distributed as dist

    from dlrmprof.session.merge import write_reports

    rank, world = env["rank"], env["world_size"]
    prep, plan = _prepare_rank(opts, dopts, env, device)
    runner.set_threads(opts.threads, prep.backend)
    source = make_source(prep)
    trainer = DistributedTrain(prep.config, plan, rank, prep.backend, device, opts.seed,
                               barriers=dopts.barriers,
                               fused_tables=bool(getattr(opts, "fused_tables", False)))
    # the ranks on this host compete for its cores: count them all as "ours" for noise flags
    timer, loop, _ = runner.timed_loop(trainer, source, mode=opts.mode, iters=opts.iters,
                                    warmup=opts.warmup, device=device,
                                    threads=opts.threads * env["local_world_size"],
                                    progress=progress)
    rep = rank_report(opts, prep, dopts, env, backend, plan, trainer, timer, loop, source,
                      fingerprint)
    n = opts.iters
    per = {k: per_iter(timer, k, n).tolist() for k in timer.names}
    per["__iter_wall__"] = list(timer.iter_wall)
    payload = {"report": rep.to_dict(), "per_iter": per, "losses": loop.losses}
    gathered = [None] * world if rank == 0 else None
    dist.gather_object(payload, gathered, dst=0)
    # global loss per step = mean of the ranks' local means (equal local batches)
    losses_box = [None] * world
    dist.all_gather_object(losses_box, loop.losses)
    global_losses = np.mean(np.array(losses_box, np.float64), axis=0).tolist() \
        if opts.mode == "train" else []
    result: dict[str, Any] = {"rank": rank, "losses": global_losses, "owned": trainer.owned}
    if keep_weights:
        result["weights"] = trainer.table_weights()
    if rank == 0:
        result["summary"] = write_reports(gathered, prep, opts, global_losses)
    dist.barrier()
    return result


def _rank_rows(prep, trainer, timer, loop, world: int) -> tuple[list[dict], dict]:
    """This rank's op rows: the dense ops at the local batch, the embedding ops of its own
    tables at the global batch, then the exchange's rows."""
    cfg = prep.config
    local = dataclasses.replace(prep, config=dataclasses.replace(cfg, batch_size=trainer.Bl))
    own = dataclasses.replace(prep, config=dataclasses.replace(
        cfg, tables=tuple(cfg.tables[t] for t in trainer.owned)))
    rows_local, dropped = op_rows(timer, local, loop.nnz_mean)
    rows_emb, dropped_e = op_rows(timer, own, [loop.nnz_mean[t] for t in trainer.owned])
    rows = [r for r in rows_local if not r["name"].startswith("emb.")] + \
           [r for r in rows_emb if r["name"].startswith("emb.")]
    dev = "cuda" if prep.device.startswith("cuda") else "cpu"
    rows += comm_rows(timer, trainer.exchange, prep.opts.iters, world, dev)
    return rows, {**dropped, **dropped_e}


def _bandwidth(row: dict | None) -> dict | None:
    """Algorithm and bus bandwidth of a collective's row (nccl-tests convention)."""
    if row is None or not row.get("bytes") or row["time"]["median"] <= 0:
        return None
    t = row["time"]["median"]
    return {"bytes_per_step": row["bytes"], "median_s": t, "mean_s": row["time"]["mean"],
            "algbw_gbs": row["bytes"] / t / 1e9,
            "busbw_gbs": row["shape"]["bus_bytes"] / t / 1e9,
            "calls_per_step": row["shape"]["calls_per_step"]}


def _dist_info(env, backend, device, cfg, trainer, timer, rows, n: int) -> dict:
    """The rank's part of ``end_to_end.distributed``: its tables, CPU share, collectives'
    bandwidth and the accounting of its step."""
    wins = timer.noise.windows if timer.noise is not None else []
    wsum = sum(w.wall_s for w in wins)
    comm = {r["name"]: r for r in rows if r["phase"] == "comm"}
    return {
        "rank": env["rank"], "world_size": env["world_size"],
        # CPU this rank actually got while timing (process CPU time / wall), and what all
        # other processes (the other ranks on this host included) used, in cores
        "own_cores_mean": (sum(w.own_cores * w.wall_s for w in wins) / wsum) if wsum > 0
        else None,
        "other_cores_mean": (sum(w.other_cores * w.wall_s for w in wins) / wsum) if wsum > 0
        else None,
        "local_rank": env["local_rank"],
        "local_world_size": env["local_world_size"], "backend": backend, "device": device,
        "global_batch": cfg.batch_size, "local_batch": trainer.Bl,
        "tables": [cfg.tables[t].name for t in trainer.owned],
        "collectives": {k: _bandwidth(comm.get(k))
                        for k in ("alltoall.fwd", "alltoall.bwd", "allreduce")},
        "accounting": accounting(timer, n), "hostname": os.uname().nodename,
    }


def rank_report(opts, prep, dopts, env, backend, plan, trainer, timer, loop, source,
                fingerprint: bool = True):
    """This rank's `Report`: the same rows and sections as one process, at its local batch
    and its own tables, plus the exchange's rows and ``end_to_end.distributed``.  `opts`:
    the options as the user gave them (the report stores them), `prep`: this rank's."""
    from dlrmprof.profile.report import Report

    cfg, n = prep.config, opts.iters
    world = env["world_size"]
    rows, dropped = _rank_rows(prep, trainer, timer, loop, world)
    dev = "cuda" if prep.device.startswith("cuda") else "cpu"
    wall = float(sum(timer.iter_wall))
    end_to_end = sections.end_to_end(
        iterations=n, batch=cfg.batch_size, warmup=opts.warmup, wall_s=wall,
        step_s=float(np.sum(per_iter(timer, "step", n))), iter_wall=timer.iter_wall,
        data_s=float(np.sum(per_iter(timer, "data", n))),
        definition="global samples (all ranks) per second of this rank's timed iterations",
        distributed=_dist_info(env, backend, prep.device, cfg, trainer, timer, rows, n))
    config = sections.config(
        opts, cfg, device=dev, backend=prep.backend, source=source,
        distributed={"world_size": world, "rank": env["rank"], "backend": backend,
                     "plan": plan.to_dict(), "options": dataclasses.asdict(dopts),
                     "roofline": "not run under torch.distributed (single-process "
                                 "runs give verdicts)"})
    fp = _fingerprint() if fingerprint else {"host_id": "unknown",
                                             "hostname": os.uname().nodename}
    return Report.new(fp, rows, config=config, trace=prep.trace_info, end_to_end=end_to_end,
                      noise=sections.noise(timer, rows, dropped), training={})


def _fingerprint() -> dict:
    from dlrmprof.profile import host as hostmod

    return hostmod.collect(counters=False)
