"""The differentiable product: gradcheck, the custom op's opcheck, torch.compile."""

import pytest
import torch
from conftest import COMPILED, randn

import gemmlab

# (a shape, b shape) pairs gradcheck walks through: 2-D, 1-D, folded batch, broadcast batch.
SHAPES = [((3, 4), (4, 2)), ((4,), (4, 3)), ((3, 4), (4,)), ((2, 3, 4), (4, 2)), ((2, 1, 3, 4), (3, 4, 2))]


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_gradcheck(backend, shapes):
    a = randn(*shapes[0], seed=1).requires_grad_()
    b = randn(*shapes[1], seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: gemmlab.matmul(x, y, backend=backend), (a, b))


def test_gradgradcheck(backend):
    """The backward runs through the op itself, so second derivatives work too."""
    a, b = randn(2, 3, seed=3).requires_grad_(), randn(3, 2, seed=4).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, y: gemmlab.matmul(x, y, backend=backend), (a, b))


@pytest.mark.parametrize("backend", COMPILED + ["loops"])
@pytest.mark.parametrize("shapes", [((7, 5), (5, 4)), ((2, 3, 5), (2, 5, 4)), ((0, 5), (5, 4)), ((3, 0), (0, 2))], ids=str)
def test_opcheck(backend, shapes):
    if backend == "loops":
        shapes = tuple(tuple(min(d, 3) for d in s) for s in shapes)
    a = randn(*shapes[0], seed=5).requires_grad_()
    b = randn(*shapes[1], seed=6).requires_grad_()
    torch.library.opcheck(torch.ops.gemmlab.product.default, (a, b, backend))


def test_only_inputs_that_need_grad_get_one(backend):
    a, b = randn(3, 4, seed=7).requires_grad_(), randn(4, 2, seed=8)
    gemmlab.matmul(a, b, backend=backend).sum().backward()
    assert b.grad is None
    torch.testing.assert_close(a.grad, torch.ones(3, 2, dtype=torch.float64) @ b.T)


def test_no_grad_mode_gives_a_plain_tensor(backend):
    a = randn(3, 4, seed=9).requires_grad_()
    with torch.no_grad():
        out = gemmlab.matmul(a, randn(4, 2, seed=10), backend=backend)
    assert not out.requires_grad


def test_torch_compile_fullgraph_cpp():
    def layer(x, w):
        return torch.relu(gemmlab.matmul(x, w, backend="cpp")) + 1.0

    x, w = randn(8, 5, dtype=torch.float32, seed=11), randn(5, 3, dtype=torch.float32, seed=12)
    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(x, w), layer(x, w))
