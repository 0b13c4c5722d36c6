"""Record `gemmlab bench` on a noisy shared machine: each product in rounds run in quiet moments.

A check times torch's @ on 2048^3 float32 (three medians of 15 calls). A round of a product (one
gemmlab.bench.run of it: torch's @, the backends, the `torch` backend and NumPy's @, each checked
against the float64 reference and timed) runs right after a quiet check, and is kept only if the
check after it is quiet too and its `torch` row, the same MKL call as the `torch @` peer, reads
0.97-1.03x it: the machine was steady from start to end. Quiet windows here last seconds to tens of
seconds, so a round is short (one pass, 5 repeats each) and a product is done once --rounds of its
rounds are kept, at whatever times they came; a product goes to the back of the queue after each try.
Quiet means every median at least --quiet GFLOP/s (by default 95% of the best median seen so far,
once 5 checks have set it). The measured peaks are taken right after the first quiet check.

A product's kept rounds are combined as `gemmlab bench --rounds N` combines rounds: each row's time
is the median of the rounds' times, its ratios those of the medians; its spread is the kept rounds'
interquartile range over their median. Each kept round is saved in --out (SIZE_DTYPE_roundI.json,
by default docs/quiet-rounds/, committed, so that the record grows across sessions and machines)
with the machine and the code it timed: the last commit that changed the kernels, their build or
the timing (KERNEL_SOURCES; the script runs only in a git checkout with those committed). Only
rounds of this machine (its date and the BLAS libraries loaded aside) and this code count towards a
product or are combined; others stay for their own setting. --json merges the finished products into one file in `gemmlab bench --json`'s
format.

    .venv/bin/python scripts/quiet_bench.py --size 256 512 1024 2048 4096 --dtype float32 float64 \\
        --backend numba cython cpp --json docs/bench-square-quiet.json --until 23:40

docs/benchmarks.md ("Square products against the peers") has what it recorded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import torch

from gemmlab import bench
from gemmlab.timing import quartiles

STEADY = (0.97, 1.03)  # the torch row over the torch @ peer in a kept round
LEARN_CHECKS = 5  # checks that set the default quiet level before any product runs
REPEATS = 5  # per candidate and round (gemmlab bench's default is 7): a round must fit a quiet moment
ROUND_FILE = re.compile(r"(\d+)_(float\d+)_round(\d+)\.json")
ROOT = Path(__file__).resolve().parent.parent
KERNEL_SOURCES = ["csrc", "src/gemmlab/backends", "src/gemmlab/bench.py", "src/gemmlab/timing.py", "setup.py",
                  "pyproject.toml"]


def code_version() -> str:
    """The last commit that changed KERNEL_SOURCES, with "+changes" if the working tree differs there."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()
    commit = git("log", "-1", "--format=%h", "--", *KERNEL_SOURCES) or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", *KERNEL_SOURCES) else "")


def setting(machine: dict, code: str) -> dict:
    """What rounds must share to count together: the machine (not the day) and the code."""
    # numpy_blas can list every BLAS loaded so far (NumPy on a system BLAS), which depends on what ran before; NumPy's is pinned.
    return {**{k: v for k, v in machine.items() if k not in ("date", "numpy_blas")}, "code": code}


def round_number(path: Path) -> int:
    return int(ROUND_FILE.fullmatch(path.name)[3])


def all_rounds(out: Path, size: int, dtype: str) -> list[Path]:
    return sorted(out.glob(f"{size}_{dtype}_round*.json"), key=round_number)


def rounds_of(out: Path, size: int, dtype: str, this: dict) -> list[dict]:
    """The product's saved rounds taken in this setting (machine and code), oldest first."""
    runs = [json.loads(p.read_text()) for p in all_rounds(out, size, dtype)]
    return [run for run in runs if setting(run["machine"], run.get("code", "")) == this]


def check() -> list[float]:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    medians = []
    for _ in range(3):
        times = []
        for _ in range(15):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        medians.append(2 * 2048**3 / statistics.median(times) / 1e9)
    return medians


def bench_round(size: int, dtype: str, backends: list[str]) -> list[dict]:
    """One round of size^3 dtype: gemmlab.bench.run's rows, as `gemmlab bench --json` writes them."""
    return [asdict(r) for r in bench.run([*backends, "torch"], [dtype], [(size, size, size)], repeats=REPEATS)]


def combine(rounds: list[list[dict]]) -> list[dict]:
    """One product's rounds (each a list of rows, the backends in one order) as one run: median times,
    the ratios of the medians, the rounds' spread, the worst error."""
    by_backend = list(zip(*rounds))  # each backend's row of every round
    seconds = {rows[0]["backend"]: statistics.median(r["seconds"] for r in rows) for rows in by_backend}
    best_peer = min(seconds[p] for p in bench.PEERS if p in seconds)
    combined = []
    for rows in by_backend:
        t, times = seconds[rows[0]["backend"]], [r["seconds"] for r in rows]
        q1, median, q3 = quartiles(times)
        flops = 2.0 * rows[0]["batch"] * rows[0]["m"] * rows[0]["k"] * rows[0]["n"]
        combined.append({**rows[0], "seconds": t, "gflops": flops / t / 1e9,
                         "ratio_to_torch": seconds[bench.TORCH_AT] / t, "ratio_to_best_peer": best_peer / t,
                         "spread": (q3 - q1) / median, "error_ratio": max(r["error_ratio"] for r in rows),
                         "repeats": sum(r["repeats"] for r in rows), "round_seconds": times})
    return combined


def stop_time(hh_mm: str) -> float:
    """The next time (epoch seconds) the local clock reads hh_mm: tomorrow's if today's has passed."""
    now = datetime.datetime.now()
    stop = datetime.datetime.combine(now.date(), datetime.time.fromisoformat(hh_mm))
    return (stop if stop > now else stop + datetime.timedelta(days=1)).timestamp()


def product(runs: list[dict]) -> dict:
    """A product's kept rounds as one run, as `gemmlab bench --json` writes a run."""
    return {**runs[0], "results": combine([run["results"] for run in runs])}


def merge(products: list[dict]) -> dict:
    peaks = {}
    for dtype in sorted({d for run in products for d in run["peak"]}):
        values = [run["peak"][dtype]["gflops"] for run in products if dtype in run["peak"]]
        how = next(run["peak"][dtype]["how"] for run in products if dtype in run["peak"])
        peaks[dtype] = {"gflops": statistics.median(values), "how": f"{how}; median of {len(values)} runs"}
    return {"machine": products[0]["machine"], "code": products[0]["code"], "peak": peaks,
            "first_call_seconds": products[0]["first_call_seconds"],
            "results": [r for run in products for r in run["results"]],
            "how": "scripts/quiet_bench.py: each product's rounds run and kept when the machine was quiet "
                   f"before and after and the torch row read {STEADY[0]}-{STEADY[1]}x torch @"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs="+", required=True)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--backend", nargs="+", default=["numba", "cython", "cpp"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="kept rounds that finish a product")
    parser.add_argument("--quiet", type=float, help="GFLOP/s every median of a check must reach (default: see above)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "quiet-rounds",
                        help="folder of kept rounds (default: %(default)s); products with --rounds of them "
                        "in this setting are not run again")
    parser.add_argument("--json", type=Path, help="merge the finished products into this file")
    parser.add_argument("--until", help="HH:MM (local time, within the next 24 hours): stop then, products merged")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    machine, code = bench.machine(), code_version()
    if code == "unknown" or code.endswith("+changes"):  # a round names the code it timed by its commit
        parser.error(f"rounds are tagged by the commit of {', '.join(KERNEL_SOURCES)}: run in a git checkout "
                     f"with those committed (code: {code})")
    this = setting(machine, code)
    queue = [(n, d) for n in args.size for d in args.dtype if len(rounds_of(args.out, n, d, this)) < args.rounds]
    first_calls = {name: bench.first_call_seconds(name) for name in args.backend} if queue else {}
    peaks: dict = {}
    best, checks = 0.0, 0
    deadline = stop_time(args.until) if args.until else float("inf")
    while queue and time.time() < deadline:
        medians = check()
        best, checks = max(best, *medians), checks + 1
        level = args.quiet or 0.95 * best
        print(f"{time.strftime('%H:%M:%S')} check {' '.join(f'{m:.0f}' for m in medians)} (quiet: {level:.0f})", flush=True)
        if min(medians) < level or (args.quiet is None and checks < LEARN_CHECKS):
            time.sleep(10)
            continue
        peaks = peaks or {d: asdict(p) for d in args.dtype if (p := bench.measured_peak(args.threads, bench.DTYPES[d]))}
        size, dtype = queue.pop(0)
        rows = bench_round(size, dtype, args.backend)
        after = check()
        torch_row = next(r["ratio_to_torch"] for r in rows if r["backend"] == "torch")
        kept = min(after) >= level and STEADY[0] <= torch_row <= STEADY[1]
        ratios = " ".join(f"{r['backend']} {r['ratio_to_best_peer']:.3f}" for r in rows)
        print(f"  {size}^3 {dtype}: torch row {torch_row:.3f}, after {' '.join(f'{m:.0f}' for m in after)}; "
              f"x best peer: {ratios} -> {'kept' if kept else 'not kept'}", flush=True)
        if kept:
            saved = all_rounds(args.out, size, dtype)  # the next number, never one in use (numbers may have gaps)
            path = args.out / f"{size}_{dtype}_round{round_number(saved[-1]) + 1 if saved else 1}.json"
            path.write_text(json.dumps({"machine": machine, "code": code, "first_call_seconds": first_calls,
                                        "peak": {d: p for d, p in peaks.items() if d == dtype}, "results": rows},
                                       indent=2) + "\n")
        if len(rounds_of(args.out, size, dtype, this)) < args.rounds:
            queue.append((size, dtype))
    if queue:
        print("not finished: " + ", ".join(f"{n}^3 {d} ({len(rounds_of(args.out, n, d, this))} rounds kept)"
                                           for n, d in queue))
    names = {(m[2], int(m[1])) for p in args.out.glob("*.json") if (m := ROUND_FILE.fullmatch(p.name))}
    finished = [runs for d, n in sorted(names)  # float32 before float64, small before large
                if len(runs := rounds_of(args.out, n, d, this)) >= args.rounds]
    if args.json and finished:
        args.json.write_text(json.dumps(merge([product(runs) for runs in finished]), indent=2) + "\n")
        print(f"{len(finished)} products ({code}) merged into {args.json}")


if __name__ == "__main__":
    main()
