#!/usr/bin/env python
"""Where a training step's time goes: torch.nn.Linear against gemmlab.nn.Linear, op by op.

For each layer kind and batch size it times `gemmlab bench-train`'s step (the 784-50-10 MLP, SGD,
cross-entropy) the way bench-train does (median), then runs it under torch.profiler and prints, per
op, calls per step and self CPU time per step. The profiler adds a few microseconds to every op, so
its per-op times are inflated alike for every layer kind; compare them side by side, and use the
unprofiled step time for totals.

    .venv/bin/python scripts/profile_train_step.py --layer cpp numba cython auto --batch 64 512 --threads 2 --epochs 3
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from gemmlab.bench import MLP_SIZES, TORCH_LINEAR, _initial_state, _mlp, _train_step_work, cpu_model
from gemmlab.timing import measure


def per_op(step, steps: int) -> dict[str, tuple[float, float]]:
    """op name -> (calls per step, self CPU microseconds per step) over `steps` profiled steps."""
    for _ in range(20):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return {e.key: (e.count / steps, e.self_cpu_time_total / steps) for e in prof.key_averages()}  # one entry a key


def epoch_seconds(layer: str, rows: int = 60000, batch: int = 64, seed: int = 4) -> float:
    """One SGD epoch (shuffled batches, as `gemmlab train` draws them) over MNIST-shaped random data."""
    model = _mlp(MLP_SIZES, layer)
    model.load_state_dict(_initial_state(MLP_SIZES, seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(seed)
    x, labels = torch.randn(rows, MLP_SIZES[0], generator=gen), torch.randint(0, MLP_SIZES[-1], (rows,), generator=gen)
    start = time.perf_counter()
    for idx in torch.randperm(rows, generator=gen).split(batch):
        optimizer.zero_grad()
        F.cross_entropy(model(x[idx]), labels[idx]).backward()
        optimizer.step()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", nargs="+", default=["cpp"], help="gemmlab backends (torch.nn.Linear is always first)")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=500, help="profiled steps per layer kind")
    parser.add_argument("--epochs", type=int, default=0, help="also time this many MNIST-shaped epochs per layer "
                        "kind (60000 random rows, batch 64; median)")
    parser.add_argument("--top", type=int, default=14, help="ops shown (by torch.nn.Linear's and the others' time)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    layers = [TORCH_LINEAR, *args.layer]
    print(f"cpu: {cpu_model()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    for batch in args.batch:
        steps = {layer: _train_step_work(layer, batch)[0] for layer in layers}
        totals = {layer: measure(step, repeats=11).per_call * 1e6 for layer, step in steps.items()}
        ops = {layer: per_op(step, args.steps) for layer, step in steps.items()}
        names = sorted({n for table in ops.values() for n in table}, key=lambda n: -max(t.get(n, (0, 0))[1] for t in ops.values()))
        names = [n for n in names if n][: args.top]
        width = min(60, max(len(n) for n in names))
        print(f"\nbatch {batch}: step time, median, unprofiled (us): "
              + ", ".join(f"{layer} {t:.1f} ({t / totals[TORCH_LINEAR]:.2f}x)" for layer, t in totals.items()))
        print(f"{'op':{width}s}" + "".join(f" | {layer[:16]:>16s} calls  us" for layer in layers))
        for name in names[: args.top]:
            cells = [ops[layer].get(name, (0.0, 0.0)) for layer in layers]
            print(f"{name[:width]:{width}s}" + "".join(f" | {calls:16.1f} {us:7.1f}" for calls, us in cells))
        print(f"{'all ops (profiled)':{width}s}" + "".join(
            f" | {sum(c for c, _ in ops[layer].values()):16.1f} {sum(u for _, u in ops[layer].values()):7.1f}" for layer in layers))
    if args.epochs:
        epochs = {layer: statistics.median(epoch_seconds(layer) for _ in range(args.epochs)) for layer in layers}
        print(f"\none epoch, 60000x784 random rows, batch 64, median of {args.epochs}: "
              + ", ".join(f"{layer} {t:.2f} s ({t / epochs[TORCH_LINEAR]:.2f}x)" for layer, t in epochs.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
