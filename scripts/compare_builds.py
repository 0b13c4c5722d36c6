"""Two builds of gemmlab, A and B, timed against each other on a noisy machine.

Each build runs in a process of its own (PYTHONPATH=its src folder, so two checkouts built in place
can be compared without reinstalling), kept alive for the whole run. The parent alternates them in
short blocks (the order swapped every pair) with torch's @ after each pair, so that a change in the
machine's speed between blocks hits both builds alike; NumPy's @ follows all pairs in a block of its
own (OpenBLAS's idle threads spin after it). Per product and dtype it prints the median and quartiles
of B's speed over A's, one ratio per pair, and each build's median speed over the best peer's.

    git worktree add /tmp/old HEAD~1 && (cd /tmp/old && python setup.py build_ext --inplace)
    .venv/bin/python scripts/compare_builds.py /tmp/old/src src --backend cpp --size 256 1024 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def serve(threads: int) -> None:
    """Child: read 'm k n dtype repeats what' lines, answer each with the median seconds of one call of
    `what` (a backend, "torch @" or "numpy @", as gemmlab bench runs them) on an m x k @ k x n product."""
    import torch
    from threadpoolctl import threadpool_limits

    from gemmlab.bench import NUMPY_AT, TORCH_AT, _products

    torch.set_num_threads(threads)
    operands, calls = {}, {}
    for line in sys.stdin:
        m, k, n, dtype, repeats, what = line.rstrip("\n").split(" ", 5)
        shape, repeats = (int(m), int(k), int(n)), int(repeats)
        if (shape, dtype) not in operands:
            g = torch.Generator().manual_seed(0)
            operands[shape, dtype] = [torch.randn(rows, cols, generator=g, dtype=getattr(torch, dtype))
                                      for rows, cols in ((shape[0], shape[1]), (shape[1], shape[2]))]
        if (shape, dtype, what) not in calls:
            backends = [] if what in (TORCH_AT, NUMPY_AT) else [what]
            calls[shape, dtype, what] = _products(backends, *operands[shape, dtype], direct=False)[0][what]
        call = calls[shape, dtype, what]
        with threadpool_limits(limits=threads, user_api="blas"):  # NumPy's BLAS on as many threads as torch
            call()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
        print(statistics.median(times), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="build A's src folder (the one holding gemmlab/)")
    parser.add_argument("b", help="build B's src folder")
    parser.add_argument("--backend", default="cpp")
    parser.add_argument("--size", type=int, nargs="+", default=[], help="square products size^3 (default 256 1024)")
    parser.add_argument("--shape", type=int, nargs=3, action="append", default=[], metavar=("M", "K", "N"),
                        help="an M x K @ K x N product (repeatable)")
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=15, help="blocks per build, per size and dtype")
    parser.add_argument("--block-seconds", type=float, default=0.15)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.threads)

    def start(src):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
        command = [sys.executable, os.path.abspath(__file__), "a", "b", "--serve", "--threads", str(args.threads)]
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    builds = {"A": start(args.a), "B": start(args.b)}

    def seconds(build, shape, dtype, repeats, what):
        child = builds[build]
        child.stdin.write(f"{' '.join(map(str, shape))} {dtype} {repeats} {what}\n")
        child.stdin.flush()
        answer = child.stdout.readline()
        if not answer:
            raise SystemExit(f"build {build} stopped (see its error above)")
        time.sleep(0.05)  # let the last call's idle threads settle before the next block
        return float(answer)

    from gemmlab.bench import NUMPY_PAUSE_SECONDS, cpu_model
    from gemmlab.timing import quartiles

    def gflop(shape):
        return 2 * shape[0] * shape[1] * shape[2] / 1e9

    print(f"{cpu_model()}, {args.backend}, {args.threads} thread(s): B's speed over A's per pair, and each build's "
          "median speed over the best peer's (torch @ after each pair, numpy @ in a block of its own after all pairs)")
    shapes = [(n, n, n) for n in args.size] + [tuple(shape) for shape in args.shape]
    for shape in shapes or [(256, 256, 256), (1024, 1024, 1024)]:
        name = f"{shape[0]}^3" if len(set(shape)) == 1 else "x".join(map(str, shape))
        for dtype in args.dtype:
            first = seconds("A", shape, dtype, 1, args.backend)  # warm up both, and size the blocks
            seconds("B", shape, dtype, 1, args.backend)
            repeats = max(3, int(args.block_seconds / first))
            b_over_a, a_times, b_times, torch_times = [], [], [], []
            for pair in range(args.pairs):
                t = {build: seconds(build, shape, dtype, repeats, args.backend) for build in (("A", "B") if pair % 2 == 0 else ("B", "A"))}
                torch_times.append(seconds("B", shape, dtype, repeats, "torch @"))
                b_over_a.append(t["A"] / t["B"])
                a_times.append(t["A"])
                b_times.append(t["B"])
            # NumPy's @ last, in a block of its own: OpenBLAS's idle threads spin for a while after it
            numpy_time = seconds("B", shape, dtype, 3 * repeats, "numpy @")
            time.sleep(NUMPY_PAUSE_SECONDS)
            torch_time = statistics.median(torch_times)
            best_peer = min(torch_time, numpy_time)
            q1, median, q3 = quartiles(b_over_a)
            print(f"{name} {dtype}: B/A {median:.3f} (quartiles {q1:.3f}-{q3:.3f}); x best peer: "
                  f"A {best_peer / statistics.median(a_times):.3f}, B {best_peer / statistics.median(b_times):.3f} "
                  f"(torch @ {gflop(shape) / torch_time:.1f}, numpy @ {gflop(shape) / numpy_time:.1f} GFLOP/s)", flush=True)
    for child in builds.values():
        child.stdin.close()
        child.wait()


if __name__ == "__main__":
    main()
