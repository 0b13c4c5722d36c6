"""scripts/quiet_bench.py: which rounds it keeps, the queue, how rounds combine and the merged file
(checks and rounds replaced by fakes, the real ones taking seconds each; one real round at the end)."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "quiet_bench.py"


def load_script():
    spec = importlib.util.spec_from_file_location("quiet_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def quiet_bench(monkeypatch):
    module = load_script()
    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(module.bench, "first_call_seconds", lambda name: 0.5)
    monkeypatch.setattr(module.bench, "machine", lambda: {"cpu": "test", "numpy_blas": "a 1; b 2", "date": "2026-12-02"})
    monkeypatch.setattr(module, "code_version", lambda: "abc1234")
    return module


def rows(size, dtype, seconds):
    """A round's rows: backend -> seconds per call."""
    peer = min(seconds["torch @"], seconds.get("numpy @", float("inf")))
    return [{"backend": name, "dtype": dtype, "batch": 1, "m": size, "k": size, "n": size, "seconds": t,
             "gflops": 2 * size**3 / t / 1e9, "ratio_to_torch": seconds["torch @"] / t, "ratio_to_best_peer": peer / t,
             "spread": 0.01, "error_ratio": 0.1, "repeats": 5, "calls_per_repeat": 1} for name, t in seconds.items()]


def test_keeps_steady_quiet_rounds_until_a_product_has_enough(quiet_bench, monkeypatch, tmp_path):
    checks = iter([[300, 301, 302], [300, 300, 300],  # 64^3: quiet before and after, but its torch row is off
                   [300, 300, 300], [290, 300, 300],  # 96^3: steady, but noisy after
                   [250, 300, 300],  # not quiet: nothing runs
                   [300, 300, 300], [300, 300, 300],  # 64^3: kept (1 of 2)
                   [300, 300, 300], [300, 300, 300],  # 96^3: kept (1 of 2)
                   [300, 300, 300], [300, 300, 300],  # 64^3: kept (2 of 2), finished
                   [300, 300, 300], [300, 300, 300]])  # 96^3: kept (2 of 2), finished
    torch_rows = iter([1.10, 1.00, 0.99, 1.02, 1.0, 0.98])
    cpp_times = iter([1.0, 1.0, 2.0, 4.0, 3.0, 5.0])
    runs = []

    def bench_round(size, dtype, backends):
        runs.append(size)
        return rows(size, dtype, {"torch @": 2.0, "cpp": next(cpp_times), "torch": 2.0 / next(torch_rows),
                                  "numpy @": 2.5})

    monkeypatch.setattr(quiet_bench, "check", lambda: next(checks))
    monkeypatch.setattr(quiet_bench, "bench_round", bench_round)
    monkeypatch.setattr(quiet_bench.bench, "measured_peak", lambda threads, dtype: quiet_bench.bench.Peak(99.0, "fake"))
    merged = tmp_path / "merged.json"
    monkeypatch.setattr(sys, "argv", ["quiet_bench.py", "--size", "64", "96", "--dtype", "float64", "--quiet", "295",
                                      "--rounds", "2", "--out", str(tmp_path / "runs"), "--json", str(merged)])
    quiet_bench.main()

    assert runs == [64, 96, 64, 96, 64, 96]
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.json")) == [
        "64_float64_round1.json", "64_float64_round2.json", "96_float64_round1.json", "96_float64_round2.json"]
    saved = json.loads((tmp_path / "runs" / "64_float64_round1.json").read_text())
    assert saved["code"] == "abc1234" and saved["machine"]["cpu"] == "test"
    document = json.loads(merged.read_text())
    assert [(r["m"], r["backend"]) for r in document["results"]] == [
        (64, "torch @"), (64, "cpp"), (64, "torch"), (64, "numpy @"), (96, "torch @"), (96, "cpp"), (96, "torch"), (96, "numpy @")]
    cpp = {r["m"]: r for r in document["results"] if r["backend"] == "cpp"}
    assert cpp[64]["round_seconds"] == [2.0, 3.0] and cpp[96]["round_seconds"] == [4.0, 5.0]
    assert cpp[64]["seconds"] == 2.5 and cpp[64]["ratio_to_best_peer"] == pytest.approx(2.0 / 2.5)
    assert document["peak"]["float64"]["gflops"] == 99.0 and document["code"] == "abc1234"
    assert "quiet_bench" in document["how"]


def test_combine_takes_medians_and_their_ratios(quiet_bench):
    rounds = [rows(64, "float32", {"torch @": t, "cpp": c, "numpy @": n})
              for t, c, n in ((1.0, 1.2, 0.9), (1.1, 0.8, 1.0), (3.0, 1.0, 1.3))]
    rounds[1][1]["error_ratio"] = 0.7
    torch_at, cpp, numpy_at = quiet_bench.combine(rounds)
    assert (torch_at["seconds"], cpp["seconds"], numpy_at["seconds"]) == (1.1, 1.0, 1.0)
    assert cpp["ratio_to_torch"] == pytest.approx(1.1) and torch_at["ratio_to_best_peer"] == pytest.approx(1 / 1.1)
    assert cpp["gflops"] == pytest.approx(2 * 64**3 / 1.0 / 1e9)
    assert cpp["error_ratio"] == 0.7 and cpp["repeats"] == 15
    assert cpp["spread"] == pytest.approx((1.2 - 0.8) / 1.0)  # three rounds: their range over the median


def saved_round(folder, index, cpp_seconds, cpu="test", code="abc1234", date="2026-11-30"):
    run = {"machine": {"cpu": cpu, "numpy_blas": "b 2", "date": date}, "code": code, "first_call_seconds": {},
           "peak": {"float32": {"gflops": 100.0, "how": "measured"}},
           "results": rows(64, "float32", {"torch @": 1.0, "cpp": cpp_seconds})}
    (folder / f"64_float32_round{index}.json").write_text(json.dumps(run))


def test_only_rounds_of_this_machine_and_code_count(quiet_bench, monkeypatch, tmp_path):
    runs, merged = tmp_path / "runs", tmp_path / "merged.json"
    runs.mkdir()
    saved_round(runs, 1, 1.0)  # another day, other BLAS libraries loaded: counts
    saved_round(runs, 2, 9.0, cpu="other")
    saved_round(runs, 3, 9.0, code="0ld0000")
    saved_round(runs, 4, 2.0)
    args = ["quiet_bench.py", "--size", "64", "--dtype", "float32", "--rounds", "2", "--out", str(runs), "--json", str(merged)]
    monkeypatch.setattr(quiet_bench, "check", lambda: pytest.fail("two rounds of this setting finish the product"))
    monkeypatch.setattr(sys, "argv", args)
    quiet_bench.main()
    cpp = [r for r in json.loads(merged.read_text())["results"] if r["backend"] == "cpp"]
    assert cpp[0]["round_seconds"] == [1.0, 2.0] and cpp[0]["seconds"] == 1.5

    class Queued(Exception):
        pass

    def check():
        raise Queued
    monkeypatch.setattr(quiet_bench, "check", check)
    monkeypatch.setattr(sys, "argv", args[:6] + ["3"] + args[7:])  # a third round wanted: the product runs again
    with pytest.raises(Queued):
        quiet_bench.main()


def test_rounds_are_tagged_by_the_commit_of_the_kernels(quiet_bench, monkeypatch, tmp_path):
    assert re.fullmatch(r"[0-9a-f]{7,}(\+changes)?|unknown", load_script().code_version())  # no git: unknown
    monkeypatch.setattr(sys, "argv", ["quiet_bench.py", "--size", "64", "--out", str(tmp_path)])
    monkeypatch.setattr(quiet_bench, "check", lambda: pytest.fail("untagged rounds must not run"))
    for untagged in ("abc1234+changes", "unknown"):
        monkeypatch.setattr(quiet_bench, "code_version", lambda: untagged)
        with pytest.raises(SystemExit):
            quiet_bench.main()


def test_a_new_round_takes_a_number_not_in_use(quiet_bench, monkeypatch, tmp_path):
    saved_round(tmp_path, 1, 1.0)
    saved_round(tmp_path, 3, 1.0)  # round 2 deleted
    checks = iter([[300, 300, 300]] * 2)
    monkeypatch.setattr(quiet_bench, "check", lambda: next(checks))
    monkeypatch.setattr(quiet_bench, "bench_round",
                        lambda size, dtype, backends: rows(64, "float32", {"torch @": 1.0, "cpp": 5.0, "torch": 1.0}))
    monkeypatch.setattr(quiet_bench.bench, "measured_peak", lambda threads, dtype: quiet_bench.bench.Peak(99.0, "fake"))
    monkeypatch.setattr(sys, "argv", ["quiet_bench.py", "--size", "64", "--dtype", "float32", "--quiet", "295",
                                      "--out", str(tmp_path)])
    quiet_bench.main()
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [f"64_float32_round{i}.json" for i in (1, 3, 4)]
    cpp = {r["backend"]: r for r in json.loads((tmp_path / "64_float32_round3.json").read_text())["results"]}["cpp"]
    assert cpp["seconds"] == 1.0  # round 3 kept intact


def test_a_real_round_times_the_peers_and_the_torch_row(quiet_bench):
    got = quiet_bench.bench_round(24, "float64", ["cpp"])
    assert [r["backend"] for r in got] == ["torch @", "cpp", "torch", "numpy @"]
    assert all(r["error_ratio"] <= 1.0 and r["seconds"] > 0 and r["m"] == 24 for r in got)


def test_stop_time_is_the_next_one(quiet_bench):
    now = quiet_bench.datetime.datetime.now()
    soon = (now + quiet_bench.datetime.timedelta(minutes=5)).strftime("%H:%M")
    past = (now - quiet_bench.datetime.timedelta(minutes=5)).strftime("%H:%M")
    assert 0 < quiet_bench.stop_time(soon) - now.timestamp() <= 6 * 60  # also across midnight
    assert 23 * 3600 < quiet_bench.stop_time(past) - now.timestamp() <= 24 * 3600
