"""Complex products and torch's lazy views: gradients of a complex product need conjugate
transposes (grad @ b^H, a^H @ grad), and lazily conjugated (x.conj()) or negated (x.conj().imag)
views must give the product of their values on every backend, forward and backward."""

import pytest
import torch
from conftest import CPU_BACKENDS, import_or_fail, randn

import gemmlab
from gemmlab.reference import assert_close_to_reference
from gemmlab.registry import BACKENDS

# Every available CPU backend that takes complex operands (today einsum and torch), from the registry.
COMPLEX = [name for name in CPU_BACKENDS if torch.complex128 in BACKENDS[name].dtypes]

# (a shape, b shape): 2-D, vector-vector, vector-matrix, matrix-vector, folded batch, equal batch, broadcast batch.
SHAPES = [((3, 4), (4, 2)), ((4,), (4,)), ((4,), (4, 3)), ((3, 4), (4,)), ((2, 3, 4), (4, 2)),
          ((2, 3, 4), (2, 4, 2)), ((2, 1, 3, 4), (3, 4, 2))]


def _swap(shape):
    return (*shape[:-2], shape[-1], shape[-2]) if len(shape) > 1 else shape


def _mT(x):
    return x.mT if x.dim() > 1 else x


# How an operand of a given shape is stored (a leaf for gradcheck) and the view the product sees.
LAYOUTS = {
    "contiguous": (lambda shape: shape, lambda x: x),
    "transposed": (_swap, _mT),
    "conj": (lambda shape: shape, torch.conj),  # a lazy view: the conj bit, no copy
    "conj transposed": (_swap, lambda x: _mT(x).conj()),
    "sliced": (lambda shape: (*shape[:-1], 2 * shape[-1]), lambda x: x[..., ::2]),
}


def _operands(shapes, layout, dtype, seed):
    """Leaf tensors stored for a layout, and the view of a leaf that the product is given."""
    stored, view = LAYOUTS[layout]
    a = randn(*stored(shapes[0]), dtype=dtype, seed=seed).requires_grad_()
    b = randn(*stored(shapes[1]), dtype=dtype, seed=seed + 1).requires_grad_()
    return (a, b), view


def assert_same_gradients(ours, theirs, inputs, seed, what):
    """The gradients of ours and of theirs (PyTorch's) for one random upstream gradient agree."""
    grad = randn(theirs.shape, dtype=theirs.dtype, seed=seed)  # a shape tuple: () for vector @ vector
    for x, g, e in zip(inputs, torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(theirs, inputs, grad)):
        torch.testing.assert_close(g, e, msg=lambda m: f"{what}, grad of the {tuple(x.shape)} operand: {m}")


def _on(backend, view):
    return lambda x, y: gemmlab.matmul(view(x), view(y), backend=backend)


def test_reference_compares_the_imaginary_part():
    """The float64 reference is complex128 for complex operands: a result whose real part is right
    and whose imaginary part is negated must fail (.double() would have dropped the imaginary part)."""
    for dtype in (torch.complex64, torch.complex128):
        a, b = randn(3, 4, dtype=dtype, seed=20), randn(4, 2, dtype=dtype, seed=21)
        assert_close_to_reference(a @ b, a, b)
        with pytest.raises(AssertionError, match="differs from the float64 reference"):
            assert_close_to_reference((a @ b).conj(), a, b)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("backend", COMPLEX)
def test_complex_gradients_match_torch_autograd(backend, shapes, layout):
    """gemmlab's values and gradients against PyTorch's autograd of x @ y for the same upstream
    gradient (complex: a non-holomorphic loss), in complex128 and complex64."""
    for dtype in (torch.complex128, torch.complex64):
        (a, b), view = _operands(shapes, layout, dtype, seed=1)
        ours, theirs = _on(backend, view)(a, b), view(a) @ view(b)
        assert_close_to_reference(ours, view(a), view(b), what=f"{backend} {dtype} on {layout} views")
        assert_same_gradients(ours, theirs, (a, b), seed=3, what=f"{backend} {dtype} on {layout} views")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("backend", COMPLEX)
def test_complex_gradcheck(backend, shapes, layout):
    inputs, view = _operands(shapes, layout, torch.complex128, seed=5)
    assert torch.autograd.gradcheck(_on(backend, view), inputs)


@pytest.mark.parametrize("layout", ["contiguous", "conj transposed"])
@pytest.mark.parametrize("shapes", [SHAPES[0], SHAPES[1], SHAPES[5], SHAPES[6]], ids=str)
@pytest.mark.parametrize("backend", COMPLEX)
def test_complex_gradgradcheck(backend, shapes, layout):
    """The backward runs through the op itself, so its own gradients must be the conjugate ones too."""
    inputs, view = _operands(shapes, layout, torch.complex128, seed=7)
    assert torch.autograd.gradgradcheck(_on(backend, view), inputs)


def negated(x):
    """A real view whose value is -x, held lazily as torch's negative bit over x's memory."""
    view = torch.complex(torch.zeros_like(x), x).conj().imag
    assert view.is_neg()
    return view


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_negative_bit_views(backend, dtype):
    """A kernel that reads memory by address would see x, not -x: the dispatch resolves the bit."""
    a, b = randn(5, 4, dtype=dtype, seed=9), randn(4, 3, dtype=dtype, seed=10)
    for x, y in [(negated(a), b), (a, negated(b)), (negated(b).T, negated(a).T)]:
        with torch.no_grad():  # the fast path, which bypasses the custom op
            out = gemmlab.matmul(x, y, backend=backend)
        assert not out.is_neg()
        assert_close_to_reference(out, x.resolve_neg(), y.resolve_neg(), what=f"{backend} on negative-bit views")


def test_negative_bit_views_gradcheck(backend):
    a, b = randn(3, 4, seed=11).requires_grad_(), randn(4, 2, seed=12).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: gemmlab.matmul(negated(x), negated(y).T.T, backend=backend), (a, b))


@pytest.mark.parametrize("backend", COMPLEX)
def test_conjugate_bit_views_forward(backend):
    for dtype in (torch.complex64, torch.complex128):
        a, b = randn(5, 4, dtype=dtype, seed=13), randn(3, 4, dtype=dtype, seed=14)
        for x, y in [(a.conj(), b.T), (a, b.mH), (a.conj(), b.mH)]:
            out = gemmlab.matmul(x, y, backend=backend)
            assert not out.is_conj()
            assert_close_to_reference(out, x.resolve_conj().resolve_neg(), y.resolve_conj().resolve_neg())


def test_cpp_entry_point_rejects_lazy_bits():
    """gemmlab._cpp reads memory by address, so it must refuse a view whose value is not its memory."""
    cpp = import_or_fail("gemmlab._cpp")

    a, b = randn(3, 4, seed=15), randn(4, 2, seed=16)
    out = torch.empty(3, 2, dtype=torch.float64)
    for x, y in [(negated(a), b), (a, negated(b))]:
        with pytest.raises(ValueError, match=r"lazily negated.*resolve_neg"):
            cpp.matmul_2d(x, y, out)
    with pytest.raises(ValueError, match=r"lazily negated"):
        cpp.matmul_2d(a, b, negated(out))
