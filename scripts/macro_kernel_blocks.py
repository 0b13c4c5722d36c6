"""cpp's macro-kernel alone, on cache block shapes timed against each other in one process.

The macro-kernel (csrc/gemm/five_loops.h) is the micro-kernel run over one packed MC x KC block of A
and one packed KC x NC block of B: what a product spends 90% of its time in, without packing,
threads or the dispatch. Each shape gets buffers of its own, and the shapes take turns, round by
round, so a slow stretch of a noisy machine hits them alike; per shape it prints the median speed,
its share of the measured one-thread peak, and the median and quartiles of its speed over the
first shape's in the same round. A block larger than L2 (NC x KC) has its B micro-panels come from
L3 on first use, one no larger stays in L2: comparing the two tells the memory side's cost apart
from the kernel's own.

    .venv/bin/python scripts/macro_kernel_blocks.py --dtype float64 768x56x16 768x56x2048 768x112x2048
"""

from __future__ import annotations

import argparse
import statistics


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        kc, mc, nc = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a block shape is KCxMCxNC, like 768x56x2048; got {text!r}") from None
    return kc, mc, nc


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shapes", type=parse_shape, nargs="+", metavar="KCxMCxNC", help="the first is the yardstick")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--seconds", type=float, default=0.02, help="about this long per shape per round")
    args = parser.parse_args(argv)

    from gemmlab import _cpp
    from gemmlab.bench import machine
    from gemmlab.timing import quartiles

    blocking = _cpp.blocking(args.dtype)
    peak = _cpp.peak_gflops(args.dtype, 1)
    print(f"{machine('cpu')['cpu']}: cpp {blocking['path']} macro-kernel, {args.dtype}, MR {blocking['MR']} NR "
          f"{blocking['NR']}, one thread; measured peak {peak:.1f} GFLOP/s; caches {blocking['caches']}")
    flops = {shape: 2.0 * shape[0] * shape[1] * shape[2] for shape in args.shapes}
    passes = {}
    for shape in args.shapes:  # calibrate: passes of about args.seconds
        one = min(_cpp._time_macro_kernel(args.dtype, *shape, repeats=3))
        passes[shape] = max(1, min(10000, int(args.seconds / max(one, 1e-9))))
    speed = {shape: [] for shape in args.shapes}
    for _ in range(args.rounds):
        for shape in args.shapes:
            seconds = statistics.median(_cpp._time_macro_kernel(args.dtype, *shape, repeats=passes[shape]))
            speed[shape].append(flops[shape] / seconds / 1e9)
    first = args.shapes[0]
    for shape in args.shapes:
        gflops = statistics.median(speed[shape])
        ratios = [s / f for s, f in zip(speed[shape], speed[first])]
        q1, median, q3 = quartiles(ratios)
        print(f"KC {shape[0]} MC {shape[1]} NC {shape[2]}: {gflops:.1f} GFLOP/s ({100 * gflops / peak:.0f}% of peak), "
              f"x first {median:.3f} (quartiles {q1:.3f}-{q3:.3f})")


if __name__ == "__main__":
    main()
