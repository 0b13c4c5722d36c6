"""The GPU backends on a CUDA device: every kernel of the `cuda` ladder and the numba_cuda kernel
against the float64 reference (odd sizes, views, poisoned outputs), through gemmlab.matmul with
its shape semantics, autograd, streams and bad input; and the Python rungs, einsum and torch's BLAS
on CUDA tensors (every dtype they take).

Marked `gpu` and skipped where torch sees no CUDA device. Where it sees one, both GPU backends
must be available: a CUDA build that failed quietly (GEMMLAB_CUDA=auto) or a missing numba-cuda
fails every test that needs it, with the reason, instead of skipping it.
"""

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import GPU_BACKENDS, layouts, poisoned, require_backend

import gemmlab
from gemmlab.reference import assert_close_to_reference
from gemmlab.registry import get_backend

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

LADDER = ["naive", "coalesced", "smem", "regblock", "warptile"]
DTYPES = [torch.float32, torch.float64]
# Single elements, odd sizes, k = 0, one row / column, sizes just past the tiles (16, 32, 64, 128).
SHAPES = [(1, 1, 1), (5, 7, 3), (17, 33, 9), (64, 0, 64), (1, 37, 70), (70, 37, 1), (129, 67, 131), (128, 128, 128),
          (300, 257, 263), (1024, 1024, 1024)]


def _module(name):
    require_backend(name)  # where torch sees a GPU, both GPU backends must run: fail, saying why
    return importlib.import_module(get_backend(name).module)


@pytest.fixture(scope="module")
def cuda_ext():
    return _module("cuda")


@pytest.fixture(scope="module")
def numba_cuda():
    return _module("numba_cuda")


@pytest.fixture(params=GPU_BACKENDS)
def gpu_backend(request):
    _module(request.param)
    return request.param


def randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)).cuda()


def gpu_layouts(m, k, n, dtype):
    """conftest.layouts on the GPU."""
    return layouts(m, k, n, dtype, make=randn)


# --- the cuda ladder, kernel by kernel ------------------------------------------------------------


def test_ladder_and_default(cuda_ext):
    assert cuda_ext.KERNELS == tuple(LADDER)
    assert cuda_ext.default_kernel() == os.environ.get("GEMMLAB_CUDA_KERNEL", "warptile")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel", LADDER)
def test_kernel_shapes(cuda_ext, kernel, dtype, shape):
    m, k, n = shape
    a, b = randn(m, k, dtype=dtype, seed=1), randn(k, n, dtype=dtype, seed=2)
    out = poisoned(m, n, dtype=dtype, device="cuda")
    cuda_ext.matmul_2d(a, b, out, kernel=kernel)
    torch.cuda.synchronize()
    assert_close_to_reference(out, a, b, what=f"{kernel} {dtype} {shape}")


@pytest.mark.parametrize("size", [(13, 17, 11), (132, 68, 36)], ids=["odd", "vector-aligned"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel", LADDER)
def test_kernel_views(cuda_ext, kernel, dtype, size):
    for name, a, b in gpu_layouts(*size, dtype):
        out = poisoned(size[0], size[2], dtype=dtype, device="cuda")
        cuda_ext.matmul_2d(a, b, out, kernel=kernel)
        assert_close_to_reference(out, a, b, what=f"{kernel} on {name} views")


@pytest.mark.parametrize("kernel", LADDER)
def test_kernel_strided_out_leaves_the_rest(cuda_ext, kernel):
    m, k, n = 37, 29, 45
    a, b = randn(m, k, dtype=torch.float32), randn(k, n, dtype=torch.float32, seed=1)
    for name, region in [("column-major", lambda buf: buf[:n, :m].T), ("every other column", lambda buf: buf[1:m + 1, 1:2 * n + 1:2])]:
        buffer = torch.full((max(m, n) + 2, 2 * n + 3), float("nan"), device="cuda")
        out = region(buffer)
        cuda_ext.matmul_2d(a, b, out, kernel=kernel)
        assert_close_to_reference(out, a, b, what=f"{kernel} into a {name} output")
        written = torch.zeros_like(buffer, dtype=torch.bool)
        region(written).fill_(True)
        assert torch.isnan(buffer[~written]).all(), f"{kernel} wrote outside its {name} output"


def test_default_kernel_matches_cublas_at_2048(cuda_ext):
    a, b = randn(2048, 2048, dtype=torch.float32), randn(2048, 2048, dtype=torch.float32, seed=1)
    out = poisoned(2048, 2048, dtype=torch.float32, device="cuda")
    cuda_ext.matmul_2d(a, b, out)
    assert_close_to_reference(out, a, b, what="the default kernel at 2048")


def test_set_default_kernel(cuda_ext):
    before = cuda_ext.default_kernel()
    try:
        cuda_ext.set_default_kernel("smem")
        assert cuda_ext.default_kernel() == "smem"
        a, b = randn(9, 10), randn(10, 11)
        assert_close_to_reference(gemmlab.matmul(a, b, backend="cuda"), a, b)
        with pytest.raises(ValueError, match="unknown gemmlab CUDA kernel 'fast'"):
            cuda_ext.set_default_kernel("fast")
    finally:
        cuda_ext.set_default_kernel(before)


def test_kernel_from_environment(cuda_ext):
    code = ("import json, gemmlab\nfrom gemmlab.backends import cuda_ext\n"
            "print(json.dumps(cuda_ext.default_kernel()))\n")
    env = {**os.environ, "GEMMLAB_CUDA_KERNEL": "regblock"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "regblock"
    code = "import json, gemmlab\nprint(json.dumps({i['name']: i for i in gemmlab.backend_info()}['cuda']['reason']))\n"
    env["GEMMLAB_CUDA_KERNEL"] = "fastest"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "GEMMLAB_CUDA_KERNEL='fastest' is not one of" in json.loads(result.stdout)


def test_cuda_entry_point_checks_arguments(cuda_ext):
    a, b, out = randn(2, 3), randn(3, 4), torch.empty(2, 4, dtype=torch.float64, device="cuda")
    with pytest.raises(ValueError, match="runs on CUDA devices"):
        cuda_ext.matmul_2d(a.cpu(), b, out)
    with pytest.raises(ValueError, match="unknown kernel 'fastest'"):
        cuda_ext.matmul_2d(a, b, out, kernel="fastest")
    with pytest.raises(TypeError, match="one dtype"):
        cuda_ext.matmul_2d(a.float(), b, out)
    with pytest.raises(TypeError, match="float32 and float64"):
        cuda_ext.matmul_2d(a.half(), b.half(), out.half())
    with pytest.raises(ValueError, match="inner dimensions differ"):
        cuda_ext.matmul_2d(a, randn(4, 4), out)
    with pytest.raises(ValueError, match="out must have shape"):
        cuda_ext.matmul_2d(a, b, out[:, :3])
    with pytest.raises(ValueError, match="2-D"):
        cuda_ext.matmul_2d(a[0], b, out)
    with pytest.raises(ValueError, match="share memory"):
        cuda_ext.matmul_2d(a, b, torch.empty(1, 4, dtype=torch.float64, device="cuda").expand(2, 4))
    with pytest.raises(RuntimeError, match="single memory location"):
        square = randn(3, 3)
        cuda_ext.matmul_2d(square, randn(3, 3), square)
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="same CUDA device"):
            cuda_ext.matmul_2d(a, b.to("cuda:1"), out)


# --- both GPU backends through gemmlab.matmul -----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matmul_shapes(gpu_backend, dtype):
    for m, k, n in [(1, 1, 1), (5, 7, 3), (17, 33, 9), (64, 0, 64), (129, 67, 131), (300, 257, 263)]:
        a, b = randn(m, k, dtype=dtype, seed=m), randn(k, n, dtype=dtype, seed=n)
        out = gemmlab.matmul(a, b, backend=gpu_backend)
        assert out.device.type == "cuda" and out.dtype == dtype and out.shape == (m, n)
        assert_close_to_reference(out, a, b, what=f"{gpu_backend} {(m, k, n)}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matmul_views(gpu_backend, dtype):
    for name, a, b in gpu_layouts(13, 17, 11, dtype):
        assert_close_to_reference(gemmlab.matmul(a, b, backend=gpu_backend), a, b, what=f"{gpu_backend} on {name} views")


def test_matmul_batched_and_vectors(gpu_backend):
    cases = [((4,), (4,)), ((4,), (4, 3)), ((3, 2, 4), (4, 5)), ((3, 2, 4), (3, 4, 5)), ((2, 1, 2, 4), (3, 4, 5))]
    for shape_a, shape_b in cases:
        a, b = randn(*shape_a, seed=1), randn(*shape_b, seed=2)
        got = gemmlab.matmul(a, b, backend=gpu_backend)
        torch.testing.assert_close(got, torch.matmul(a, b))


def test_autograd(gpu_backend):
    a = randn(3, 4).requires_grad_()
    b = randn(4, 5, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: gemmlab.matmul(x, y, backend=gpu_backend), (a, b))
    x = randn(65, 33, dtype=torch.float32, seed=2).requires_grad_()
    w = randn(33, 17, dtype=torch.float32, seed=3).requires_grad_()
    gemmlab.matmul(x, w, backend=gpu_backend).square().sum().backward()
    gx, gw = x.grad, w.grad
    x.grad = w.grad = None
    (x @ w).square().sum().backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, w.grad, rtol=1e-4, atol=1e-4)


def test_runs_on_the_current_stream(gpu_backend):
    """On a side stream, the product must wait for the work queued before it on that stream."""
    a_src, b = randn(512, 512, dtype=torch.float32), randn(512, 512, dtype=torch.float32, seed=1)
    a = torch.zeros_like(a_src)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        if hasattr(torch.cuda, "_sleep"):
            torch.cuda._sleep(50_000_000)  # keep the stream busy so that a product on another stream would race ahead
        a.copy_(a_src)
        out = gemmlab.matmul(a, b, backend=gpu_backend)
    side.synchronize()
    assert_close_to_reference(out, a_src, b, what=f"{gpu_backend} on a side stream")


# --- the Python rungs and torch's BLAS on CUDA tensors ---------------------------------------------

# Small for the Python loops (a kernel launch per element or row), larger where one call does it all.
RUNG_SHAPES = {"loops": (3, 5, 4), "elementwise": (7, 9, 5), "broadcast": (13, 17, 11), "einsum": (29, 67, 13),
               "torch": (129, 67, 131)}


@pytest.mark.parametrize("backend, dtype", [(name, dtype) for name in RUNG_SHAPES for dtype in get_backend(name).dtypes], ids=str)
def test_cuda_tensors_on_the_other_rungs(backend, dtype, kernel_calls):
    """Every dtype each of them takes (einsum and torch: float16 to complex128)."""
    calls = kernel_calls(backend)
    m, k, n = RUNG_SHAPES[backend]
    cases = [*gpu_layouts(m, k, n, dtype),
             ("batched", randn(2, m, k, dtype=dtype, seed=3), randn(2, k, n, dtype=dtype, seed=4)),
             ("vector", randn(k, dtype=dtype, seed=5), randn(k, n, dtype=dtype, seed=6))]
    for name, a, b in cases:
        assert a.is_cuda and b.is_cuda
        out = gemmlab.matmul(a, b, backend=backend)
        assert out.device == a.device and out.dtype == dtype, name
        assert_close_to_reference(out, a, b, what=f"{backend} on CUDA {dtype}, {name}")
    assert len(calls) >= len(cases)  # the rung's own kernel did the work


def test_numba_cuda_entry_point_checks_arguments(numba_cuda):
    a, b, out = randn(2, 3), randn(3, 4), torch.empty(2, 4, dtype=torch.float64, device="cuda")
    with pytest.raises(ValueError, match="runs on CUDA devices"):
        numba_cuda.matmul_2d(a.cpu(), b.cpu(), out.cpu())
    with pytest.raises(TypeError, match="float32 or float64"):
        numba_cuda.matmul_2d(a.float(), b, out)
    with pytest.raises(ValueError, match="shapes do not fit"):
        numba_cuda.matmul_2d(a, b, out[:, :3])


def test_cpu_operands_rejected_by_gpu_backends(gpu_backend):
    with pytest.raises(ValueError, match=rf"backend '{gpu_backend}' runs on cuda"):
        gemmlab.matmul(torch.ones(2, 2), torch.ones(2, 2), backend=gpu_backend)
