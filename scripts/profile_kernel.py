"""Where a product's time goes: a sampling profile (Linux perf, cpu-clock events, so it works in a
VM without hardware counters) of one product run in a loop, for gemmlab's compiled backends and the
peers torch @ and NumPy @, each in its own process. Samples are taken only while the timed loop runs
(perf's control fifo), and sorted into the micro-kernel, the rest of the product's own code
(packing, blocking loops, edges), the thread runtime (OpenMP, Numba's and OpenBLAS's pools) and
everything else. From the micro-kernel's share it gives the micro-kernel's own speed per core,
against the measured peak per core: how much of a gap to a peer is the micro-kernel and how much
is the road to it.

    .venv/bin/python scripts/profile_kernel.py --size 1024 --dtype float32 --threads 1 --backend cython numba cpp "torch @"

Numba's compiled code has no symbols for perf; the profiled process compiles it afresh (a private
cache folder) and writes the addresses of its functions to /tmp/perf-PID.map, perf's convention
for JIT code. docs/cpu-kernels.md ("Where the time goes") has what it showed.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

FREQUENCY = 4000  # samples per second per CPU

# (category, pattern on "dso|symbol"): the first that matches wins.
CATEGORIES = (
    ("micro-kernel", re.compile(r"micro_kernel|update_tile|small_tile|dot_tile|gemm_kernel")),
    ("threads", re.compile(r"libgomp|libiomp|omppool|workqueue|tbbpool|blas_thread_server|wait_for_others")),
    ("rest of the product", re.compile(r"_cpp\.|_cython_kernel|numba_jit|\[JIT\]|mkl_|openblas|libtorch_cpu|mem(move|cpy|set)")),
)
OTHER = "other"


def category(dso: str, symbol: str) -> str:
    text = f"{dso}|{symbol}"
    return next((name for name, pattern in CATEGORIES if pattern.search(text)), OTHER)


def parse_report(text: str) -> dict[str, int]:
    """Samples per category from `perf report --stdio -n --sort dso,sym -t '|'`."""
    counts = {name: 0 for name, _ in CATEGORIES} | {OTHER: 0}
    for line in text.splitlines():
        fields = line.split("|")
        if line.startswith("#") or len(fields) < 4 or not fields[1].strip().isdigit():
            continue
        counts[category(fields[2].strip(), fields[3].strip())] += int(fields[1])
    return counts


# --- the profiled process --------------------------------------------------------------------

def _product(backend: str, a, b, out):
    if backend == "torch @":
        import torch
        return lambda: torch.matmul(a, b, out=out)
    if backend == "numpy @":
        import numpy
        x, y, z = a.numpy(), b.numpy(), out.numpy()
        return lambda: numpy.matmul(x, y, out=z)
    import gemmlab
    return lambda: gemmlab.matmul(a, b, backend=backend, out=out)


def _write_numba_perf_map() -> None:
    """/tmp/perf-PID.map: start, size and name of each function numba_jit compiled in this process."""
    import numba
    from gemmlab.backends import numba_jit
    functions = set()
    for dispatcher in vars(numba_jit).values():
        if isinstance(dispatcher, numba.core.registry.CPUDispatcher):
            for compiled in dispatcher.overloads.values():
                library = compiled.library
                for function in library._final_module.functions:
                    if not function.is_declaration and (address := library.get_pointer_to_function(function.name)):
                        functions.add((address, function.name.split("numba_jit", 1)[-1].lstrip("0123456789")[:60]))
    ordered = sorted(functions)
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as file:
        for (address, name), (following, _) in zip(ordered, ordered[1:] + [(ordered[-1][0] + 4096, "")]):
            file.write(f"{address:x} {min(following - address, 1 << 16):x} {name}\n")


def _control(command: str) -> None:
    with open(os.environ["GEMMLAB_PERF_CTL"], "w") as ctl:
        ctl.write(command + "\n")
    with open(os.environ["GEMMLAB_PERF_ACK"]) as ack:
        ack.readline()


def child(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    m, k, n = args.shape
    a, b, out = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype), torch.empty(m, n, dtype=dtype)
    limits = None
    if args.backend[0] == "numpy @":
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=args.threads, user_api="blas")
    product = _product(args.backend[0], a, b, out)
    for _ in range(3):
        product()
    if args.backend[0] == "numba":
        _write_numba_perf_map()
    _control("enable")
    start, products = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        product()
        products += 1
    seconds = time.perf_counter() - start
    _control("disable")
    del limits
    print(json.dumps({"products": products, "seconds": seconds, "pid": os.getpid()}))


# --- the driver ------------------------------------------------------------------------------

def profile(backend: str, args) -> dict:
    """Run the product under perf in a child process; its samples per category and its speed."""
    with tempfile.TemporaryDirectory() as folder:
        ctl, ack, data = (os.path.join(folder, name) for name in ("ctl", "ack", "perf.data"))
        os.mkfifo(ctl)
        os.mkfifo(ack)
        env = dict(os.environ, GEMMLAB_PERF_CTL=ctl, GEMMLAB_PERF_ACK=ack, NUMBA_CACHE_DIR=os.path.join(folder, "numba"))
        command = [sys.executable, os.path.abspath(__file__), "--child", "--backend", backend, "--shape", *map(str, args.shape),
                   "--dtype", args.dtype, "--threads", str(args.threads), "--seconds", str(args.seconds)]
        run = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(FREQUENCY), "-D", "-1",
                              "--control", f"fifo:{ctl},{ack}", "-o", data, "--", *command],
                             env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"perf record failed for {backend}: {run.stderr.strip()[-2000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        report = subprocess.run(["perf", "report", "-i", data, "--stdio", "-n", "--sort", "dso,sym", "-t", "|"],
                                capture_output=True, text=True, check=True).stdout
        if args.reports:
            os.makedirs(args.reports, exist_ok=True)
            with open(os.path.join(args.reports, f"{backend.replace(' @', '')}.txt"), "w") as file:
                file.write(report)
        if os.path.exists(perf_map := f"/tmp/perf-{result['pid']}.map"):  # read by perf report, no longer needed
            os.remove(perf_map)
    return result | {"samples": parse_report(report)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs="+", default=["cython", "numba", "cpp", "torch @"],
                        help='gemmlab backends, "torch @" and "numpy @"')
    parser.add_argument("--size", type=int, help="a square product size^3 (default 1024)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("M", "K", "N"), help="an (M x K) @ (K x N) product")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="profiled time per backend (default 5)")
    parser.add_argument("--reports", metavar="FOLDER", help="keep each backend's perf report there, as BACKEND.txt")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.shape = args.shape or [args.size or 1024] * 3
    if args.child:
        child(args)
        return 0

    import torch
    from gemmlab.bench import cpu_model, measured_peak
    peak = measured_peak(args.threads, getattr(torch, args.dtype))
    cores = min(args.threads, os.cpu_count() or 1)
    per_core = peak.gflops / cores if peak else None
    m, k, n = args.shape
    flops = 2 * m * k * n
    peak_note = f"; measured peak {per_core:.0f} GFLOP/s per core" if per_core else "; no measured peak (no cpp extension)"
    print(f"{m}x{k} @ {k}x{n} {args.dtype}, {args.threads} thread(s), {cpu_model()}{peak_note}")
    names = [name for name, _ in CATEGORIES] + [OTHER]
    print(f"{'backend':<9} {'GFLOP/s':>8} {'CPU ms/product':>15}  " + "  ".join(f"{name:>19}" for name in names)
          + f"  {'micro-kernel GFLOP/s per core':>29}")
    for backend in args.backend:  # one after another, never two at once
        result = profile(backend, args)
        samples = result["samples"]
        total = sum(samples.values())
        cpu_per_product = total / FREQUENCY / result["products"]
        kernel_seconds = samples["micro-kernel"] / FREQUENCY / result["products"]
        kernel = flops / kernel_seconds / 1e9 if kernel_seconds else float("nan")
        shares = "  ".join(f"{100 * samples[name] / total:>18.1f}%" for name in names)
        of_peak = f" ({100 * kernel / per_core:.0f}% of peak)" if per_core else ""
        print(f"{backend:<9} {flops * result['products'] / result['seconds'] / 1e9:>8.1f} {1e3 * cpu_per_product:>15.2f}  "
              f"{shares}  {kernel:>14.1f}{of_peak}", flush=True)
        time.sleep(1)  # OpenBLAS's idle threads spin a while after its last call
    return 0


if __name__ == "__main__":
    sys.exit(main())
