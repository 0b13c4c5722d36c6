"""gemmlab bench: results are checked, ratios are to torch's @ from the same run, outputs are written."""

import json
import math
import subprocess
import sys

import torch

from gemmlab import bench


def test_run_checks_and_relates_every_result_to_torch():
    seen = []
    results = bench.run(["cpp", "numba", "torch"], ["float32", "float64"], [(33, 17, 9), (5, 784, 10)], repeats=3,
                        on_result=seen.append)
    assert seen == results
    assert len(results) == 2 * 2 * 4  # shapes x dtypes x (torch @ + 3 backends)
    for r in results:
        assert 0 <= r.error_ratio <= 1, r
        assert r.seconds > 0 and math.isclose(r.gflops, 2 * r.m * r.k * r.n / r.seconds / 1e9)
        base = next(x for x in results if x.backend == bench.TORCH_AT and (x.m, x.k, x.n, x.dtype) == (r.m, r.k, r.n, r.dtype))
        assert math.isclose(r.ratio_to_torch, base.seconds / r.seconds)


def test_presets_hold_the_issue_shapes():
    assert bench.PRESETS["square"] == [(n, n, n) for n in (256, 512, 1024, 2048, 4096)]
    assert bench.PRESETS["mlp"] == [(50000, 784, 50), (50000, 50, 784), (784, 50000, 50)]
    assert bench.PRESETS["tiny"] == [(5, 784, 10)]


def test_peak_is_computed_and_says_how():
    p32, p64 = bench.cpu_peak(2, torch.float32), bench.cpu_peak(2, torch.float64)
    assert p32.gflops > 0 and "computed" in p32.how and "FMA" in p32.how
    assert math.isclose(p32.gflops, 2 * p64.gflops)


def test_bench_command_writes_table_json_and_plot(tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = subprocess.run(
        [sys.executable, "-m", "gemmlab", "bench", "--size", "48", "--preset", "tiny", "--threads", "1", "--repeats", "3",
         "--backend", "cpp", "cython", "--json", str(out_json), "--plot", str(out_png)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "x torch @" in result.stdout and "cython" in result.stdout and "1 thread" in result.stdout
    data = json.loads(out_json.read_text())
    assert data["machine"]["threads"] == 1
    assert {r["backend"] for r in data["results"]} == {"torch @", "cpp", "cython"}
    assert set(data["first_call_seconds"]) == {"cpp", "cython"}
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
