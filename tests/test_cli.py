"""The `gemmlab` command: what ladder, info, train and bench print and write, their options, and
that a wrong result makes them fail. In process (gemmlab.cli.main) on tiny inputs, except one run
of `python -m gemmlab`."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import CPU_BACKENDS
from rich.console import Console

import gemmlab
from gemmlab import autotune, cli

TIMING_FIELDS = {"first_call", "per_call", "repeats", "calls_per_repeat", "samples", "error_ratio"}


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of a rich table as printed, header first, keyed by the first column: each cell's
    text, the lines a cell was wrapped over joined by spaces."""
    rows = {}
    for line in text.splitlines():
        bar = line[:1]
        if bar not in ("┃", "│"):  # (the header row is drawn with heavy bars)
            continue
        cells = [c.strip() for c in line.strip(bar).split(bar)]
        if cells[0]:
            key, rows[cells[0]] = cells[0], cells
        else:  # a continuation line of the row above
            rows[key] = [f"{old} {new}".strip() for old, new in zip(rows[key], cells)]
    return rows


def check_ladder_json(data, shape, dtype, threads, names, repeats):
    assert set(data) == {"shape", "dtype", "threads", "results", "wrong"}
    assert data["shape"] == list(shape) and data["dtype"] == dtype and data["threads"] == threads
    assert list(data["results"]) == [*names, cli.BARE_TORCH]  # ladder order, the yardstick last
    assert data["wrong"] == {}
    for name, r in data["results"].items():
        assert set(r) == TIMING_FIELDS, name
        assert isinstance(r["repeats"], int) and isinstance(r["calls_per_repeat"], int)
        assert r["repeats"] == max(3, repeats) or 3 <= r["repeats"] < repeats  # slow ones get fewer, never under 3
        assert r["calls_per_repeat"] >= 1 and len(r["samples"]) == r["repeats"]  # each repeat's seconds per call
        assert 0 < r["per_call"] < 10 and 0 < r["first_call"] < 60
        assert 0 <= r["error_ratio"] <= 1, name


def test_ladder_runs_every_cpu_backend_from_the_command_line(tmp_path):
    path = tmp_path / "ladder.json"
    result = subprocess.run(
        [sys.executable, "-m", "gemmlab", "ladder", "--shape", "3", "17", "4", "--repeats", "3", "--json", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert list(rows)[1:] == [*CPU_BACKENDS, cli.BARE_TORCH]  # (the first row is the header)
    assert "x loops" in result.stdout and "x torch" in result.stdout
    data = json.loads(path.read_text())
    check_ladder_json(data, (3, 17, 4), "float32", torch.get_num_threads(), CPU_BACKENDS, 3)
    loops, bare = data["results"]["loops"]["per_call"], data["results"][cli.BARE_TORCH]["per_call"]
    for name, r in data["results"].items():  # the table's ratios are the JSON's timings' (as rounded there)
        assert float(rows[name][4].replace(",", "")) == pytest.approx(loops / r["per_call"], abs=0.501)
        assert float(rows[name][5]) == pytest.approx(bare / r["per_call"], rel=0.006)


def test_ladder_options(tmp_path, capsys, kernel_calls, threads):
    seen = kernel_calls("cpp")
    paths = [tmp_path / f"ladder{i}.json" for i in range(3)]
    for path, seed in zip(paths, (5, 5, 6)):
        args = ["ladder", "--shape", "6", "19", "5", "--dtype", "float64", "--threads", "1", "--backends", "cpp", "torch",
                "--repeats", "4", "--seed", str(seed), "--json", str(path)]
        assert cli.main(args) == 0
    assert torch.get_num_threads() == 1
    out = capsys.readouterr().out
    assert "(6, 19) @ (19, 5) float64, 1 thread(s)" in out
    assert {(c.dtype, c.a, c.b) for c in seen} == {(torch.float64, (6, 19), (19, 5))}  # the shape and dtype asked for
    runs = [json.loads(p.read_text()) for p in paths]
    for data in runs:
        check_ladder_json(data, (6, 19, 5), "float64", 1, ["cpp", "torch"], 4)
    ratios = [data["results"]["cpp"]["error_ratio"] for data in runs]
    assert ratios[0] == ratios[1] != ratios[2]  # the seed picks the operands


def test_ladder_fails_on_a_wrong_result(tmp_path, capsys, break_backend):
    break_backend("cpp")
    path = tmp_path / "ladder.json"
    assert cli.main(["ladder", "--shape", "5", "9", "4", "--backends", "numba", "cpp", "torch", "--repeats", "3",
                     "--json", str(path)]) == 1
    out = capsys.readouterr().out
    assert "WRONG: backend 'cpp' on (5, 9) @ (9, 4) float32 is off by" in out
    assert list(table_rows(out))[1:] == ["numba", "torch", cli.BARE_TORCH]  # the wrong one is not timed
    data = json.loads(path.read_text())
    assert list(data["results"]) == ["numba", "torch", cli.BARE_TORCH]
    assert list(data["wrong"]) == ["cpp"] and data["wrong"]["cpp"] > 1


def test_info_text_lists_every_backend(capsys):
    assert cli.main(["info"]) == 0
    rows = table_rows(capsys.readouterr().out)
    header, *names = rows
    assert rows[header] == ["backend", "available", "devices", "dtypes", "notes"]
    infos = gemmlab.backend_info()
    assert names == [i["name"] for i in infos]
    for info in infos:
        name, available, devices, dtypes, notes = rows[info["name"]]
        assert available == ("yes" if info["available"] else "no")
        assert devices == ", ".join(info["devices"]) and dtypes == ", ".join(info["dtypes"])
        assert notes == " ".join((info["reason"] or info["note"] or info["summary"]).split())


def test_info_shows_caches_blocking_and_peaks(capsys, monkeypatch):
    """The CPU as the cpp kernel sees it: cache sizes and their source, the blocking derived from
    them, and the measured peak beside the computed cross-check."""
    from gemmlab import _cpp, bench

    monkeypatch.setattr(cli, "_console", lambda: Console(width=1000))  # one line each
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    caches = _cpp.cache_sizes()
    assert f"(from {caches['source']})" in out and f"L1d {caches['L1d'] >> 10} KiB" in out
    threads = min(torch.get_num_threads(), os.cpu_count())
    for name, dtype in bench.DTYPES.items():
        b = _cpp.blocking(name)
        assert (f"cpp {name} on the {b['path']} path: MR {b['MR']}, NR {b['NR']}, KC {b['KC']}, MC {b['MC']}, NC {b['NC']} "
                f"(from the caches; reference KC, MC, NC {b['reference']})") in out
        assert f"peak: measured {_cpp.peak_gflops(name, threads):.0f} GFLOP/s, computed " in out


def test_info_without_the_extension_still_shows_the_caches(monkeypatch):
    from gemmlab import bench, cpu_caches

    monkeypatch.delattr(gemmlab, "_cpp")
    monkeypatch.setitem(sys.modules, "gemmlab._cpp", None)  # as if it had not been built
    *_, caches = cli._cpu_status()
    assert f"(from {cpu_caches.cache_sizes()['source']}); cpp unavailable" in caches
    assert bench.measured_peak(1, torch.float32) is None


def test_info_json_is_backend_info(capsys):
    assert cli.main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == gemmlab.backend_info()


def test_train_options(tmp_path, capsys, monkeypatch, kernel_calls, threads):
    calls = kernel_calls("cython")
    monkeypatch.setattr(cli, "_console", lambda: Console(width=200))  # no progress bar redraws in the output
    path = tmp_path / "train.json"
    options = {"--backend": "cython", "--model": "scratch", "--loss": "mse", "--epochs": "2", "--hidden": "7",
               "--lr": "0.01", "--momentum": "0.5", "--batch-size": "32", "--seed": "3", "--threads": "1"}
    argv = ["train", *[x for option in options.items() for x in option]]
    assert cli.main([*argv, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "training a scratch MLP (hidden 7, loss mse) with backend 'cython', 1 thread(s), seed 3" in out
    assert "epoch   1" in out and "epoch   2" in out and "epoch   3" not in out
    assert torch.get_num_threads() == 1
    data = json.loads(path.read_text())
    assert set(data) == {"config", "processes", "threads", "dataset", "epochs"}
    assert data["processes"] == 1 and data["threads"] == 1
    assert data["config"] == {"backend": "cython", "model": "scratch", "loss": "mse", "epochs": 2, "hidden": 7, "lr": 0.01,
                              "momentum": 0.5, "batch_size": 32, "seed": 3, "data": None}
    assert data["dataset"].startswith("digits")
    assert [e["epoch"] for e in data["epochs"]] == [1, 2]
    for e in data["epochs"]:
        assert set(e) == {"epoch", "train_loss", "valid_loss", "valid_accuracy", "seconds"}
        assert math.isfinite(e["train_loss"]) and e["train_loss"] > 0 and math.isfinite(e["valid_loss"]) and e["valid_loss"] > 0
        assert 0 <= e["valid_accuracy"] <= 1 and e["seconds"] > 0
        assert f"valid accuracy {e['valid_accuracy']:.2%}" in out
    # The products ran on the chosen backend, with the asked-for batch size and hidden width: x @ w1
    # (32, 64) @ (64, 7), w1's gradient (64, 32) @ (32, 7), out.g @ w2.T (32, 1) @ (1, 7).
    products = {(*c.a, c.b[1]) for c in calls}
    assert {(32, 64, 7), (64, 32, 7), (32, 1, 7)} <= products and {c.dtype for c in calls} == {torch.float32}
    again = tmp_path / "again.json"
    assert cli.main([*argv, "--json", str(again)]) == 0
    assert json.loads(again.read_text())["epochs"][-1]["valid_loss"] == data["epochs"][-1]["valid_loss"]  # seeded


def test_tune_measures_writes_shows_and_clears(tuned_table, capsys, monkeypatch, threads):
    monkeypatch.setattr(cli, "_console", lambda: Console(width=200))
    argv = ["tune", "--shape", "9", "17", "5", "--shape", "3", "8", "2", "--dtype", "float64", "--backend", "cpp", "torch",
            "--threads", "1", "--repeats", "3"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "tuning auto on 2 products (--shape), 1 thread(s), candidates cpp, torch" in out
    assert f"tuned table written to {tuned_table}" in out
    entries = {e.product: e for e in autotune.read().values()}
    assert sorted(entries) == ["3x8 @ 8x2 RR", "9x17 @ 17x5 RR"]
    rows = table_rows(out)
    assert rows["product"] == ["product", "dtype", "auto runs", "x torch", "cpp", "torch"]
    for name, e in entries.items():
        assert e.bucket[0] == torch.float64 and e.bucket[-1] == 1 and set(e.seconds) == {"cpp", "torch"}
        assert e.backend == autotune.choose(e.seconds)
        assert rows[name][1:4] == ["float64", e.backend, f"{e.speedup:.2f}"]

    assert cli.main(["info"]) == 0
    assert f"auto: tuned table in use: {tuned_table} (2 buckets)" in capsys.readouterr().out
    assert cli.main(["tune", "--show"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["measured on"] == ["measured on", *autotune.bucket_fields(), "backend", "x torch"]
    for name, e in entries.items():
        assert rows[name] == [name, *(str(v).removeprefix("torch.") for v in e.bucket), e.backend, f"{e.speedup:.2f}"]

    assert cli.main(["tune", "--clear"]) == 0
    assert f"removed tuned table {tuned_table}" in capsys.readouterr().out and not tuned_table.exists()
    assert cli.main(["info"]) == 0
    assert f"auto: no tuned table in use (looked for {tuned_table})" in capsys.readouterr().out
    assert cli.main(["tune", "--show"]) == 0
    assert f"no tuned table at {tuned_table}" in capsys.readouterr().out


def test_tune_reports_a_wrong_backend_and_never_chooses_it(tuned_table, capsys, monkeypatch, break_backend):
    monkeypatch.setattr(cli, "_console", lambda: Console(width=200))
    break_backend("cython")
    assert cli.main(["tune", "--shape", "9", "17", "5", "--backend", "cython", "torch", "--repeats", "3"]) == 1
    out = capsys.readouterr().out
    assert "WRONG: cython on 9x17 @ 17x5 float32 is off by more than the allowed error (never chosen)" in out
    assert table_rows(out)["9x17 @ 17x5 RR"][2:5] == ["torch", "1.00", "WRONG"]
    assert [(e.backend, e.seconds["cython"]) for e in autotune.read().values()] == [("torch", None)]
    assert cli.main(["tune", "--shape", "3", "8", "2", "--backend", "cython", "--repeats", "3"]) == 1  # nothing right
    out = capsys.readouterr().out
    assert "WRONG: cython on 3x8 @ 8x2 float32" in out and table_rows(out)["3x8 @ 8x2 RR"][2:5] == ["-", "-", "WRONG"]
    assert [e.product for e in autotune.read().values()] == ["9x17 @ 17x5 RR"]  # nothing saved for it


def test_tune_times_the_candidates_together_in_interleaved_rounds(tuned_table, monkeypatch):
    """One noisy stretch must not decide a bucket: the right candidates of a product are timed in
    --rounds rounds taken in turn through them, and the fastest by its median of rounds wins."""
    from gemmlab import timing

    calls = []

    def fake_rounds(fns, rounds, interleave, **options):
        calls.append((sorted(fns), rounds, interleave, options["repeats"]))
        return {name: timing.Timing(0.0, {"cpp": 1.0, "torch": 2.0}.get(name, 3.0), rounds * 3, 1) for name in fns}

    monkeypatch.setattr(timing, "measure_rounds", fake_rounds)
    assert cli.main(["tune", "--shape", "9", "17", "5", "--backend", "numba", "cpp", "torch", "--rounds", "4"]) == 0
    assert calls == [(["cpp", "numba", "torch"], 4, True, 3)]
    assert [(e.backend, e.seconds) for e in autotune.read().values()] == [("cpp", {"numba": 3.0, "cpp": 1.0, "torch": 2.0})]


def test_tune_defaults_to_the_mlp_preset(tuned_table, monkeypatch):
    asked = []
    monkeypatch.setattr(autotune, "products", lambda presets, shapes, dtype: asked.append((presets, shapes, dtype)) or [])
    assert cli.main(["tune"]) == 0
    assert cli.main(["tune", "--shape", "2", "3", "4", "--dtype", "float32", "float64"]) == 0
    assert cli.main(["tune", "--preset", "square", "--preset", "batched"]) == 0
    assert asked == [(["mlp"], [], torch.float32), ([], [[2, 3, 4]], torch.float32), ([], [[2, 3, 4]], torch.float64),
                     (["square", "batched"], [], torch.float32)]


def test_unknown_choices_are_refused(capsys):
    for argv in (["ladder", "--backends", "blas"], ["train", "--model", "cnn"], ["bench", "--dtype", "int8"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
        assert "invalid choice" in capsys.readouterr().err
