"""The static-buffer step (what a CUDA graph captures) against the normal eager step.

On CPU `StaticStep` runs its body eagerly: over 50 steps it must give the normal step's
losses and tables bit for bit (same ops, same order; only where the inputs live differs).
`GraphStep`'s bookkeeping (a shape captured on its second sight, replayed afterwards, new
shapes beyond the cap run eagerly) is checked on CPU with the capture replaced by an eager
stand-in; the real capture is checked on a GPU (marked `cuda`).
"""

import copy

import numpy as np
import pytest
import torch

from dlrmprof.dlrm import graphs
from dlrmprof.dlrm.config import load_config
from dlrmprof.dlrm.data import Batch, RandomSource
from dlrmprof.dlrm.model import build_dlrm
from dlrmprof.dlrm.train import DLRMTrain
from cli_helpers import one_line_error as _error, run_command as _run

STEPS = 50


def _batches(cfg, seed, n, bags=False):
    """n batches; `bags`: bag lengths 0..4 drawn per batch (shapes differ), else one-hot."""
    if not bags:
        src = RandomSource(cfg.batch_size, cfg.dense_features, [t.rows for t in cfg.tables],
                           seed=seed)
        return [src.next_batch() for _ in range(n)]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        idx, off = [], []
        for t in cfg.tables:
            o = np.zeros(cfg.batch_size + 1, np.int64)
            np.cumsum(rng.integers(0, 5, cfg.batch_size), out=o[1:])
            idx.append(rng.integers(0, min(t.rows, 7), int(o[-1])).astype(np.int64))
            off.append(o)
        dense = rng.random((cfg.batch_size, cfg.dense_features), dtype=np.float32)
        labels = (rng.random(cfg.batch_size) < 0.3).astype(np.float32)
        out.append(Batch(dense, labels, idx, off))
    return out


def _pair(backend, fused=False, device="cpu", seed=3):
    cfg = load_config("tiny")
    a = DLRMTrain(build_dlrm(cfg, backend=backend, device=device, seed=seed,
                             fused_tables=fused), cfg.lr)
    b = DLRMTrain(copy.deepcopy(a.model), cfg.lr)
    return cfg, a, b


@pytest.mark.parametrize("backend,fused,bags,pack", [("torch", False, False, False),
                                                      ("torch", True, True, False),
                                                      ("torch", False, True, True),
                                                      ("numba", False, True, False)])
def test_static_step_trains_like_the_eager_step(backend, fused, bags, pack):
    """pack: the inputs as views into two flat buffers filled by one copy each (the GPU
    layout), here on the CPU."""
    cfg, eager, static = _pair(backend, fused)
    step = graphs.StaticStep(static, "train", pack=pack)
    batches = _batches(cfg, 11, STEPS, bags=bags)
    la, lb = [], []
    for b in batches:
        la.append(float(eager.train_step(b)[0]))
        lb.append(float(step(b)[0]))
    assert la == lb                       # bit for bit: same ops on the same values
    assert len(set(la)) > 1               # it trained
    for x, y in zip(eager.model.state_dict().values(), static.model.state_dict().values()):
        assert torch.equal(x, y)
    # inference over the trained model, through its own static buffers
    inf = graphs.StaticStep(static, "infer", pack=pack)
    for b in batches[:5]:
        assert torch.equal(eager.infer_step(b), inf(b))


def test_static_buffers_are_reused_per_shape_and_own_their_memory():
    cfg, _, tr = _pair("torch")
    step = graphs.StaticStep(tr, "train")
    b1, b2 = _batches(cfg, 1, 2)
    bufs = step.buffers(b1)
    assert step.buffers(b2) is bufs       # one-hot batches share one shape
    step(b1)
    b1.dense[...] = 7.0                   # the batch's arrays are not the buffers
    assert not torch.equal(bufs.dense, torch.full_like(bufs.dense, 7.0))
    odd = _batches(cfg, 2, 1, bags=True)[0]
    assert step.buffers(odd) is not bufs


class _EagerStandIn(graphs.GraphStep):
    """GraphStep with the CUDA capture replaced by a replay that runs the body eagerly."""

    def _capture(self, bufs):
        outs = {}

        class Replay:
            def replay(_self):
                outs["out"] = self.body(bufs)

        class Out:   # the "static outputs": read after each replay
            def __getitem__(_self, k):
                return outs["out"][k]

        return Replay(), Out(), bufs


def test_graph_step_captures_a_shape_on_its_second_sight_and_counts():
    cfg, eager, gr = _pair("torch")
    step = _EagerStandIn(gr, "train", max_graphs=2)
    one_hot = _batches(cfg, 5, 6)
    bags = _batches(cfg, 6, 4, bags=True)
    la = [float(eager.train_step(b)[0]) for b in one_hot + bags]
    lb = [float(step(b)[0]) for b in one_hot + bags]
    assert la == lb
    info = step.info
    # one-hot: first eager, second captured and replayed, then 4 replays; bag batches:
    # every shape new (first sight) -> eager
    assert (info.captures, info.replays, info.eager_steps) == (1, 5, 5)
    assert step.distinct_shapes() == 5
    assert graphs.GraphInfo.from_json(info.to_json()) == info


def test_graph_support_says_why():
    assert graphs.graph_support("cpu", "torch", False, "fp32") == \
        (False, "CUDA graphs need --device cuda")
    ok, why = graphs.graph_support("cuda", "numba-cuda", True, "fp32")
    assert ok and "numba-cuda" in why
    assert not graphs.graph_support("cuda", "torch", False, "int8")[0]


@pytest.mark.cuda
@pytest.mark.parametrize("backend,fused,mode", [("torch", False, "train"),
                                                ("torch", True, "train"),
                                                ("numba-cuda", False, "train"),
                                                ("torch", False, "infer"),
                                                ("numba-cuda", True, "infer")])
def test_cuda_graph_step_matches_the_eager_step(backend, fused, mode):
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    cfg, eager, gr = _pair(backend, fused, device="cuda")
    step = graphs.GraphStep(gr, mode)
    batches = _batches(cfg, 13, STEPS)
    if mode == "train":
        la = np.array([float(eager.train_step(b)[0]) for b in batches])
        lb = np.array([float(step(b)[0]) for b in batches])
        np.testing.assert_allclose(lb, la, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gr.model.sparse_arch.weight_all,
                                   eager.model.sparse_arch.weight_all, rtol=1e-4, atol=1e-6)
    else:
        for b in batches:
            torch.testing.assert_close(step(b).clone(), eager.infer_step(b))
    step.check()
    assert step.info.captures == 1 and step.info.replays == STEPS - 1


# -- `run --cuda-graph` ----------------------------------------------------------------------
FAST = ["--config", "tiny", "--batch-size", "16", "--no-roofline", "--no-cache-study",
        "--no-render", "--iters", "4", "--warmup", "2"]


def test_cuda_graph_asked_for_where_it_cannot_run(tiny_trace, tmp_path):
    out = tmp_path / "r.json"
    line = _error(_run("--trace", tiny_trace, "--cuda-graph", "--out", str(out), *FAST))
    assert "--cuda-graph" in line and "--device cuda" in line
    line = _error(_run("--trace", tiny_trace, "--cuda-graph", "--nproc", "2", *FAST))
    assert "--cuda-graph" in line and "eagerly" in line
    assert not out.exists()


def test_cpu_report_says_the_step_ran_eagerly(tiny_trace, tmp_path):
    from dlrmprof.profile.report import Report
    out = tmp_path / "r.json"
    res = _run("--trace", tiny_trace, "--backend", "torch", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    g = Report.load(out).end_to_end["cuda_graph"]
    assert g["enabled"] is False and "--device cuda" in g["reason"] and g["replays"] == 0
    res = _run("--trace", tiny_trace, "--no-cuda-graph", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    assert "--no-cuda-graph" in Report.load(out).end_to_end["cuda_graph"]["reason"]


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["torch", "numba-cuda"])
def test_run_on_cuda_steps_as_a_graph(tiny_trace, tmp_path, backend):
    from dlrmprof.profile.report import Report
    out = tmp_path / "g.json"
    res = _run("--device", "cuda", "--backend", backend, "--trace", tiny_trace,
               "--data", "random", "--out", str(out), *FAST)
    assert res.exit_code == 0, res.output
    rep = Report.load(out)
    g = rep.end_to_end["cuda_graph"]
    assert g["enabled"] and g["captures"] >= 1 and g["replays"] >= 1, g
    assert "eager profiling pass" in g["per_op_source"] and g["profile_iters"] == 4
    assert rep.op("step", "step")["timed_in"].startswith("cuda graph")
    assert rep.op("emb.C1")["timed_in"].startswith("eager profiling pass")
    assert "step as a CUDA graph" in res.output


def test_run_path_of_a_graph_step_on_cpu(tiny_trace, tmp_path, monkeypatch):
    """`run` with the step "as a graph" (the capture replaced by the eager stand-in, so it
    runs here): the report keeps the graph loop's step/data rows, takes every other op from
    the eager profiling pass and says so."""
    from dlrmprof.dlrm import train
    from dlrmprof.profile.report import Report
    monkeypatch.setattr(graphs, "plan", lambda *a: graphs.GraphInfo(True, "stand-in"))
    monkeypatch.setattr(train, "GraphStep", _EagerStandIn)
    out = tmp_path / "g.json"
    res = _run("--trace", tiny_trace, "--backend", "torch", "--data", "random", "--out",
               str(out), *FAST)
    assert res.exit_code == 0, res.output
    rep = Report.load(out)
    g = rep.end_to_end["cuda_graph"]
    assert g["enabled"] and g["replays"] >= 1 and g["profile_iters"] == 4, g
    assert g["graph_step_median_s"] > 0 and g["eager_step_median_s"] > 0
    assert rep.op("step", "step")["timed_in"].startswith("cuda graph")
    assert rep.op("data", "data")["time"]["n"] == 4
    emb = rep.op("emb.C1")
    assert emb["timed_in"].startswith("eager profiling pass") and emb["time"]["n"] == 4
    assert {("backward", "backward"), ("emb.all", "optimizer")} <= \
        {(r["name"], r["phase"]) for r in rep.ops}
    assert "step as a CUDA graph" in res.output


@pytest.mark.parametrize("backend,fused", [("torch", False), ("torch", True), ("numba", False)])
def test_warm_up_before_a_capture_leaves_the_model_as_it_was(backend, fused):
    """The warm-up runs whole training steps with the learning rates at 0: every weight
    keeps its bits, the learning rates come back, and the next step trains as usual."""
    cfg, eager, gr = _pair(backend, fused)
    step = graphs.GraphStep(gr, "train", warmup=3)
    b = _batches(cfg, 3, 1, bags=True)[0]
    before = {k: v.clone() for k, v in gr.model.state_dict().items()}
    bufs = step.buffers(b)
    bufs.copy_in(b)
    step.warm_up(bufs)
    for k, v in gr.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert gr.lr == cfg.lr and gr.model.dense_arch.param_update.lr == cfg.lr
    assert float(step.body(bufs)[0]) == float(eager.train_step(b)[0])
    for x, y in zip(eager.model.state_dict().values(), gr.model.state_dict().values()):
        assert torch.equal(x, y)
