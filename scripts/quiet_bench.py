"""Record `gemmlab bench` on a noisy shared machine: one product at a time, each in a quiet moment.

A check times torch's @ on 2048^3 float32 (three medians of 15 calls, in a child process). A product
is run (`gemmlab bench --size N --dtype D --backend ... torch --rounds 3 --interleave --json`) right
after a quiet check, and kept only if the check after it is quiet too and the `torch` row, the same
MKL call as the `torch @` peer, reads 0.97-1.03x it: the run was steady from start to end. A product
that fails goes to the back of the queue. Quiet means every median at least --quiet GFLOP/s (by
default 95% of the best median seen so far, once 5 checks have set it). The kept runs are merged
into one file in `gemmlab bench --json`'s format (peaks: the median of the runs').

    .venv/bin/python scripts/quiet_bench.py --size 256 512 1024 2048 4096 --dtype float32 float64 \\
        --backend numba cython cpp --out /tmp/quiet --json docs/bench-square-quiet.json --until 23:40

docs/benchmarks.md ("Square products against the peers") has what it recorded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHECK = """
import statistics, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
for _ in range(3):
    a @ b
for _ in range(3):
    times = []
    for _ in range(15):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    print(2 * 2048**3 / statistics.median(times) / 1e9)
"""
STEADY = (0.97, 1.03)  # the torch row over the torch @ peer in a kept run
LEARN_CHECKS = 5  # checks that set the default quiet level before any product runs


def kept_path(out: Path, size: int, dtype: str) -> Path:
    """Where a kept run of size^3 dtype lies (the queue skips products kept there; the merge reads every such file)."""
    return out / f"{size}_{dtype}.json"


def check(threads: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", CHECK, str(threads)], capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


def bench(size: int, dtype: str, backends: list[str], threads: int, path: Path) -> list[dict]:
    command = [sys.executable, "-m", "gemmlab", "bench", "--size", str(size), "--dtype", dtype, "--threads",
               str(threads), "--backend", *backends, "torch", "--rounds", "3", "--interleave", "--json", str(path)]
    subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(path.read_text())["results"]


def stop_time(hh_mm: str) -> float:
    """The next time (epoch seconds) the local clock reads hh_mm: tomorrow's if today's has passed."""
    now = datetime.datetime.now()
    stop = datetime.datetime.combine(now.date(), datetime.time.fromisoformat(hh_mm))
    return (stop if stop > now else stop + datetime.timedelta(days=1)).timestamp()


def merge(paths: list[Path]) -> dict:
    runs = [json.loads(p.read_text()) for p in paths]
    peaks = {}
    for dtype in sorted({d for run in runs for d in run["peak"]}):
        values = [run["peak"][dtype]["gflops"] for run in runs if dtype in run["peak"]]
        how = next(run["peak"][dtype]["how"] for run in runs if dtype in run["peak"])
        peaks[dtype] = {"gflops": statistics.median(values), "how": f"{how}; median of {len(values)} runs"}
    return {"machine": runs[0]["machine"], "peak": peaks, "first_call_seconds": runs[0]["first_call_seconds"],
            "results": [r for run in runs for r in run["results"]],
            "how": "scripts/quiet_bench.py: each product its own gemmlab bench run, kept when the machine was quiet "
                   f"before and after it and the torch row read {STEADY[0]}-{STEADY[1]}x torch @"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs="+", required=True)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--backend", nargs="+", default=["numba", "cython", "cpp"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet", type=float, help="GFLOP/s every median of a check must reach (default: see above)")
    parser.add_argument("--out", type=Path, required=True, help="folder for each kept run (SIZE_DTYPE.json); "
                        "products already there are not run again")
    parser.add_argument("--json", type=Path, help="merge the kept runs into this file")
    parser.add_argument("--until", help="HH:MM (local time, within the next 24 hours): stop then, kept runs merged")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    queue = [(n, d) for n in args.size for d in args.dtype if not kept_path(args.out, n, d).exists()]
    best, checks = 0.0, 0
    deadline = stop_time(args.until) if args.until else float("inf")
    while queue and time.time() < deadline:
        medians = check(args.threads)
        best, checks = max(best, *medians), checks + 1
        level = args.quiet or 0.95 * best
        print(f"{time.strftime('%H:%M:%S')} check {' '.join(f'{m:.0f}' for m in medians)} (quiet: {level:.0f})", flush=True)
        if min(medians) < level or (args.quiet is None and checks < LEARN_CHECKS):
            time.sleep(10)
            continue
        size, dtype = queue[0]
        trial = args.out / f"trial_{size}_{dtype}.json"
        rows = bench(size, dtype, args.backend, args.threads, trial)
        after = check(args.threads)
        torch_row = next(r["ratio_to_torch"] for r in rows if r["backend"] == "torch")
        kept = min(after) >= level and STEADY[0] <= torch_row <= STEADY[1]
        ratios = " ".join(f"{r['backend']} {r['ratio_to_best_peer']:.3f}" for r in rows)
        print(f"  {size}^3 {dtype}: torch row {torch_row:.3f}, after {' '.join(f'{m:.0f}' for m in after)}; "
              f"x best peer: {ratios} -> {'kept' if kept else 'again later'}", flush=True)
        if kept:
            trial.rename(kept_path(args.out, size, dtype))
            queue.pop(0)
        else:
            queue.append(queue.pop(0))
    if queue:
        print("not kept: " + ", ".join(f"{n}^3 {d}" for n, d in queue))
    kept_runs = sorted(args.out.glob("[0-9]*_*.json"), key=lambda p: (p.stem.split("_")[1], int(p.stem.split("_")[0])))
    if args.json and kept_runs:
        args.json.write_text(json.dumps(merge(kept_runs), indent=2) + "\n")
        print(f"{len(kept_runs)} runs merged into {args.json}")


if __name__ == "__main__":
    main()
