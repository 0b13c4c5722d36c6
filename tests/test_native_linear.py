"""gemmlab::native_linear, torch.nn.Linear's x @ weight.T + bias as one op registered in C++
(csrc/autograd_op.cpp), which gemmlab.nn.Linear runs on backends with a kernel in the core: its
registrations (opcheck), values and gradients against torch.nn.functional.linear and the float64
reference, which kernel computes each product, what it keeps for backward, torch.compile, errors."""

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from conftest import COMPILED, randn, require_backend

import gemmlab
from gemmlab.nn import Linear
from gemmlab.reference import assert_close_to_reference

NATIVE = [*COMPILED, "torch", "auto"]
# input shapes for a layer with 13 inputs: a batch, leading dimensions, one sample, no rows
INPUTS = [(7, 13), (2, 3, 13), (13,), (0, 13)]


def linear(x, w, b, kernel):
    return torch.ops.gemmlab.native_linear(x, w, b, kernel)


@pytest.fixture(params=NATIVE)
def native(request):
    if request.param != "auto":
        require_backend(request.param)
    gemmlab.matmul(randn(2, 2), randn(2, 2), backend=request.param)  # loads it: its kernel joins the core
    return request.param


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", INPUTS, ids=str)
def test_opcheck(native, shape, bias):
    x = randn(*shape, seed=1).requires_grad_()
    w = randn(5, 13, seed=2).requires_grad_()
    b = randn(5, seed=3).requires_grad_() if bias else None
    torch.library.opcheck(torch.ops.gemmlab.native_linear.default, (x, w, b, native))


@pytest.mark.parametrize("shape", INPUTS, ids=str)
def test_values_and_gradients_match_torch_linear(native, shape):
    """float64, with a bias: output and all three gradients as F.linear's, to rounding."""
    x, w, b = randn(*shape, seed=4).requires_grad_(), randn(5, 13, seed=5).requires_grad_(), randn(5, seed=6).requires_grad_()
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y, want = linear(x, w, b, native), F.linear(xr, wr, br)
    grad = randn(*want.shape, seed=7)
    y.backward(grad)
    want.backward(grad)
    for got, expected in ((y, want), (x.grad, xr.grad), (w.grad, wr.grad), (b.grad, br.grad)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_float32_product_against_the_reference(native):
    """Odd sizes, k long enough to reach every kernel's main loop; no bias, so the output is the product."""
    x, w = randn(67, 301, dtype=torch.float32, seed=8), randn(29, 301, dtype=torch.float32, seed=9)
    assert_close_to_reference(linear(x, w, None, native), x, w.T, what=f"native_linear on {native}")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", INPUTS[:3], ids=str)
def test_gradcheck_and_gradgradcheck(native, shape, bias):
    x, w = randn(*shape, seed=10).requires_grad_(), randn(4, 13, seed=11).requires_grad_()
    b = randn(4, seed=12).requires_grad_() if bias else None
    args = (x, w, b, native)
    assert torch.autograd.gradcheck(linear, args)
    assert torch.autograd.gradgradcheck(linear, args)


def test_complex_gradients_match_torch_linear():
    """complex128 on the `torch` kernel: y = x @ W^T + b, so grad_x = grad @ conj(W) and
    grad_W = grad^T @ conj(x), as F.linear's; first and second order."""
    x, w, b = (randn(*s, dtype=torch.complex128, seed=13 + i).requires_grad_() for i, s in enumerate([(6, 5), (3, 5), (3,)]))
    assert torch.autograd.gradcheck(linear, (x, w, b, "torch"))
    assert torch.autograd.gradgradcheck(linear, (x, w, b, "torch"))
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    grad = randn(6, 3, dtype=torch.complex128, seed=16)
    linear(x, w, b, "torch").backward(grad)
    F.linear(xr, wr, br).backward(grad)
    for got, expected in ((x.grad, xr.grad), (w.grad, wr.grad), (b.grad, br.grad)):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("native", NATIVE[:-1], indirect=True)  # (auto runs each on the kernel it chooses)
def test_a_layer_step_runs_its_three_products_on_the_kernel(native, kernel_calls):
    """gemmlab.nn.Linear's forward x @ W.T, then grad_x = grad @ W and grad_W = grad^T @ x, all on
    the layer's kernel."""
    calls = kernel_calls(native)
    layer = Linear(13, 5, backend=native).double()
    x = randn(7, 13, seed=17).requires_grad_()
    y = layer(x)
    assert "LinearFunction" in y.grad_fn.name()
    y.backward(randn(7, 5, seed=18))
    assert [(c.backend, c.a, c.b) for c in calls] == [
        (native, (7, 13), (13, 5)), (native, (7, 5), (5, 13)), (native, (5, 7), (7, 13))]


@pytest.mark.parametrize("native", NATIVE[:-1], indirect=True)
def test_only_the_gradients_needed_are_computed(native, kernel_calls):
    """A first layer: no gradient for the input, so no grad_x product."""
    calls = kernel_calls(native)
    layer = Linear(13, 5, backend=native).double()
    layer(randn(7, 13, seed=19)).sum().backward()
    assert [(c.a, c.b) for c in calls] == [((7, 13), (13, 5)), ((5, 7), (7, 13))]


@pytest.mark.parametrize("needs_grad", ["x", "weight"])
def test_only_what_the_gradient_needs_is_saved(native, needs_grad):
    """grad_x = grad @ W keeps W, not x; grad_W = grad^T @ x keeps x, not W (non-leaf operands, so
    only the node could hold them)."""
    x0, w0 = randn(6, 5, seed=20).requires_grad_(), randn(3, 5, seed=21).requires_grad_()
    x = x0 * 2 if needs_grad == "x" else x0.detach() * 2
    w = w0 * 2 if needs_grad == "weight" else w0.detach() * 2
    alive_x, alive_w = weakref.ref(x), weakref.ref(w)
    y = linear(x, w, None, native)
    del x, w
    gc.collect()
    assert (alive_x() is not None, alive_w() is not None) == ((False, True) if needs_grad == "x" else (True, False))
    y.sum().backward()


def test_layers_follow_the_default_backend_onto_the_op(kernel_calls):
    """A layer made without a backend runs on gemmlab's default at call time, through the op."""
    require_backend("cython")
    calls = kernel_calls("cython")
    layer = Linear(13, 5).double()
    with gemmlab.use_backend("cython"):
        layer(randn(7, 13, seed=22))  # (loads cython if it had not loaded: the first call may take the Python road)
        y = layer(randn(7, 13, seed=23).requires_grad_())
    assert "LinearFunction" in y.grad_fn.name() and calls and all(c.backend == "cython" for c in calls)


def test_compile_fullgraph(kernel_calls):
    require_backend("cpp")
    calls = kernel_calls("cpp")
    layer = Linear(67, 13, backend="cpp").double()
    layer(randn(2, 67, seed=24))  # the backend loads on first use
    seen = []

    def capture(gm, example_inputs):
        seen.extend(node.target for node in gm.graph.nodes)
        return gm.forward

    x = randn(29, 67, seed=25).requires_grad_()
    y = torch.compile(layer, fullgraph=True, backend=capture)(x)
    assert torch.ops.gemmlab.native_linear.default in seen or torch.ops.gemmlab.native_linear in seen
    grad = randn(29, 13, seed=26)
    y.backward(grad)
    # the first call's product, then the compiled forward's and its two backward products
    assert [(c.a, c.b) for c in calls] == [((2, 67), (67, 13)), ((29, 67), (67, 13)), ((29, 13), (13, 67)),
                                           ((13, 29), (29, 67))]
    torch.testing.assert_close(y, F.linear(x.detach(), layer.weight.detach(), layer.bias.detach()))
    torch.testing.assert_close(x.grad, grad @ layer.weight.detach())


@pytest.mark.parametrize("x_shape, w_shape, b_shape, dtype_b, match", [
    ((7, 12), (5, 13), (5,), torch.float64, r"input of shape \[7, 12\] does not fit weight of shape \[5, 13\]"),
    ((7, 13), (5, 13, 1), (5,), torch.float64, r"weight must be 2-D .* got shape \[5, 13, 1\]"),
    ((7, 13), (5, 13), (4,), torch.float64, r"bias of shape \[4\] does not fit weight of shape \[5, 13\]"),
    ((7, 13), (5, 13), (5,), torch.float32, r"bias and weight have different dtypes \(Float and Double\)"),
])
@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_bad_arguments_raise_naming_them(x_shape, w_shape, b_shape, dtype_b, match, grad):
    require_backend("cpp")
    x, w = randn(*x_shape, seed=27).requires_grad_(grad), randn(*w_shape, seed=28)
    b = randn(*b_shape, dtype=dtype_b, seed=29)
    with pytest.raises((ValueError, TypeError), match=match):
        linear(x, w, b, "cpp")


def test_mixed_input_and_weight_dtypes_raise():
    require_backend("cpp")
    with pytest.raises(TypeError, match=r"input and weight have different dtypes \(Float and Double\)"):
        linear(randn(3, 4, dtype=torch.float32), randn(2, 4), None, "cpp")
