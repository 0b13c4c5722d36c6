"""Time gemmlab backends against torch's `@` in the same run (GFLOP/s, ratio, tiny per-call time).

    PYTHONPATH=src python scripts/bench_kernels.py [--backends numba cython] [--threads 2] [--quick]

Each shape: one warm-up call, then the median of several repeats; torch's bare `a @ b` is timed
right next to each backend (interleaved rounds), so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import gemmlab

SHAPES = [  # (label, m, k, n, dtype)
    ("f32 256", 256, 256, 256, torch.float32),
    ("f32 512", 512, 512, 512, torch.float32),
    ("f32 1024", 1024, 1024, 1024, torch.float32),
    ("f32 2048", 2048, 2048, 2048, torch.float32),
    ("f64 1024", 1024, 1024, 1024, torch.float64),
    ("mlp 50000x784@784x50", 50000, 784, 50, torch.float32),
    ("mlp 50000x50@50x784", 50000, 50, 784, torch.float32),
    ("mlp 784x50000@50000x50", 784, 50000, 50, torch.float32),
]


def per_call(fn, budget: float) -> float:
    """Median seconds per call: calls are grouped so each sample lasts ~budget/7."""
    fn()
    start = time.perf_counter()
    fn()
    one = max(time.perf_counter() - start, 1e-9)
    number = max(1, int(budget / 7 / one))
    samples = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def interleaved(fns: dict, rounds: int, budget: float) -> tuple[dict, dict]:
    """Median and best over rounds of per_call for each fn, the fns alternating within each round."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(per_call(fn, budget))
    return {name: statistics.median(t) for name, t in times.items()}, {name: min(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", nargs="+", default=["numba", "cython"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per sample group")
    parser.add_argument("--only", nargs="*", default=None, help="substrings of shape labels to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"threads {torch.get_num_threads()}, rounds {args.rounds}; median GFLOP/s (ratio to bare a @ b) [best round]")
    for label, m, k, n, dtype in SHAPES:
        if args.only and not any(s in label for s in args.only):
            continue
        a = torch.randn(m, k, dtype=dtype, generator=gen)
        b = torch.randn(k, n, dtype=dtype, generator=gen)
        fns = {"torch @": lambda: a @ b}
        for name in args.backends:
            fns[name] = lambda name=name: gemmlab.matmul(a, b, backend=name)
        t, best = interleaved(fns, args.rounds, args.budget)
        flops = 2 * m * k * n
        ref = t["torch @"]
        cells = [f"{name} {flops / t[name] / 1e9:6.1f} ({ref / t[name]:.2f}) [{flops / best[name] / 1e9:.0f}]" for name in fns]
        print(f"{label:24s} " + "  ".join(cells), flush=True)
    if not args.only or any("tiny" in s for s in args.only):
        a, b = torch.randn(5, 784, generator=gen), torch.randn(784, 10, generator=gen)
        fns = {"torch @": lambda: a @ b, "gemmlab torch": lambda: gemmlab.matmul(a, b, backend="torch")}
        for name in args.backends:
            fns[name] = lambda name=name: gemmlab.matmul(a, b, backend=name)
        t, _ = interleaved(fns, args.rounds, 0.1)
        ref = t["torch @"]
        print("tiny (5x784)@(784x10)    " + "  ".join(f"{name} {t[name] * 1e6:.2f} us ({t[name] / ref:.1f}x)" for name in fns))


if __name__ == "__main__":
    main()
