"""NumPy's and PyTorch's own matmul test cases, run against gemmlab.matmul on every CPU backend.

The cases (shapes, layouts, dtypes and contracts; not the code) come from:
- numpy/numpy, numpy/_core/tests/test_multiarray.py: MatmulCommon (exceptions, shapes, result
  types, vector/matrix/stacked values) and TestMatmul (dot-equivalent layouts, BLAS-type C/F
  orders and strides);
- pytorch/pytorch, test/test_linalg.py: the small brute-force matmul sizes (gen_sizes_matmul, 1-D
  to 3-D against 1-D to 4-D, dimensions 0..3, contiguous or not), test_blas_empty,
  test_strided_mm_bmm and test_1_sized_with_0_strided;
- pytorch/pytorch, torch/testing/_internal/common_methods_invocations.py: sample_inputs_matmul,
  the shapes PyTorch's gradcheck and gradgradcheck run matmul on.
Every result is checked against the float64 (complex128) reference on random data, every gradient
against PyTorch's autograd of x @ y.
"""

import itertools

import numpy as np
import pytest
import torch
from conftest import max_dim, randn
from test_complex_autograd import assert_same_gradients

import gemmlab
from gemmlab.reference import assert_close_to_reference
from gemmlab.registry import BACKENDS

FLOATING = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128]
NUMPY_FLOATING = [np.float16, np.float32, np.float64, np.complex64, np.complex128]


def dtypes_of(backend, among=FLOATING):
    return [d for d in among if d in BACKENDS[backend].dtypes]


def noncontiguous(*shape, dtype=torch.float64, seed=0):
    """Random data at every other element of a doubled last dimension (as torch's make_tensor does)."""
    return randn(*shape[:-1], 2 * shape[-1], dtype=dtype, seed=seed)[..., ::2]


def check(backend, a, b, what):
    out = gemmlab.matmul(a, b, backend=backend)
    assert out.shape == torch.matmul(a, b).shape and out.dtype == a.dtype, what
    assert_close_to_reference(out, a, b, what=f"{backend}: {what}")


# --- NumPy: MatmulCommon ------------------------------------------------------------------------

# Contracts NumPy raises ValueError for: vectors and matrices that do not fit, 0-d operands,
# batch dimensions that do not broadcast.
NUMPY_MISFITS = [((1,), (2,)), ((2, 1), (2,)), ((2,), (1, 2)), ((1, 2), (3, 1)), ((1,), ()), ((), (1,)),
                 ((1, 1), ()), ((), (1, 1)), ((2, 2, 1), (3, 1, 2))]
# Vector, matrix and stacked operands of MatmulCommon's shape and value tests, broadcast stacks,
# vector @ vector (a 0-d result: a NumPy scalar).
NUMPY_SHAPES = [((1, 1), (2, 1, 1)), ((2, 1, 1), (1, 1)), ((2, 1, 1), (2, 1, 1)), ((2,), (2,)), ((1, 1), (1,)),
                ((1,), (1, 1)), ((1, 1), (1, 1)), ((1,), (1, 2)), ((2, 1), (1,)), ((2,), (2, 1)), ((2, 1), (1, 2)),
                ((2,), (2, 2)), ((2,), (2, 2, 2)), ((2, 2), (2,)), ((2, 2, 2), (2,)), ((2, 2), (2, 2)),
                ((2, 2, 2), (2, 2)), ((2, 2), (2, 2, 2)), ((2, 2, 2), (2, 2, 2))]
# MatmulCommon.types, NumPy's type characters: bool, signed and unsigned ints, half to long
# double, complex, object.
NUMPY_TYPES = "?bhilqBHILQefdgFDGO"


@pytest.mark.parametrize("shapes", NUMPY_MISFITS, ids=str)
def test_numpy_misfits_raise_value_error(backend, shapes):
    a, b = np.ones(shapes[0]), np.ones(shapes[1])
    with pytest.raises(ValueError, match=r"inner dimensions differ|at least 1 dimension|do not broadcast"):
        gemmlab.matmul(a, b, backend=backend)


def test_numpy_shapes_and_result_types(backend):
    """NumPy in, NumPy out, of the operands' dtype; vector @ vector gives a scalar of that type."""
    rng = np.random.default_rng(0)
    for kind, shapes in itertools.product(NUMPY_FLOATING, NUMPY_SHAPES):
        a, b = (rng.standard_normal(s) + 1j * rng.standard_normal(s) for s in shapes)
        a, b = (x.astype(kind) if np.dtype(kind).kind == "c" else x.real.astype(kind) for x in (a, b))
        if torch.from_numpy(a).dtype not in BACKENDS[backend].dtypes:
            continue
        out = gemmlab.matmul(a, b, backend=backend)
        expected = np.matmul(a, b)
        if expected.ndim == 0:
            assert type(out) is kind, f"{shapes} {kind}: got {type(out).__name__}"
        else:
            assert isinstance(out, np.ndarray) and out.dtype == kind and out.shape == expected.shape, (shapes, kind)
        assert_close_to_reference(torch.as_tensor(np.asarray(out)), torch.from_numpy(a), torch.from_numpy(b),
                                  what=f"{backend}: {shapes} {kind.__name__}")


@pytest.mark.parametrize("char", NUMPY_TYPES)
def test_numpy_types_give_a_product_or_a_type_error(backend, char):
    a, b = np.ones((2, 3), dtype=char), np.ones((3, 2), dtype=char)
    try:
        supported = torch.from_numpy(a).dtype in BACKENDS[backend].dtypes
    except TypeError:  # long double, object: torch has no such dtype
        supported = False
    if supported:
        np.testing.assert_array_equal(gemmlab.matmul(a, b, backend=backend), np.full((2, 2), 3, dtype=char))
    else:
        with pytest.raises(TypeError, match=r"supports|torch cannot take"):
            gemmlab.matmul(a, b, backend=backend)


# --- NumPy: TestMatmul --------------------------------------------------------------------------


def dot_equivalent_pairs(dtype):
    """test_dot_equivalent's operands: matrices contiguous, transposed, copied and strided (m3),
    vectors contiguous and strided, and empty matrices."""
    m1, m2 = randn(5, 3, dtype=dtype, seed=1), randn(3, 7, dtype=dtype, seed=2)
    m3 = randn(5, 6, dtype=dtype, seed=3)[:, ::2]
    vc, vr, m0 = randn(10, dtype=dtype, seed=4), randn(6, dtype=dtype, seed=5), randn(3, 0, dtype=dtype)
    c = torch.Tensor.contiguous
    return {
        "m1 m2": (m1, m2), "m2.T m1.T": (m2.T, m1.T), "c(m2.T) m1.T": (c(m2.T), m1.T), "m2.T c(m1.T)": (m2.T, c(m1.T)),
        "m1 m1.T": (m1, m1.T), "m1.T m1": (m1.T, m1), "m1 m3.T": (m1, m3.T), "m3 m1.T": (m3, m1.T),
        "m3 m3.T": (m3, m3.T), "m3.T m3": (m3.T, m3), "m3 m2": (m3, m2), "m2.T m3.T": (m2.T, m3.T),
        "c(m2.T) m3.T": (c(m2.T), m3.T),
        "m1 vr[:3]": (m1, vr[:3]), "vc[:5] m1": (vc[:5], m1), "m1.T vc[:5]": (m1.T, vc[:5]), "vr[:3] m1.T": (vr[:3], m1.T),
        "m1 vr[::2]": (m1, vr[::2]), "vc[::2] m1": (vc[::2], m1), "m1.T vc[::2]": (m1.T, vc[::2]),
        "vr[::2] m1.T": (vr[::2], m1.T), "m3 vr[:3]": (m3, vr[:3]), "vc[:5] m3": (vc[:5], m3),
        "m3.T vc[:5]": (m3.T, vc[:5]), "vr[:3] m3.T": (vr[:3], m3.T), "m3 vr[::2]": (m3, vr[::2]),
        "vc[::2] m3": (vc[::2], m3), "m3.T vc[::2]": (m3.T, vc[::2]), "vr[::2] m3.T": (vr[::2], m3.T),
        "m0 m0.T": (m0, m0.T), "m0.T m0": (m0.T, m0), "m1 m0": (m1, m0), "m0.T m1.T": (m0.T, m1.T),
    }


def test_numpy_dot_equivalent_layouts(backend):
    for dtype in dtypes_of(backend):
        for name, (a, b) in dot_equivalent_pairs(dtype).items():
            check(backend, a, b, f"{name} {dtype}")


def blas_modes(x):
    """x in C and Fortran order, each contiguous and at every other element of a doubled buffer."""
    fortran = x.T.contiguous().T
    c_strided = torch.zeros(2 * x.shape[0], 2 * x.shape[1], dtype=x.dtype)[::2, ::2]
    f_strided = torch.zeros(2 * x.shape[1], 2 * x.shape[0], dtype=x.dtype).T[::2, ::2]
    return {"C": x.contiguous(), "F": fortran, "C strided": c_strided.copy_(x), "F strided": f_strided.copy_(x)}


def test_numpy_blas_type_layouts(backend):
    """test_dot_equivalent_matrix_matrix_blastypes: every pair of C/F, contiguous/strided layouts."""
    for dtype in dtypes_of(backend, [torch.float32, torch.float64, torch.complex64, torch.complex128]):
        a_modes, b_modes = blas_modes(randn(5, 3, dtype=dtype, seed=6)), blas_modes(randn(3, 7, dtype=dtype, seed=7))
        for (ma, a), (mb, b) in itertools.product(a_modes.items(), b_modes.items()):
            check(backend, a, b, f"a {ma}, b {mb}, {dtype}")


# --- PyTorch: test_linalg.py --------------------------------------------------------------------


def brute_force_sizes(x_dims, y_dims=4, matrix=4, batch=3):
    """gen_sizes_matmul's pairs: an x_dims-D operand against 1-D to y_dims-D ones, every matrix
    dimension 0..matrix-1 and batch dimension 0..batch-1, the batch dimensions shared."""
    for y in range(1, y_dims + 1):
        for lead, mn in itertools.product(itertools.product(range(batch), repeat=max(x_dims - 2, y - 2, 0)),
                                          itertools.product(range(matrix), repeat=min(y, 2))):
            if x_dims == 1:
                yield mn[:1], lead + mn
                continue
            for k in range(matrix):
                yield lead[len(lead) - (x_dims - 2):] + (k, mn[0]), lead[len(lead) - max(y - 2, 0):] + mn


@pytest.mark.parametrize("x_dims", [1, 2, 3])
def test_torch_small_brute_force(backend, x_dims):
    """Every size pair, contiguous or not (the four combinations taken in turn, to keep it quick)."""
    for i, (sa, sb) in enumerate(brute_force_sizes(x_dims)):
        make_a, make_b = [(randn, randn), (noncontiguous, randn), (randn, noncontiguous), (noncontiguous, noncontiguous)][i % 4]
        check(backend, make_a(*sa, seed=i), make_b(*sb, seed=i + 1), f"{sa} @ {sb}")


# test_blas_empty's matmul cases: empty results, and zero-length products that must be zeros.
TORCH_EMPTY = [((0,), (0,)), ((0, 0), (0, 0)), ((0, 0, 0), (0, 0, 0)), ((5, 0, 0), (5, 0, 0)), ((5, 3, 0), (5, 0, 4))]


@pytest.mark.parametrize("shapes", TORCH_EMPTY, ids=str)
def test_torch_empty(backend, shapes):
    a, b = randn(*shapes[0], seed=8), randn(*shapes[1], seed=9)
    out = gemmlab.matmul(a, b, backend=backend)
    torch.testing.assert_close(out, torch.zeros(torch.matmul(a, b).shape, dtype=torch.float64), rtol=0, atol=0)


def test_torch_overlapping_strides(backend):
    """test_strided_mm_bmm: a view whose rows overlap (stride below the row length), batched and
    not; test_1_sized_with_0_strided: a stride-0 size-1 row and a view whose batches overlap."""
    for dtype in dtypes_of(backend, [torch.float32, torch.float64]):
        sx = torch.as_strided(randn(2, 3, dtype=dtype, seed=10), (2, 2, 2), (3, 1, 1))
        check(backend, sx, sx, f"overlapping rows, batched, {dtype}")
        check(backend, sx[0], sx[0], f"overlapping rows, {dtype}")
        k, n = (8, 16) if max_dim(backend) < 64 else (64, 512)
        a = torch.as_strided(randn(8, 1, k, dtype=dtype, seed=11), (8, 1, k), (k, 0, 1))
        b = torch.as_strided(randn(8, k, n, dtype=dtype, seed=12), (8, k, n), (k, 1, 8 * k))
        check(backend, a, b, f"stride-0 row, overlapping batches, {dtype}")


# --- PyTorch: sample_inputs_matmul (gradients) --------------------------------------------------


def gradient_shapes(backend):
    """sample_inputs_matmul's pairs with its sizes S, M, L = 5, 10, 20 (2, 3, 4 on loops and
    elementwise, a Python step per element or per dot product: the largest pair took seconds)."""
    S, M, L = (5, 10, 20) if max_dim(backend) > 16 else (2, 3, 4)
    return [((L,), (L,)), ((S, M), (M,)), ((M,), (M, S)), ((S, M), (M, S)), ((S, 0), (0, M)), ((S, S, M), (M,)),
            ((S, S, M), (M, S)), ((S, S, 0), (0, S)), ((M,), (S, M, S)), ((S, M), (S, M, S)), ((0, 0), (S, 0, 0)),
            ((S, S, M, M), (S, S, M, S)), ((S, S, M, M), (M,)), ((M,), (S, S, M, S)), ((S, S, S), (1, S, S))]


def test_torch_gradients(backend):
    """Values and both gradients (for a random upstream gradient) against PyTorch's autograd of
    x @ y, in float64 and, where the backend takes it, complex128; fast-mode gradcheck and
    gradgradcheck on each pair too."""
    for dtype in dtypes_of(backend, [torch.float64, torch.complex128]):
        for i, (sa, sb) in enumerate(gradient_shapes(backend)):
            a, b = randn(*sa, dtype=dtype, seed=i).requires_grad_(), randn(*sb, dtype=dtype, seed=i + 50).requires_grad_()
            ours, theirs = gemmlab.matmul(a, b, backend=backend), a @ b
            assert_close_to_reference(ours, a, b, what=f"{backend}: {sa} @ {sb} {dtype}")
            assert_same_gradients(ours, theirs, (a, b), seed=i + 100, what=f"{backend}: {sa} @ {sb} {dtype}")

            def product(x, y):
                return gemmlab.matmul(x, y, backend=backend)

            assert torch.autograd.gradcheck(product, (a, b), fast_mode=True), (sa, sb, dtype)
            assert torch.autograd.gradgradcheck(product, (a, b), fast_mode=True), (sa, sb, dtype)
