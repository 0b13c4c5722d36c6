"""Benchmark gemmlab's GPU kernels against cuBLAS: square float32 products on one CUDA device.

    python scripts/gpu_bench.py [--sizes 1024 2048 4096 8192] [--json FILE] [--deadline-s 100]

Every kernel of the `cuda` ladder (called directly: gemmlab.backends.cuda_ext.matmul_2d(..., kernel=k)),
the `numba_cuda` kernel and cuBLAS (torch.mm with TF32 off, so that all compute in plain float32)
are first checked against a float64 product with gemmlab's k-scaled error bound, warmed up, then
timed call by call with CUDA events; the median is reported as TFLOP/s and as a ratio to cuBLAS at
the same size. Repeats: at least 5, up to 50 while an entry has spent under 1.5 s. The naive kernel
is skipped above 4096 (seconds per call there). Past the deadline the remaining entries are skipped
with a note, so the run always ends with its table and JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

MIN_REPEATS, MAX_REPEATS, ENTRY_BUDGET_S = 5, 50, 1.5
NAIVE_MAX = 4096


def _entries():
    """(name, make(a, b, out) -> zero-argument callable, unavailable reason or None)."""
    import gemmlab

    info = {i["name"]: i for i in gemmlab.backend_info()}
    entries = [("cuBLAS", lambda a, b, out: (lambda: torch.mm(a, b, out=out)), None)]
    if info["cuda"]["available"]:
        from gemmlab.backends import cuda_ext

        for kernel in cuda_ext.KERNELS:
            entries.append((f"cuda:{kernel}", lambda a, b, out, k=kernel: (lambda: cuda_ext.matmul_2d(a, b, out, kernel=k)), None))
    else:
        entries.append(("cuda:*", None, info["cuda"]["reason"]))
    if info["numba_cuda"]["available"]:
        from gemmlab.backends import numba_cuda

        entries.append(("numba_cuda", lambda a, b, out: (lambda: numba_cuda.matmul_2d(a, b, out)), None))
    else:
        entries.append(("numba_cuda", None, info["numba_cuda"]["reason"]))
    return entries


def _error_ratio(out, expected, bound) -> float:
    return float(((out.double() - expected).abs() / bound).max())


def _time(fn, deadline: float) -> tuple[float, int]:
    """Median milliseconds per call (CUDA events), and how many calls were timed."""
    fn()  # warm-up (the first numba_cuda call compiles)
    fn()
    torch.cuda.synchronize()
    samples, spent = [], 0.0
    while len(samples) < MAX_REPEATS and (len(samples) < MIN_REPEATS or spent < ENTRY_BUDGET_S):
        if len(samples) >= MIN_REPEATS and time.monotonic() > deadline:
            break
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
        spent += samples[-1] / 1e3
    return statistics.median(samples), len(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--deadline-s", type=float, default=100.0, help="skip what is left after this many seconds")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.deadline_s
    torch.backends.cuda.matmul.allow_tf32 = False  # cuBLAS in plain float32, like the kernels
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    header = {
        "device": props.name, "sm": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
        "torch": torch.__version__, "cuda": torch.version.cuda, "dtype": "float32", "tf32": False,
        "timing": f"median of {MIN_REPEATS}-{MAX_REPEATS} calls after 2 warm-up calls, CUDA events",
    }
    print("gpu_bench:", ", ".join(f"{k} {v}" for k, v in header.items()), flush=True)
    entries = _entries()
    results = []
    for n in args.sizes:
        gen = torch.Generator(device=device).manual_seed(n)
        a = torch.randn(n, n, device=device, generator=gen)
        b = torch.randn(n, n, device=device, generator=gen)
        out = torch.empty(n, n, device=device)
        expected = a.double() @ b.double()
        bound = (2 * n + 2) * torch.finfo(torch.float32).eps * (a.double().abs() @ b.double().abs()) + torch.finfo(torch.float64).tiny
        cublas_ms = None
        for name, make, unavailable in entries:
            row = {"impl": name, "n": n, "median_ms": None, "tflops": None, "ratio_to_cublas": None, "repeats": 0,
                   "error_ratio": None, "ok": None, "note": ""}
            results.append(row)
            if make is None:
                row["note"] = f"unavailable: {unavailable}"
                continue
            if name == "cuda:naive" and n > NAIVE_MAX:
                row["note"] = f"skipped: the naive kernel takes seconds per call above {NAIVE_MAX}"
                continue
            if time.monotonic() > deadline:
                row["note"] = f"skipped: past the {args.deadline_s:.0f} s deadline"
                continue
            fn = make(a, b, out)
            try:
                out.fill_(float("nan"))
                fn()
                torch.cuda.synchronize()
                row["error_ratio"] = _error_ratio(out, expected, bound)
                row["ok"] = row["error_ratio"] <= 1.0
                ms, repeats = _time(fn, deadline)
            except Exception as exc:  # report and go on with the others
                row["ok"] = False
                row["note"] = f"failed: {type(exc).__name__}: {exc}"
                continue
            row.update(median_ms=ms, repeats=repeats, tflops=2 * n**3 / (ms / 1e3) / 1e12)
            if name == "cuBLAS":
                cublas_ms = ms
            if cublas_ms:
                row["ratio_to_cublas"] = cublas_ms / ms
            if not row["ok"]:
                row["note"] = f"WRONG RESULT: error {row['error_ratio']:.3g} times the bound"
            print(f"  n={n:5d} {name:15s} {ms:10.3f} ms {row['tflops']:8.2f} TFLOP/s  ({repeats} calls)", flush=True)
        del a, b, out, expected, bound
        torch.cuda.empty_cache()

    print()
    print(f"float32, TF32 off, {props.name}: TFLOP/s (ratio to cuBLAS at the same size)")
    names = list(dict.fromkeys(r["impl"] for r in results))
    print(f"{'kernel':16s}" + "".join(f"{n:>18d}" for n in args.sizes))
    for name in names:
        cells = []
        for n in args.sizes:
            r = next(r for r in results if r["impl"] == name and r["n"] == n)
            if r["tflops"] is None:
                cells.append(f"{'-':>18s}")
            else:
                ratio = f"({r['ratio_to_cublas']:.2f})" if r["ratio_to_cublas"] else ""
                flag = "" if r["ok"] else "!"
                cells.append(f"{r['tflops']:10.2f}{flag} {ratio:>6s}".rjust(18))
        print(f"{name:16s}" + "".join(cells))
    for r in results:
        if r["note"]:
            print(f"note: {r['impl']} at {r['n']}: {r['note']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**header, "sizes": args.sizes, "results": results}, f, indent=2)
        print(f"wrote {args.json}")
    wrong = [r for r in results if r["ok"] is False]
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
