"""Shared set-up for gemmlab's asv suite: fixed threads, data, sampling, warm-up, the slowdown switch,
and skipping what cannot run here.

asv skips a benchmark whose setup raises NotImplementedError; that is how backends missing from
this build show as skipped, not failed. asv runs every benchmark (one parameter combination, one
round) in a fresh process of its own, so no benchmark inherits another's spinning thread pools.

asv 0.6.6's `continuous` judges every benchmark it runs, `track_` ones included, as lower-is-better,
and a `track_` value is one number with no samples to test. So the default selection holds only
`time_` benchmarks with asv's own sampling; the informational ones (GFLOP/s, overhead in us, Numba
compile time, the full-size network's forward/backward and peak memory, more shapes) exist only
with GEMMLAB_ASV_EXTRA=1, for `asv run` and `asv publish`, never for `asv continuous`.
"""

import functools
import os
import subprocess
import sys
import time

import torch

from gemmlab.bench import PRESETS
from gemmlab.registry import LADDER, get_backend

try:
    from gemmlab.registry import backend_names
except ImportError:  # asv runs this code on older commits too: those from before backend_names had these kinds

    def backend_names(device="cpu", *kinds):
        kind = {"loops": "python", "elementwise": "python", "broadcast": "python", "einsum": "library", "torch": "library"}
        return [b.name for b in LADDER if device in b.devices and (not kinds or kind.get(b.name, "compiled") in kinds)]

# CI's smoke run (GEMMLAB_ASV_SMOKE=1 with `asv run --quick`) runs every benchmark, the extras
# included so none of them rots, once on data 50x smaller.
SMOKE = os.environ.get("GEMMLAB_ASV_SMOKE") == "1"
EXTRA = os.environ.get("GEMMLAB_ASV_EXTRA") == "1" or SMOKE


def scaled(n: int) -> int:
    return max(1, n // 50) if SMOKE and n >= 1000 else n


THREADS = 2
torch.set_num_threads(THREADS)  # with OMP/MKL/NUMBA_NUM_THREADS from asv.conf.json: comparable runs

# Backends by kind, from the registry: the Python levels take microseconds per element (only the tiny shape).
PYTHON_LEVELS = tuple(backend_names("cpu", "python"))
FAST_BACKENDS = tuple(backend_names("cpu", "library", "compiled"))
CPU_BACKENDS = tuple(backend_names("cpu"))
GPU_BACKENDS = (*backend_names("cuda", "compiled"), "torch")
# The reference rows: BLAS called directly, so a change of machine (or of BLAS) shows as such.
PEERS = ("torch.matmul", "numpy.matmul")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

# The products, from `gemmlab bench`'s presets.
(TINY,) = PRESETS["tiny"]  # the notes' (5, 784) @ (784, 10)
SMALL_CUBE, _, CUBE, _, LARGE_CUBE = (scaled(n) for n, _, _ in PRESETS["square"])  # 256, 512, 1024, 2048, 4096
# MNIST-sized network products: forward x @ w1, backward grad @ w1.T and x.T @ grad.
MLP_FORWARD, MLP_GRAD_INPUT, MLP_GRAD_WEIGHT = (tuple(map(scaled, shape)) for shape in PRESETS["mlp"])
# MNIST's training set through the notes' MLP: x (N_TRAIN, N_IN) @ w1 (N_IN, N_HIDDEN) is the forward product.
(N_TRAIN, N_IN, N_HIDDEN), N_OUT = MLP_FORWARD, 10

# Products as "dtype mxkxn". The judged ones: dispatch overhead (tiny), kernel throughput (the 1024
# cube, both dtypes) and the MLP's big product; the extra ones only with GEMMLAB_ASV_EXTRA=1.
JUDGED_CASES = [("float32", TINY), ("float32", (CUBE,) * 3), ("float64", (CUBE,) * 3), ("float32", MLP_FORWARD)]
EXTRA_CASES = [("float32", (SMALL_CUBE,) * 3), ("float32", MLP_GRAD_INPUT), ("float32", MLP_GRAD_WEIGHT), ("float64", MLP_FORWARD)]


def case_names(cases) -> list[str]:
    return [f"{dtype} {m}x{k}x{n}" for dtype, (m, k, n) in cases]


PRODUCT_CASES = case_names(JUDGED_CASES[:2] if SMOKE else JUDGED_CASES + (EXTRA_CASES if EXTRA else []))


class Sampled:
    """asv's sampling for the judged `time_` benchmarks: one sample per process, the mean of as many
    warm calls as fill sample_time (asv calibrates `number` after the warm-up), from 8 processes
    (rounds) per commit, which `asv continuous` interleaves between the two commits.

    Why one sample per process: a process's speed is partly decided when it starts (where its pages
    and code land, where its threads run): on the tiny product every backend and peer ran 3.7-3.9 us
    in some processes and 4.7-4.9 us in others, and numba's parallel cubes 1.5-2x apart, each steady
    within its process. Many samples from 2 processes looked to asv's Mann-Whitney test like strong
    evidence and it flagged unchanged code (docs/asv.md). 8 independent samples per commit are what
    the test can judge honestly: it can still say "different" (p < 0.002 needs 8 against 8), but only
    when the processes of one commit are slower than nearly all of the other's. asv.conf.json's
    forkserver launch makes each of them cheap (the suite is imported once per round, not per
    benchmark); each benchmark still runs in a fresh process of its own."""

    number = 0
    sample_time = 0.1
    repeat = 1
    rounds = 8
    warmup_time = 0.1
    timeout = 120


def require(backend: str) -> None:
    """Skip (NotImplementedError) unless backend runs here. Loads only that backend: loading all of
    them (numba.cuda among them) costs seconds in every benchmark process."""
    info = get_backend(backend).info()
    if not info["available"]:
        raise NotImplementedError(f"backend {backend!r} is not available: {info['reason']}")


def operands(m: int, k: int, n: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=gen, dtype=dtype), torch.randn(k, n, generator=gen, dtype=dtype)


@functools.cache  # asv re-runs setup before every sample: make the data once per process
def mnist_shaped(dtype=torch.float32, seed: int = 0):
    """Random numbers shaped like MNIST's training set (no download): x (50000, 784), labels 0..9."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN, N_IN, generator=gen, dtype=dtype)
    y = torch.randint(0, N_OUT, (N_TRAIN,), generator=gen)
    return x, y


_blas_limits = None  # threadpoolctl's limiter, kept alive for the process


def _numpy_product(a, b):
    global _blas_limits
    from threadpoolctl import threadpool_limits

    _blas_limits = threadpool_limits(limits=THREADS, user_api="blas")  # NumPy's BLAS on the same 2 threads
    a, b = a.numpy(), b.numpy()
    return lambda: a @ b


@functools.cache
def prepared_product(name: str, case: str):
    """The product a benchmark times, as a no-argument callable: made once per process (asv re-runs
    setup before every sample), slowed down if the slowdown switch names it, and run once before
    anything is timed (first calls pay for lazy initialisation, thread-pool start-up, page faults)."""
    import gemmlab

    dtype, shape = case.split()
    a, b = operands(*map(int, shape.split("x")), DTYPES[dtype])
    if name == "torch.matmul":
        product = functools.partial(torch.matmul, a, b)
    elif name == "numpy.matmul":
        product = _numpy_product(a, b)
    else:
        product = functools.partial(gemmlab.matmul, a, b, backend=name)
    return warmed(slowed(product, slowdowns().get(name, 1.0)))


def warmed(fn):
    fn()
    return fn


# --- The slowdown switch: a deliberate regression, to see `asv continuous` flag one -----------------
#
# GEMMLAB_ASV_SLOWDOWN=cpp:1.25 (or "name:factor,name:factor") makes every benchmark of that backend,
# peer or layer take `factor` times as long. Without the variable, the file SLOWDOWN_FILE as committed
# in the commit asv is measuring (ASV_COMMIT, in the repository asv runs from, ASV_CONF_DIR) says the
# same: asv takes the benchmark code from the working tree for every commit, so only a file read at
# the measured commit can differ between the two commits `asv continuous` compares. The file must
# never be committed on main (a test checks); scripts/asv_regression_demo.py commits it in a clone.

SLOWDOWN_FILE = "benchmarks/slowdown.cfg"
SLOWDOWN_NAMES = (*CPU_BACKENDS, *PEERS, "torch.nn.Linear")


def parse_slowdown(spec: str) -> dict[str, float]:
    """'cpp:1.25, numba:2' -> {'cpp': 1.25, 'numba': 2.0}; '#' starts a comment; bad entries raise."""
    factors = {}
    entries = ",".join(line.split("#")[0] for line in spec.splitlines()).split(",")
    for entry in map(str.strip, entries):
        if not entry:
            continue
        name, _, factor = entry.rpartition(":")
        name = name.strip()
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if name not in SLOWDOWN_NAMES or not value >= 1.0:
            raise ValueError(
                f"slowdown entry {entry!r}: expected NAME:FACTOR with NAME one of {', '.join(SLOWDOWN_NAMES)} "
                "and FACTOR a number >= 1"
            )
        factors[name] = value
    return factors


def committed_slowdown(commit: str, repo: str) -> str:
    """SLOWDOWN_FILE's text as committed in `commit` of the git repository `repo`; '' if it has none."""

    def git(*args):
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout

    try:
        if not git("ls-tree", "--name-only", commit, "--", SLOWDOWN_FILE).strip():
            return ""
        return git("show", f"{commit}:{SLOWDOWN_FILE}")
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"cannot read {SLOWDOWN_FILE} at commit {commit} in {repo}: {exc.stderr.strip()}") from exc


def slowdowns() -> dict[str, float]:
    """The slowdown switch for this process: GEMMLAB_ASV_SLOWDOWN, else the measured commit's file."""
    spec = os.environ.get("GEMMLAB_ASV_SLOWDOWN")
    if spec is None and os.environ.get("ASV_COMMIT") and os.environ.get("ASV_CONF_DIR"):
        spec = committed_slowdown(os.environ["ASV_COMMIT"], os.environ["ASV_CONF_DIR"])
    factors = parse_slowdown(spec or "")
    if factors:  # loud in `asv run --show-stderr`: a slowed run must never pass for a real one
        print(f"gemmlab asv: DELIBERATE SLOWDOWN ACTIVE: {factors}", file=sys.stderr)
    return factors


def slowed(fn, factor: float, clock=time.perf_counter):
    """fn, made to take `factor` times as long: after each call, busy-wait for (factor - 1) times what
    the call took, as a kernel doing that much more work would. factor 1 returns fn itself."""
    if factor == 1.0:
        return fn

    def run():
        start = clock()
        fn()
        end = start + (clock() - start) * factor
        while clock() < end:
            pass

    run.slowdown = factor
    return run
