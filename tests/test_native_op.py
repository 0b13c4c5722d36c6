"""gemmlab::native_product, the dispatch core's product as an operator registered in C++
(csrc/autograd_op.cpp): its registrations (opcheck), its gradients through the same kernel
(gradcheck, gradgradcheck, which kernel ran), torch.compile, and its errors."""

import gc
import weakref

import pytest
import torch
from conftest import COMPILED, randn, require_backend

import gemmlab
from gemmlab.reference import assert_close_to_reference
from gemmlab.registry import get_backend

# Backends that may have a kernel in the C++ core; those that have none yet are skipped, saying so.
MAYBE_NATIVE = [*COMPILED, "torch"]

# (a shape, b shape): 2-D, equal batch, folded batch, broadcast batch, the 1-D promotions, empty.
SHAPES = [((7, 5), (5, 4)), ((2, 3, 5), (2, 5, 4)), ((2, 3, 5), (5, 4)), ((2, 1, 3, 5), (3, 5, 4)), ((5,), (5, 4)),
          ((3, 5), (5,)), ((5,), (5,)), ((0, 5), (5, 4)), ((3, 0), (0, 2)), ((2, 0, 3), (2, 3, 4))]
GRAD_SHAPES = SHAPES[:7]


def op(a, b, backend):
    return torch.ops.gemmlab.native_product(a, b, backend)


@pytest.fixture(params=MAYBE_NATIVE)
def native(request):
    require_backend(request.param)
    if get_backend(request.param).native is None:
        pytest.skip(f"backend {request.param!r} has no kernel in the C++ dispatch core (yet)")
    return request.param


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_opcheck(native, shapes):
    a = randn(*shapes[0], seed=1).requires_grad_()
    b = randn(*shapes[1], seed=2).requires_grad_()
    torch.library.opcheck(torch.ops.gemmlab.native_product.default, (a, b, native))


@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_forward_matches_the_reference(native, shapes):
    a, b = randn(*shapes[0], seed=3), randn(*shapes[1], seed=4)
    assert_close_to_reference(op(a, b, native), a, b, what=f"native_product on {native}")


@pytest.mark.parametrize("shapes", GRAD_SHAPES, ids=str)
def test_gradcheck_and_gradgradcheck(native, shapes):
    a = randn(*shapes[0], seed=5).requires_grad_()
    b = randn(*shapes[1], seed=6).requires_grad_()
    assert torch.autograd.gradcheck(op, (a, b, native))
    assert torch.autograd.gradgradcheck(op, (a, b, native))


@pytest.mark.parametrize("shapes", GRAD_SHAPES, ids=str)
def test_complex_gradients_use_conjugate_transposes(shapes):
    """complex128 on the `torch` kernel: grad @ b^H and a^H @ grad, first and second order."""
    a = randn(*shapes[0], dtype=torch.complex128, seed=7).requires_grad_()
    b = randn(*shapes[1], dtype=torch.complex128, seed=8).requires_grad_()
    assert torch.autograd.gradcheck(op, (a, b, "torch"))
    assert torch.autograd.gradgradcheck(op, (a, b, "torch"))


def test_forward_and_both_backward_products_run_on_the_kernel(native, kernel_calls):
    calls = kernel_calls(native)
    a, b = randn(6, 5, seed=9).requires_grad_(), randn(5, 3, seed=10).requires_grad_()
    y = gemmlab.matmul(a, b, backend=native)
    y.backward(randn(6, 3, seed=11))
    # forward (6, 5) @ (5, 3); grad_a = grad (6, 3) @ b^H (3, 5); grad_b = a^H (5, 6) @ grad (6, 3)
    assert [(c.backend, c.a, c.b) for c in calls] == [
        (native, (6, 5), (5, 3)), (native, (6, 3), (3, 5)), (native, (5, 6), (6, 3))]


def test_only_the_gradients_needed_are_computed(native, kernel_calls):
    calls = kernel_calls(native)
    a, b = randn(6, 5, seed=12), randn(5, 3, seed=13).requires_grad_()
    gemmlab.matmul(a, b, backend=native).sum().backward()
    assert [(c.a, c.b) for c in calls] == [((6, 5), (5, 3)), ((5, 6), (6, 3))]
    torch.testing.assert_close(b.grad, a.T @ torch.ones(6, 3, dtype=torch.float64))


@pytest.mark.parametrize("needs_grad", ["a", "b"])
def test_only_what_the_gradient_needs_is_saved(native, needs_grad):
    """grad_a = grad @ b^H keeps b alive, not a; grad_b = a^H @ grad keeps a, not b (operands that
    are not leaves, so only the product's node could hold them)."""
    x, w = randn(6, 5, seed=14).requires_grad_(), randn(5, 3, seed=15).requires_grad_()
    a = x * 2 if needs_grad == "a" else x.detach() * 2
    b = w * 2 if needs_grad == "b" else w.detach() * 2
    alive_a, alive_b = weakref.ref(a), weakref.ref(b)
    y = op(a, b, native)
    del a, b
    gc.collect()
    assert (alive_a() is not None, alive_b() is not None) == ((False, True) if needs_grad == "a" else (True, False))
    y.sum().backward()


@pytest.mark.parametrize("native_name", ["cpp", "torch"])
def test_compile_fullgraph_forward_and_backward_on_the_kernel(native_name, kernel_calls):
    """One graph with the op in it; inside it the op runs the real kernel, forward and backward,
    and the results match the float64 reference."""
    require_backend(native_name)
    calls = kernel_calls(native_name)
    seen = []

    def capture(gm, example_inputs):  # Dynamo's graph: the op must be in it, not a graph break
        seen.extend(node.target for node in gm.graph.nodes)
        return gm.forward

    def layer(x, w):
        return gemmlab.matmul(x, w, backend=native_name)

    x = randn(29, 67, seed=17).requires_grad_()
    w = randn(67, 13, seed=18).requires_grad_()
    y = torch.compile(layer, fullgraph=True, backend=capture)(x, w)
    assert torch.ops.gemmlab.native_product.default in seen or torch.ops.gemmlab.native_product in seen
    grad = randn(29, 13, seed=19)
    y.backward(grad)
    assert [(c.a, c.b) for c in calls] == [((29, 67), (67, 13)), ((29, 13), (13, 67)), ((67, 29), (29, 13))]
    assert_close_to_reference(y, x.detach(), w.detach(), what=f"{native_name} under torch.compile")
    assert_close_to_reference(x.grad, grad, w.detach().T, what="grad of a under torch.compile")
    assert_close_to_reference(w.grad, x.detach().T, grad, what="grad of b under torch.compile")

    calls.clear()
    x.grad = w.grad = None
    z = torch.compile(layer, fullgraph=True)(x, w)  # inductor: the op stays an extern call to the kernel
    z.backward(grad)
    assert len(calls) == 3
    assert_close_to_reference(z, x.detach(), w.detach(), what=f"{native_name} under inductor")
    assert_close_to_reference(w.grad, x.detach().T, grad, what="grad of b under inductor")


def test_bad_arguments_raise_naming_them():
    require_backend("cpp")
    a, b = randn(3, 4, seed=20), randn(4, 2, seed=21)
    with pytest.raises(ValueError, match="no native kernel is registered as 'blas'"):
        op(a, b, "blas")
    with pytest.raises(ValueError, match=r"shapes do not fit.*\[3, 4\].*\[3, 2\]"):
        op(a, randn(3, 2, seed=22), "cpp")
    with pytest.raises(TypeError, match=r"cpp kernel needs two operands of one dtype.*int32"):
        op(a.int(), b.int(), "cpp")
    # the autograd path's checks, before it brings these shapes to a 2-D product
    with pytest.raises(TypeError, match="different dtypes"):
        op(randn(2, 3, 4, seed=25).requires_grad_(), randn(4, 2, dtype=torch.float32), "cpp")
    with pytest.raises(ValueError, match="inner dimensions differ"):
        op(randn(2, 3, 4, seed=23).requires_grad_(), randn(5, 2, seed=24), "cpp")
    with pytest.raises(ValueError, match="at least 1 dimension"):
        op(torch.tensor(1.0, dtype=torch.float64), b, "cpp")


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_gradients_come_in_their_operands_layout(backend):
    """A transposed operand (a layer's W.T) gets its gradient transposed too, so that accumulating it
    into the parameter needs no copy; values as torch's."""
    x, w = randn(5, 6, seed=90).requires_grad_(), randn(4, 6, seed=91).requires_grad_()
    wt, xt = w.T, randn(6, 5, seed=92).T.requires_grad_()
    seen = {}
    wt.register_hook(lambda g: seen.setdefault("wt", g.stride()) and None)
    gemmlab.matmul(x, wt, backend=backend).sum().backward()
    gemmlab.matmul(xt, wt, backend=backend).sum().backward()
    assert seen["wt"] == wt.stride() and xt.grad.stride() == xt.stride()
    assert w.grad.stride() == w.stride()
    ref_x, ref_w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (ref_x @ ref_w.T).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad)
