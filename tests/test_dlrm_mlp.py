"""The fused MLP op (`dlrmprof.dlrm.mlp._MLPFunction`) against torch autograd through the
plain `nn.Sequential`, on fresh random inputs: forward values and every gradient."""

import copy

import pytest
import torch

from dlrmprof.dlrm.mlp import build_mlp as _mlp
from dlrmprof.dlrm.mlp import mlp_forward
from dlrmprof.dlrm.model import DenseArch, OverArch
from dlrmprof.dlrm.optim import InBackwardSGD


def _plain_and_fused(layers, last_relu, seed, batch, x_grad):
    gen = torch.Generator().manual_seed(seed)
    mlp = _mlp(layers, last_relu=last_relu, generator=gen)
    ref = copy.deepcopy(mlp)
    x = torch.randn(batch, layers[0], generator=gen)
    xr = x.clone().requires_grad_(x_grad)
    xf = x.clone().requires_grad_(x_grad)
    return mlp, ref, xf, xr, gen


@pytest.mark.parametrize("layers,last_relu", [((13, 512, 256, 64, 16), True),
                                              ((367, 512, 256, 1), False),
                                              ((5, 3), True), ((4, 1), False),
                                              ((2, 40, 7, 9), True)])
@pytest.mark.parametrize("x_grad", [False, True])
def test_fused_mlp_matches_autograd(layers, last_relu, x_grad):
    for seed in (0, 1):
        mlp, ref, xf, xr, gen = _plain_and_fused(layers, last_relu, seed, 37, x_grad)
        yf = mlp_forward(mlp, xf, last_relu)
        yr = ref(xr)
        torch.testing.assert_close(yf, yr, rtol=0, atol=0)   # the same ops: the same bits
        g = torch.randn(yr.shape, generator=gen)
        yf.backward(g)
        yr.backward(g)
        for pf, pr in zip(mlp.parameters(), ref.parameters()):
            torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-5, atol=1e-6)
        if x_grad:
            torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-6)
        else:
            assert xf.grad is None


def test_fused_mlp_relu_gradient_zero_where_inactive():
    """Units the ReLU cut off pass no gradient (some outputs forced negative)."""
    mlp, ref, xf, xr, _ = _plain_and_fused((6, 8, 3), True, 3, 16, True)
    with torch.no_grad():
        for m in (mlp, ref):
            m[0].bias[:4] = -100.0
    mlp_forward(mlp, xf, True).sum().backward()
    ref(xr).sum().backward()
    assert torch.all(mlp[0].weight.grad[:4] == 0)
    for pf, pr in zip(mlp.parameters(), ref.parameters()):
        torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-6)


def test_fused_mlp_without_grad_and_frozen_params():
    mlp, ref, xf, xr, _ = _plain_and_fused((5, 9, 2), False, 4, 11, False)
    with torch.no_grad():
        torch.testing.assert_close(mlp_forward(mlp, xf, False), ref(xr), rtol=0, atol=0)
    for p in mlp.parameters():
        p.requires_grad_(False)
    y = mlp_forward(mlp, xf, False)
    assert not y.requires_grad
    torch.testing.assert_close(y, ref(xr).detach(), rtol=0, atol=0)


def test_arches_use_the_fused_mlp_and_keep_their_state_dict_keys():
    d = DenseArch((3, 4, 2))
    o = OverArch((5, 4, 1))
    assert list(d.state_dict()) == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    x = torch.randn(6, 3)
    torch.testing.assert_close(d(x), d.mlp(x), rtol=0, atol=0)
    z = torch.randn(6, 5)
    torch.testing.assert_close(o(z), o.mlp(z).squeeze(1), rtol=0, atol=0)


@pytest.mark.parametrize("layers,last_relu", [((13, 512, 256, 64, 16), True),
                                              ((367, 512, 256, 1), False)])
def test_sgd_in_backward_is_the_plain_sgd_step(layers, last_relu):
    """With the in-backward SGD the backward leaves no gradients and the weights hold
    p - lr * grad."""
    lr = 0.37
    mlp, ref, xf, xr, gen = _plain_and_fused(layers, last_relu, 8, 29, True)
    g = torch.randn(29, layers[-1], generator=gen)
    mlp_forward(mlp, xf, last_relu, update=InBackwardSGD(lr)).backward(g)
    ref(xr).backward(g)
    for pf, pr in zip(mlp.parameters(), ref.parameters()):
        assert pf.grad is None
        torch.testing.assert_close(pf.detach(), (pr - lr * pr.grad).detach(), rtol=1e-5,
                                   atol=1e-6)
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-6)  # dX used the old W


def test_trainer_sgd_in_backward_matches_the_separate_step():
    from dlrmprof.dlrm.config import load_config
    from dlrmprof.dlrm.data import RandomSource
    from dlrmprof.dlrm.model import build_dlrm
    from dlrmprof.dlrm.train import DLRMTrain

    cfg = load_config("tiny")
    a = DLRMTrain(build_dlrm(cfg, seed=3), cfg.lr)
    b = DLRMTrain(build_dlrm(cfg, seed=3), cfg.lr, sgd_in_backward=False)
    src = RandomSource(cfg.batch_size, cfg.dense_features, [t.rows for t in cfg.tables], seed=4)
    for _ in range(4):
        batch = src.next_batch()
        la, _ = a.train_step(batch)
        lb, _ = b.train_step(batch)
        assert float(la) == pytest.approx(float(lb), rel=1e-6)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=1e-6, atol=1e-7)
    assert all(p.grad is None for p in a.model.parameters())


def test_bf16_mlp_is_opt_in_and_close_to_fp32():
    """`mlp_dtype="bf16"`: fp32 parameters and outputs, GEMMs in bf16 (values within bf16's
    precision of the fp32 op); the default stays the exact fp32 path."""
    def rel(a, b):  # relative error in norm (a ReLU may flip for an input near 0 in bf16)
        return float((a - b).detach().norm() / b.detach().norm())

    mlp, ref, xf, xr, gen = _plain_and_fused((13, 64, 32, 16), True, 6, 33, True)
    yf = mlp_forward(mlp, xf, True, compute_dtype=torch.bfloat16)
    yr = ref(xr)
    assert yf.dtype == torch.float32
    assert rel(yf, yr) < 2e-2
    g = torch.randn(yr.shape, generator=gen)
    yf.backward(g)
    yr.backward(g)
    for pf, pr in zip(mlp.parameters(), ref.parameters()):
        assert pf.grad.dtype == torch.float32
        assert rel(pf.grad, pr.grad) < 0.1  # a wrong gradient is off by ~100%
    assert rel(xf.grad, xr.grad) < 0.1
    with torch.no_grad():
        torch.testing.assert_close(mlp_forward(mlp, xf, True, compute_dtype=torch.bfloat16),
                                   yf.detach(), rtol=0, atol=0)


def test_bf16_training_follows_fp32_loosely():
    from dlrmprof.dlrm.config import load_config
    from dlrmprof.dlrm.data import RandomSource
    from dlrmprof.dlrm.model import build_dlrm
    from dlrmprof.dlrm.train import DLRMTrain
    from dlrmprof.errors import UserError

    cfg = load_config("tiny")
    with pytest.raises(UserError, match="unknown MLP dtype"):
        build_dlrm(cfg, mlp_dtype="fp16")
    a = DLRMTrain(build_dlrm(cfg, seed=3), cfg.lr)
    b = DLRMTrain(build_dlrm(cfg, seed=3, mlp_dtype="bf16"), cfg.lr)
    src = RandomSource(cfg.batch_size, cfg.dense_features, [t.rows for t in cfg.tables], seed=4)
    for _ in range(10):
        batch = src.next_batch()
        la, _ = a.train_step(batch)
        lb, _ = b.train_step(batch)
        assert float(lb) == pytest.approx(float(la), rel=5e-2)
    assert all(p.dtype == torch.float32 for p in b.model.parameters())
