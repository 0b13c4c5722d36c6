"""The numba and Cython micro-kernels as compiled for this CPU: vector FMAs, the tile in registers.

Both leave the vector code to a compiler, and what it makes of the same source differs between
CPUs: on an AVX2-only CPU (16 vector registers) LLVM once left numba's float64 micro-kernel scalar
and both compilers spilled accumulators to the stack in the inner loop, at 0.1-0.5x the speed of
the same kernels on the AVX-512 machine they had been measured on. These tests read the inner
loop's instructions (no timing): one packed FMA per accumulator vector per k-step, no scalar FMA,
nothing loaded from or stored to the stack; and numba's write-back of a whole tile in vectors.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess

import numpy as np
import pytest

X86 = platform.machine().lower() in ("x86_64", "amd64")
pytestmark = pytest.mark.skipif(not X86, reason="reads x86-64 instructions")

PACKED_FMA = re.compile(r"\bvfn?madd\d{3}p[sd]\b")
SCALAR_FMA = re.compile(r"\bvfn?madd\d{3}s[sd]\b")


def assert_register_tile(loop: str, vectors: int, what: str) -> None:
    fmas = len(PACKED_FMA.findall(loop))
    assert fmas == vectors and not SCALAR_FMA.search(loop) and "rsp" not in loop, (
        f"{what}: inner loop has {fmas} packed FMAs (want {vectors}), "
        f"{len(SCALAR_FMA.findall(loop))} scalar FMAs, {loop.count('rsp')} stack accesses (want 0):\n{loop}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_numba_micro_kernel_loop(dtype):
    import numba
    from numba import types

    from gemmlab.backends import numba_jit as nj
    if nj.PATH == "generic":
        pytest.skip("no AVX2: the portable path multiplies and adds")
    scalar = types.float32 if dtype == np.float32 else types.float64
    signature = (types.int64, types.Array(scalar, 1, "C"), types.Array(scalar, 1, "C"), types.Array(scalar, 2, "A"),
                 types.int64, types.int64, types.int64, types.int64, types.boolean)
    # Compiled again with the same options, uncached: Numba does not show the code of a function
    # loaded from its cache.
    update_tile = numba.njit(**nj._update_tile.targetoptions)(nj._update_tile.py_func)
    update_tile.compile(signature)
    asm = update_tile.inspect_asm(signature)
    # LLVM's loops: a label, then the body, ending in a branch back to that label.
    loops = innermost_fma_loops([body for _, body in re.findall(r"^(\.LBB\w+):\n(.*?^\s+j\w+\s+\1\n)", asm, re.M | re.S)])
    assert loops, f"no loop of FMAs in numba's _update_tile:\n{asm}"
    vectors = nj.MR * nj.NR_BYTES // nj.VECTOR_BYTES
    for loop in loops:
        assert_register_tile(loop, vectors, f"numba _update_tile ({dtype.__name__}, {nj.PATH})")
        # Numba's negative-index handling (index + length where the index's sign bit is set), on a
        # signed index into the A panel, had cost 3 instructions per k-step (26 -> 30 in float32).
        assert not re.search(r"\bsar[lq]?\s+\$63\b", loop), f"numba _update_tile: a negative-index check in the loop:\n{loop}"
    # A whole tile's write-back (out += tile): a vector add per accumulator vector, where it once
    # went element by element through the stack (a scalar load, add and store each).
    vector_adds = len(re.findall(r"\bvaddp[sd]\s+[^\n]*%[yz]mm", asm))
    assert vector_adds >= vectors, f"numba _update_tile ({dtype.__name__}): {vector_adds} vector adds in the write-back (want {vectors}):\n{asm}"


def innermost_fma_loops(loops: list[str]) -> list[str]:
    """Of these loops (each one's text), those with FMAs that hold no other loop: the k-loops (a
    micro-kernel may run its first k-steps in a loop of their own)."""
    with_fmas = [loop for loop in loops if PACKED_FMA.search(loop) or SCALAR_FMA.search(loop)]
    return [loop for loop in with_fmas if not any(other != loop and other in loop for other in loops)]


def objdump_functions(path: str, symbol: str) -> dict[str, str]:
    """Each function whose name contains symbol, in the shared library at path: its listing, as
    objdump prints it (the first line names it)."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", path], capture_output=True, text=True,
                             check=True).stdout
    return {function.split("\n", 1)[0]: function for function in listing.split("\n\n")
            if symbol in function.split("\n", 1)[0]}


def loops_in(function: str) -> list[str]:
    """The loops of an objdump listing of one function: from a backward jump's target to the jump."""
    lines = [(int(m[1], 16), m[2]) for m in re.finditer(r"^\s*([0-9a-f]+):\s*(.*)$", function, re.M)]
    loops = []
    for address, line in lines:
        jump = re.search(r"\bj\w+\s+([0-9a-f]+) <", line)
        if jump and int(jump[1], 16) < address:
            loops.append("\n".join(text for at, text in lines if int(jump[1], 16) <= at <= address))
    return loops


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
@pytest.mark.parametrize("function", ["update_tile(", "update_tile_unpacked("])
def test_cython_micro_kernel_loop(function):
    from gemmlab.backends import cython_ext
    build = cython_ext._kernel
    if build.VARIANT == "generic":
        pytest.skip("the portable build (SSE2) has no FMA")
    vectors = build.BLOCKING["MR"] * build.BLOCKING["NR_BYTES"] // build.BLOCKING["VECTOR_BYTES"]
    functions = objdump_functions(build.__file__, f"_cython_kernel_{build.VARIANT}_{function}")
    assert len(functions) == 2, f"want the float and double {function} of the {build.VARIANT} build; found {list(functions)}"
    for name, listing in functions.items():
        k_loops = innermost_fma_loops(loops_in(listing))
        assert k_loops, f"no loop of FMAs in {name}"
        for loop in k_loops:
            assert_register_tile(loop, vectors, name)
        # gcc zeroed a tile it kept in memory with a `rep stos` on every call (5% of the function's
        # perf samples at 2048^3 float32 on a Zen 3) when a way into the k-loops skipped every step.
        assert "rep stos" not in listing, f"{name} zeroes its tile in memory (rep stos)"


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_cpp_avx2_packing_has_no_masked_stores():
    """The transposing pack writes a k-step's MR = 6 values of A with plain 16/8/4-byte stores. As one
    masked store (vmaskmovps), microcoded on AMD, it had taken half of cpp's packing time at 256^3
    float32 on a Zen 3 (compare_builds: 1.25x at 256^3 float32, 2 threads)."""
    from gemmlab import _cpp
    tasks = {name: listing for name, listing in objdump_functions(_cpp.__file__, "Avx2Path").items() if "::task" in name}
    assert tasks, f"no AVX2 task functions in {_cpp.__file__}"
    for name, listing in tasks.items():
        assert not re.search(r"\bvmaskmovp[sd]\s+%ymm", listing), f"{name} packs with masked stores"
