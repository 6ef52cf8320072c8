import copy

import numpy as np
import pytest
import torch

from dlrmprof.dlrm.config import load_config
from dlrmprof.dlrm.data import RandomSource
from dlrmprof.dlrm.model import DLRM, DenseArch, InteractionArch, OverArch, SparseArch, build_dlrm
from dlrmprof.dlrm.train import DLRMTrain
from dlrmprof.errors import UserError


def _source(cfg, seed):
    return RandomSource(cfg.batch_size, cfg.dense_features, [t.rows for t in cfg.tables],
                        seed=seed)


def _bags_source(cfg, seed):
    """Random bags of varying length (0..4), with repeated rows inside a batch."""
    rng = np.random.default_rng(seed)

    class S:
        B = cfg.batch_size

        def next_batch(self):
            from dlrmprof.dlrm.data import Batch
            idx, off = [], []
            for t in cfg.tables:
                lengths = rng.integers(0, 5, cfg.batch_size)
                o = np.zeros(cfg.batch_size + 1, np.int64)
                np.cumsum(lengths, out=o[1:])
                idx.append(rng.integers(0, min(t.rows, 7), int(o[-1])).astype(np.int64))
                off.append(o)
            dense = rng.random((cfg.batch_size, cfg.dense_features), dtype=np.float32)
            labels = (rng.random(cfg.batch_size) < 0.3).astype(np.float32)
            return Batch(dense, labels, idx, off)
    return S()


def test_dimensions_checked_at_construction():
    cfg = load_config("tiny")
    sparse = SparseArch(cfg.tables, backend="torch")
    with pytest.raises(UserError, match="top MLP input is 17 but the interaction gives 18"):
        DLRM(sparse, DenseArch(cfg.bottom_mlp), InteractionArch(4, 8), OverArch((17, 1)))
    with pytest.raises(UserError, match="bottom MLP ends at 6"):
        DLRM(sparse, DenseArch((13, 6)), InteractionArch(4, 8), OverArch((18, 1)))
    with pytest.raises(UserError, match="unknown backend 'fbgemm'"):
        SparseArch(cfg.tables, backend="fbgemm")
    with pytest.raises(UserError, match="unknown backend 'numba'.*cuda"):
        build_dlrm(cfg, backend="numba", device="cuda")


def _plain_reference_step(model, batch, lr):
    """The same step written plainly: dense nn.EmbeddingBag grads, autograd everywhere."""
    bags = [torch.nn.EmbeddingBag.from_pretrained(w.clone(), freeze=False, mode="sum")
            for w in model.sparse_arch.weights]
    bottom = copy.deepcopy(model.dense_arch.mlp)
    top = copy.deepcopy(model.over_arch.mlp)
    dense = torch.from_numpy(batch.dense)
    x = bottom(dense)
    pooled = torch.stack([bag(torch.from_numpy(i), torch.from_numpy(o[:-1]))
                          for bag, i, o in zip(bags, batch.indices, batch.offsets)], dim=1)
    z = torch.cat([x.unsqueeze(1), pooled], dim=1)
    zz = torch.bmm(z, z.transpose(1, 2))
    T1 = z.shape[1]
    li, lj = torch.tril_indices(T1, T1, offset=-1)
    logits = top(torch.cat([x, zz[:, li, lj]], dim=1)).squeeze(1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits,
                                                                torch.from_numpy(batch.labels))
    loss.backward()
    params = [b.weight for b in bags] + list(bottom.parameters()) + list(top.parameters())
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
    return float(loss.detach()), [b.weight.detach() for b in bags], list(bottom.parameters()) + \
        list(top.parameters())


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_training_step_matches_plain_autograd(backend):
    cfg = load_config("tiny")
    model = build_dlrm(cfg, backend=backend, seed=5)
    trainer = DLRMTrain(model, cfg.lr)
    src = _bags_source(cfg, 11)
    for _ in range(3):
        batch = src.next_batch()
        ref_loss, ref_w, ref_p = _plain_reference_step(model, batch, cfg.lr)
        loss, _ = trainer.train_step(batch)
        assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
        for w, r in zip(model.sparse_arch.weights, ref_w):
            torch.testing.assert_close(w, r, rtol=1e-5, atol=1e-6)
        mine = list(model.dense_arch.mlp.parameters()) + list(model.over_arch.mlp.parameters())
        for p, r in zip(mine, ref_p):
            torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-5, atol=1e-6)


def test_numba_and_torch_give_the_same_loss_trajectory():
    cfg = load_config("tiny")
    traj = {}
    for backend in ("numba", "torch"):
        model = build_dlrm(cfg, backend=backend, seed=3)
        trainer = DLRMTrain(model, cfg.lr)
        src = _source(cfg, seed=7)
        traj[backend] = np.array([float(trainer.train_step(src.next_batch())[0])
                                  for _ in range(50)])
    rel = np.abs(traj["numba"] - traj["torch"]) / np.abs(traj["torch"])
    assert rel.max() <= 1e-4
    assert len(set(np.round(traj["torch"], 6))) > 10  # it moves: not a constant trajectory


def test_inference_probabilities_without_grad():
    cfg = load_config("tiny")
    model = build_dlrm(cfg, backend="numba", seed=0)
    trainer = DLRMTrain(model, cfg.lr)
    before = [w.clone() for w in model.sparse_arch.weights]
    p = trainer.infer_step(_source(cfg, 1).next_batch())
    assert p.shape == (cfg.batch_size,) and not p.requires_grad
    assert bool(((p > 0) & (p < 1)).all())
    for w, b in zip(model.sparse_arch.weights, before):
        assert torch.equal(w, b)


def test_same_seed_same_model():
    cfg = load_config("tiny")
    a, b = build_dlrm(cfg, "torch", seed=4), build_dlrm(cfg, "numba", seed=4)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = build_dlrm(cfg, "torch", seed=5)
    assert not torch.equal(a.sparse_arch.weights[0], c.sparse_arch.weights[0])


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["torch", "numba-cuda"])
def test_cuda_training_follows_the_cpu_trajectory(backend):
    cfg = load_config("tiny")
    cpu = DLRMTrain(build_dlrm(cfg, "torch", "cpu", seed=3), cfg.lr)
    gpu = DLRMTrain(build_dlrm(cfg, backend, "cuda", seed=3), cfg.lr)
    assert gpu.model.sparse_arch.weights[0].device.type == "cuda"
    a = np.array([float(cpu.train_step(b)[0]) for b in _batches(cfg, 7, 30)])
    b = np.array([float(gpu.train_step(b)[0]) for b in _batches(cfg, 7, 30)])
    assert np.max(np.abs(a - b) / np.abs(a)) <= 1e-3
    p = gpu.infer_step(_source(cfg, 1).next_batch())
    assert p.device.type == "cuda" and bool(((p > 0) & (p < 1)).all())


def _batches(cfg, seed, n):
    src = _source(cfg, seed)
    return [src.next_batch() for _ in range(n)]


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_fused_tables_match_per_table(backend):
    cfg = load_config("tiny")
    per = DLRMTrain(build_dlrm(cfg, backend=backend, seed=2), cfg.lr)
    fused = DLRMTrain(build_dlrm(cfg, backend=backend, seed=2, fused_tables=True), cfg.lr)
    for b in _batches_bags(cfg, 5, 4):
        la, _ = per.train_step(b)
        lb, _ = fused.train_step(b)
        assert float(la) == pytest.approx(float(lb), rel=1e-6)
    torch.testing.assert_close(per.model.sparse_arch.weight_all,
                               fused.model.sparse_arch.weight_all, rtol=1e-6, atol=1e-7)
    b = _bags_source(cfg, 9).next_batch()
    torch.testing.assert_close(per.infer_step(b), fused.infer_step(b))


def _batches_bags(cfg, seed, n):
    src = _bags_source(cfg, seed)
    return [src.next_batch() for _ in range(n)]


def test_model_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_dlrm(load_config("tiny"), backend="torch", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_numba_tables_in_one_call_keep_per_table_figures():
    """One thread, invariant TSC: every table's lookup and update are timed inside the one
    kernel call (method "tsc"); with two threads each table gets its own (parallel) call,
    timed with perf_counter.  Both give the same training step."""
    import numba

    from dlrmprof.kernels.numba_cpu import tsc_period_s
    from dlrmprof.profile.timers import OpTimer
    cfg = load_config("tiny")
    batch = _bags_source(cfg, 4).next_batch()
    results = {}
    old = numba.get_num_threads()
    try:
        for threads in (1, 2) if numba.config.NUMBA_NUM_THREADS >= 2 else (1,):
            numba.set_num_threads(threads)
            model = build_dlrm(cfg, backend="numba", seed=2)
            timer = OpTimer(noise=False)
            loss, _ = DLRMTrain(model, cfg.lr).train_step(batch, timer=timer)
            results[threads] = (float(loss), [w.clone() for w in model.sparse_arch.weights])
            name = model.sparse_arch.op_names[0]
            upd = model.sparse_arch.upd_names[-1]
            want = "tsc" if threads == 1 and tsc_period_s() is not None else "perf_counter"
            assert timer.method_of(name) == want and timer.method_of(upd) == want
            assert len(timer._ops[name].samples) == 1 and timer._ops[name].samples[0] > 0
    finally:
        numba.set_num_threads(old)
    if 2 not in results:
        return
    assert results[1][0] == pytest.approx(results[2][0], rel=1e-6)
    for a, b in zip(results[1][1], results[2][1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_model_deep_copies_and_the_copy_trains_alike(backend):
    """copy.deepcopy of a built model (as benchmarks and users do to compare runs)."""
    cfg = load_config("tiny")
    model = build_dlrm(cfg, backend=backend, seed=6)
    twin = copy.deepcopy(model)
    batch = _bags_source(cfg, 8).next_batch()
    a = DLRMTrain(model, cfg.lr).train_step(batch)[0]
    b = DLRMTrain(twin, cfg.lr).train_step(batch)[0]
    assert float(a) == float(b)
    for w, v in zip(model.sparse_arch.weights, twin.sparse_arch.weights):
        assert torch.equal(w, v) and w.data_ptr() != v.data_ptr()
