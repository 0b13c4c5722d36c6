"""Every compiled kernel's C ABI function (csrc/kernel_abi.h), called through gemmlab's C++ dispatch
core, against the float64 reference: the cpp kernel, the numba @cfuncs and every Cython build the
CPU supports. Sizes on both sides of each kernel's small/packed threshold, float32 and float64, all
layouts (transposed, sliced, stride-0 rows and columns, strided outputs), batches with broadcast
and stride-0 batch dimensions, 1 and 2 threads, exact results on small integers. Then the
registration: garbage refused, each backend's kernel under its own name, gemmlab.matmul reaching
it through the core, and the cases where a backend must not register (no C++ extension, Numba's
workqueue threading layer).
"""

import json
import os
import subprocess
import sys
from functools import partial

import pytest
import torch
from conftest import COMPILED, assert_untouched_outside, layouts, out_views, poisoned, randn, require_backend, small_integers

import gemmlab
from gemmlab import _cpp
from gemmlab.backends import cython_ext
from gemmlab.reference import assert_close_to_reference, assert_exact
from gemmlab.registry import NATIVE_KERNELS, get_backend

DTYPES = [torch.float32, torch.float64]
CYTHON_BUILDS = [f"cython-{name}" for name in cython_ext.supported_variants()]
# Every compiled kernel, the Cython one in each build this CPU supports.
KERNELS = [*(name for name in COMPILED if name != "cython"), *CYTHON_BUILDS]
FROM_PYTHON = [name for name in COMPILED if name != "cpp"]  # kernels registered by a Python module (cpp's is the core's own)


def kernel_id(name: str) -> int:
    """The core's id for a kernel: the backends' own registrations, and every Cython build this CPU
    supports registered under a name of its own (again and again: the id stays the same)."""
    if name in ("cpp", "numba"):
        require_backend(name)
        return get_backend(name).native
    return cython_ext.register_build(name, cython_ext.load_variant(name.removeprefix("cython-")))


def small_work(name: str) -> int:
    """The kernel's threshold: products of more multiply-adds than this take its packed path."""
    if name == "cpp":
        return _cpp.SMALL_PRODUCT_FMAS
    if name == "numba":
        from gemmlab.backends import numba_jit

        return numba_jit.SMALL_WORK
    return cython_ext.load_variant(name.removeprefix("cython-")).BLOCKING["SMALL_WORK"]


def edge_shapes(name: str) -> list[tuple[int, int, int]]:
    """(m, k, n): odd sizes, the notes' product, and products just under, at and over the threshold."""
    limit = small_work(name)
    side = round(limit ** (1 / 3))
    assert side**3 == limit, limit  # the thresholds are cubes (64^3): the shapes below straddle them
    shapes = [(1, 1, 1), (2, 3, 5), (13, 17, 11), (5, 784, 10), (7, 300, 33), (3, 50, 40),
              (32, 32, 32), (64, 50, 10),  # batched entries; a layer's h @ W.T (b column-major in views)
              (side - 1, side, side + 1), (side, side, side),  # the last small ones
              (side, side, side + 1), (side + 1, side, side),  # the first packed ones
              (67, 259, 97), (301, 257, 50), (5, 600, 101), (3, 1100, 130)]
    assert sum(m * k * n > limit for m, k, n in shapes) == 6
    return shapes


@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


def product(name, a, b, out=None):
    """a @ b on kernel `name` through the dispatch core (which must take the call)."""
    result = _cpp.matmul(a, b, kernel_id(name), out)
    assert result is not None, f"the dispatch core did not take {tuple(a.shape)} @ {tuple(b.shape)} {a.dtype}"
    return result


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_edge_sizes(kernel, dtype, nthreads, threads):
    torch.set_num_threads(nthreads)
    for i, (m, k, n) in enumerate(edge_shapes(kernel)):
        a, b = randn(m, k, dtype=dtype, seed=i), randn(k, n, dtype=dtype, seed=100 + i)
        what = f"{kernel} ({m}, {k}) @ ({k}, {n}), {nthreads} threads"
        assert_close_to_reference(product(kernel, a, b), a, b, what=what)
        out = poisoned(m, n, dtype=dtype)
        assert product(kernel, a, b, out) is out
        assert_close_to_reference(out, a, b, what=what + " into out")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(13, 17, 11), (5, 784, 10), (70, 131, 97)], ids=str)
def test_layouts(kernel, dtype, shape, threads):
    torch.set_num_threads(2)
    m, k, n = shape
    for name, a, b in layouts(m, k, n, dtype):
        assert_close_to_reference(product(kernel, a, b), a, b, what=f"{kernel} on {name} views {shape}")
    a, b = randn(m, k, dtype=dtype, seed=20), randn(k, n, dtype=dtype, seed=21)
    for name, out in out_views(m, n, dtype):
        product(kernel, a, b, out)
        assert_close_to_reference(out, a, b, what=f"{kernel} into a {name} out {shape}")
        assert_untouched_outside(out, f"{kernel} into a {name} out {shape}")


def batched_cases(m, k, n, dtype, make=randn):
    """(name, a, b) with batch dimensions: broadcast, stride-0, permuted, 1-D operands."""
    yield "broadcast", make(4, 1, m, k, dtype=dtype, seed=1), make(3, k, n, dtype=dtype, seed=2)
    yield "a stride-0 batch", make(m, k, dtype=dtype, seed=3).expand(6, m, k), make(6, k, n, dtype=dtype, seed=4)
    yield "b stride-0 batch", make(2, 3, m, k, dtype=dtype, seed=5), make(1, k, n, dtype=dtype, seed=6).expand(3, k, n)
    yield "permuted batch", make(m, 4, k, dtype=dtype, seed=7).transpose(0, 1), make(k, 4, n, dtype=dtype, seed=8).permute(1, 0, 2)
    yield "transposed entries", make(4, k, m, dtype=dtype, seed=9).mT, make(4, n, k, dtype=dtype, seed=10).mT
    yield "one b for all", make(5, m, k, dtype=dtype, seed=11), make(k, n, dtype=dtype, seed=12)
    yield "vector @ batch", make(k, dtype=dtype, seed=13), make(4, k, n, dtype=dtype, seed=14)
    yield "batch @ vector", make(4, m, k, dtype=dtype, seed=15), make(k, dtype=dtype, seed=16)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_batched(kernel, dtype, nthreads, threads):
    """Small entries are shared out between the threads; large ones too where the kernel says they
    are serial-safe (all three), so packed paths then run side by side on torch's threads."""
    torch.set_num_threads(nthreads)
    for shape in [(13, 17, 11), (70, 80, 90)]:
        for name, a, b in batched_cases(*shape, dtype):
            what = f"{kernel} {name} {tuple(a.shape)} @ {tuple(b.shape)}, {nthreads} threads"
            assert_close_to_reference(product(kernel, a, b), a, b, what=what)
            out = poisoned(*torch.matmul(a.to("meta"), b.to("meta")).shape, dtype=dtype)
            product(kernel, a, b, out)
            assert_close_to_reference(out, a, b, what=what + " into out")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nthreads", [1, 2])
def test_exact_on_small_integers(kernel, dtype, nthreads, threads):
    """Every partial sum exact: a kernel that drops, repeats or misplaces one product is caught."""
    torch.set_num_threads(nthreads)
    for m, k, n in edge_shapes(kernel) + [(29, 4097, 3), (29, 4097, 67)]:
        make = partial(small_integers, k=k)
        cases = list(layouts(m, k, n, dtype, make))
        if m * k * n < 1 << 20:  # the threshold's neighbours included
            cases += batched_cases(m, k, n, dtype, make)
        for name, a, b in cases:
            assert_exact(product(kernel, a, b), a, b, what=f"{kernel} {name} ({m}, {k}) @ ({k}, {n}), {nthreads} threads")


def registered_with_workspace(name: str, workspace_bytes: int) -> int:
    """Kernel `name` (numba or the chosen Cython build) registered again, under a name of its own,
    asking the core for `workspace_bytes` of workspace."""
    if name == "numba":
        require_backend("numba")
        from gemmlab.backends import numba_jit

        return numba_jit.register_kernel_as(f"numba-{workspace_bytes}", workspace_bytes)
    return cython_ext.register_build(f"cython-{workspace_bytes}", cython_ext._kernel, workspace_bytes)


@pytest.mark.parametrize("name", FROM_PYTHON)
@pytest.mark.parametrize("workspace_bytes", [0, 4096, None], ids=["none", "too small", "enough"])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_packed_products_with_and_without_the_workspace(name, workspace_bytes, nthreads, threads):
    """The packed paths carve their buffers out of the core's workspace (kernel_abi.h), or allocate
    them where it is missing or too small: exact either way, on one thread and on two, and on the
    workspace left over from other products (packing must not rely on what a buffer held)."""
    torch.set_num_threads(nthreads)
    if workspace_bytes is None:
        kernel = kernel_id(name) if name == "numba" else cython_ext.NATIVE_KERNEL
    else:
        kernel = registered_with_workspace(name, workspace_bytes)
    for i, (m, k, n) in enumerate([(300, 257, 301), (67, 259, 97), (301, 600, 50), (97, 31, 513), (300, 257, 301)]):
        for what, a, b in list(layouts(m, k, n, torch.float64, partial(small_integers, k=k)))[:3]:
            assert_exact(_cpp.matmul(a, b, kernel), a, b, what=f"{name} {what} ({m}, {k}) @ ({k}, {n}), "
                         f"workspace {workspace_bytes}, {nthreads} threads")


def test_packed_entries_side_by_side_many_times(threads):
    """The numba and Cython kernels declare every product serial-safe: batches of packed entries run
    one entry per thread, concurrently, again and again, always with the right result."""
    torch.set_num_threads(2)
    for name in [name for name in KERNELS if name != "cpp"]:
        for dtype in DTYPES:
            a, b = randn(8, 70, 80, dtype=dtype), randn(8, 80, 90, dtype=dtype, seed=1)
            for _ in range(25):
                assert_close_to_reference(product(name, a, b), a, b, what=f"{name} 8 packed entries")


def test_numba_follows_the_thread_setting(threads):
    """The numba kernel's packed path sets Numba's thread count from the core's (torch's) setting."""
    import numba

    require_backend("numba")
    a, b = randn(100, 90), randn(90, 80)  # above SMALL_WORK: the packed path
    for nthreads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        torch.set_num_threads(nthreads)
        product("numba", a, b)
        assert numba.get_num_threads() == nthreads


# --- registration ------------------------------------------------------------------------------

def test_register_kernel_refuses_garbage():
    import datetime

    f32, f64 = cython_ext._kernel.ABI_F32, cython_ext._kernel.ABI_F64
    expected_f32 = r"register_kernel: f32 must be a PyCapsule named 'gemmlab\.gemm_f32\.v2'"
    expected_f64 = r"register_kernel: f64 must be a PyCapsule named 'gemmlab\.gemm_f64\.v2'"
    with pytest.raises(TypeError, match=expected_f32 + ".*; got NoneType"):
        _cpp.register_kernel("garbage", None, f64, 0)
    with pytest.raises(TypeError, match=expected_f64 + ".*; got int"):
        _cpp.register_kernel("garbage", f32, 12345, 0)
    with pytest.raises(TypeError, match=expected_f32 + ".*; got str"):
        _cpp.register_kernel("garbage", "gemmlab.gemm_f32.v2", f64, 0)
    with pytest.raises(ValueError, match=expected_f32 + ".*; got one named 'gemmlab\\.gemm_f64\\.v2'"):
        _cpp.register_kernel("garbage", f64, f32, 0)  # the two swapped
    with pytest.raises(ValueError, match=expected_f64 + ".*; got one named 'datetime\\.datetime_CAPI'"):
        _cpp.register_kernel("garbage", f32, datetime.datetime_CAPI, 0)  # a real capsule, of another API
    with pytest.raises(TypeError):
        _cpp.register_kernel("garbage", f32, f64, "many")
    assert _cpp.kernel_id("garbage") == -1  # nothing was registered


@pytest.mark.parametrize("name", COMPILED)
def test_each_backend_registers_its_kernel_under_its_own_name(name):
    require_backend(name)
    spec = get_backend(name)
    module = sys.modules[spec.module]
    assert module.NATIVE_KERNEL is not None and spec.native == module.NATIVE_KERNEL
    assert _cpp.kernel_name(spec.native) == name and _cpp.kernel_id(name) == spec.native
    assert NATIVE_KERNELS[name] == (_cpp.matmul, spec.native)


def test_reregistering_keeps_the_id():
    build = cython_ext._kernel
    first = cython_ext.register_build("cython", build)
    assert first == cython_ext.NATIVE_KERNEL == cython_ext.register_build("cython", build)


@pytest.mark.parametrize("name", FROM_PYTHON)
def test_matmul_goes_through_the_core(name, kernel_calls, monkeypatch):
    """gemmlab.matmul reaches the backend's ABI function in one native call: the core records the
    products, and the backend's Python-level kernel, made to fail, is never called."""
    require_backend(name)
    spec = get_backend(name)

    def python_kernel(a, b, out):
        raise AssertionError(f"the {name} backend's Python-level kernel was called")

    monkeypatch.setattr(spec, "_kernel", python_kernel)
    calls = kernel_calls(name)
    expected = []
    for dtype in DTYPES:
        a, b = randn(5, 784, dtype=dtype), randn(784, 10, dtype=dtype, seed=1)
        assert_close_to_reference(gemmlab.matmul(a, b, backend=name), a, b)
        x, y = randn(3, 70, 80, dtype=dtype), randn(3, 80, 90, dtype=dtype, seed=1)
        assert_close_to_reference(gemmlab.matmul(x, y, backend=name), x, y)
        expected += [(name, (5, 784), (784, 10), dtype)] + [(name, (70, 80), (80, 90), dtype)] * 3
    assert [(c.backend, c.a, c.b, c.dtype) for c in calls] == expected


# --- in fresh processes --------------------------------------------------------------------------

def run_python(code: str, **env) -> list:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


CHECK_PRODUCTS = (
    "import json, torch, gemmlab\n"
    "from gemmlab.reference import error_ratio\n"
    "def worst(name):\n"
    "    ratios = []\n"
    "    for dtype in (torch.float32, torch.float64):\n"
    "        for shape in [(5, 784, 10), (130, 140, 150), (4, 70, 80, 90)]:\n"
    "            *lead, m, k, n = shape\n"
    "            a, b = torch.randn(*lead, m, k, dtype=dtype), torch.randn(*lead, k, n, dtype=dtype).mT.contiguous().mT\n"
    "            ratios.append(error_ratio(gemmlab.matmul(a, b, backend=name), a, b))\n"
    "    return max(ratios)\n"
)


def test_numba_kernel_loaded_from_the_disk_cache():
    """The @cfuncs, and the parallel code they call, as a new process loads them from Numba's cache
    (this process compiled and saved them): the packed path must compute there too."""
    require_backend("numba")
    from gemmlab.backends import numba_jit

    hits, worst, native = run_python(
        CHECK_PRODUCTS + "from gemmlab.backends import numba_jit as nj\n"
        "hits = [f.cache_hits for f in nj._ABI_KEEP_ALIVE if hasattr(f, 'cache_hits')]\n"
        "print(json.dumps([hits, worst('numba'), nj.NATIVE_KERNEL is not None]))\n"
    )
    assert native and worst <= 1
    assert hits == ([1, 1] if numba_jit._CACHE else [0, 0])


def test_without_the_cpp_extension_the_backends_take_the_python_road():
    native, worst = run_python(
        "import sys; sys.modules['gemmlab._cpp'] = None\n" + CHECK_PRODUCTS
        + "from gemmlab.backends import cython_ext, numba_jit\n"
        "print(json.dumps([[cython_ext.NATIVE_KERNEL, numba_jit.NATIVE_KERNEL], [worst('cython'), worst('numba')]]))\n"
    )
    assert native == [None, None] and max(worst) <= 1


def test_numba_under_the_workqueue_layer_takes_the_python_road():
    """That layer cannot run parallel code from two threads at once, which the core (large products
    without the GIL) would allow: the numba backend then does not register, and says why."""
    native, note, worst = run_python(
        CHECK_PRODUCTS + "from gemmlab.backends import numba_jit\n"
        "info = {i['name']: i for i in gemmlab.backend_info()}['numba']\n"
        "print(json.dumps([numba_jit.NATIVE_KERNEL, info['note'], worst('numba')]))\n",
        NUMBA_THREADING_LAYER="workqueue",
    )
    assert native is None and "workqueue threading layer" in note and worst <= 1
