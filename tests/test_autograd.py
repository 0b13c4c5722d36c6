"""The differentiable product: gradcheck, the custom op's opcheck, torch.compile."""

import pytest
import torch
from conftest import COMPILED, randn

import gemmlab
from gemmlab.reference import assert_close_to_reference

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


@pytest.mark.parametrize("shapes", [((7, 5), (5, 4)), ((2, 3, 5), (2, 5, 4)), ((0, 5), (5, 4)), ((3, 0), (0, 2))], ids=str)
def test_opcheck(backend, shapes):
    a = randn(*shapes[0], seed=5).requires_grad_()
    b = randn(*shapes[1], seed=6).requires_grad_()
    torch.library.opcheck(torch.ops.gemmlab.python_product.default, (a, b, backend))


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


@pytest.mark.parametrize("backend", COMPILED)
def test_torch_compile_fullgraph(backend, kernel_calls):
    """One graph around the custom op: the backend's kernel runs, and its result is checked against
    the float64 reference (not against the eager result, which a shared mistake would match)."""
    calls = kernel_calls(*COMPILED, "torch")

    def layer(x, w):
        y = gemmlab.matmul(x, w, backend=backend)
        return y, torch.relu(y) + 1.0

    x, w = randn(29, 67, dtype=torch.float32, seed=11), randn(67, 13, dtype=torch.float32, seed=12)
    y, z = torch.compile(layer, fullgraph=True)(x, w)
    assert [c.backend for c in calls] == [backend]
    assert_close_to_reference(y, x, w, what=f"{backend} under torch.compile")
    torch.testing.assert_close(z, torch.relu(y) + 1.0)
