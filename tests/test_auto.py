"""`auto`: the choice per bucket (gemmlab.autotune and the C++ core's auto kernel) and the tuned
table on disk. Choices are tested with fake timings: nothing here asserts speed.

What is checked: the margin and the correctness gate; that a tuned table changes which kernel runs,
bucket by bucket, with the bucket the tuner records being the one the core looks up (also for the
products of a layer's backward pass); that auto's result is exactly the chosen backend's; that it
never sends a product to a kernel that cannot take it; the table's round trip, concurrent writers,
and files that must be ignored with a warning.
"""

import json
import multiprocessing
from pathlib import Path

import numpy as np

import pytest
import torch
from conftest import CONTENDERS, import_or_fail, randn

import gemmlab
import gemmlab.nn as gnn
from gemmlab import autotune, bench
from gemmlab.autotune import Entry, TunedTableWarning
from gemmlab.reference import assert_close_to_reference
from gemmlab.scratch import Lin

core = import_or_fail("gemmlab._cpp")  # auto's choice lives there: not built, every test fails, saying why

KERNELS = CONTENDERS  # what auto may run


def entry(a, b, backend, **seconds) -> Entry:
    return Entry(autotune.bucket(a, b), backend, "a test's", seconds)


def table(*entries: Entry) -> dict:
    return {e.bucket: e for e in entries}


def ran_on(calls):
    return [c.backend for c in calls]


# --- the choice ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, chosen", [
    ({"torch": 1.0, "cpp": 0.971}, "torch"),  # 1.0299x: under the margin
    ({"torch": 1.0, "cpp": 0.970}, "cpp"),  # 1.0309x
    ({"torch": 1.0, "cpp": 0.5, "numba": 0.4, "cython": 0.6}, "numba"),  # the fastest
    ({"torch": 1.0, "cpp": None, "numba": 0.9}, "numba"),  # a wrong result is never chosen, however fast...
    ({"torch": 1.0, "cpp": None}, "torch"),
    ({"torch": 0.5, "cpp": 1.0}, "torch"),
    ({"torch": None, "cpp": 2.0, "numba": 3.0}, "cpp"),  # ...not even torch's: then the fastest right one
    ({"torch": None, "cpp": None}, None),
], ids=str)
def test_choose_with_fake_timings(seconds, chosen):
    assert autotune.choose(seconds) == chosen


def test_a_wrong_backend_is_neither_timed_nor_chosen(break_backend):
    break_backend("cython")
    fake = {"numba": 3.0, "cython": 1.0, "cpp": 2.0, "torch": 4.0}  # the broken one would be fastest
    timed = []
    product = autotune.shape_product((9, 17, 5), torch.float64)
    found = autotune.tune_product(product, KERNELS, lambda fns: timed.extend(fns) or {name: fake[name] for name in fns})
    assert sorted(timed) == ["cpp", "numba", "torch"]
    assert found.seconds == {**fake, "cython": None}
    assert found.backend == "cpp" and found.speedup == 2.0
    assert found.bucket == autotune.bucket(product.a, product.b)


# --- buckets: the core's definition, and what a tuned table changes ------------------------------
def test_buckets_as_the_core_defines_them(threads):
    torch.set_num_threads(2)
    a, b = randn(20, 30), randn(30, 10)
    assert core.AUTO_BUCKET_FIELDS == ("dtype", "device", "log2_m", "log2_k", "log2_n", "log2_batch", "layout", "threads")
    assert autotune.bucket(a, b) == (torch.float64, "cpu", 5, 5, 4, 0, "RR", 2)
    assert autotune.bucket(a.float(), b.float())[0] == torch.float32
    assert autotune.bucket(randn(64, 65), randn(65, 1))[2:5] == (6, 7, 0)  # ceil(log2): 64 -> 6, 65 -> 7, 1 -> 0
    assert autotune.bucket(randn(30, 20).T, randn(10, 30).T)[6] == "CC"  # transposed views
    assert autotune.bucket(randn(41, 90)[::2, ::3], b)[6] == "SR"  # neither rows nor columns adjacent
    assert autotune.bucket(randn(4, 5, 30), b)[2:6] == (5, 5, 4, 0)  # a batch sharing one b: 20 rows
    assert autotune.bucket(randn(4, 5, 30), randn(4, 30, 10))[2:6] == (3, 5, 4, 2)
    torch.set_num_threads(1)
    assert autotune.bucket(a, b)[7] == 1


def test_a_tuned_table_changes_which_kernel_auto_runs(tuned_table, kernel_calls):
    calls = kernel_calls(*KERNELS)
    a, b = randn(20, 30), randn(30, 10)
    gemmlab.matmul(a, b)  # untuned: the built-in rule
    saved = entry(a, b, "cython", cython=1.0, torch=2.0)
    assert autotune.save([saved]) == tuned_table
    assert autotune.read() == table(saved)  # the round trip
    assert autotune.install() == table(saved)
    gemmlab.matmul(a, b)
    gemmlab.matmul(randn(17, 25, seed=1), randn(25, 9, seed=2))  # other sizes, the same bucket
    gemmlab.matmul(a.float(), b.float())  # another bucket: the rule
    gemmlab.matmul(randn(17, 25, seed=1), randn(25, 9, seed=2), backend="numba")  # a backend by name: that one
    assert ran_on(calls) == ["cpp", "cython", "cython", "cpp", "numba"]


def test_each_product_of_a_layer_gets_its_own_choice(tuned_table, kernel_calls):
    """The buckets layer_products (what `gemmlab tune` measures) gives the forward and both gradients
    of gemmlab.nn.Linear and gemmlab.scratch.Lin are the ones the core meets running those layers."""
    rows, n_in, n_out = 33, 20, 7
    products = autotune.layer_products(rows, n_in, n_out, torch.float64)
    assert len({autotune.bucket(p.a, p.b) for p in products}) == len(products) == 6
    chosen = ["numba", "cython", "torch", "cython", "torch", "numba"]
    autotune.install(table(*(entry(p.a, p.b, name) for p, name in zip(products, chosen))))
    calls = kernel_calls(*KERNELS)
    x, grad = randn(rows, n_in, seed=1).requires_grad_(), randn(rows, n_out, seed=2)

    layer = gnn.Linear(n_in, n_out, backend="auto", dtype=torch.float64)
    layer(x).backward(grad)
    lin = Lin(n_in, n_out, backend="auto", dtype=torch.float64)
    lin(x.detach()).g = grad
    lin.backward()
    # (m, k, n) of the forward product, the input's gradient and the weight's (nn.Linear's, in its layout)
    shapes = [(rows, n_in, n_out), (rows, n_out, n_in), (n_out, rows, n_in)]
    shapes += [(rows, n_in, n_out), (rows, n_out, n_in), (n_in, rows, n_out)]  # scratch.Lin's
    assert [(c.backend, (*c.a, c.b[1])) for c in calls] == list(zip(chosen, shapes))
    assert_close_to_reference(x.grad, grad, layer.weight, what="nn.Linear on auto: grad input")
    assert_close_to_reference(layer.weight.grad, grad.T, x.detach(), what="nn.Linear on auto: grad weight")
    assert_close_to_reference(lin.w.g, x.detach().T, grad, what="scratch.Lin on auto: grad weight")


def test_the_products_to_tune_are_one_per_bucket(monkeypatch):
    monkeypatch.setitem(bench.PRESETS, "mlp", [(33, 20, 7)])
    monkeypatch.setattr(autotune, "network_layers", lambda: [(33, 20, 7), (9, 7, 1)])
    found = autotune.products(["mlp", "batched"], [(33, 20, 7), (5, 3, 2)], torch.float32)
    buckets = [autotune.bucket(p.a, p.b) for p in found]
    assert len(set(buckets)) == len(buckets)
    wanted = [autotune.shape_product(s, torch.float32) for s in [(33, 20, 7), *bench.PRESETS["batched"], (5, 3, 2)]]
    wanted += [p for layer in [(33, 20, 7), (9, 7, 1)] for p in autotune.layer_products(*layer, torch.float32)]
    assert set(buckets) == {autotune.bucket(p.a, p.b) for p in wanted}
    assert all(p.a.dtype == torch.float32 for p in found)


# --- what auto runs: exactly the chosen backend's product, never a kernel that cannot take it -----
def product_cases():
    yield "2-D", randn(9, 17, seed=1), randn(17, 5, seed=2)
    yield "transposed views", randn(17, 9, seed=3).T, randn(5, 17, seed=4).T
    yield "batched, broadcast", randn(3, 1, 9, 17, seed=5), randn(2, 17, 5, seed=6)
    yield "float32", randn(40, 70, seed=7).float(), randn(70, 30, seed=8).float()


@pytest.mark.parametrize("name", KERNELS)
def test_auto_gives_exactly_the_chosen_backends_result(tuned_table, name):
    for case, a, b in product_cases():
        autotune.install(table(entry(a, b, name)))
        got = gemmlab.matmul(a, b)
        assert torch.equal(got, gemmlab.matmul(a, b, backend=name)), f"{case} on {name}"
        x, y = a.clone().requires_grad_(), b.clone().requires_grad_()  # through the op, with autograd
        assert torch.equal(gemmlab.matmul(x, y, backend="auto").detach(), got), f"{case} on {name}, with grad"
        assert np.array_equal(gemmlab.matmul(a.numpy(), b.numpy(), backend="auto"), got.numpy()), f"{case}, NumPy"
        assert_close_to_reference(got, a, b, what=f"auto on {name}, {case}")


def test_untuned_auto_follows_the_built_in_rule(kernel_calls):
    calls = kernel_calls(*KERNELS)
    for dtype, expected in [(torch.float64, "cpp"), (torch.float32, "cpp"), (torch.float16, "torch"),
                            (torch.complex64, "torch")]:
        a, b = randn(6, 5, seed=1).to(dtype), randn(5, 4, seed=2).to(dtype)
        assert torch.equal(gemmlab.matmul(a, b), gemmlab.matmul(a, b, backend=expected)), dtype
        assert core.auto_choice(a, b)[1] == expected
    assert ran_on(calls) == ["cpp", "cpp"] * 2 + ["torch", "torch"] * 2


def test_auto_never_runs_a_kernel_on_inputs_it_cannot_take(tuned_table, kernel_calls):
    """A table naming cpp for buckets it cannot take (only a hand-edited file could): torch runs them."""
    calls = kernel_calls(*KERNELS)
    for dtype in (torch.float16, torch.bfloat16, torch.complex128):
        a, b = randn(6, 5, seed=1).to(dtype), randn(5, 4, seed=2).to(dtype)
        autotune.install(table(entry(a, b, "cpp")))
        assert torch.equal(gemmlab.matmul(a, b), torch.matmul(a, b)), dtype
    assert ran_on(calls) == ["torch"] * 3
    with pytest.raises(ValueError, match=r"backend 'auto' runs on cpu, cuda; got a: .* on meta"):
        gemmlab.matmul(randn(2, 3).to("meta"), randn(3, 2).to("meta"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_runs_torch_on_cuda_whatever_the_table_says(tuned_table, kernel_calls):
    calls = kernel_calls("cpp", "torch")
    a, b = randn(9, 17).cuda(), randn(17, 5).cuda()
    autotune.install(table(entry(a, b, "cpp")))
    assert torch.equal(gemmlab.matmul(a, b), torch.matmul(a, b))
    assert ran_on(calls) == ["torch"]


def test_the_core_refuses_a_table_it_cannot_use(tuned_table, kernel_calls):
    calls = kernel_calls(*KERNELS)
    a, b = randn(20, 30), randn(30, 10)
    autotune.install(table(entry(a, b, "cython")))
    good = autotune.bucket(a, b)
    for bad, error, match in [
        ((good, "nope"), ValueError, "no kernel is registered as 'nope'"),
        ((good, "auto"), ValueError, "cannot name auto itself"),
        (((*good[:6], "RX", good[7]), "cpp"), ValueError, "layout is two of R, C, S"),
        (((*good[:2], 64, *good[3:]), "cpp"), ValueError, "log2 sizes are 0..63"),
        (((*good[:7], 0), "cpp"), ValueError, "thread count is at least 1"),
        ((("float64", *good[1:]), "cpp"), TypeError, "incompatible function arguments"),
    ]:
        with pytest.raises(error, match=match):
            core.set_auto_table([bad])
    gemmlab.matmul(a, b)  # the table in use is unchanged
    assert ran_on(calls) == ["cython"]


# --- the file --------------------------------------------------------------------------------------
def spoiled_files():
    """(what, spoil(document) -> the file's new text, the warning's reason)."""
    yield "not JSON", lambda doc: '{"format": 1, "entr', "corrupt"
    yield "not UTF-8", lambda doc: b"\xff\xfe{}", "corrupt"
    yield "a list", lambda doc: "[]", "corrupt"
    yield "entries not a list", lambda doc: json.dumps({**doc, "entries": 3}), "corrupt"
    yield "a bucket field missing", lambda doc: json.dumps(
        {**doc, "entries": [{**e, "bucket": {k: v for k, v in e["bucket"].items() if k != "threads"}} for e in doc["entries"]]}), "corrupt"
    for field, bad in [("layout", "XY"), ("device", "CPU"), ("log2_m", 2.5), ("threads", 0)]:  # what the core refuses
        yield f"{field} {bad!r}", lambda doc, field=field, bad=bad: json.dumps(
            {**doc, "entries": [{**e, "bucket": {**e["bucket"], field: bad}} for e in doc["entries"]]}), "corrupt"
    yield "another CPU", lambda doc: json.dumps({**doc, "machine": {**doc["machine"], "cpu": "Another CPU"}}), "another machine"
    yield "another CPU path", lambda doc: json.dumps({**doc, "machine": {**doc["machine"], "isa": "avx9000"}}), "another machine"
    yield "another torch", lambda doc: json.dumps({**doc, "versions": {**doc["versions"], "torch": "2.12.0"}}), "stale"
    yield "another gemmlab", lambda doc: json.dumps({**doc, "versions": {**doc["versions"], "gemmlab": "0.0.1"}}), "stale"
    yield "another format", lambda doc: json.dumps({**doc, "format": 0}), "stale"



@pytest.mark.parametrize("what, spoil, why", list(spoiled_files()), ids=[c[0] for c in spoiled_files()])
def test_an_unusable_table_is_ignored_with_a_warning(tuned_table, kernel_calls, what, spoil, why):
    a, b = randn(20, 30), randn(30, 10)
    autotune.save([entry(a, b, "cython")])
    spoiled = spoil(json.loads(tuned_table.read_text()))
    (tuned_table.write_bytes if isinstance(spoiled, bytes) else tuned_table.write_text)(spoiled)
    with pytest.warns(TunedTableWarning, match=why):
        assert autotune.install() == {}
    calls = kernel_calls(*KERNELS)
    gemmlab.matmul(a, b)
    assert ran_on(calls) == ["cpp"]  # the built-in rule
    autotune.save([entry(a.float(), b.float(), "numba")])  # tuning again replaces the file
    assert list(autotune.read()) == [autotune.bucket(a.float(), b.float())]


def test_entries_naming_a_backend_that_cannot_run_here_are_left_out(tuned_table, kernel_calls):
    a, b = randn(20, 30), randn(30, 10)
    kept = entry(a.float(), b.float(), "numba")
    autotune.save([entry(a, b, "loops"), entry(a, b.T.contiguous().T, "auto"), kept])  # (only a hand-edited file has these)
    with pytest.warns(TunedTableWarning, match=r"names backends that cannot run here \(auto, loops\)"):
        assert autotune.install() == table(kept)
    calls = kernel_calls(*KERNELS)
    gemmlab.matmul(a, b)
    gemmlab.matmul(a.float(), b.float())
    assert ran_on(calls) == ["cpp", "numba"]


def test_no_table_is_no_warning(tuned_table, recwarn):
    assert not tuned_table.exists()
    assert autotune.install() == {}
    assert not autotune.clear()
    assert not [w for w in recwarn if issubclass(w.category, TunedTableWarning)]


def first_auto_product(folder: str, results) -> None:
    """In a fresh process: install a table, then run the first product on auto (which loads it)."""
    import os

    os.environ["GEMMLAB_CACHE_DIR"] = folder  # an empty folder: no tuned file
    a, b = randn(9, 17, seed=1), randn(17, 5, seed=2)
    autotune.install(table(entry(a, b, "numba")))
    got = gemmlab.matmul(a, b, backend="auto")
    results.put((autotune.status()["buckets"], torch.equal(got, gemmlab.matmul(a, b, backend="numba"))))


def test_loading_auto_keeps_a_table_installed_before(tuned_table):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=first_auto_product, args=(str(tuned_table.parent), results))
    process.start()
    buckets, same = results.get(timeout=300)
    process.join(timeout=60)
    assert (buckets, same) == (1, True), "the first product on auto replaced the table the program installed"


def save_entries(folder: str, worker: int, count: int, start) -> None:
    """In a process of its own: save `count` entries one at a time, each in a bucket of its own."""
    import os

    os.environ["GEMMLAB_CACHE_DIR"] = folder
    start.wait()
    for i in range(count):
        autotune.save([Entry((torch.float32, "cpu", worker, i, 0, 0, "RR", 1), "cpp", f"writer {worker}")])


def test_concurrent_writers_lose_nothing(tuned_table):
    workers, count = 4, 25
    context = multiprocessing.get_context("spawn")  # (no fork of a process with torch's threads running)
    start = context.Barrier(workers)
    processes = [context.Process(target=save_entries, args=(str(tuned_table.parent), w, count, start))
                 for w in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * workers
    entries = autotune.read()
    assert sorted(e.bucket[2:4] for e in entries.values()) == [(w, i) for w in range(workers) for i in range(count)]
    assert sorted(p.name for p in tuned_table.parent.iterdir()) == [tuned_table.name, f"{tuned_table.name}.lock"]  # no temp files left


def test_the_table_lives_in_the_user_cache_unless_told_otherwise(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv("GEMMLAB_CACHE_DIR")
    assert autotune.table_path().parent == Path(platformdirs.user_cache_dir("gemmlab"))
    monkeypatch.setenv("GEMMLAB_CACHE_DIR", str(tmp_path))
    assert autotune.table_path() == tmp_path / "auto-table.json"
