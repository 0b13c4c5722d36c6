"""Does a product run at the same speed in every process? Each backend (and the peers torch @ and
NumPy @) in several fresh processes, one after another: per process, the median of warm calls and the
minor page faults per call (getrusage). A backend whose speed depends on the process shows as a
spread between its rows; the faults say whether fresh memory is touched on every call.

    .venv/bin/python scripts/process_modes.py --size 1024 --dtype float64 --processes 8 --backend numba cython cpp

docs/cpu-kernels.md ("Packing buffers are kept") has what it showed.
"""

import argparse
import json
import statistics
import subprocess
import sys

# Run in each fresh process: argv = backend, size, dtype, calls, threads.
ONE_PROCESS = """
import json, resource, sys, time
import torch
backend, size, dtype, calls, threads = sys.argv[1], int(sys.argv[2]), getattr(torch, sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
if backend == "numpy @":
    from threadpoolctl import threadpool_limits
    limits = threadpool_limits(limits=threads, user_api="blas")
    x, y = a.numpy(), b.numpy()
    product = lambda: x @ y
elif backend == "torch @":
    product = lambda: a @ b
else:
    import gemmlab
    product = lambda: gemmlab.matmul(a, b, backend=backend)
product()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = []
for _ in range(calls):
    start = time.perf_counter()
    product()
    times.append(time.perf_counter() - start)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls
print(json.dumps([sorted(times)[calls // 2], faults]))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs="+", default=["numba", "cython", "cpp"])
    parser.add_argument("--size", type=int, default=1024, help="the product is size^3 (default 1024)")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--processes", type=int, default=8, help="fresh processes per backend (default 8)")
    parser.add_argument("--calls", type=int, default=15, help="timed calls per process (default 15)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    print(f"{args.size}^3 {args.dtype}, {args.threads} threads, {args.processes} fresh processes each, "
          f"median of {args.calls} calls per process")
    for backend in ["torch @", "numpy @", *args.backend]:  # each in its own processes, one after another
        runs = [json.loads(subprocess.run([sys.executable, "-c", ONE_PROCESS, backend, str(args.size), args.dtype,
                                           str(args.calls), str(args.threads)],
                                          capture_output=True, text=True, check=True).stdout)
                for _ in range(args.processes)]
        times = " ".join(f"{t * 1e3:.1f}" for t, _ in runs)
        faults = " ".join(f"{f:.0f}" for _, f in runs)
        print(f"{backend:8s} ms per call: {times}  (median {statistics.median(t for t, _ in runs) * 1e3:.1f})  "
              f"faults per call: {faults}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
