"""Hybrid-parallel DLRM (dlrmprof.dlrm.distributed, sharding; the run layer's ranks, launch
and merge in dlrmprof.session): plan, init, equivalence with one process (in-process world of
1, and a real 2-rank gloo launch), bad input."""

import dataclasses
import os
import signal
import socket
import time

import numpy as np
import pytest
import torch

from dlrmprof.dlrm import sharding as S
from dlrmprof.dlrm.config import load_config
from dlrmprof.dlrm.distributed import build_rank_parts
from dlrmprof.dlrm.model import build_dlrm
from dlrmprof.dlrm.train import DLRMTrain, run_loop
from dlrmprof.errors import UserError
from dlrmprof.profile.report import Report
from dlrmprof.profile.timers import OpTimer
from dlrmprof.session import launch as D
from dlrmprof.session.prepare import RunOptions, make_source, prepare
from dlrmprof.session.ranks import run_rank
from dlrmprof.tracegen import build_profile


def _opts(trace, out=None, **kw):
    base = dict(config="tiny", trace=trace, data="trace", iters=50, warmup=0, out=out,
                roofline=False, cache_study=False, render=False)
    base.update(kw)
    return RunOptions(**base)


def _single_process(opts):
    """Losses and final tables of the plain single-process training loop."""
    prep = prepare(opts)
    model = build_dlrm(prep.config, backend=prep.backend, seed=opts.seed)
    loop = run_loop(DLRMTrain(model, prep.config.lr), make_source(prep), mode="train",
                    iters=opts.iters, warmup=opts.warmup, timer=OpTimer(noise=False))
    return np.array(loop.losses), [w.detach().numpy().copy() for w in model.sparse_arch.weights]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def world_of_one(monkeypatch):
    """This process as rank 0 of a 1-rank job (the env torchrun would set)."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    yield
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# -- sharding plan ---------------------------------------------------------------------------
def _load(name, rows, lookups, miss, penalty=10.0):
    return S.TableLoad(name, rows, rows * 64, lookups, miss, 1000,
                       lookups * (1 + (penalty - 1) * miss), "test")


def test_plan_balances_and_gives_every_rank_a_table():
    loads = [_load("big", 100_000, 1, 1.0), _load("hot", 10, 8, 0.0), _load("a", 5000, 1, 0.5),
             _load("b", 5000, 1, 0.5), _load("c", 100, 2, 0.0)]
    plan = S.plan_tables(loads, 2, by="bytes")
    # by bytes, the big table sits alone
    assert plan.tables_of(plan.owner[0]) == (0,)
    plan = S.plan_tables(loads, 5)
    assert sorted(plan.owner) == [0, 1, 2, 3, 4]
    plan = S.plan_tables(loads, 2, by="lookups")
    cost = plan.rank_cost()
    assert max(cost) / np.mean(cost) < 1.35
    assert S.plan_tables(loads, 2) == S.plan_tables(loads, 2)   # deterministic
    assert plan.rank_order() == tuple(sorted(range(5), key=lambda t: (plan.owner[t], t)))
    d = plan.to_dict()
    assert S.ShardingPlan.from_dict(d) == plan
    assert "rank 0" in plan.describe() and "imbalance" in plan.describe()


def test_more_ranks_than_tables_is_an_error():
    loads = [_load("a", 10, 1, 0.0), _load("b", 10, 1, 0.0)]
    with pytest.raises(UserError, match="3 ranks but only 2 embedding tables"):
        S.plan_tables(loads, 3)


def test_lookup_cost_follows_the_miss_ratio_curve():
    cfg = load_config("tiny")
    rng = np.random.default_rng(0)
    tab = cfg.tables[3]  # 1000 rows
    hot = build_profile("hot", rng.integers(0, 4, 3000), rows=tab.rows)      # 4 rows reused
    cold = build_profile("cold", rng.permutation(tab.rows)[np.arange(3000) % tab.rows],
                         rows=tab.rows)                                         # cyclic sweep
    cache = 64 * tab.dim * 4  # 64 rows fit
    lh, lc = S.table_loads([tab, tab], profiles=[hot, cold], cache_bytes=cache)
    assert lh.miss_ratio < 0.01 and lc.miss_ratio > 0.99
    assert lc.cost > 9 * lh.cost and lh.lookups_per_sample == 1.0


# -- initialisation and the 1-rank path ------------------------------------------------------
@pytest.mark.parametrize("owned", [(0, 1, 2, 3), (3,), (0, 2)])
def test_rank_parts_initialised_as_build_dlrm(owned):
    cfg = load_config("tiny")
    ref = build_dlrm(cfg, backend="numba", seed=7)
    sparse, dense, _, over = build_rank_parts(cfg, owned, "numba", "cpu", 7)
    for i, t in enumerate(owned):
        assert torch.equal(sparse.weights[i], ref.sparse_arch.weights[t])
    for a, b in zip(list(dense.parameters()) + list(over.parameters()),
                    list(ref.dense_arch.parameters()) + list(ref.over_arch.parameters())):
        assert torch.equal(a, b)


def test_one_rank_world_matches_single_process(tiny_trace, tmp_path, world_of_one):
    opts = _opts(tiny_trace, out=str(tmp_path / "d1.json"), iters=12, warmup=2)
    res = run_rank(opts, D.DistOptions(nproc=1, timeout_s=30), keep_weights=True,
                     fingerprint=False)
    losses, weights = _single_process(opts)
    # the same ops but for the dense SGD: the single process folds W -= lr dY^T X into one
    # GEMM inside the MLP backward, the rank (under DDP) subtracts the all-reduced dW after;
    # the two round differently in the last bit
    np.testing.assert_allclose(np.array(res["losses"]), losses, rtol=1e-6, atol=0)
    for t, w in res["weights"].items():
        np.testing.assert_allclose(w, weights[t], rtol=1e-5, atol=1e-7)
    merged = Report.load(tmp_path / "d1.json")
    assert Report.load(tmp_path / "d1.rank0.json").end_to_end["distributed"]["rank"] == 0
    assert merged.op("alltoall.fwd", "comm")["bytes"] > 0


def test_one_rank_world_on_criteo_rows_matches_single_process(tmp_path, world_of_one):
    # --data kaggle: the bundled Criteo sample; the plan's locality comes from its own rows
    opts = RunOptions(config="kaggle", data="kaggle", batch_size=32, iters=4, warmup=1,
                      out=str(tmp_path / "k.json"), roofline=False, cache_study=False,
                      render=False)
    res = run_rank(opts, D.DistOptions(nproc=1, timeout_s=30), fingerprint=False)
    losses, _ = _single_process(opts)
    # as above: equal but for the last bit of the dense SGD's rounding
    np.testing.assert_allclose(np.array(res["losses"]), losses, rtol=1e-6, atol=0)
    plan = Report.load(tmp_path / "k.json").config["distributed"]["plan"]
    assert {t["locality_source"] for t in plan["tables"]} == {"criteo rows"}
    assert len(plan["tables"]) == 26


def test_nccl_without_gpus_names_the_rank(tiny_trace, world_of_one):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(UserError, match=r"^rank 0: --dist-backend nccl needs CUDA GPUs"):
        run_rank(_opts(tiny_trace), D.DistOptions(backend="nccl"), fingerprint=False)


@pytest.mark.parametrize("dopts,opts_kw,match", [
    (D.DistOptions(nproc=5), {}, "5 ranks but only 4 embedding tables"),
    (D.DistOptions(nproc=3), {}, "--batch-size 32 is not divisible by the 3 ranks"),
    (D.DistOptions(nproc=2, backend="nccl"), {}, "nccl"),
    (D.DistOptions(nproc=0), {}, "--nproc must be at least 1"),
])
def test_bad_input_caught_before_launch(tiny_trace, dopts, opts_kw, match):
    if dopts.backend == "nccl" and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(UserError, match=match):
        D.precheck(_opts(tiny_trace, **opts_kw), dopts)


def _failure(tmp_path, rank, exitcode, message=None, timestamp=100):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure
    import json

    path = tmp_path / f"error{rank}-{exitcode}-{timestamp}-{len(list(tmp_path.iterdir()))}.json"
    if message is not None:
        path.write_text(json.dumps({"message": {"message": message, "extraInfo": {
            "py_callstack": "Traceback (most recent call last):\n  ...\n" + message,
            "timestamp": str(timestamp)}}}))
    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode,
                          error_file=str(path))


def test_translate_failure_picks_the_root_cause(tmp_path):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    peer = "RuntimeError: Connection closed by peer [127.0.0.1]:1234"
    user = "UserError: rank 1: table C3: index 9 is outside the table's 8 rows"
    exc = ChildFailedError("x", {0: _failure(tmp_path, 0, 1, peer, 99),
                                 1: _failure(tmp_path, 1, 1, user, 100)})
    err = D.translate_failure(exc)
    assert isinstance(err, UserError) and err.exit_code == 2
    assert str(err) == "rank 1: table C3: index 9 is outside the table's 8 rows; all ranks stopped"
    exc = ChildFailedError("x", {0: _failure(tmp_path, 0, 1, peer, 99),
                                 1: _failure(tmp_path, 1, -9)})
    err = D.translate_failure(exc)
    assert isinstance(err, D.RankFailed) and err.exit_code == 1
    assert str(err).startswith("rank 1 (pid 1001) died (SIGKILL) mid-run")
    # a bug keeps its traceback (not a one-line user error)
    exc = ChildFailedError("x", {0: _failure(tmp_path, 0, 1, "ZeroDivisionError: oops", 5)})
    err = D.translate_failure(exc)
    assert type(err) is RuntimeError and "Traceback" in str(err) and "rank 0" in str(err)


# -- real 2-rank runs (gloo, spawned through torchrun's elastic agent) -----------------------
def test_two_ranks_match_single_process(tiny_trace, tmp_path):
    t0 = time.perf_counter()
    out = tmp_path / "two.json"
    opts = _opts(tiny_trace, out=str(out))
    res = D.launch(opts, D.DistOptions(nproc=2, timeout_s=30), keep_weights=True,
                   fingerprint=False)
    assert sorted(res) == [0, 1]
    losses, weights = _single_process(opts)
    dist_losses = np.array(res[0]["losses"])
    assert len(dist_losses) == 50
    assert np.max(np.abs(dist_losses - losses) / np.abs(losses)) <= 1e-4
    owned = sorted(t for r in res.values() for t in r["weights"])
    assert owned == [0, 1, 2, 3]
    for r in res.values():
        for t, w in r["weights"].items():
            np.testing.assert_allclose(w, weights[t], rtol=1e-4, atol=1e-6)
    merged = Report.load(out)
    ranks = [Report.load(tmp_path / f"two.rank{r}.json") for r in (0, 1)]
    d = merged.end_to_end["distributed"]
    assert d["world_size"] == 2 and len(d["ranks"]) == 2
    for name in ("alltoall.fwd", "alltoall.bwd", "allreduce"):
        row = merged.op(name, "comm")
        assert row is not None and row["bytes"] > 0 and row["time"]["n"] == 50
    # all-to-all bytes per rank: its tables' pooled rows for the whole batch, fp32
    for rep in ranks:
        di = rep.end_to_end["distributed"]
        n_tab = len(di["tables"])
        assert di["collectives"]["alltoall.fwd"]["bytes_per_step"] == 32 * n_tab * 8 * 4
        assert rep.op("emb.all", "forward")["shape"]["tables"] == n_tab
    assert d["alltoall_per_step_s"] > 0
    # every collective is timed: the step is compute + communication (+ a little glue; the
    # 10% target is checked by benchmarks/bench_distributed.py on a realistic model)
    assert d["accounting_error_max"] < 0.25
    assert merged.training["losses"] == pytest.approx(dist_losses.tolist())
    # `compare` reads merged reports (and, with --force, a merged one against a rank's)
    import json
    import shutil

    from click.testing import CliRunner

    from dlrmprof.cli import cli

    shutil.copy(out, tmp_path / "again.json")
    res = CliRunner().invoke(cli, ["compare", str(out), str(tmp_path / "again.json"), "--json"])
    assert res.exit_code == 0, res.output
    rows = {(r["name"], r["phase"]): r for r in json.loads(res.output)["ops"]}
    assert rows[("alltoall.fwd", "comm")]["cells"][0]["achieved_gbs"] > 0
    res = CliRunner().invoke(cli, ["compare", str(out), str(tmp_path / "two.rank1.json"),
                                   "--force"])
    assert res.exit_code == 0, res.output
    assert time.perf_counter() - t0 < 60


def _dying_entry(opts, dopts):
    """Rank 1 kills itself (SIGKILL) at its third timed step."""
    rank = int(os.environ["RANK"])
    count = [0]

    def progress(n):
        count[0] += n
        if rank == 1 and count[0] == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    return run_rank(opts, dopts, progress=progress, fingerprint=False)


def _stuck_entry(opts, dopts):
    """Rank 1 stops answering (sleeps) at its second timed step."""
    rank = int(os.environ["RANK"])
    count = [0]

    def progress(n):
        count[0] += n
        if rank == 1 and count[0] == 2:
            time.sleep(120)

    return run_rank(opts, dopts, progress=progress, fingerprint=False)


def _user_error_entry(opts, dopts):
    if int(os.environ["RANK"]) == 1:
        opts = dataclasses.replace(opts, config="no-such-preset")
    return run_rank(opts, dopts, fingerprint=False)


def test_rank_dying_mid_run_stops_all_and_writes_nothing(tiny_trace, tmp_path):
    out = tmp_path / "dead.json"
    opts = _opts(tiny_trace, out=str(out), iters=200)
    t0 = time.perf_counter()
    with pytest.raises(D.RankFailed, match=r"^rank 1 \(pid \d+\) died \(SIGKILL\) mid-run") \
            as exc:
        D.launch(opts, D.DistOptions(nproc=2, timeout_s=10), entry=_dying_entry,
                 args=(opts, D.DistOptions(nproc=2, timeout_s=10)))
    assert "\n" not in str(exc.value)
    assert time.perf_counter() - t0 < 40
    assert not list(tmp_path.iterdir())


def test_stuck_rank_times_out_instead_of_hanging(tiny_trace, tmp_path):
    out = tmp_path / "stuck.json"
    opts = _opts(tiny_trace, out=str(out), iters=20)
    dopts = D.DistOptions(nproc=2, timeout_s=4)
    t0 = time.perf_counter()
    with pytest.raises(D.RankFailed, match=r"^rank 0: a collective waited longer than "
                                           r"--dist-timeout 4 s"):
        D.launch(opts, dopts, entry=_stuck_entry, args=(opts, dopts))
    assert time.perf_counter() - t0 < 45
    assert not out.exists()


def test_rank_user_error_is_one_line_naming_the_rank(tiny_trace, tmp_path):
    opts = _opts(tiny_trace, out=str(tmp_path / "x.json"))
    dopts = D.DistOptions(nproc=2, timeout_s=20)
    with pytest.raises(UserError, match=r"^rank 1: unknown config 'no-such-preset'") as exc:
        D.launch(opts, dopts, entry=_user_error_entry, args=(opts, dopts))
    assert "\n" not in str(exc.value) and "all ranks stopped" in str(exc.value)
    assert not (tmp_path / "x.json").exists()


def test_rendezvous_failure_times_out_with_one_line(tiny_trace, tmp_path):
    # two nodes are expected, only this one joins
    opts = _opts(tiny_trace, out=str(tmp_path / "r.json"))
    dopts = D.DistOptions(nproc=1, nnodes=2, rdzv_endpoint=f"127.0.0.1:{_free_port()}",
                          rdzv_timeout_s=3, timeout_s=10)
    t0 = time.perf_counter()
    with pytest.raises(D.RankFailed, match=r"^rendezvous at 127\.0\.0\.1:\d+ failed"):
        D.launch(opts, dopts)
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "r.json").exists()
