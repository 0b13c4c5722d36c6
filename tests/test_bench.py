"""gemmlab bench: results are checked, ratios are to torch's @ from the same run, outputs are written."""

import dataclasses
import json
import math
import os
import re
import time

import pytest
import torch

from gemmlab import bench, cli, timing
from gemmlab.registry import get_backend


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    """The pause after NumPy's block protects timings, not correctness: none in tests."""
    monkeypatch.setattr(bench, "NUMPY_PAUSE_SECONDS", 0)


def test_run_checks_and_relates_every_result_to_the_peers():
    seen = []
    results = bench.run(["cpp", "numba", "torch"], ["float32", "float64"], [(33, 17, 9), (3, 5, 78, 10)], repeats=3,
                        on_result=seen.append)
    assert seen == results
    assert len(results) == 2 * 2 * 5  # shapes x dtypes x (torch @ + 3 backends + numpy @)
    assert {(r.batch, r.m, r.k, r.n) for r in results} == {(1, 33, 17, 9), (3, 5, 78, 10)}
    for r in results:
        assert 0 <= r.error_ratio <= 1, r
        assert r.seconds > 0 and math.isclose(r.gflops, 2 * r.batch * r.m * r.k * r.n / r.seconds / 1e9)
        same = [x for x in results if (x.batch, x.m, x.k, x.n, x.dtype) == (r.batch, r.m, r.k, r.n, r.dtype)]
        assert [x.backend for x in same] == [bench.TORCH_AT, "cpp", "numba", "torch", bench.NUMPY_AT]  # NumPy last
        base = same[0]
        best = min(x.seconds for x in same if x.backend in bench.PEERS)
        assert math.isclose(r.ratio_to_torch, base.seconds / r.seconds)
        assert math.isclose(r.ratio_to_best_peer, best / r.seconds)


def test_each_result_carries_its_timings_spread(monkeypatch):
    """The spread column is the spread of that result's own samples (every round), peers included."""
    seen = {}

    def fake_rounds(fns, rounds, interleave=False, **options):
        out = {}
        for i, name in enumerate(fns):
            samples = (1e-3, 1e-3, (2 + i) * 1e-3) * rounds  # a different spread for each candidate
            out[name] = timing.Timing(1e-3, 1e-3, len(samples), 1, samples)
            seen[name] = out[name].spread
        return out

    monkeypatch.setattr(bench, "measure_rounds", fake_rounds)
    results = bench.run(["cpp", "numba"], ["float32"], [(9, 7, 5)], repeats=3, rounds=2)
    assert [r.backend for r in results] == [bench.TORCH_AT, "cpp", "numba", bench.NUMPY_AT]
    assert len({r.spread for r in results[:3]}) == 3
    for r in results:
        assert r.spread == seen[r.backend] > 0


def test_presets_hold_the_issue_shapes():
    assert bench.PRESETS["square"] == [(n, n, n) for n in (256, 512, 1024, 2048, 4096)]
    assert bench.PRESETS["mlp"] == [(50000, 784, 50), (50000, 50, 784), (784, 50000, 50)]
    assert bench.PRESETS["tiny"] == [(5, 784, 10)]
    assert bench.PRESETS["overhead"] == [(5, 784, 10), (64, 64, 64)]
    assert bench.PRESETS["batched"] == [(256, 32, 32, 32), (64, 128, 64, 128), (8, 512, 512, 512)]
    assert bench.PRESETS["gpu"] == [(n, n, n) for n in (1024, 2048, 4096, 8192)]


def test_direct_calls_each_kernel_into_one_output():
    results = bench.run(["cpp", "numba", "torch"], ["float32", "float64"], [(33, 17, 9), (5, 784, 10)], repeats=3, direct=True)
    assert [(r.m, r.dtype, r.backend) for r in results] == [
        (m, dtype, name) for m in (33, 5) for dtype in ("float32", "float64")
        for name in (bench.TORCH_AT, "cpp", "numba", "torch", bench.NUMPY_AT)]
    assert all(0 <= r.error_ratio <= 1 and r.seconds > 0 for r in results)


def test_direct_poisons_the_output_before_each_check(monkeypatch):
    """A kernel that writes nothing must not pass on the result torch's @ left in the shared output."""
    spec = get_backend("cython")
    spec.kernel  # loaded, so that the stand-in below stays
    monkeypatch.setattr(spec, "_kernel", lambda a, b, out: None)
    results = {r.backend: r for r in bench.run(["cpp", "cython"], ["float32"], [(13, 17, 11)], repeats=3, direct=True)}
    assert math.isnan(results["cython"].error_ratio)
    assert results["cpp"].error_ratio <= 1 and results[bench.TORCH_AT].error_ratio <= 1


def test_cuda_kernel_names_pick_one_kernel_of_the_ladder(monkeypatch):
    calls = []

    class FakeCuda:
        @staticmethod
        def kernel(a, b, out, kernel=None):
            calls.append(kernel)

    monkeypatch.setattr(bench, "get_backend", lambda name: FakeCuda if name == "cuda" else get_backend(name))
    bench.kernel("cuda:smem")(1, 2, 3)
    bench.kernel("cuda")(1, 2, 3)
    assert calls == ["smem", None]
    assert bench.kernel("cpp") is get_backend("cpp").kernel


@pytest.mark.parametrize("backends, shapes, direct, rounds, message", [
    (["cuda:smem"], [(4, 4, 4)], False, 1, "called directly"),
    (["cpp:fast"], [(4, 4, 4)], True, 1, "only the cuda backend"),
    (["cuda:"], [(4, 4, 4)], True, 1, "only the cuda backend"),
    (["auto"], [(4, 4, 4)], True, 1, "auto has no kernel of its own"),
    (["cpp"], [(2, 4, 4, 4)], True, 1, "batched shapes need gemmlab.matmul"),
    (["cpp"], [(4, 4, 4)], False, 0, "rounds must be at least 1"),
])
def test_options_bench_cannot_run_are_refused(backends, shapes, direct, rounds, message):
    with pytest.raises(ValueError, match=message):
        bench.check_options(backends, shapes, direct, rounds)
    with pytest.raises(ValueError, match=message):
        bench.run(backends, ["float32"], shapes, direct=direct, rounds=rounds)


def test_bench_command_refuses_what_it_cannot_run(capsys):
    assert cli.main(["bench", "--shape", "4", "4", "4", "--backend", "cuda:smem"]) == 2
    assert "gemmlab bench: error: 'cuda:smem': one kernel of the cuda ladder is called directly" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["bench", "--shape", "4", "4", "4", "--device", "cuda", "--backend", "cuda"]) == 2
        assert "--device cuda: torch sees no CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--backend", "nosuch"])
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_bench_command_rounds_interleaved_and_direct(tmp_path, capsys, threads):
    out_json = tmp_path / "bench.json"
    assert cli.main(["bench", "--shape", "7", "5", "3", "--backend", "cpp", "numba", "--rounds", "2", "--interleave",
                     "--direct", "--repeats", "3", "--threads", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "2 rounds, interleaved" in out and "called directly into a preallocated output" in out and "WRONG" not in out
    results = json.loads(out_json.read_text())["results"]
    assert [r["backend"] for r in results] == [bench.TORCH_AT, "cpp", "numba", bench.NUMPY_AT]
    assert all(r["repeats"] == 2 * 3 and r["error_ratio"] <= 1 for r in results)  # two rounds of three repeats


def test_computed_peak_says_how():
    p32, p64 = bench.computed_peak(2, torch.float32), bench.computed_peak(2, torch.float64)
    assert p32.gflops > 0 and "computed" in p32.how and "FMA" in p32.how and "-bit FMA pipes" in p32.how
    assert math.isclose(p32.gflops, 2 * p64.gflops)


@pytest.mark.parametrize("capability, vendor, family, model, bits", [
    ("AVX512", "GenuineIntel", 6, 143, 512),  # Sapphire Rapids: two 512-bit FMA units
    ("AVX512", "AuthenticAMD", 0x19, 0x11, 256),  # Zen 4 (EPYC Genoa): AVX-512 on 256-bit pipes
    ("AVX2", "AuthenticAMD", 0x19, 0x01, 256),  # Zen 3
    ("AVX2", "AuthenticAMD", 0x17, 0x01, 128),  # Zen 1: AVX2 on 128-bit pipes
    ("AVX2", "AuthenticAMD", 0x17, 0x31, 256),  # Zen 2
    ("AVX512", "AuthenticAMD", 0x1A, 0x02, 512),  # Zen 5: full-width AVX-512
    ("DEFAULT", "GenuineIntel", 6, 85, 128),
])
def test_computed_peak_uses_the_real_fma_width(capability, vendor, family, model, bits):
    assert bench.fma_bits(capability, vendor, family, model) == bits


def test_measured_peak_is_the_extensions(threads):
    from gemmlab import _cpp

    for name, dtype in bench.DTYPES.items():
        peak = bench.measured_peak(1, dtype)
        assert peak.gflops == _cpp.peak_gflops(name, 1) and peak.gflops > 0
        assert f"measured: 1 thread(s) of independent {name} multiply-adds" in peak.how and _cpp.cpu_path() in peak.how
    # never more threads than CPUs: that would measure time-sharing
    assert f"measured: {os.cpu_count()} thread(s)" in bench.measured_peak(os.cpu_count() + 3, torch.float32).how


def test_numpy_blas_names_numpys_own_library(monkeypatch):
    import numpy as np
    import threadpoolctl

    numpy_libs = os.path.dirname(os.path.realpath(np.__file__)) + ".libs"
    scipy = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.30", "architecture": "Haswell",
             "filepath": "/somewhere/scipy.libs/libscipy_openblas.so"}
    own = {**scipy, "version": "0.3.31", "architecture": "Zen", "filepath": numpy_libs + "/libscipy_openblas64_.so"}
    omp = {"user_api": "openmp", "internal_api": "openmp", "version": None, "filepath": "/x/libgomp.so.1"}
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: [scipy, own, omp])
    assert bench.numpy_blas() == "openblas 0.3.31 (Zen)"
    # NumPy on a system BLAS (nothing in its folders): every BLAS loaded
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: [scipy, omp])
    assert bench.numpy_blas() == "openblas 0.3.30 (Haswell)"


def check_machine(machine, threads):
    """bench.machine()'s fields, as both bench commands write them."""
    assert set(machine) == {"cpu", "capability", "cores", "threads", "torch", "torch_blas", "numpy_blas", "date"}
    assert machine["torch_blas"] == "mkl" and "openblas" in machine["numpy_blas"]  # the pinned wheels' BLAS
    assert machine["cpu"] and machine["capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["cores"] == os.cpu_count() and machine["threads"] == threads and machine["torch"] == torch.__version__
    assert machine["date"] in {time.strftime("%Y-%m-%d", time.localtime(time.time() - s)) for s in (0, 600)}  # today


def check_bench_json(data, shapes, dtypes, backends, threads, repeats):
    """Every field of `gemmlab bench --json`: the machine, the computed peaks, first calls and one
    checked, timed result per shape, dtype and backend (torch's @ first), related as documented."""
    assert set(data) == {"machine", "peak", "first_call_seconds", "results"}
    check_machine(data["machine"], threads)
    assert list(data["peak"]) == dtypes
    for name, peak in data["peak"].items():
        assert peak == dataclasses.asdict(bench.measured_peak(threads, bench.DTYPES[name]))
        assert f"measured: {threads} thread(s)" in peak["how"]
    assert list(data["first_call_seconds"]) == backends and all(0 < t < 60 for t in data["first_call_seconds"].values())
    results = data["results"]
    assert [(r["m"], r["k"], r["n"], r["dtype"], r["backend"]) for r in results] == [
        (*shape, dtype, name) for shape in shapes for dtype in dtypes for name in (bench.TORCH_AT, *backends, bench.NUMPY_AT)]
    fields = {f.name for f in dataclasses.fields(bench.Result)}
    for r in results:
        assert set(r) == fields
        assert isinstance(r["repeats"], int) and 3 <= r["repeats"] <= max(3, repeats) and r["calls_per_repeat"] >= 1
        assert 0 < r["seconds"] < 10
        assert r["batch"] == 1 and math.isclose(r["gflops"], 2 * r["m"] * r["k"] * r["n"] / r["seconds"] / 1e9)
        same = [x for x in results if (x["m"], x["k"], x["n"], x["dtype"]) == (r["m"], r["k"], r["n"], r["dtype"])]
        assert math.isclose(r["ratio_to_torch"], same[0]["seconds"] / r["seconds"])
        best = min(x["seconds"] for x in same if x["backend"] in bench.PEERS)
        assert math.isclose(r["ratio_to_best_peer"], best / r["seconds"])
        assert 0 <= r["error_ratio"] <= 1 and r["spread"] >= 0, r


def test_bench_command_writes_table_json_and_plot(tmp_path, capsys, threads):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = ["bench", "--size", "48", "--preset", "tiny", "--shape", "7", "5", "3", "--dtype", "float32", "float64",
            "--threads", "1", "--repeats", "3", "--backend", "cpp", "cython", "auto", "--json", str(out_json), "--plot", str(out_png)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "x torch @" in out and "x best peer" in out and "% of measured peak" in out and "1 thread(s)" in out and "WRONG" not in out
    assert "peers: torch @ (mkl), numpy @ (openblas" in out
    data = json.loads(out_json.read_text())
    check_bench_json(data, [(5, 784, 10), (48, 48, 48), (7, 5, 3)], ["float32", "float64"], ["cpp", "cython", "auto"], 1, 3)
    for dtype, peak in data["peak"].items():  # measured before the runs and, if higher, after them
        assert re.search(rf"measured peak {dtype}( again after the runs)?: {peak['gflops']:.0f} GFLOP/s", out)
    for r in data["results"]:  # every result is a row of the table, with its numbers
        share = 100 * r["gflops"] / data["peak"][r["dtype"]]["gflops"]
        assert re.search(rf"{r['m']}x{r['k']}x{r['n']} +│ {r['dtype']} +│ {re.escape(r['backend'])} +│ .* {100 * r['spread']:.0f}% +│ +{r['gflops']:.1f} +│ "
                         rf"+{r['ratio_to_torch']:.2f} +│ +{r['ratio_to_best_peer']:.2f} +│ +{share:.0f} +│ +{r['error_ratio']:.2g} │", out), r
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_command_fails_on_a_wrong_result(tmp_path, capsys, break_backend, threads):
    break_backend("cpp")
    out_json = tmp_path / "bench.json"
    assert cli.main(["bench", "--shape", "5", "9", "4", "--backend", "cython", "cpp", "--repeats", "3", "--threads", "1",
                     "--json", str(out_json)]) == 1
    out = capsys.readouterr().out
    assert "WRONG: cpp on 5x9x4 float32 is off by" in out and "WRONG: cython" not in out
    results = {r["backend"]: r for r in json.loads(out_json.read_text())["results"]}
    assert results["cpp"]["error_ratio"] > 1
    assert results["cython"]["error_ratio"] <= 1 and results[bench.TORCH_AT]["error_ratio"] <= 1


# --- gemmlab bench-train ---------------------------------------------------------------------------
QUICK_ROWS = 500  # what --quick gives the full-batch network
TRAIN_WORK = ["product 64x784 @ 784x50, fwd+bwd", "train step, batch 64", "train step, batch 512",
              f"{QUICK_ROWS}x784->50->1 MSE, fwd+bwd"]


def check_train_results(results, backends, repeats, rounds=1):
    """One checked, timed result per work item and layer (torch.nn.Linear first), in that order,
    each time related to torch.nn.Linear's for the same work, over `rounds` rounds."""
    layers = (bench.TORCH_LINEAR, *backends)
    assert [(r["work"], r["layer"]) for r in results] == [(w, layer) for w in TRAIN_WORK for layer in layers]
    fields = {f.name for f in dataclasses.fields(bench.TrainResult)}
    for r in results:
        assert set(r) == fields
        assert isinstance(r["repeats"], int) and 3 * rounds <= r["repeats"] <= max(3, repeats) * rounds
        assert r["calls_per_repeat"] >= 1
        assert 0 < r["seconds"] < 10
        base = next(x for x in results if x["work"] == r["work"] and x["layer"] == bench.TORCH_LINEAR)
        assert math.isclose(r["time_vs_torch"], r["seconds"] / base["seconds"])
        assert r["error_ratio"] == 0 if r["layer"] == bench.TORCH_LINEAR else 0 <= r["error_ratio"] <= 1, r


def test_run_train_checks_every_layer_against_torch_linear():
    seen = []
    results = bench.run_train(["cpp", "numba"], repeats=3, rows=QUICK_ROWS, on_result=seen.append)
    assert seen == results
    check_train_results([dataclasses.asdict(r) for r in results], ["cpp", "numba"], 3)
    # Not a vacuous check: gemmlab's float32 sums differ from MKL's, by far less than allowed.
    assert any(r.error_ratio > 0 for r in results if r.layer == "cpp")


def test_bench_train_command_writes_table_and_json(tmp_path, capsys, threads):
    out_json = tmp_path / "train.json"
    argv = ["bench-train", "--quick", "--backend", "cython", "--threads", "1", "--repeats", "3", "--rounds", "2",
            "--json", str(out_json)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "x torch.nn.Linear" in out and "1 thread(s)" in out and "2 interleaved round(s)" in out and "WRONG" not in out
    data = json.loads(out_json.read_text())
    assert set(data) == {"machine", "rtol", "rounds", "results"} and data["rtol"] == bench.TRAIN_RTOL
    assert data["rounds"] == 2
    check_machine(data["machine"], 1)
    check_train_results(data["results"], ["cython"], 3, rounds=2)
    for r in data["results"]:  # every result is a row of the table, with its numbers
        assert re.search(rf"{re.escape(r['work'])} +│ {re.escape(r['layer'])} +│ .* {r['time_vs_torch']:.2f} +│ +"
                         rf"{r['error_ratio']:.2g} │", out), r


def test_bench_train_command_fails_on_a_wrong_backend(tmp_path, capsys, break_backend, threads):
    break_backend("cpp")
    out_json = tmp_path / "train.json"
    assert cli.main(["bench-train", "--quick", "--backend", "cython", "cpp", "--repeats", "3", "--threads", "1",
                     "--json", str(out_json)]) == 1
    out = capsys.readouterr().out
    for work in TRAIN_WORK:
        assert f"WRONG: cpp on {work} differs from torch.nn.Linear by" in out
    assert "WRONG: cython" not in out
    for r in json.loads(out_json.read_text())["results"]:
        assert (r["error_ratio"] > 1) == (r["layer"] == "cpp"), r
