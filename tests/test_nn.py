"""gemmlab.nn.Linear is a drop-in for torch.nn.Linear whose products run on the chosen backend."""

import pytest
import torch
from conftest import randn

import gemmlab
from gemmlab import nn as gnn


def _pair(backend, dtype=torch.float64):
    torch.manual_seed(0)
    ours = gnn.Linear(6, 4, backend=backend, dtype=dtype)
    ref = torch.nn.Linear(6, 4, dtype=dtype)
    ref.load_state_dict(ours.state_dict())  # same parameter names and shapes
    return ours, ref


def test_gradients_arrive_in_their_parameters_layout(backend):
    """W's gradient must reach W in W's layout (not W.T's): one in another layout is copied by
    autograd before it accumulates, and DistributedDataParallel reduces gradients in the
    parameters' layout. Seen by hooks, which run before that copy."""
    layer = gnn.Linear(6, 4, backend=backend)
    arriving = {}
    for name, p in layer.named_parameters():
        p.register_hook(lambda g, name=name: arriving.__setitem__(name, g.stride()))
    layer(randn(5, 6, dtype=torch.float32, seed=3)).sum().backward()
    assert arriving == {name: p.stride() for name, p in layer.named_parameters()}


@pytest.mark.parametrize("batch_shape", [(5,), (2, 3), ()], ids=str)
def test_linear_matches_torch_outputs_and_gradients(backend, batch_shape):
    ours, ref = _pair(backend)
    x = randn(*batch_shape, 6, seed=1)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), ref(x2)
    torch.testing.assert_close(y1, y2)
    grad = randn(*y1.shape, seed=2)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)


def test_linear_products_run_on_its_backend(kernel_calls):
    calls = kernel_calls("cython", "torch")
    layer = gnn.Linear(6, 4, backend="cython", dtype=torch.float64)
    x = randn(5, 6, seed=3).requires_grad_()
    layer(x).sum().backward()
    # forward x @ W.T, then grad @ W for x, and W's gradient in W's own layout: grad.T @ x
    assert sorted((c.backend, c.a, c.b) for c in calls) == sorted(
        [("cython", (5, 6), (6, 4)), ("cython", (5, 4), (4, 6)), ("cython", (4, 5), (5, 6))])


def test_linear_without_bias():
    layer = gnn.Linear(3, 2, bias=False, backend="numba")
    assert layer.bias is None and "bias=False" in repr(layer)
    x = torch.randn(4, 3)
    torch.testing.assert_close(layer(x), x @ layer.weight.T)


def test_mlp_layers_can_use_different_backends():
    model = gnn.mlp([8, 16, 5], backend=["cpp", "numba"])
    assert [m.backend for m in model if isinstance(m, gnn.Linear)] == ["cpp", "numba"]
    assert isinstance(model[1], torch.nn.ReLU)
    ref = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    ref.load_state_dict(model.state_dict())
    x = torch.randn(7, 8)
    torch.testing.assert_close(model(x), ref(x))


def test_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least two sizes"):
        gnn.mlp([8])
    with pytest.raises(ValueError, match="2 layers but got 1 backends"):
        gnn.mlp([8, 4, 2], backend=["cpp"])


def test_optimizer_step_trains_a_gemmlab_model():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    model = gnn.mlp([4, 16, 1], backend="cpp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


# --- a layer without a backend of its own follows gemmlab's default when it runs ---------------

LADDER_CPU = ["cython", "numba", "cpp", "torch"]  # the kernels these tests watch


def ran_on(calls):
    return [c.backend for c in calls]


def test_linear_without_backend_follows_the_default_when_it_runs(kernel_calls):
    calls = kernel_calls(*LADDER_CPU)
    x = randn(5, 6, seed=4).requires_grad_()
    with gemmlab.use_backend("cython"):
        layer = gnn.Linear(6, 4, dtype=torch.float64)
        assert layer.backend is None
        y = layer(x)
    y.sum().backward()  # outside the block: the backward products stay where the forward ran
    assert ran_on(calls) == ["cython"] * 3
    torch.testing.assert_close(y, x @ layer.weight.T + layer.bias)

    calls.clear()
    layer(x)  # built inside the block, run outside it: the process default, auto (untuned: cpp)
    with gemmlab.use_backend("numba"):
        layer(x)
    try:
        gemmlab.set_backend("torch")
        layer(x)
    finally:
        gemmlab.set_backend("auto")
    assert ran_on(calls) == ["cpp", "numba", "torch"]


def test_linear_with_a_backend_keeps_it(kernel_calls):
    calls = kernel_calls(*LADDER_CPU)
    x = randn(5, 6, seed=5)
    with gemmlab.use_backend("cython"):
        gnn.Linear(6, 4, backend="numba", dtype=torch.float64)(x)
        gnn.Linear(6, 4, backend="auto", dtype=torch.float64)(x)  # "auto" is a choice too (untuned: cpp)
    assert ran_on(calls) == ["numba", "cpp"]


def test_mlp_without_backend_follows_the_default(kernel_calls):
    calls = kernel_calls(*LADDER_CPU)
    model = gnn.mlp([8, 16, 5], dtype=torch.float64)
    mixed = gnn.mlp([8, 16, 5], backend=[None, "numba"], dtype=torch.float64)
    assert [m.backend for m in model if isinstance(m, gnn.Linear)] == [None, None]
    x = randn(7, 8, seed=6)
    with gemmlab.use_backend("cpp"):
        model(x)
        mixed(x)
    assert ran_on(calls) == ["cpp", "cpp", "cpp", "numba"]


def test_repr_says_what_a_layer_runs_on():
    assert "backend='numba'" in repr(gnn.Linear(3, 2, backend="numba"))
    assert "backend='auto'" in repr(gnn.Linear(3, 2, backend="auto"))
    assert "backend=None (gemmlab's default when it runs)" in repr(gnn.Linear(3, 2))
