"""Time the C++ backend's kernel against torch's BLAS in the same run.

Calls `gemmlab._cpp.matmul_2d(a, b, out)` and `torch.mm(a, b, out=out)` directly (no dispatch
layer), alternating the two so machine noise hits both alike, and reports the median of several
repeats as GFLOP/s and the ratio cpp / torch (above 1: the C++ kernel is faster).

    PYTHONPATH=src python scripts/bench_cpp.py                  # the standard table
    PYTHONPATH=src python scripts/bench_cpp.py --shape 1024 1024 1024 --dtype float64
    GEMMLAB_CPU=avx2 PYTHONPATH=src python scripts/bench_cpp.py  # a forced ISA path
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gemmlab._cpp as cpp

STANDARD = [
    ("float32", 256, 256, 256),
    ("float32", 512, 512, 512),
    ("float32", 1024, 1024, 1024),
    ("float32", 2048, 2048, 2048),
    ("float64", 1024, 1024, 1024),
    ("float32", 50000, 784, 50),
    ("float32", 50000, 50, 784),
    ("float32", 784, 50000, 50),
    ("float32", 5, 784, 10),
]


def per_call(fn, budget: float) -> float:
    """Seconds per call of fn, timed over a batch of calls lasting about `budget` seconds."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(budget / once))
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def bench(dtype: str, m: int, k: int, n: int, repeats: int, budget: float) -> dict:
    dt = getattr(torch, dtype)
    a, b = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
    out_cpp, out_torch = torch.empty(m, n, dtype=dt), torch.empty(m, n, dtype=dt)
    run_cpp = lambda: cpp.matmul_2d(a, b, out_cpp)  # noqa: E731
    run_torch = lambda: torch.mm(a, b, out=out_torch)  # noqa: E731
    times_cpp, times_torch = [], []
    for _ in range(repeats):  # alternate, so a noisy stretch hurts both
        times_cpp.append(per_call(run_cpp, budget))
        times_torch.append(per_call(run_torch, budget))
    t_cpp, t_torch = statistics.median(times_cpp), statistics.median(times_torch)
    flop = 2.0 * m * n * k
    return {"shape": f"{dtype} {m}x{k} @ {k}x{n}", "cpp_s": t_cpp, "torch_s": t_torch,
            "cpp_gflops": flop / t_cpp / 1e9, "torch_gflops": flop / t_torch / 1e9, "ratio": t_torch / t_cpp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, metavar=("M", "K", "N"), action="append")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per timed batch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(args.dtype, *s) for s in args.shape] if args.shape else STANDARD
    print(f"path {cpp.cpu_path()}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'shape':34} {'cpp':>10} {'torch':>10} {'cpp GF/s':>9} {'torch GF/s':>10} {'ratio':>6}")
    for case in cases:
        r = bench(*case, repeats=args.repeats, budget=args.budget)
        fmt = lambda s: f"{s * 1e6:8.1f}us" if s < 1e-3 else f"{s * 1e3:8.2f}ms"  # noqa: E731
        print(f"{r['shape']:34} {fmt(r['cpp_s']):>10} {fmt(r['torch_s']):>10} {r['cpp_gflops']:9.1f} "
              f"{r['torch_gflops']:10.1f} {r['ratio']:6.2f}")


if __name__ == "__main__":
    main()
