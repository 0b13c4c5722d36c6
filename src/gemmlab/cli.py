"""The `gemmlab` command: `ladder` (the notes' speed ladder), `bench` (GFLOP/s against torch),
`bench-train` (training with gemmlab.nn.Linear against torch.nn.Linear), `train` (an MLP on digits),
`tune` (measure what `auto` runs) and `info` (backends)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import torch
from rich.console import Console
from rich.table import Table

from gemmlab import available_backends, backend_info, matmul
from gemmlab.reference import error_ratio
from gemmlab.registry import AUTO, BACKENDS
from gemmlab.timing import measure

BARE_TORCH = "a @ b (bare torch)"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _console() -> Console:
    # Piped output (files, CI logs, README tables) gets a width that fits the tables, not rich's 80.
    return Console() if sys.stdout.isatty() else Console(width=132)


def _format_seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def run_ladder(args: argparse.Namespace) -> int:
    console = _console()
    if args.threads:
        torch.set_num_threads(args.threads)
    m, k, n = args.shape
    dtype = DTYPES[args.dtype]
    gen = torch.Generator().manual_seed(args.seed)
    a = torch.randn(m, k, generator=gen, dtype=dtype)
    b = torch.randn(k, n, generator=gen, dtype=dtype)
    names = args.backends or [name for name in available_backends() if "cpu" in BACKENDS[name].devices]  # CPU operands
    console.print(
        f"({m}, {k}) @ ({k}, {n}) {args.dtype}, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}"
    )
    rows, errors, wrong = {}, {}, []
    with console.status("timing...") as status:
        for name in names:
            status.update(f"timing {name}...")
            errors[name] = error_ratio(matmul(a, b, backend=name), a, b)  # checked before it is timed
            if not errors[name] <= 1.0:  # (NaN too) a wrong result's speed means nothing: not timed
                wrong.append(name)
                continue
            rows[name] = measure(lambda: matmul(a, b, backend=name), repeats=args.repeats)
        # The yardstick: torch's @ called directly, without gemmlab's dispatch in front of it.
        errors[BARE_TORCH] = error_ratio(a @ b, a, b)
        rows[BARE_TORCH] = bare = measure(lambda: a @ b, repeats=args.repeats)
    base = rows.get("loops")
    table = Table(title="gemmlab ladder: time per call (median), speed-up over `loops`, speed as a ratio to torch's @ called directly")
    for col in ("backend", "first call", "per call", "repeats", "x loops", "x torch"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for name, t in rows.items():
        table.add_row(
            name,
            _format_seconds(t.first_call),
            _format_seconds(t.per_call),
            f"{t.repeats}x{t.calls_per_repeat}",
            f"{base.per_call / t.per_call:,.0f}" if base else "-",
            f"{bare.per_call / t.per_call:.3g}",
        )
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": [m, k, n], "dtype": args.dtype, "threads": torch.get_num_threads(),
                       "results": {name: {**vars(t), "error_ratio": errors[name]} for name, t in rows.items()},
                       "wrong": {name: errors[name] for name in wrong}}, f, indent=2)
    for name in wrong:
        console.print(f"[red]WRONG: backend {name!r} on ({m}, {k}) @ ({k}, {n}) {args.dtype} is off by "
                      f"{errors[name]:.3g}x the allowed error against the float64 reference (not timed)")
    return 1 if wrong else 0


def run_info(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(backend_info(), indent=2))
        return 0
    table = Table(title="gemmlab backends (ladder order)")
    for col in ("backend", "available", "devices", "dtypes", "notes"):
        table.add_column(col)
    for info in backend_info():
        table.add_row(info["name"], "yes" if info["available"] else "no", ", ".join(info["devices"]),
                      ", ".join(info["dtypes"]), info["reason"] or info["note"] or info["summary"])
    console = _console()
    console.print(table)
    console.print(_auto_status())
    for line in _cpu_status():
        console.print(line)
    return 0


def _kib(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 and size % (1 << 20) == 0 else f"{size >> 10} KiB"


def _cpu_status() -> list[str]:
    """The CPU as the cpp kernel sees it: caches and where they were read, the cache blocking derived
    from them, and the measured peak beside the computed one (a cross-check)."""
    from gemmlab import bench, cpu_caches

    threads = max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    lines = [f"cpu: {bench.cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {threads} thread(s)"]
    try:
        from gemmlab import _cpp
    except (ImportError, OSError) as exc:
        _cpp, missing = None, f"; cpp unavailable ({exc}): no blocking or measured peak"
    caches = _cpp.cache_sizes() if _cpp else cpu_caches.cache_sizes()  # what the kernel uses, else sysfs
    lines.append(f"caches: L1d {_kib(caches['L1d'])}, L2 {_kib(caches['L2'])}, L3 {_kib(caches['L3'])} per CPU "
                 f"(from {caches['source']})" + ("" if _cpp else missing))
    if _cpp is None:
        return lines
    for name, dtype in bench.DTYPES.items():
        b = _cpp.blocking(name)
        measured, computed = bench.measured_peak(threads, dtype), bench.computed_peak(threads, dtype)
        lines.append(f"cpp {name} on the {b['path']} path: MR {b['MR']}, NR {b['NR']}, KC {b['KC']}, MC {b['MC']}, "
                     f"NC {b['NC']} (from the caches; reference KC, MC, NC {b['reference']}); peak: measured "
                     f"{measured.gflops:.0f} GFLOP/s, computed {computed.gflops:.0f} ({computed.how})")
    for backend in ("numba", "cython"):  # their blocking, derived in Python (gemmlab.cpu_caches) by cpp's rule
        kernel = sys.modules.get(BACKENDS[backend].module)  # imported by backend_info() where it is available
        for name, b in [(name, kernel.blocking(name)) for name in bench.DTYPES] if kernel else []:
            lines.append(f"{backend} {name} on the {b['path']} path: MR {b['MR']}, NR {b['NR']}, KC {b['KC']}, MC {b['MC']}, "
                         f"NC {b['NC']} (from the caches, {b['caches']['source']}; reference KC, MC, NC {b['reference']})")
    return lines


def _auto_status() -> str:
    from gemmlab import autotune

    status = autotune.status()
    if not status["available"]:
        return f"auto: torch for every product (gemmlab's dispatch core cannot load: {status['reason']})"
    if status["buckets"]:
        return (f"auto: tuned table in use: {status['path']} ({status['buckets']} buckets); other products follow "
                f"the built-in rule: {autotune.BUILT_IN_RULE}")
    return (f"auto: no tuned table in use (looked for {status['path']}); every product follows the built-in rule: "
            f"{autotune.BUILT_IN_RULE}. `gemmlab tune` measures one.")


def run_train(args: argparse.Namespace) -> int:
    from gemmlab import distributed
    from gemmlab.train import TrainConfig, check

    cfg = TrainConfig(backend=args.backend, model=args.model, loss=args.loss, epochs=args.epochs, hidden=args.hidden,
                      lr=args.lr, momentum=args.momentum, batch_size=args.batch_size, seed=args.seed, data=args.data)
    run = {"checkpoint": args.checkpoint, "resume": args.resume, "json": args.json}
    if distributed.under_torchrun():  # torchrun started this process and its peers
        if args.nproc != 1:
            return _train_error("under torchrun, torchrun starts the processes (--nproc-per-node): leave --nproc out")
        # --threads counts the machine's threads, as with --nproc; without it OMP_NUM_THREADS decides (torchrun: 1).
        if args.threads:
            run.update(threads=max(1, args.threads // int(os.environ.get("LOCAL_WORLD_SIZE", 1))), machine_threads=args.threads)
        with distributed.from_environment(args.timeout) as group:
            return _train_process(group, cfg, run)
    if args.nproc == 1:
        return _train_process(distributed.SINGLE, cfg, {**run, "threads": args.threads})
    # The machine's threads (or --threads) are shared out: N processes x (threads / N) each.
    machine_threads = args.threads or torch.get_num_threads()
    run.update(threads=max(1, machine_threads // args.nproc), machine_threads=machine_threads)
    try:
        check(cfg, args.nproc)
        distributed.launch(args.nproc, _train_process, (cfg, run), port=args.master_port, timeout=args.timeout)
    except (ValueError, distributed.PortInUse, distributed.WorkerFailed) as e:
        return _train_error(str(e))
    return 0


def _train_error(message: str) -> int:
    print(f"gemmlab train: error: {message}", file=sys.stderr)
    return 1


def _train_process(group, cfg, run: dict) -> int:
    """One process of `gemmlab train`, alone or one of a data-parallel group; rank 0 reports.
    run: checkpoint, resume, json; threads (this process's, None: torch's default) and
    machine_threads (what was shared out between this machine's processes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gemmlab.checkpoints import CheckpointError
    from gemmlab.train import train

    if run.get("threads"):
        torch.set_num_threads(run["threads"])
    if not group.is_main:  # the others train silently
        train(cfg, resume=run["resume"], group=group)
        return 0
    console = _console()
    threads = f"{torch.get_num_threads()} thread(s)"
    if group.world_size > 1:
        threads = f"{group.world_size} processes x {threads}"
    console.print(f"training a {cfg.model} MLP (hidden {cfg.hidden}, loss {cfg.loss}) with backend {cfg.backend!r}, "
                  f"{threads}, seed {cfg.seed}")
    if group.world_size > 1:
        shared = f", sharing its {run['machine_threads']} threads" if run.get("machine_threads") else ""
        console.print(f"data-parallel: {group.local_world_size} processes on this machine{shared}; each takes its "
                      f"share of every batch of {cfg.batch_size}")
    columns = (TextColumn("steps"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("train", total=None)
            history = train(
                cfg,
                on_step=lambda done, total: progress.update(task, completed=done, total=total),
                on_epoch=lambda e: progress.console.print(
                    f"epoch {e.epoch:3d}  train loss {e.train_loss:.4f}  valid loss {e.valid_loss:.4f}  "
                    f"valid accuracy {e.valid_accuracy:.2%}  {e.seconds:.2f} s"),
                checkpoint=run["checkpoint"], resume=run["resume"], group=group,
            )
    except CheckpointError as e:
        return _train_error(str(e))
    final = history.epochs[-1]
    console.print(f"{history.dataset}: final validation accuracy {final.valid_accuracy:.2%} after {len(history.epochs)} "
                  f"epochs, {sum(e.seconds for e in history.epochs):.2f} s in all")
    if run["json"]:
        with open(run["json"], "w") as f:
            json.dump({"config": vars(cfg), "processes": group.world_size, "threads": torch.get_num_threads(),
                       "dataset": history.dataset, "epochs": [vars(e) for e in history.epochs]}, f, indent=2)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from gemmlab import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [shape for preset in args.preset or [] for shape in bench.PRESETS[preset]]
    shapes += [(n, n, n) for n in args.size or []] + [tuple(s) for s in args.shape or []]
    shapes = list(dict.fromkeys(shapes or bench.PRESETS["square"]))
    on_gpu = args.device == "cuda"
    try:
        bench.check_options(args.backend, shapes, args.direct, args.rounds)
        if on_gpu and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device")
    except ValueError as exc:
        print(f"gemmlab bench: error: {exc}", file=sys.stderr)
        return 2
    console = _console()
    info = bench.machine(args.device)
    peers = f"torch @ (cuBLAS on {info['gpu']}, TF32 off)" if on_gpu else \
        f"torch @ ({info['torch_blas']}), numpy @ ({info['numpy_blas']})"
    console.print(f"{info['cpu']} ({info['capability']}), {info['threads']} thread(s), torch {info['torch']}; peers: {peers}")
    peaks = {} if on_gpu else {d: p for d in args.dtype if (p := bench.measured_peak(torch.get_num_threads(), bench.DTYPES[d]))}
    for d, p in peaks.items():
        console.print(f"measured peak {d}: {p.gflops:.0f} GFLOP/s ({p.how})")
    first_calls = {name: bench.first_call_seconds(name, args.device) for name in args.backend}
    console.print("first call (import, JIT compile or cache load): "
                  + ", ".join(f"{name} {_format_seconds(t)}" for name, t in first_calls.items()))
    how = [f"{args.rounds} rounds, {'interleaved' if args.interleave else 'blocked'}"] if args.rounds > 1 else []
    how += ["each backend's 2-D kernel called directly into a preallocated output"] if args.direct else []
    table = Table(title="gemmlab bench: median time per call and the spread of its repeats (interquartile range over "
                        "the median, every round: a ratio nearer 1 than its rows' spreads decides nothing); speed as a "
                        "ratio to the peers in the same run" + "".join(f"; {h}" for h in how))
    for col in ("m x k x n", "dtype", "backend", "per call", "spread", "GFLOP/s", "x torch @", "x best peer",
                "% of measured peak", "error/bound"):
        table.add_column(col, justify="left" if col in ("m x k x n", "dtype", "backend") else "right")
    wrong = []

    def add(r):
        if not r.error_ratio <= 1.0:
            wrong.append(r)
        table.add_row(r.label, r.dtype, r.backend, _format_seconds(r.seconds), f"{100 * r.spread:.0f}%", f"{r.gflops:.1f}",
                      f"{r.ratio_to_torch:.2f}", f"{r.ratio_to_best_peer:.2f}",
                      f"{100 * r.gflops / peaks[r.dtype].gflops:.0f}" if r.dtype in peaks else "-",
                      f"{r.error_ratio:.2g}" + ("" if r.error_ratio <= 1.0 else " WRONG"))

    with console.status("benchmarking...") as status:
        results = bench.run(args.backend, args.dtype, shapes, repeats=args.repeats,
                            on_result=lambda r: status.update(f"{r.label} {r.dtype}: {r.backend} done"),
                            device=args.device, direct=args.direct, rounds=args.rounds, interleave=args.interleave)
    # Measured again after the runs, keeping the higher figure: a slow stretch of the shared machine
    # during the first measurement would otherwise put products above "100% of the peak".
    for d, before in list(peaks.items()):
        peaks[d] = bench.measured_peak(torch.get_num_threads(), bench.DTYPES[d], refresh=True)
        if peaks[d].gflops > before.gflops:
            console.print(f"measured peak {d} again after the runs: {peaks[d].gflops:.0f} GFLOP/s (the table uses it)")
    for r in results:
        add(r)
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(bench.to_json(results, peaks, first_calls, args.device), f, indent=2)
        console.print(f"raw numbers written to {args.json}")
    if args.plot:
        bench.plot(results, peaks, args.plot)
        console.print(f"plot written to {args.plot}")
    for r in wrong:
        console.print(f"[red]WRONG: {r.backend} on {r.label} {r.dtype} is off by {r.error_ratio:.3g}x the allowed error")
    return 1 if wrong else 0


def run_bench_train(args: argparse.Namespace) -> int:
    from gemmlab import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    console = _console()
    info = bench.machine()
    console.print(f"{info['cpu']} ({info['capability']}), {info['threads']} thread(s), torch {info['torch']}")
    table = Table(title="gemmlab bench-train: median time per call; time as a ratio to torch.nn.Linear's in the same run "
                        f"(above 1: slower); {args.rounds} interleaved round(s)")
    for col in ("work", "layer", "per call", "x torch.nn.Linear", "error/bound"):
        table.add_column(col, justify="left" if col in ("work", "layer") else "right")
    wrong = []

    def add(r):
        if not r.error_ratio <= 1.0:
            wrong.append(r)
        table.add_row(r.work, r.layer, _format_seconds(r.seconds), f"{r.time_vs_torch:.2f}",
                      f"{r.error_ratio:.2g}" + ("" if r.error_ratio <= 1.0 else " WRONG"))

    with console.status("benchmarking...") as status:
        results = bench.run_train(args.backend, repeats=args.repeats, rows=500 if args.quick else 50000, rounds=args.rounds,
                                  on_result=lambda r: (status.update(f"{r.work}: {r.layer} done"), add(r)))
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(bench.train_to_json(results, args.rounds), f, indent=2)
        console.print(f"raw numbers written to {args.json}")
    for r in wrong:
        console.print(f"[red]WRONG: {r.layer} on {r.work} differs from torch.nn.Linear by {r.error_ratio:.3g}x the allowed error")
    return 1 if wrong else 0


def _show_table(console: Console) -> int:
    from gemmlab import autotune

    path = autotune.table_path()
    entries = autotune.read(path)  # (a file that cannot be used: a warning says why)
    if not entries:
        console.print(f"no tuned table at {path}; auto follows its built-in rule: {autotune.BUILT_IN_RULE}")
        return 0
    fields = autotune.bucket_fields()
    table = Table(title=f"gemmlab tune: what auto runs per bucket ({path})")
    for col in ("measured on", *fields, "backend", "x torch"):
        table.add_column(col, justify="right" if col.startswith(("log2", "threads", "x ")) else "left")
    for entry in entries.values():
        cells = [str(v).removeprefix("torch.") for v in entry.bucket]
        table.add_row(entry.product, *cells, entry.backend, f"{entry.speedup:.2f}")
    console.print(table)
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gemmlab import autotune

    console = _console()
    if args.clear:
        removed = autotune.clear()
        autotune.install()
        console.print(f"{'removed' if removed else 'there was no'} tuned table {autotune.table_path()}")
        return 0
    if args.show:
        return _show_table(console)
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = args.preset or ([] if args.shape else ["mlp"])
    found = [p for name in args.dtype for p in autotune.products(presets, args.shape or [], DTYPES[name])]
    names = args.backend or autotune.candidates()
    console.print(f"tuning auto on {len(found)} products ({', '.join(presets + ['--shape'] * bool(args.shape))}), "
                  f"{torch.get_num_threads()} thread(s), candidates {', '.join(names)}; a backend replaces torch "
                  f"only when right and at least {autotune.MARGIN:.2f}x as fast")
    table = Table(title="gemmlab tune: what auto runs now, per product measured (median time per call)")
    for col in ("product", "dtype", "auto runs", "x torch", *names):
        table.add_column(col, justify="left" if col in ("product", "dtype", "auto runs") else "right")
    wrong = []

    def add(product, entry):
        dtype = str(product.a.dtype).removeprefix("torch.")
        wrong.extend((name, product.what, dtype) for name in names if entry.seconds[name] is None)
        times = [_format_seconds(entry.seconds[n]) if entry.seconds[n] is not None else "WRONG" for n in names]
        table.add_row(entry.product, dtype, entry.backend or "-", f"{entry.speedup:.2f}" if entry.backend else "-", *times)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("tuning", total=len(found))

        def done(product, entry):
            add(product, entry)
            progress.update(task, advance=1, description=f"measured {product.what}")

        autotune.tune(found, names, repeats=args.repeats, rounds=args.rounds, on_product=done)
    console.print(table)
    console.print(f"tuned table written to {autotune.table_path()}")
    for name, what, dtype in wrong:
        console.print(f"[red]WRONG: {name} on {what} {dtype} is off by more than the allowed error (never chosen)")
    return 1 if wrong else 0


def _bench_backend(name: str) -> str:
    """A --backend of `gemmlab bench`: a backend's name, or cuda:KERNEL (bench.check_options checks the rest)."""
    if name.partition(":")[0] in (AUTO, *BACKENDS):
        return name
    raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {', '.join([AUTO, *BACKENDS])}, or cuda:KERNEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemmlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ladder = sub.add_parser("ladder", help="time every backend on the notes' (5, 784) @ (784, 10) product")
    ladder.add_argument("--shape", type=int, nargs=3, default=(5, 784, 10), metavar=("M", "K", "N"))
    ladder.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ladder.add_argument("--backends", nargs="+", choices=list(BACKENDS), help="default: every available backend")
    ladder.add_argument("--threads", type=int, help="torch.set_num_threads (all parallel backends follow it)")
    ladder.add_argument("--repeats", type=int, default=7, help="timed samples per backend (slow ones get at least 3)")
    ladder.add_argument("--seed", type=int, default=0)
    ladder.add_argument("--json", metavar="FILE", help="also write the raw timings to FILE")
    ladder.set_defaults(func=run_ladder)

    from gemmlab.distributed import DEFAULT_TIMEOUT

    train = sub.add_parser("train", help="train an MLP on digits (default) or MNIST with a chosen backend")
    train.add_argument("--backend", default="auto", choices=["auto", *BACKENDS])
    train.add_argument("--model", default="nn", choices=["nn", "scratch"],
                       help="nn: gemmlab.nn layers + autograd + torch.optim; scratch: the notes' hand-written backward")
    train.add_argument("--loss", default="ce", choices=["ce", "mse"], help="cross-entropy, or the notes' MSE on the label")
    train.add_argument("--epochs", type=int, default=5)
    train.add_argument("--hidden", type=int, default=50)
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data", metavar="PATH", help="mnist.pkl.gz or a folder of MNIST IDX files (default: "
                       "scikit-learn's bundled 8x8 digits, no download)")
    train.add_argument("--threads", type=int, help="torch.set_num_threads; with several processes, the threads of "
                       "the machine, shared out between its processes (default: all of torch's)")
    train.add_argument("--json", metavar="FILE", help="also write the per-epoch numbers to FILE")
    train.add_argument("--checkpoint", metavar="FILE", help="save the run at the end of every epoch (atomically)")
    train.add_argument("--resume", metavar="FILE", help="continue from a checkpoint written with the same settings")
    train.add_argument("--nproc", type=int, default=1, help="train data-parallel in N local processes (DDP on gloo): "
                       "each takes its share of every batch (--batch-size is the whole batch)")
    train.add_argument("--master-port", type=int, help="the port the processes meet on (default: a free one)")
    train.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds a process waits for the "
                       "others before giving up (default %(default)g)")
    train.set_defaults(func=run_train)

    from gemmlab import autotune
    from gemmlab.bench import PRESETS as bench_presets

    bench = sub.add_parser("bench", help="GFLOP/s of the backends against torch's and NumPy's @, checked against float64")
    bench.add_argument("--preset", action="append", choices=list(bench_presets),
                       help="square: 256..4096; mlp: the MNIST MLP's three products; tiny: the notes' 5x784 @ 784x10; "
                            "overhead: tiny and 64^3; batched: 256 x 32^3, 64 x (128x64 @ 64x128), 8 x 512^3; "
                            "gpu: 1024..8192")
    bench.add_argument("--size", type=int, action="append", help="an n x n x n product (repeatable)")
    bench.add_argument("--shape", type=int, nargs=3, action="append", metavar=("M", "K", "N"), help="(repeatable)")
    bench.add_argument("--backend", nargs="+", type=_bench_backend, default=list(autotune.CANDIDATES),
                       help=f"{', '.join([AUTO, *BACKENDS])}, or cuda:KERNEL (one kernel of the cuda ladder; with "
                            f"--direct) (default: %(default)s)")
    bench.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["float32"])
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                       help="where the operands live; on cuda the peer is cuBLAS (TF32 off), timed with CUDA events")
    bench.add_argument("--direct", action="store_true", help="call each backend's 2-D kernel (and the peers) into a "
                       "preallocated output, without gemmlab.matmul's dispatch")
    bench.add_argument("--rounds", type=int, default=1, help="time everything this many times; report the median round")
    bench.add_argument("--interleave", action="store_true", help="take the rounds in turn through torch @ and the "
                       "backends (a noisy stretch hits all alike) instead of each one's rounds back to back")
    bench.add_argument("--threads", type=int, help="torch.set_num_threads (all parallel backends follow it)")
    bench.add_argument("--repeats", type=int, default=7)
    bench.add_argument("--plot", nargs="?", const="bench.png", metavar="FILE.png", help="draw GFLOP/s (default bench.png)")
    bench.add_argument("--json", metavar="FILE", help="write the raw numbers")
    bench.set_defaults(func=run_bench)

    train_bench = sub.add_parser("bench-train", help="training steps with gemmlab.nn.Linear on each backend against "
                                 "torch.nn.Linear, checked against it")
    train_bench.add_argument("--backend", nargs="+", choices=[AUTO, *BACKENDS], default=list(autotune.CANDIDATES))
    train_bench.add_argument("--threads", type=int, help="torch.set_num_threads (all parallel backends follow it)")
    train_bench.add_argument("--repeats", type=int, default=7)
    train_bench.add_argument("--rounds", type=int, default=3, help="time every layer kind this many times, round by "
                             "round, and report the median round (a noisy stretch hits all alike)")
    train_bench.add_argument("--json", metavar="FILE", help="write the raw numbers")
    train_bench.add_argument("--quick", action="store_true", help="500 rows instead of 50000 in the full-batch network "
                             "(a smoke test, not a measurement)")
    train_bench.set_defaults(func=run_bench_train)

    tune = sub.add_parser("tune", help="measure which backend auto runs for each kind of product, and keep it")
    tune.add_argument("--preset", action="append", choices=autotune.PRESETS,
                      help="bench's presets; mlp also tunes the products of bench-train's network layers, forward and "
                           "backward (default: mlp, unless --shape is given)")
    tune.add_argument("--shape", type=int, nargs=3, action="append", metavar=("M", "K", "N"), help="(repeatable)")
    tune.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["float32"])
    tune.add_argument("--backend", nargs="+", choices=autotune.CANDIDATES,
                      help="the candidates (default: those available; torch is the yardstick, keep it in)")
    tune.add_argument("--threads", type=int, help="torch.set_num_threads: tables are kept per thread count")
    tune.add_argument("--repeats", type=int, default=3, help="timed samples per backend and round (at least 3)")
    tune.add_argument("--rounds", type=int, default=3, help="rounds, taken in turn through the backends; each "
                      "backend's time is the median of its rounds' medians")
    tune.add_argument("--show", action="store_true", help="print the tuned table and exit")
    tune.add_argument("--clear", action="store_true", help="delete the tuned table and exit")
    tune.set_defaults(func=run_tune)

    info = sub.add_parser("info", help="list every backend: available or why not, devices, dtypes")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=run_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
