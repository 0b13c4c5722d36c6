"""A network layer's products in the layouts its layers hand them over (which `gemmlab bench`, on
row-major operands, does not time): the forward x @ W.T (W row-major, so B transposed) and the weight
gradient grad.T @ x (a transposed view of grad), for the 50000-row network's first layer and the
784-50-10 MLP's at batch 512. Each compiled backend through gemmlab.matmul, then torch @, then NumPy
@ (threadpoolctl, same thread count), each in its own block 1 s apart, NumPy last (OpenBLAS's idle
threads spin after its calls and slow whatever runs next). Median per call (gemmlab.timing.measure).

    .venv/bin/python scripts/layer_product_peers.py --threads 2
"""

import argparse
import time

import torch
from threadpoolctl import threadpool_limits

import gemmlab
from gemmlab.timing import measure

BACKENDS = ("cpp", "numba", "cython")


def products(dtype):
    """(label, a, b): forward and weight gradient of the 784 -> 50 layer at 50000 and 512 rows."""
    for rows in (50000, 512):
        x, w, grad = (torch.randn(*s, dtype=dtype) for s in ((rows, 784), (50, 784), (rows, 50)))
        yield f"{rows}x784 @ (50x784).T {str(dtype)[6:]}  forward", x, w.T
        yield f"(50x{rows}) @ {rows}x784 {str(dtype)[6:]}  weight gradient", grad.T, x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for dtype in (getattr(torch, d) for d in args.dtype):
        for label, a, b in products(dtype):
            seconds = {}
            for name in BACKENDS:
                seconds[name] = measure(lambda: gemmlab.matmul(a, b, backend=name)).per_call
                time.sleep(1)
            seconds["torch @"] = measure(lambda: a @ b).per_call
            time.sleep(1)
            an, bn = a.numpy(), b.numpy()
            with threadpool_limits(args.threads):
                seconds["numpy @"] = measure(lambda: an @ bn).per_call
            time.sleep(1)
            best = min(seconds["torch @"], seconds["numpy @"])
            print(f"{label}: " + ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in seconds.items())
                  + "; best peer's time / backend's: " + ", ".join(f"{k} {best / seconds[k]:.2f}" for k in BACKENDS))


if __name__ == "__main__":
    main()
