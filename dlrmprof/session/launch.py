"""Starting the ranks of a hybrid-parallel run: `launch`, and the one-line failures.

`launch(opts, dopts)` starts `dopts.nproc` ranks on this node through torchrun's own
machinery (`elastic_launch`, c10d rendezvous, standalone on localhost unless an endpoint is
given, no restarts, spawn start method); each runs `session.ranks.run_rank` (or another
`entry`: `gen-trace --nproc` captures tables this way).  A process started by plain `torchrun`
finds its rank in the environment (`session.ranks.under_torchrun`) and calls `run_rank`
itself.  A failing rank makes the launcher stop the others; `translate_failure` picks the
root cause (a rank's user error, then a rank killed by a signal, then the earliest failure)
and says it in one line.  `precheck` makes the checks the parent can make before spawning.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any, Callable

from dlrmprof.dlrm.distributed import check_global_batch, resolve_backend
from dlrmprof.errors import UserError
from dlrmprof.session.prepare import prepare
from dlrmprof.session.ranks import (DistOptions, RankFailed, exit_failure, make_plan,
                                    run_rank, user_failure)

__all__ = ["DistOptions", "RankFailed", "launch", "precheck", "translate_failure"]

_SHUTDOWN_S = 5  # after a rank fails: seconds between SIGTERM and SIGKILL of the others


def _rank_entry(opts, dopts, keep_weights, fingerprint=True):
    """What each spawned rank runs (module level: picklable for the spawn start method)."""
    return run_rank(opts, dopts, keep_weights=keep_weights, fingerprint=fingerprint)


def _child_message(failure) -> tuple[str, str]:
    """(one-line cause, traceback or '') of an elastic ProcessFailure."""
    msg = failure.message
    tb = ""
    if isinstance(msg, dict):
        tb = (msg.get("extraInfo") or {}).get("py_callstack", "") or ""
        msg = msg.get("message", "")
    return str(msg).strip(), tb


def _is_user(msg: str) -> bool:
    return msg.startswith(("UserError: ", "RankFailed: "))


def _user_messages(log_dir: str | None) -> list[str]:
    """User-error messages in the ranks' error files (a rank failing second may be the one
    the launcher reports; the first one's file still says what happened)."""
    import json

    out = []
    if not log_dir:
        return out
    for path in sorted(Path(log_dir).rglob("error.json")):
        try:
            msg = json.loads(path.read_text()).get("message")
        except (OSError, ValueError):
            continue
        if isinstance(msg, dict):
            msg = msg.get("message", "")
        if isinstance(msg, str) and _is_user(msg.strip()):
            out.append(msg.strip())
    return out


def translate_failure(exc, log_dir: str | None = None) -> Exception:
    """ChildFailedError -> one-line RankFailed (user errors, deaths) or RuntimeError (bugs).

    The root cause is picked over its consequences: a rank's user error first, then a rank
    killed by a signal, then the earliest failure (a rank whose peer died fails too, with
    "connection closed by peer", at about the same second)."""
    failures = exc.failures

    def key(item):
        rank, f = item
        msg, _ = _child_message(f)
        dead = f.exitcode is not None and f.exitcode < 0
        return (0 if _is_user(msg) else 1 if dead else 2, f.timestamp, rank)

    rank, failure = min(failures.items(), key=key)
    msg, tb = _child_message(failure)
    if not _is_user(msg) and not (failure.exitcode is not None and failure.exitcode < 0):
        found = _user_messages(log_dir)
        if found:
            msg = found[0]
    if _is_user(msg):
        return user_failure(rank, msg.split(": ", 1)[1])
    if (failure.exitcode is not None and failure.exitcode < 0) or not msg \
            or msg.startswith("To enable traceback") or msg == "<N/A>":
        return exit_failure(rank, failure.pid, failure.exitcode)
    return RuntimeError(f"rank {rank} failed: {msg}\n{tb}")


def launch(opts, dopts: DistOptions, *, entry: Callable | None = None,
           args: tuple | None = None, keep_weights: bool = False,
           fingerprint: bool = True, start_method: str = "spawn") -> dict[int, Any]:
    """Start `dopts.nproc` ranks on this node (torchrun's elastic agent, c10d rendezvous, no
    restarts) and return {rank: result}.  One-line errors: rendezvous failure, a rank's
    user error or death (the agent stops the other ranks).  `start_method` "fork" skips each
    rank's own import of torch; only for callers whose process has not started threads (no
    torch op, no numba parallel region) before the launch."""
    import logging
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if dopts.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {dopts.nproc}")
    if dopts.nnodes < 1:
        raise UserError(f"--nnodes must be at least 1, got {dopts.nnodes}")
    if dopts.nnodes > 1 and not dopts.rdzv_endpoint:
        raise UserError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the same on every node)")
    endpoint = dopts.rdzv_endpoint or "localhost:0"
    log_dir = tempfile.mkdtemp(prefix="dlrmprof-ranks-")
    cfg = LaunchConfig(
        logs_specs=DefaultLogsSpecs(log_dir=log_dir),
        min_nodes=dopts.nnodes, max_nodes=dopts.nnodes, nproc_per_node=dopts.nproc,
        run_id=dopts.rdzv_id or f"dlrmprof-{uuid.uuid4().hex[:12]}", rdzv_backend="c10d",
        rdzv_endpoint=endpoint,
        rdzv_configs={"join_timeout": int(max(1, dopts.rdzv_timeout_s)),
                      "timeout": int(max(1, dopts.rdzv_timeout_s))},
        max_restarts=0, monitor_interval=0.1, start_method=start_method,
        shutdown_timeout=_SHUTDOWN_S)
    entry = entry or _rank_entry
    args = args if args is not None else (opts, dopts, keep_weights, fingerprint)
    # failures come back as one line below, not as log spam
    logs = [logging.getLogger(n) for n in ("torch.distributed.elastic",
                                           "torch.multiprocessing.spawn")]
    levels = [lg.level for lg in logs]
    for lg in logs:
        lg.setLevel(logging.CRITICAL)
    try:
        return elastic_launch(cfg, entry)(*args)
    except ChildFailedError as exc:
        raise translate_failure(exc, log_dir) from None
    except RendezvousError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankFailed(f"rendezvous at {endpoint} failed: {type(exc).__name__}: {first} "
                         f"(waited {dopts.rdzv_timeout_s:g} s for {dopts.nnodes} node(s))") \
            from None
    finally:
        for lg, lv in zip(logs, levels):
            lg.setLevel(lv)
        import shutil

        shutil.rmtree(log_dir, ignore_errors=True)


def precheck(opts, dopts: DistOptions):
    """Checks the parent can make before spawning anything: (Prepared, plan)."""
    world = dopts.nproc * dopts.nnodes
    if dopts.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {dopts.nproc}")
    dev = "cpu" if opts.device == "cpu" else "cuda"
    resolve_backend(dopts.backend, dev if dev == "cpu" else "cuda:0")
    if dev == "cuda":
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() < dopts.nproc:
            raise UserError(f"--nproc {dopts.nproc} with --device cuda needs one GPU per "
                            f"process; {torch.cuda.device_count()} visible")
    prep = prepare(dataclasses.replace(opts, roofline=False, cache_study=False))
    plan = make_plan(prep, world, dopts.nproc, dopts)
    check_global_batch(prep.config.batch_size, world)
    return prep, plan
