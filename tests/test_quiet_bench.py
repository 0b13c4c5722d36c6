"""scripts/quiet_bench.py's bookkeeping: which runs it keeps, the queue, and the merged file (checks and
bench runs replaced by fakes: the real ones take minutes)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "quiet_bench.py"


@pytest.fixture
def quiet_bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("quiet_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
    return module


def fake_run(size, dtype, torch_row, peak):
    rows = [{"backend": name, "dtype": dtype, "m": size, "ratio_to_torch": ratio, "ratio_to_best_peer": ratio}
            for name, ratio in (("torch @", 1.0), ("cpp", 0.98), ("torch", torch_row))]
    return {"machine": {"cpu": "test"}, "peak": {dtype: {"gflops": peak, "how": "measured"}},
            "first_call_seconds": {}, "results": rows}


def test_keeps_steady_quiet_runs_and_retries_the_rest(quiet_bench, monkeypatch, tmp_path):
    checks = iter([[300, 301, 302], [300, 300, 300],  # 64^3: quiet before and after, but its torch row is off
                   [300, 300, 300], [290, 300, 300],  # 96^3: steady, but noisy after
                   [250, 300, 300],  # not quiet: nothing runs
                   [300, 300, 300], [300, 300, 300],  # 64^3 again: kept
                   [300, 300, 300], [300, 300, 300]])  # 96^3 again: kept
    torch_rows = iter([1.10, 1.00, 0.99, 1.02])
    peaks = iter([100.0, 200.0, 300.0, 400.0])
    runs = []

    def bench(size, dtype, backends, threads, path):
        runs.append(size)
        run = fake_run(size, dtype, next(torch_rows), next(peaks))
        path.write_text(json.dumps(run))
        return run["results"]

    monkeypatch.setattr(quiet_bench, "check", lambda threads: next(checks))
    monkeypatch.setattr(quiet_bench, "bench", bench)
    merged = tmp_path / "merged.json"
    monkeypatch.setattr(sys, "argv", ["quiet_bench.py", "--size", "64", "96", "--dtype", "float64", "--quiet", "295",
                                      "--out", str(tmp_path / "runs"), "--json", str(merged)])
    quiet_bench.main()

    assert runs == [64, 96, 64, 96]
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.json")) == ["64_float64.json", "96_float64.json"]
    document = json.loads(merged.read_text())
    assert [(r["m"], r["backend"]) for r in document["results"]] == [
        (64, "torch @"), (64, "cpp"), (64, "torch"), (96, "torch @"), (96, "cpp"), (96, "torch")]
    assert document["peak"]["float64"]["gflops"] == 350.0  # the kept runs' median
    assert "quiet_bench" in document["how"]


def test_products_already_kept_are_not_run_again(quiet_bench, monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "64_float32.json").write_text(json.dumps(fake_run(64, "float32", 1.0, 100.0)))
    monkeypatch.setattr(quiet_bench, "check", lambda threads: pytest.fail("nothing is left to run"))
    monkeypatch.setattr(sys, "argv", ["quiet_bench.py", "--size", "64", "--dtype", "float32", "--out", str(runs),
                                      "--json", str(tmp_path / "merged.json")])
    quiet_bench.main()
    assert json.loads((tmp_path / "merged.json").read_text())["peak"]["float32"]["gflops"] == 100.0


def test_stop_time_is_the_next_one(quiet_bench):
    now = quiet_bench.datetime.datetime.now()
    soon = (now + quiet_bench.datetime.timedelta(minutes=5)).strftime("%H:%M")
    past = (now - quiet_bench.datetime.timedelta(minutes=5)).strftime("%H:%M")
    assert 0 < quiet_bench.stop_time(soon) - now.timestamp() <= 6 * 60  # also across midnight
    assert 23 * 3600 < quiet_bench.stop_time(past) - now.timestamp() <= 24 * 3600
