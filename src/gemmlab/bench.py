"""`gemmlab bench`: GFLOP/s of each backend against the best BLAS a user could pick, in the same run.

The peers are torch's @ (MKL on x86) and NumPy's @ (OpenBLAS in NumPy's wheels), with NumPy's
thread count set to torch's through threadpoolctl. Every result is checked against the float64
reference before it is timed; timings are medians of calibrated repeats after warm-up
(gemmlab.timing), in one round by default, or in several, blocked or interleaved (round by round
through the backends and torch's @). NumPy's @ is timed last for each shape, in a block of its own,
and followed by a pause: OpenBLAS's idle threads spin for a while after a call and would slow
whatever ran next on the same cores. The first call of each backend in the process (import, JIT
compilation or cache load) is reported separately from the steady state. Each result is also given
as a share of the machine's own limit, measured (measured_peak: register-only multiply-adds on the
threads in use); the peak computed from the FMA pipes' width and the clock is only a cross-check,
shown by `gemmlab info`.

Products go through gemmlab.matmul, or (direct) straight to each backend's 2-D kernel, into an
output allocated once, as the peers do (torch.matmul(out=), numpy.matmul(out=)): the kernels alone,
without the dispatch layer. `cuda:KERNEL` names one kernel of the cuda backend's ladder (direct
only). On CUDA tensors the peer is torch's @ (cuBLAS, TF32 off), and calls are timed with CUDA events.

`gemmlab bench-train` (run_train): training work on gemmlab.nn.Linear per backend against
torch.nn.Linear, each layer's results checked against torch.nn.Linear's before it is timed.
"""

from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gemmlab.dispatch import matmul
from gemmlab.reference import Reference
from gemmlab.registry import AUTO, get_backend
from gemmlab.timing import measure, measure_rounds, timer_for

# The products gemmlab is measured on, here and in the asv suite (benchmarks/common.py), `gemmlab
# tune` and the GPU check (scripts/gpu_check.sh). A shape is (m, k, n), or (batch, m, k, n) for a
# batch of equal products.
PRESETS = {
    "square": [(n, n, n) for n in (256, 512, 1024, 2048, 4096)],
    # The MNIST MLP's products: forward x @ w1, backward grad @ w1.T and x.T @ grad.
    "mlp": [(50000, 784, 50), (50000, 50, 784), (784, 50000, 50)],
    "tiny": [(5, 784, 10)],  # the notes' (5, 784) @ (784, 10)
    "overhead": [(5, 784, 10), (64, 64, 64)],  # where the cost of reaching the kernel shows
    "batched": [(256, 32, 32, 32), (64, 128, 64, 128), (8, 512, 512, 512)],
    "gpu": [(n, n, n) for n in (1024, 2048, 4096, 8192)],  # square float32 on a GPU, against cuBLAS
}
TORCH_AT = "torch @"  # bare torch.matmul, no gemmlab dispatch (batched: torch.bmm's work)
NUMPY_AT = "numpy @"  # bare numpy.matmul on the same data
PEERS = (TORCH_AT, NUMPY_AT)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
NUMPY_PAUSE_SECONDS = 0.5  # after NumPy's block: long enough for OpenBLAS's threads to stop spinning


@dataclass
class Result:
    backend: str
    dtype: str
    batch: int
    m: int
    k: int
    n: int
    seconds: float  # median per call
    gflops: float
    ratio_to_torch: float  # torch @'s time / this backend's time, same shape and dtype, same run
    ratio_to_best_peer: float  # the faster peer's time / this time (peers: torch @, numpy @)
    spread: float  # its timed repeats' interquartile range over their median (every round): a floor on this run's noise
    error_ratio: float  # max |err| / allowed error against the float64 reference; <= 1 passes
    repeats: int
    calls_per_repeat: int

    @property
    def label(self) -> str:
        return f"{self.batch} x {self.m}x{self.k}x{self.n}" if self.batch > 1 else f"{self.m}x{self.k}x{self.n}"


def numpy_blas() -> str:
    """NumPy's BLAS library, version and kernel (threadpoolctl's report), e.g. 'openblas 0.3.31 (SkylakeX)'.

    The BLAS libraries in NumPy's own folders (a wheel's numpy.libs) where there are any: SciPy
    brings an OpenBLAS of its own, and once it is loaded threadpoolctl lists both. Otherwise (NumPy
    linked against a system BLAS) every BLAS loaded."""
    from threadpoolctl import threadpool_info

    import numpy as np

    np.ones((2, 2)) @ np.ones((2, 2))  # load the library
    libs = [i for i in threadpool_info() if i["user_api"] == "blas"]
    numpy_dir = os.path.dirname(os.path.realpath(np.__file__))
    own = [i for i in libs if os.path.realpath(i["filepath"]).startswith((numpy_dir + os.sep, numpy_dir + ".libs" + os.sep))]
    return "; ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture') or 'unknown kernel'})"
                     for i in own or libs) or "unknown"


@dataclass
class Peak:
    gflops: float
    how: str


def measured_peak(threads: int, dtype: torch.dtype, refresh: bool = False) -> Peak | None:
    """The machine's own limit: register-only multiply-adds on `threads` threads, on the CPU path the
    cpp kernel uses (gemmlab._cpp.peak_gflops: measured once per process, or with refresh measured
    again and the higher figure kept); None without the extension."""
    try:
        from gemmlab import _cpp
    except (ImportError, OSError):  # not built, or built against another torch
        return None
    threads = max(1, min(threads, os.cpu_count() or 1))  # more threads than CPUs would measure time-sharing
    name = str(dtype).removeprefix("torch.")
    path = _cpp.cpu_path()
    return Peak(_cpp.peak_gflops(name, threads, refresh=refresh), f"measured: {threads} thread(s) of independent {name} multiply-adds "
                                                 f"in registers on the cpp kernel's {path} path")


# Vector bits one FMA pipe executes, where it differs from the instruction width: Zen 4 (AMD family
# 0x19 with AVX-512) runs each 512-bit FMA as two halves on 256-bit pipes; Zen and Zen+ split 256-bit
# AVX2 into 128-bit halves (family 0x17, models below 0x30).
def fma_bits(capability: str, vendor: str, family: int, model: int) -> int:
    bits = {"AVX512": 512, "AVX2": 256}.get(capability, 128)
    if vendor == "AuthenticAMD" and family == 0x19:
        return min(bits, 256)
    if vendor == "AuthenticAMD" and family == 0x17 and model < 0x30:
        return min(bits, 128)
    return bits


def computed_peak(threads: int, dtype: torch.dtype) -> Peak:
    """The cores' theoretical peak, computed (not measured) from the FMA pipes' real width, their
    count and the nominal clock: a cross-check of measured_peak (`gemmlab info` shows both)."""
    capability = torch.backends.cpu.get_cpu_capability()  # e.g. "AVX512", "AVX2", "DEFAULT"
    cpu = _cpuinfo()
    bits = fma_bits(capability, cpu.get("vendor_id", ""), int(cpu.get("cpu family", 0)), int(cpu.get("model", 0)))
    lanes = bits // torch.finfo(dtype).bits
    fma_units = 2  # an assumption: server cores with AVX-512 or AVX2 issue two FMAs per cycle
    ghz = _cpu_ghz()
    gflops = threads * lanes * fma_units * 2 * ghz
    how = (f"computed: {threads} cores x {lanes} {str(dtype)[6:]} lanes ({capability}, {bits}-bit FMA pipes) x "
           f"{fma_units} FMA units (assumed) x 2 flops x {ghz:.2f} GHz (nominal clock from /proc/cpuinfo)")
    return Peak(gflops, how)


def _cpuinfo() -> dict:
    """The first CPU's fields in /proc/cpuinfo ({} where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            block = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in block.splitlines())}


def _cpu_ghz() -> float:
    try:
        return float(_cpuinfo()["cpu MHz"]) / 1000
    except (KeyError, ValueError):
        return float("nan")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    return _cpuinfo().get("model name") or platform.processor()


def machine(device: str = "cpu") -> dict:
    """The machine a run measured; for a CUDA device also the GPU and torch's CUDA version."""
    found = {"cpu": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
             "threads": torch.get_num_threads(), "torch": torch.__version__, "torch_blas": torch_blas(),
             "numpy_blas": numpy_blas(), "date": time.strftime("%Y-%m-%d")}
    if device.startswith("cuda"):
        found.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return found


def torch_blas() -> str:
    """The BLAS torch's CPU @ uses, from its build configuration (e.g. 'mkl')."""
    found = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return found.group(1) if found else "unknown"


def first_call_seconds(backend: str, device: str = "cpu") -> float:
    """Time of this backend's first product in the process: import, JIT compile or cache load, warm-up."""
    a, b = torch.randn(8, 8, device=device), torch.randn(8, 8, device=device)
    start = time.perf_counter()
    matmul(a, b, backend=backend.partition(":")[0])  # cuda:KERNEL: the cuda backend
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def warm_up(device: str = "cpu") -> None:
    """Unrecorded warm-up before the first timing: right after the backends' first calls, the first
    product timed in the process ran up to 60x slow (seen on 256^3), whichever shape came first."""
    warm = torch.randn(512, 512, device=device)
    measure(lambda: warm @ warm, repeats=3, timer=timer_for(device))


def check_options(backends, shapes, direct: bool, rounds: int = 1) -> None:
    """ValueError, saying why, for what run cannot do: cuda:KERNEL or a batched shape without a 2-D
    call, auto called directly (its Python-level kernel is torch's: the choice happens in dispatch)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1; got {rounds}")
    for name in backends:
        backend, colon, which = name.partition(":")
        if colon and (backend != "cuda" or not which):
            raise ValueError(f"{name!r}: only the cuda backend has kernels to choose from, as cuda:KERNEL")
        if colon and not direct:
            raise ValueError(f"{name!r}: one kernel of the cuda ladder is called directly (direct)")
        if direct and backend == AUTO:
            raise ValueError("auto has no kernel of its own to call directly: it chooses one in gemmlab.matmul")
    if direct and any(len(shape) == 4 for shape in shapes):
        raise ValueError("direct calls the backends' 2-D kernels: batched shapes need gemmlab.matmul")


def kernel(name: str):
    """Backend `name`'s 2-D kernel, kernel(a, b, out); `cuda:KERNEL`: that kernel of the cuda ladder."""
    backend, _, which = name.partition(":")
    found = get_backend(backend).kernel
    return (lambda a, b, out: found(a, b, out, kernel=which)) if which else found


def _products(backends, a, b, direct: bool) -> tuple[dict, torch.Tensor | None]:
    """name -> fn() computing a @ b and returning it: torch's @ first, then the backends, then (on the
    CPU) NumPy's @; with direct, each into one preallocated output, also returned (else None)."""
    on_cpu = a.device.type == "cpu"
    if not direct:
        products = {TORCH_AT: lambda: torch.matmul(a, b)}
        products.update((name, lambda name=name: matmul(a, b, backend=name)) for name in backends)
        if on_cpu:
            an, bn = a.numpy(), b.numpy()
            products[NUMPY_AT] = lambda: np.matmul(an, bn)
        return products, None
    out = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device)
    kernels = {TORCH_AT: lambda a, b, out: torch.matmul(a, b, out=out), **{name: kernel(name) for name in backends}}
    if on_cpu:
        an, bn, outn = a.numpy(), b.numpy(), out.numpy()  # out's memory
        kernels[NUMPY_AT] = lambda a, b, out: np.matmul(an, bn, out=outn)
    return {name: _into(fn, a, b, out) for name, fn in kernels.items()}, out


def _into(kernel_2d, a, b, out):
    """fn() running kernel_2d(a, b, out) and returning out."""
    def run():
        kernel_2d(a, b, out)
        return out

    return run


def _error_ratio(fn, ref: Reference, out) -> float:
    if out is not None:  # NaN where a kernel writes nothing, whatever ran before
        out.fill_(float("nan"))
    got = fn()
    return ref.error_ratio(torch.from_numpy(got) if isinstance(got, np.ndarray) else got)


def run(backends, dtypes, shapes, repeats: int = 7, on_result=None, *, device: str = "cpu", direct: bool = False,
        rounds: int = 1, interleave: bool = False) -> list[Result]:
    """Each shape and dtype: every product checked against the float64 reference, then timed (see the
    module docstring); rounds and interleave as in gemmlab.timing.measure_rounds."""
    from threadpoolctl import threadpool_limits

    check_options(backends, shapes, direct, rounds)
    if device.startswith("cuda"):  # cuBLAS in plain float32, as gemmlab's kernels compute
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    timer = timer_for(device)
    warm_up(device)
    results = []
    for shape in shapes:
        batch, m, k, n = (1, *shape) if len(shape) == 3 else shape
        lead = (batch,) if len(shape) == 4 else ()
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            gen = torch.Generator().manual_seed(m * 31 + k * 7 + n + batch)
            a = torch.randn(*lead, m, k, generator=gen, dtype=dtype).to(device)
            b = torch.randn(*lead, k, n, generator=gen, dtype=dtype).to(device)
            ref = Reference(a, b)
            flops = 2.0 * batch * m * k * n
            products, out = _products(backends, a, b, direct)
            numpy_at = products.pop(NUMPY_AT, None)
            errors = {name: _error_ratio(fn, ref, out) for name, fn in products.items()}
            timed = measure_rounds(products, rounds, interleave, repeats=repeats, timer=timer)
            if numpy_at:  # NumPy's block last, then a pause (module docstring)
                with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
                    errors[NUMPY_AT] = _error_ratio(numpy_at, ref, out)
                    timed.update(measure_rounds({NUMPY_AT: numpy_at}, rounds, repeats=repeats))
                time.sleep(NUMPY_PAUSE_SECONDS)
            best_peer = min(timed[p].per_call for p in PEERS if p in timed)
            for name, t in timed.items():
                result = Result(name, dtype_name, batch, m, k, n, t.per_call, flops / t.per_call / 1e9,
                                timed[TORCH_AT].per_call / t.per_call, best_peer / t.per_call, t.spread, errors[name],
                                t.repeats, t.calls_per_repeat)
                results.append(result)
                if on_result:
                    on_result(result)
    return results


def to_json(results: list[Result], peaks: dict[str, Peak], first_calls: dict[str, float], device: str = "cpu") -> dict:
    return {"machine": machine(device), "peak": {k: asdict(v) for k, v in peaks.items()}, "first_call_seconds": first_calls,
            "results": [asdict(r) for r in results]}


def _square(r: Result) -> bool:
    return r.batch == 1 and r.m == r.k == r.n


def plot(results: list[Result], peaks: dict[str, Peak], path: str) -> None:
    """GFLOP/s against size per backend (square shapes), and per shape for the others."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(f"--plot needs matplotlib (pip install matplotlib): {exc}") from None
    dtypes = sorted({r.dtype for r in results})
    fig, axes = plt.subplots(len(dtypes), 2, figsize=(13, 4.5 * len(dtypes)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for row, dtype in zip(axes, dtypes):
        square_ax, other_ax = row
        mine = [r for r in results if r.dtype == dtype]
        names = list(dict.fromkeys(r.backend for r in mine))
        colours = {name: {TORCH_AT: "black", NUMPY_AT: "grey"}.get(name, f"C{i}") for i, name in enumerate(names)}  # same in both panels
        for name in names:
            pts = sorted((r.m, r.gflops) for r in mine if r.backend == name and _square(r))
            if pts:
                style = {"linewidth": 2.5} if name in PEERS else {"marker": "o"}
                square_ax.plot(*zip(*pts), label=name, color=colours[name], **style)
        if dtype in peaks:
            square_ax.axhline(peaks[dtype].gflops, color="grey", linestyle="--", label="measured peak")
        sizes = sorted({r.m for r in mine if _square(r)})
        square_ax.set(xscale="log", xlabel="n (n x n x n)", ylabel="GFLOP/s", title=f"square products, {dtype}")
        square_ax.set_xticks(sizes, [str(s) for s in sizes])
        square_ax.minorticks_off()
        square_ax.legend(fontsize=8)
        others = list(dict.fromkeys(r.label for r in mine if not _square(r)))
        if others:
            width = 0.8 / len(names)
            for i, name in enumerate(names):
                values = [next((r.gflops for r in mine if r.backend == name and r.label == s), 0) for s in others]
                other_ax.bar([j + i * width for j in range(len(others))], values, width, label=name, color=colours[name])
            other_ax.set_xticks([j + 0.4 - width / 2 for j in range(len(others))],
                                [label.replace(" x ", " x\n") for label in others], fontsize=7)
            other_ax.set(ylabel="GFLOP/s (log)", yscale="log", title=f"other shapes, {dtype}")
            other_ax.legend(fontsize=7)
        else:
            other_ax.axis("off")
    info = machine()
    fig.suptitle(f"gemmlab bench: {info['cpu']}, {info['threads']} threads, torch {info['torch']}, {info['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- `gemmlab bench-train`: what a backend does to training, against torch.nn.Linear ------------
TORCH_LINEAR = "torch.nn.Linear"  # the yardstick layer; in the product item, its product F.linear(x, w)
TRAIN_RTOL = 1e-4  # allowed max |gemmlab - torch.nn.Linear| as a fraction of max |torch.nn.Linear| (float32 sums)
MLP_SIZES = [784, 50, 10]  # the notes' MNIST MLP
TRAIN_STEP_BATCHES = (64, 512)  # its training steps
NETWORK_SIZES = [784, 50, 1]  # the notes' full-batch network, MSE loss on one output
NETWORK_ROWS = 50000  # ...on all of MNIST's training images at once


@dataclass
class TrainResult:
    work: str
    layer: str  # TORCH_LINEAR or the gemmlab.nn.Linear backend
    seconds: float  # median per call
    time_vs_torch: float  # this time / torch.nn.Linear's time, same work, same run: above 1 is slower
    error_ratio: float  # largest difference from torch.nn.Linear's outputs and gradients / allowed; <= 1 passes
    repeats: int
    calls_per_repeat: int


def _mlp(sizes, layer: str) -> torch.nn.Sequential:
    if layer != TORCH_LINEAR:
        from gemmlab.nn import mlp

        return mlp(sizes, backend=layer)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def _initial_state(sizes, seed: int) -> dict:
    """One set of initial weights that every layer kind starts from (the state_dicts are interchangeable)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _mlp(sizes, TORCH_LINEAR).state_dict()


def _randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# Each work item builds, for one layer kind, step() (the timed call, returning its output or loss)
# and state() (the gradients, and weights after an optimizer step, to compare with torch.nn.Linear's).
def _product_work(layer: str, seed: int = 1):
    x, w = _randn(64, 784, seed=seed).requires_grad_(), _randn(50, 784, seed=seed + 1).requires_grad_()
    grad = _randn(64, 50, seed=seed + 2)
    product = (lambda: F.linear(x, w)) if layer == TORCH_LINEAR else (lambda: matmul(x, w.T, backend=layer))

    def step():
        x.grad = w.grad = None
        y = product()
        y.backward(grad)
        return y

    return step, lambda: [x.grad, w.grad]


def _train_step_work(layer: str, batch: int, seed: int = 2):
    """One SGD step (zero_grad, forward, cross-entropy, backward, step) of the 784-50-10 MLP, as
    asv's bench_network.TrainingStep times it."""
    model = _mlp(MLP_SIZES, layer)
    model.load_state_dict(_initial_state(MLP_SIZES, seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = _randn(batch, MLP_SIZES[0], seed=seed)
    labels = torch.randint(0, MLP_SIZES[-1], (batch,), generator=torch.Generator().manual_seed(seed))

    def step():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        return loss

    return step, lambda: [*(p.grad for p in model.parameters()), *model.parameters()]


def _network_work(layer: str, rows: int, seed: int = 3):
    model = _mlp(NETWORK_SIZES, layer)
    model.load_state_dict(_initial_state(NETWORK_SIZES, seed))
    x, target = _randn(rows, NETWORK_SIZES[0], seed=seed), _randn(rows, seed=seed + 1)

    def step():
        model.zero_grad()
        loss = F.mse_loss(model(x).squeeze(1), target)
        loss.backward()
        return loss

    return step, lambda: [p.grad for p in model.parameters()]


def train_work(rows: int = NETWORK_ROWS) -> dict:
    """The work items, name -> builder(layer) -> (step, state); rows: the full-batch network's rows."""
    steps = {f"train step, batch {batch}": lambda layer, batch=batch: _train_step_work(layer, batch)
             for batch in TRAIN_STEP_BATCHES}
    return {
        "product 64x784 @ 784x50, fwd+bwd": _product_work,
        **steps,
        f"{rows}x784->50->1 MSE, fwd+bwd": lambda layer: _network_work(layer, rows),
    }


def _observed(step, state) -> list[torch.Tensor]:
    return [t.detach().clone() for t in (step(), *state())]


def _difference_ratio(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """Largest |got - want| as a fraction of TRAIN_RTOL x max |want|, over every tensor; <= 1 passes (NaN fails)."""
    return max(float((g - w).abs().max() / (TRAIN_RTOL * w.abs().max())) for g, w in zip(got, want, strict=True))


def run_train(backends, repeats: int = 7, rows: int = NETWORK_ROWS, on_result=None, rounds: int = 1) -> list[TrainResult]:
    """Each work item (train_work) on torch.nn.Linear and gemmlab.nn.Linear on each backend: a first
    step checked against torch.nn.Linear's from the same initial weights and data, then all of them
    timed in `rounds` interleaved rounds (a noisy stretch of the machine hits each layer kind alike;
    no NumPy BLAS runs here, so nothing spins between them)."""
    results = []
    for work, build in train_work(rows).items():
        layers = (TORCH_LINEAR, *backends)
        steps, errors, want = {}, {}, None
        for layer in layers:
            step, state = build(layer)
            got = _observed(step, state)
            want = want if want is not None else got
            steps[layer], errors[layer] = step, 0.0 if layer == TORCH_LINEAR else _difference_ratio(got, want)
        timed = measure_rounds(steps, rounds, interleave=True, repeats=repeats)
        base = timed[TORCH_LINEAR].per_call
        for layer in layers:
            t = timed[layer]
            result = TrainResult(work, layer, t.per_call, t.per_call / base, errors[layer], t.repeats, t.calls_per_repeat)
            results.append(result)
            if on_result:
                on_result(result)
    return results


def train_to_json(results: list[TrainResult], rounds: int = 1) -> dict:
    return {"machine": machine(), "rtol": TRAIN_RTOL, "rounds": rounds, "results": [asdict(r) for r in results]}
