"""gemmlab.scratch: Kaiming init, hand-written gradients checked against autograd on every backend."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

import gemmlab
from gemmlab import scratch
from gemmlab.scratch import CrossEntropy, Lin, Model, Mse, Relu, kaiming_normal, mlp, relu_gain

SLOW = {"loops", "elementwise", "broadcast"}  # pure-Python kernels: microseconds per multiply-add
# Hand-written and autograd gradients do the same arithmetic in a different order (and the
# backends sum in their own orders): float64 agrees to rounding, float32 to a few ulps of the sums.
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def sizes(backend, loss):
    """(batch, n_in, n_hidden, n_out): tiny for the Python-loop backends."""
    n_out = 1 if loss == "mse" else (3 if backend in SLOW else 10)
    return (4, 5, 3, n_out) if backend in SLOW else (16, 20, 8, n_out)


def targets(loss, n, n_out, dtype, seed=1):
    if loss == "mse":
        return torch.randn(n, generator=gen(seed), dtype=dtype)
    return torch.randint(0, n_out, (n,), generator=gen(seed))


# --- Kaiming init -------------------------------------------------------------------------------


def test_relu_gain():
    assert relu_gain() == pytest.approx(math.sqrt(2))
    assert relu_gain(1.0) == pytest.approx(1.0)  # slope 1: no rectifier, no gain


def test_kaiming_normal_shape_std_and_modes():
    w = kaiming_normal(100, 400, generator=gen())
    assert w.shape == (100, 400) and w.dtype == torch.float32
    assert w.std().item() == pytest.approx(math.sqrt(2 / 100), rel=0.03)
    assert abs(w.mean().item()) < 0.01 * math.sqrt(2 / 100)
    w_out = kaiming_normal(100, 400, mode="fan_out", generator=gen())
    assert w_out.shape == (100, 400)
    assert w_out.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.03)  # fan_out uses n_out
    w1 = kaiming_normal(100, 400, gain=1.0, generator=gen(), dtype=torch.float64)
    assert w1.dtype == torch.float64
    assert w1.std().item() == pytest.approx(1 / math.sqrt(100), rel=0.03)


def test_kaiming_normal_generator_is_reproducible():
    assert torch.equal(kaiming_normal(7, 3, generator=gen(5)), kaiming_normal(7, 3, generator=gen(5)))
    assert not torch.equal(kaiming_normal(7, 3, generator=gen(5)), kaiming_normal(7, 3, generator=gen(6)))


@pytest.mark.parametrize("mode", ["fan_avg", "in", "", None])
def test_kaiming_normal_unknown_mode_raises(mode):
    with pytest.raises(ValueError, match="mode"):
        kaiming_normal(4, 4, mode=mode)


def test_lin_unknown_init_raises():
    with pytest.raises(ValueError, match="init"):
        Lin(4, 4, init="xavier")


def test_one_layer_activation_stats():
    """The notes' check: a standard-normal batch through Lin then Relu."""
    x = torch.randn(10_000, 512, generator=gen())
    # Plain 1/sqrt(fan_in) scaling: the linear output is ~ (0, 1)...
    plain = Lin(512, 512, backend="torch", generator=gen(1), init="linear")
    pre = plain(x)
    assert abs(pre.mean().item()) < 0.02
    assert pre.std().item() == pytest.approx(1.0, rel=0.03)
    # ...but the ReLU throws half of it away: std sqrt(1/2 - 1/(2 pi)) ~ 0.58.
    assert Relu()(pre).std().item() == pytest.approx(0.584, rel=0.03)
    # Kaiming (gain sqrt 2): pre-activations ~ (0, sqrt 2), so the ReLU output keeps a second
    # moment of 1: mean 1/sqrt(pi) ~ 0.56 and std sqrt(1 - 1/pi) ~ 0.83 (the notes: 0.57, 0.85).
    kaiming = Lin(512, 512, backend="torch", generator=gen(1), init="kaiming")
    pre = kaiming(x)
    assert abs(pre.mean().item()) < 0.03
    assert pre.std().item() == pytest.approx(math.sqrt(2), rel=0.03)
    post = Relu()(pre)
    assert post.mean().item() == pytest.approx(1 / math.sqrt(math.pi), rel=0.03)
    assert post.std().item() == pytest.approx(math.sqrt(1 - 1 / math.pi), rel=0.03)
    assert post.pow(2).mean().item() == pytest.approx(1.0, rel=0.03)


def deep_relu_stds(init, depth=8, width=512, batch=2_000):
    g = gen(2)
    x = torch.randn(batch, width, generator=g)
    stds = []
    for _ in range(depth):
        x = Relu()(Lin(width, width, backend="torch", generator=g, init=init)(x))
        stds.append(x.std().item())
    return stds


def test_kaiming_keeps_activations_alive_over_depth_while_plain_scaling_shrinks():
    kaiming = deep_relu_stds("kaiming")
    assert all(s == pytest.approx(kaiming[0], rel=0.2) for s in kaiming), kaiming
    assert 0.6 < kaiming[-1] < 1.2, kaiming
    plain = deep_relu_stds("linear")
    assert plain[0] == pytest.approx(0.584, rel=0.05), plain
    assert all(b < 0.8 * a for a, b in zip(plain, plain[1:])), plain  # shrinks ~1/sqrt(2) per layer
    assert plain[-1] < 0.1, plain  # ~0.58 / sqrt(2)**7 ~ 0.05


# --- gradients against autograd, on every backend ---------------------------------------------


def autograd_reference(model, x, targ):
    """The same layers and loss in plain torch ops on requires_grad leaves; returns (loss, grads of x
    and of every parameter, in model.params() order)."""
    leaves = [p.detach().clone().requires_grad_() for p in (x, *model.params())]
    out, params = leaves[0], iter(leaves[1:])
    for layer in model.layers:
        if isinstance(layer, Lin):
            out = out @ next(params) + next(params)
        else:
            assert isinstance(layer, Relu), layer
            out = torch.relu(out)
    value = F.mse_loss(out.squeeze(-1), targ) if isinstance(model.loss, Mse) else F.cross_entropy(out, targ)
    value.backward()
    return value.detach(), [leaf.grad for leaf in leaves]


def assert_gradients_match_autograd(model, x, targ, value, dtype):
    """value = model(x, targ) and model.backward() done: the loss and every .g against autograd."""
    ref_value, ref_grads = autograd_reference(model, x, targ)
    assert value.dtype == dtype and not value.requires_grad
    torch.testing.assert_close(value, ref_value, **TOL[dtype])
    names = ["x"] + [f"{kind}{i}" for i in range(1, len(model.params()) // 2 + 1) for kind in ("w", "b")]
    for name, ours, ref in zip(names, [x, *model.params()], ref_grads, strict=True):
        assert ours.g.shape == ours.shape, name
        assert not ours.g.requires_grad, name
        torch.testing.assert_close(ours.g, ref, **TOL[dtype], msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_gradients_match_autograd(backend, loss, dtype):
    n, n_in, n_hidden, n_out = sizes(backend, loss)
    model = mlp(n_in, n_hidden, n_out, backend=backend, loss=loss, seed=3, dtype=dtype)
    # Biases start at 0: give them values so their part of the forward pass is exercised too.
    for layer in (model.layers[0], model.layers[2]):
        layer.b += torch.randn(layer.b.shape, generator=gen(4), dtype=dtype)
    x = torch.randn(n, n_in, generator=gen(5), dtype=dtype)
    targ = targets(loss, n, n_out, dtype)

    value = model(x, targ)
    model.backward()
    assert_gradients_match_autograd(model, x, targ, value, dtype)


def test_no_autograd_graph_even_for_inputs_that_require_grad():
    model = mlp(6, 4, 3, backend="torch")
    x = torch.randn(5, 6, generator=gen(), requires_grad=True)
    value = model(x, torch.tensor([0, 1, 2, 0, 1]))
    model.backward()
    assert not value.requires_grad and value.grad_fn is None
    assert x.grad is None and x.g.shape == x.shape


# --- Lin runs all three products on its backend --------------------------------------------------


@pytest.fixture
def recorded(monkeypatch):
    """Record (a shape, b shape, backend) of every gemmlab.matmul call that scratch makes."""
    calls = []
    real = gemmlab.matmul

    def wrapper(a, b, backend=None):
        calls.append((tuple(a.shape), tuple(b.shape), backend))
        return real(a, b, backend=backend)

    monkeypatch.setattr(scratch.gemmlab, "matmul", wrapper)
    return calls


def test_lin_uses_its_backend_for_forward_and_both_backward_products(backend, recorded):
    n, n_in, n_out = 4, 5, 3
    lin = Lin(n_in, n_out, backend=backend, generator=gen(), dtype=torch.float64)
    x = torch.randn(n, n_in, generator=gen(1), dtype=torch.float64)
    out = lin(x)
    out.g = torch.randn(n, n_out, generator=gen(2), dtype=torch.float64)
    lin.backward()

    assert [c[2] for c in recorded] == [backend] * 3
    assert Counter(c[:2] for c in recorded) == Counter([
        ((n, n_in), (n_in, n_out)),   # forward: x @ w
        ((n, n_out), (n_out, n_in)),  # input grad: out.g @ w.T
        ((n_in, n), (n, n_out)),      # weight grad: x.T @ out.g (no (n, n_in, n_out) outer product)
    ])
    torch.testing.assert_close(out, x @ lin.w + lin.b, **TOL[torch.float64])
    torch.testing.assert_close(x.g, out.g @ lin.w.T, **TOL[torch.float64])
    torch.testing.assert_close(lin.w.g, x.T @ out.g, **TOL[torch.float64])
    torch.testing.assert_close(lin.b.g, out.g.sum(0), **TOL[torch.float64])


def test_model_makes_three_products_per_lin_on_its_backend(recorded):
    model = mlp(5, 4, 3, backend="einsum", dtype=torch.float64)
    model(torch.randn(6, 5, generator=gen(), dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1, 0]))
    model.backward()
    assert len(recorded) == 6 and all(c[2] == "einsum" for c in recorded)
    assert all(len(a) == 2 and len(b) == 2 for a, b, _ in recorded)


def test_model_without_backend_follows_the_default_and_keeps_it_for_backward(kernel_calls):
    calls = kernel_calls("cython", "numba", "cpp")
    model = mlp(5, 4, 3, dtype=torch.float64)
    assert [layer.backend for layer in model.layers if isinstance(layer, Lin)] == [None, None]
    x, targ = torch.randn(6, 5, generator=gen(), dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1, 0])
    with gemmlab.use_backend("cython"):
        model(x, targ)
    model.backward()  # outside the block: the backward products stay where the forward ran
    model(x, targ)  # the process default now: auto (untuned: cpp)
    with gemmlab.use_backend("numba"):
        model.backward()  # ...and its backward stays there too
    assert [c.backend for c in calls] == ["cython"] * 6 + ["cpp"] * 6


def test_lin_with_a_backend_keeps_it(kernel_calls):
    calls = kernel_calls("cython", "numba", "cpp")
    x = torch.randn(6, 5, generator=gen(), dtype=torch.float64)
    with gemmlab.use_backend("cython"):
        Lin(5, 3, backend="numba", generator=gen(1), dtype=torch.float64)(x)
        Lin(5, 3, backend="auto", generator=gen(1), dtype=torch.float64)(x)  # untuned: cpp
    assert [c.backend for c in calls] == ["numba", "cpp"]


# --- the losses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = torch.tensor([[1000.0, 0.0, -1000.0],
                           [1000.0, 1000.5, 999.0],
                           [-1000.0, -1000.0, -1001.0],
                           [3000.0, -3000.0, 0.0]], dtype=dtype)
    targ = torch.tensor([0, 2, 1, 1])
    ce = CrossEntropy()
    value = ce(logits, targ)
    ce.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.g).all()
    # Also checks the naive exp() would have overflowed, so the test is about stability.
    assert not torch.isfinite(logits.exp()).all()

    leaf = logits.clone().requires_grad_()
    ref = F.cross_entropy(leaf, targ)
    ref.backward()
    torch.testing.assert_close(value, ref.detach(), **TOL[dtype])
    torch.testing.assert_close(logits.g, leaf.grad, **TOL[dtype])
    # By hand, per row: -log softmax at the target, the e**-1000 terms being 0.
    by_hand = [0.0, 1.5 + math.log(1 + math.exp(-0.5) + math.exp(-1.5)), math.log(2 + math.exp(-1)), 6000.0]
    assert value.item() == pytest.approx(sum(by_hand) / 4, rel=1e-6)


def test_cross_entropy_matches_torch_on_ordinary_logits():
    logits = torch.randn(32, 7, generator=gen(), dtype=torch.float64) * 3
    targ = torch.randint(0, 7, (32,), generator=gen(1))
    ce = CrossEntropy()
    value = ce(logits, targ)
    ce.backward()
    leaf = logits.clone().requires_grad_()
    ref = F.cross_entropy(leaf, targ)
    ref.backward()
    torch.testing.assert_close(value, ref.detach(), **TOL[torch.float64])
    torch.testing.assert_close(logits.g, leaf.grad, **TOL[torch.float64])
    torch.testing.assert_close(logits.g.sum(-1), torch.zeros(32, dtype=torch.float64), atol=1e-12, rtol=0)


def test_mse_matches_torch():
    inp = torch.randn(9, 1, generator=gen(), dtype=torch.float64)
    targ = torch.randn(9, generator=gen(1), dtype=torch.float64)
    mse = Mse()
    value = mse(inp, targ)
    mse.backward()
    leaf = inp.clone().requires_grad_()
    ref = F.mse_loss(leaf.squeeze(-1), targ)
    ref.backward()
    torch.testing.assert_close(value, ref.detach(), **TOL[torch.float64])
    assert inp.g.shape == (9, 1)
    torch.testing.assert_close(inp.g, leaf.grad, **TOL[torch.float64])


def test_relu_gradient_is_zero_where_input_is_not_positive():
    inp = torch.tensor([[-2.0, 0.0, 3.0]])
    relu = Relu()
    torch.testing.assert_close(relu(inp), torch.tensor([[0.0, 0.0, 3.0]]))
    relu.out.g = torch.tensor([[5.0, 6.0, 7.0]])
    relu.backward()
    torch.testing.assert_close(inp.g, torch.tensor([[0.0, 0.0, 7.0]]))


# --- building and training -----------------------------------------------------------------------


def test_mlp_same_seed_same_weights_different_seed_different():
    a, b, c = mlp(6, 5, 3, seed=1), mlp(6, 5, 3, seed=1), mlp(6, 5, 3, seed=2)
    assert [p.shape for p in a.params()] == [(6, 5), (5,), (5, 3), (3,)]
    assert all(torch.equal(p, q) for p, q in zip(a.params(), b.params()))
    assert not torch.equal(a.params()[0], c.params()[0]) and not torch.equal(a.params()[2], c.params()[2])
    assert isinstance(a.loss, CrossEntropy) and isinstance(mlp(6, 5, 1, loss="mse").loss, Mse)
    assert mlp(6, 5, 3, dtype=torch.float64).params()[0].dtype == torch.float64


def test_mlp_rejects_bad_loss_arguments():
    with pytest.raises(ValueError, match="n_out"):
        mlp(6, 5, 2, loss="mse")
    with pytest.raises(ValueError, match="loss"):
        mlp(6, 5, 2, loss="nll")


def blobs(n_per_class=100, n_in=10, n_classes=3, seed=0):
    """Well separated Gaussian blobs: class k centred at 3 * e_k."""
    g = gen(seed)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = torch.randn(len(y), n_in, generator=g) + 3.0 * F.one_hot(y, n_in).float()
    return x, y


def sgd(model, x, y, lr, steps):
    # These products are tiny: one thread avoids OpenMP's hand-offs, which crawl on a busy machine.
    torch.set_num_threads(1)
    losses = []
    for _ in range(steps):
        losses.append(model(x, y).item())
        model.backward()
        for p in model.params():
            p -= lr * p.g
    return losses


def test_training_with_cross_entropy_learns_separable_blobs(threads):
    x, y = blobs()
    model = mlp(10, 16, 3, backend="torch", loss="ce", seed=0)
    losses = sgd(model, x, y, lr=0.1, steps=300)
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    accuracy = (model.predict(x).argmax(-1) == y).float().mean().item()
    assert accuracy > 0.95


def test_training_with_mse_fits_a_linear_target(threads):
    g = gen(7)
    x = torch.randn(200, 8, generator=g)
    y = x @ torch.randn(8, generator=g)
    model = mlp(8, 32, 1, backend="torch", loss="mse", seed=0)
    losses = sgd(model, x, y, lr=0.05, steps=300)
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("loss", [Mse, CrossEntropy])
def test_model_of_custom_layers(loss):
    """Model is not tied to mlp: any layers and loss; backward reaches every Lin, with the values autograd gives."""
    g = gen()
    n_out = 1 if loss is Mse else 4
    layers = [Lin(4, 6, generator=g), Relu(), Lin(6, 6, generator=g), Relu(), Lin(6, n_out, generator=g, init="linear")]
    model = Model(layers, loss())
    for layer in layers[::2]:  # biases start at 0: give them values
        layer.b += torch.randn(layer.b.shape, generator=g)
    x = torch.randn(5, 4, generator=g)
    y = torch.randn(5, generator=g) if loss is Mse else torch.randint(0, n_out, (5,), generator=g)
    value = model(x, y)
    model.backward()
    assert len(model.params()) == 6
    assert_gradients_match_autograd(model, x, y, value, torch.float32)
    assert model.forward(x).shape == (5, n_out)
