"""`auto`: the fastest correct backend for each kind of product, measured on this machine and kept.

The choice is made in gemmlab's C++ dispatch core (csrc/dispatch.cpp) for every product `auto`
runs, forward and backward: the product's bucket -- dtype, device type, ceil(log2) of m, k, n and
of the batch count, each operand's layout ('R' row-major, 'C' column-major such as a transposed
view, 'S' neither) and the thread count -- is looked up in a table, and a bucket the table does not
have follows the built-in rule (see BUILT_IN_RULE). The core defines the bucket; this module asks it
(`gemmlab._cpp.auto_choice`) rather than computing it again.

This module fills that table and keeps it:

- `tune` measures products: each candidate backend's result is checked against the float64
  reference, then timed through gemmlab.matmul (medians after warm-up, gemmlab.timing); `choose`
  picks a backend other than torch only if it was right and at least MARGIN times as fast.
- The table lives in a versioned JSON file (`table_path()`: the user's cache directory, or
  $GEMMLAB_CACHE_DIR), keyed by this machine (CPU model, the instruction set gemmlab's kernels run,
  GPU name) and the torch and gemmlab versions. Writers take a file lock, re-read the file, merge
  and replace it atomically, so concurrent `gemmlab tune` runs lose nothing. A file that is
  corrupt, from another machine or from other versions is ignored with a TunedTableWarning.
- `install` loads the file into the core; the `auto` backend does it once per process, when `auto`
  is first used.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from gemmlab._files import write_atomically
from gemmlab.registry import backend_names

FORMAT = 1  # the file's layout; a file of another format is stale
# A backend replaces torch only when at least this many times as fast. Small enough that keeping
# torch never costs more than 3% against the fastest backend measured (auto's bar: 0.97x of it);
# with 1.05, buckets where cpp led MKL by 4% ran 0.96x.
MARGIN = 1.03
CACHE_ENV = "GEMMLAB_CACHE_DIR"
FILE_NAME = "auto-table.json"
TORCH = "torch"
# Who may be chosen: the compiled CPU backends the core runs natively, and torch's BLAS. Never the
# Python-level rungs (far slower everywhere) nor NumPy's OpenBLAS (not a gemmlab backend).
CANDIDATES = (*backend_names("cpu", "compiled"), TORCH)
PRESETS = ("mlp", "square", "batched")  # bench's presets that `gemmlab tune` takes
# For buckets the table does not have (the core applies it; docs/auto.md says why this one).
BUILT_IN_RULE = "cpp for float32 and float64 on the CPU, torch for everything else"


class TunedTableWarning(UserWarning):
    """The tuned table could not be used (corrupt, another machine's, other versions); `auto` then
    follows its built-in rule for every product."""


def table_path() -> Path:
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        import platformdirs

        folder = platformdirs.user_cache_dir("gemmlab")
    return Path(folder) / FILE_NAME


def machine_key() -> dict:
    """What a table was measured on: a table is used only on the machine (and CPU path) it describes."""
    from gemmlab._cpp import cpu_path
    from gemmlab.bench import cpu_model

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "isa": cpu_path(), "gpu": gpu}


def versions() -> dict:
    import gemmlab

    return {"torch": torch.__version__, "gemmlab": gemmlab.__version__}


# --- the table's entries -----------------------------------------------------------------------------
def bucket_fields() -> tuple[str, ...]:
    from gemmlab._cpp import AUTO_BUCKET_FIELDS

    return AUTO_BUCKET_FIELDS


def bucket(a: torch.Tensor, b: torch.Tensor) -> tuple:
    """The bucket of a @ b, as the core sees it (gemmlab._cpp.AUTO_BUCKET_FIELDS)."""
    from gemmlab._cpp import auto_choice

    return auto_choice(a, b)[0]


@dataclass
class Entry:
    bucket: tuple  # as gemmlab._cpp.auto_choice gives it
    backend: str | None  # what auto runs for that bucket (None: no candidate was right; never saved)
    product: str = ""  # the product that was measured, e.g. "50000x784 @ 784x50 RC (layer forward)"
    seconds: dict[str, float | None] = field(default_factory=dict)  # per candidate; None: failed the reference check

    @property
    def speedup(self) -> float:
        """torch's time over the chosen backend's (1.0 where torch was chosen or not timed)."""
        mine, base = self.seconds.get(self.backend), self.seconds.get(TORCH)
        return base / mine if mine and base else 1.0

    def to_json(self) -> dict:
        values = (str(self.bucket[0]).removeprefix("torch."), *self.bucket[1:])
        return {"bucket": dict(zip(bucket_fields(), values)), "backend": self.backend, "product": self.product,
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict) -> Entry:
        from gemmlab._cpp import auto_bucket_key

        fields = bucket_fields()
        if set(data["bucket"]) != set(fields):
            raise ValueError(f"a bucket needs the fields {', '.join(fields)}; got {sorted(data['bucket'])}")
        values = [data["bucket"][name] for name in fields]
        dtype = getattr(torch, values[0], None)
        if not isinstance(dtype, torch.dtype) or not isinstance(data["backend"], str):
            raise ValueError(f"not a dtype and a backend name: {values[0]!r}, {data['backend']!r}")
        bucket = (dtype, *values[1:])
        auto_bucket_key(bucket)  # the core's checks: a bucket it cannot use makes the file corrupt
        seconds = {str(k): None if v is None else float(v) for k, v in data.get("seconds", {}).items()}
        return cls(bucket, data["backend"], str(data.get("product", "")), seconds)


def _document(entries: Iterable[Entry]) -> dict:
    return {"format": FORMAT, "machine": machine_key(), "versions": versions(),
            "entries": [e.to_json() for e in entries]}


def _read(path: Path) -> tuple[dict[tuple, Entry], str | None]:
    """The file's entries by bucket, and why it cannot be used (None: it can, or there is no file)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"it cannot be read ({exc})"
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            return {}, f"it is stale: format {data.get('format')!r}, this gemmlab writes {FORMAT}"
        if data["machine"] != machine_key():
            return {}, f"it was tuned on another machine ({data['machine']}; this one: {machine_key()})"
        if data["versions"] != versions():
            return {}, f"it is stale: tuned with {data['versions']}, running {versions()}"
        entries = [Entry.from_json(e) for e in data["entries"]]
    # (json's decoding errors are ValueErrors; the core raises RuntimeError for a device it cannot parse)
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        return {}, f"it is corrupt ({type(exc).__name__}: {exc})"
    return {e.bucket: e for e in entries}, None


def read(path: Path | None = None) -> dict[tuple, Entry]:
    """The tuned table's entries by bucket; none, with a TunedTableWarning saying why, for a file
    that cannot be used (never an exception), and none quietly where there is no file."""
    path = table_path() if path is None else path
    entries, problem = _read(path)
    if problem:
        warnings.warn(f"gemmlab: ignoring the tuned table {path}: {problem}; `auto` follows its built-in rule "
                      f"until `gemmlab tune` writes a new one", TunedTableWarning, stacklevel=2)
    return entries


def _lock(path: Path):
    from filelock import FileLock

    return FileLock(f"{path}.lock", timeout=60)


def save(entries: Iterable[Entry], path: Path | None = None) -> Path:
    """Merge entries into the tuned table (theirs win for a bucket both have) and return its path.
    Under a file lock, the file is re-read and replaced whole: concurrent writers lose nothing. A
    file that cannot be used is replaced."""
    path = table_path() if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        merged, _ = _read(path)
        merged.update((e.bucket, e) for e in entries)
        write_atomically(path, lambda f: json.dump(_document(merged.values()), f, indent=1))
    return path


def clear(path: Path | None = None) -> bool:
    """Delete the tuned table; whether there was one."""
    path = table_path() if path is None else path
    with _lock(path):
        existed = path.exists()
        path.unlink(missing_ok=True)
    return existed


# --- the table in the core -----------------------------------------------------------------------
_in_use: dict[tuple, Entry] | None = None  # what this process's core holds (None: nothing put in yet)


def install(entries: dict[tuple, Entry] | None = None) -> dict[tuple, Entry]:
    """Put a table (default: the tuned file's) into the core; returns what went in. Entries naming
    a backend that cannot run here are left out, with a warning: their buckets follow the rule."""
    from gemmlab._cpp import set_auto_table
    from gemmlab.registry import BACKENDS

    global _in_use
    entries = read() if entries is None else entries
    usable = {}
    for key, entry in entries.items():
        spec = BACKENDS.get(entry.backend)
        if spec is not None and spec.available and spec.native is not None:  # loads it: its kernel joins the core
            usable[key] = entry
    missing = sorted({e.backend for e in entries.values()} - {e.backend for e in usable.values()})
    if missing:
        warnings.warn(f"gemmlab: the tuned table names backends that cannot run here ({', '.join(missing)}); "
                      f"their buckets follow auto's built-in rule", TunedTableWarning, stacklevel=2)
    set_auto_table([(key, entry.backend) for key, entry in usable.items()])
    _in_use = usable
    return usable


def install_once() -> None:
    """install() the tuned file's table, unless this process has put a table into the core already
    (loading the auto backend must not undo a table a program installed before its first product)."""
    if _in_use is None:
        install()


def status() -> dict:
    """For `gemmlab info`: the table's path, whether this process uses a tuned table, how many buckets."""
    from gemmlab.registry import AUTO_BACKEND

    info = AUTO_BACKEND.info()  # loading the auto backend installs the table
    return {"path": str(table_path()), "available": info["available"], "reason": info["reason"],
            "buckets": len(_in_use or {})}


# --- measuring ---------------------------------------------------------------------------------------
@dataclass
class Product:
    what: str
    a: torch.Tensor
    b: torch.Tensor


def _randn(*shape, dtype, seed):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def shape_product(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> Product:
    """A bench shape, (m, k, n) or (batch, m, k, n), as contiguous random operands."""
    *lead, m, k, n = shape
    what = f"{lead[0]} x {m}x{k} @ {k}x{n}" if lead else f"{m}x{k} @ {k}x{n}"
    return Product(what, _randn(*lead, m, k, dtype=dtype, seed=seed), _randn(*lead, k, n, dtype=dtype, seed=seed + 1))


def layer_products(rows: int, n_in: int, n_out: int, dtype: torch.dtype, seed: int = 0) -> list[Product]:
    """The products a layer with a rows x n_in input runs, in the layouts they reach the core with:
    gemmlab.nn.Linear's (x @ W.T, and in backward, as gemmlab::native_product computes the
    gradients: grad @ W, and grad.T @ x, the transpose of W's gradient, in W's layout) and
    gemmlab.scratch.Lin's (x @ w, grad @ w.T, x.T @ grad)."""
    x, g = _randn(rows, n_in, dtype=dtype, seed=seed), _randn(rows, n_out, dtype=dtype, seed=seed + 1)
    weight = _randn(n_out, n_in, dtype=dtype, seed=seed + 2)  # nn.Linear's; scratch.Lin keeps its transpose
    w = weight.T.contiguous()
    layer = f"layer {rows}x{n_in}->{n_out}"
    return [Product(f"{layer}: nn forward", x, weight.T), Product(f"{layer}: nn grad input", g, weight),
            Product(f"{layer}: nn grad weight", g.T, x), Product(f"{layer}: scratch forward", x, w),
            Product(f"{layer}: scratch grad input", g, w.T), Product(f"{layer}: scratch grad weight", x.T, g)]


def network_layers() -> list[tuple[int, int, int]]:
    """(rows, n_in, n_out) of the layers in `gemmlab bench-train`'s networks."""
    from gemmlab.bench import MLP_SIZES, NETWORK_ROWS, NETWORK_SIZES, TRAIN_STEP_BATCHES

    nets = [(NETWORK_ROWS, NETWORK_SIZES), *((batch, MLP_SIZES) for batch in TRAIN_STEP_BATCHES)]
    return [(rows, i, o) for rows, sizes in nets for i, o in zip(sizes[:-1], sizes[1:])]


def products(presets: Iterable[str], shapes: Iterable[tuple[int, ...]], dtype: torch.dtype) -> list[Product]:
    """The products to tune, one per bucket (the first of each): the bench presets' shapes, the
    `mlp` preset also the products of bench-train's network layers, then the shapes given."""
    from gemmlab.bench import PRESETS

    found: list[Product] = []
    for preset in presets:
        found += [shape_product(s, dtype) for s in PRESETS[preset]]
        if preset == "mlp":
            found += [p for layer in network_layers() for p in layer_products(*layer, dtype)]
    found += [shape_product(tuple(s), dtype) for s in shapes]
    by_bucket: dict[tuple, Product] = {}
    for p in found:
        by_bucket.setdefault(bucket(p.a, p.b), p)
    return list(by_bucket.values())


def choose(seconds: dict[str, float | None]) -> str | None:
    """The backend auto should run, from each candidate's time (None: its result was wrong): the
    fastest right one if it is at least MARGIN times as fast as torch, else torch (without a
    right torch, the fastest right one; None if none was right)."""
    right = {name: s for name, s in seconds.items() if s is not None}
    if not right:
        return None
    fastest = min(right, key=right.get)
    base = right.get(TORCH)
    if base is None or base >= MARGIN * right[fastest]:
        return fastest
    return TORCH


def candidates(dtype: torch.dtype = torch.float32) -> list[str]:
    from gemmlab.registry import BACKENDS

    return [name for name in CANDIDATES if BACKENDS[name].available and dtype in BACKENDS[name].dtypes]


def tune_product(product: Product, names: Iterable[str],
                 timer: Callable[[dict[str, Callable]], dict[str, float]]) -> Entry:
    """Check each backend's result on the product against the float64 reference, time the right
    ones together with timer({name: fn}) -> {name: seconds per call of fn}, and choose (see choose)."""
    from gemmlab.dispatch import matmul
    from gemmlab.reference import error_ratio

    a, b = product.a, product.b
    runs = {name: lambda name=name: matmul(a, b, backend=name) for name in names}
    right = {name: run for name, run in runs.items() if error_ratio(run(), a, b) <= 1.0}
    timed = timer(right)
    seconds = {name: timed.get(name) for name in names}
    chosen = choose(seconds)
    key = bucket(a, b)
    layout = key[bucket_fields().index("layout")]
    return Entry(key, chosen, f"{product.what} {layout}", seconds)


def tune(found: list[Product], names: list[str], repeats: int = 3, rounds: int = 3, on_product=None) -> list[Entry]:
    """tune_product on each product, the candidates timed in `rounds` interleaved rounds of
    `repeats` samples (gemmlab.timing.measure_rounds: a noisy stretch of the machine hits them
    alike; one blocked timing each once let a 20% slow stretch choose the slower of two backends),
    saving the table after each product (so an interrupted run keeps what it measured) and
    installing it in this process."""
    from gemmlab.bench import warm_up
    from gemmlab.timing import measure_rounds

    def timer(fns):
        return {name: t.per_call for name, t in measure_rounds(fns, rounds, interleave=True, repeats=repeats).items()}

    warm_up()
    results = []
    for product in found:
        entry = tune_product(product, names, timer)
        if entry.backend is not None:
            save([entry])
        results.append(entry)
        if on_product:
            on_product(product, entry)
    install()
    return results
