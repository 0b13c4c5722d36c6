"""The asv suite's own plumbing (docs/asv.md): what `asv continuous` judges, and the slowdown switch
that shows it a deliberate regression. No benchmark is timed here and no asv command runs (`make
test`'s asv smoke run does that); speed is never asserted."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks package and scripts/ live beside src/
common = importlib.import_module("benchmarks.common")
bench_matmul = importlib.import_module("benchmarks.bench_matmul")
bench_network = importlib.import_module("benchmarks.bench_network")


def load_demo():
    spec = importlib.util.spec_from_file_location("asv_regression_demo", ROOT / "scripts" / "asv_regression_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fresh(monkeypatch):
    """No slowdown from the environment, and the per-process caches of prepared work emptied."""
    for var in ("GEMMLAB_ASV_SLOWDOWN", "ASV_COMMIT", "ASV_CONF_DIR"):
        monkeypatch.delenv(var, raising=False)
    common.prepared_product.cache_clear()
    bench_network.prepared_step.cache_clear()
    yield monkeypatch
    common.prepared_product.cache_clear()
    bench_network.prepared_step.cache_clear()


# Lists a benchmark module's benchmarks with their sampling, as asv would discover them.
LIST_BENCHMARKS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import benchmarks.bench_matmul, benchmarks.bench_network, benchmarks.bench_numba, benchmarks.bench_cuda
found = []
for mod in (benchmarks.bench_matmul, benchmarks.bench_network, benchmarks.bench_numba, benchmarks.bench_cuda):
    for name, cls in vars(mod).items():
        for attr in dir(cls) if isinstance(cls, type) else ():
            if attr.startswith(("time_", "track_", "peakmem_", "mem_")):
                found.append(dict(name=name + "." + attr, rounds=getattr(cls, "rounds", 1),
                                  repeat=getattr(cls, "repeat", 0), number=getattr(cls, "number", 0),
                                  sample_time=getattr(cls, "sample_time", 0.01)))
print(json.dumps(found))
"""


def list_benchmarks(**env_vars) -> list[dict]:
    """The benchmarks asv would discover, in a fresh process with only these GEMMLAB_ASV_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMMLAB_ASV_")} | env_vars
    out = subprocess.run([sys.executable, "-c", LIST_BENCHMARKS, str(ROOT)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_default_selection_is_only_sampled_time_benchmarks():
    """Run as `asv continuous` runs it (no GEMMLAB_ASV_* variables), the suite holds only `time_`
    benchmarks, sampled once in each of 8 processes per commit, a sample being as many warm calls as
    fill 0.1 s (number 0: asv calibrates it): nothing asv would judge from a single number, or read
    the wrong way round (GFLOP/s), and no verdict drawn from many samples of one process."""
    found = list_benchmarks()
    assert {"MatMul.time_matmul", "PeerMatMul.time_matmul", "PythonLevels.time_matmul", "TrainingStep.time_step"} <= {
        b["name"] for b in found}
    for b in found:
        assert b["name"].split(".")[1].startswith("time_"), b
        assert b["rounds"] >= 8 and b["number"] == 0 and b["sample_time"] >= 0.05 and b["repeat"] == 1, b


def test_asv_can_judge_one_sample_per_process():
    """With one sample per process, asv's Mann-Whitney test must still be able to say "different"
    for Sampled.rounds processes a side (it cannot below 7 against 7 at p < 0.002), and must not for
    two speed modes shared by both commits in unequal numbers (what several processes of unchanged
    code give), which many samples from each of 2 processes did."""
    stats = pytest.importorskip("asv._stats")
    from benchmarks.common import Sampled

    n = Sampled.rounds
    fast, slow = [3.7 + 0.01 * i for i in range(n)], [4.8 + 0.01 * i for i in range(n)]
    assert stats.is_different(fast, [x * 1.25 for x in fast], None, None)  # a 25% slowdown, steady processes
    modes_a = fast[: n - 2] + slow[: 2]  # 2 of 8 processes in the slow mode ...
    modes_b = fast[: 2] + slow[: n - 2]  # ... and 6 of 8
    assert not stats.is_different(modes_a, modes_b, None, None)
    per_process = [modes_a[i] + 0.001 * j for i in range(n) for j in range(20)]  # what 20 samples a process gave
    assert stats.is_different(per_process, [modes_b[i] + 0.001 * j for i in range(n) for j in range(20)], None, None)


def test_benchmarks_are_forked_from_one_import_per_round():
    """asv.conf.json's launch method: the suite imported once per round and commit, each benchmark
    in a fresh process forked from it (8 rounds with "spawn" would re-import torch ~600 times)."""
    conf = json.loads("\n".join(line for line in (ROOT / "asv.conf.json").read_text().splitlines()
                                 if not line.lstrip().startswith("//")))
    assert conf["launch_method"] == "forkserver"


def test_products_and_backends_come_from_gemmlab_unchanged():
    """The suite's shapes are `gemmlab bench`'s presets and its backends the registry's, and asv's
    parameter names stay what they were (results keep their history)."""
    from gemmlab.bench import PRESETS
    from gemmlab.registry import backend_names

    if common.SMOKE or common.EXTRA:
        pytest.skip("the default selection's names (GEMMLAB_ASV_SMOKE or GEMMLAB_ASV_EXTRA is set)")
    assert common.PRODUCT_CASES == ["float32 5x784x10", "float32 1024x1024x1024", "float64 1024x1024x1024",
                                    "float32 50000x784x50"]
    assert (common.TINY, common.MLP_FORWARD, common.MLP_GRAD_INPUT, common.MLP_GRAD_WEIGHT) == (*PRESETS["tiny"], *PRESETS["mlp"])
    assert (common.SMALL_CUBE, common.CUBE, common.LARGE_CUBE) == (256, 1024, 4096)
    assert common.FAST_BACKENDS == ("einsum", "numba", "cython", "cpp", "torch") == tuple(backend_names("cpu", "library", "compiled"))
    assert common.PYTHON_LEVELS == ("loops", "elementwise", "broadcast")
    assert common.GPU_BACKENDS == ("cuda", "numba_cuda", "torch")
    assert (common.N_TRAIN, common.N_IN, common.N_HIDDEN, common.N_OUT) == (50000, 784, 50, 10)


def test_older_commits_without_backend_names_get_the_same_lists():
    """asv runs this suite on older commits too: a registry without backend_names gives the same lists."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import gemmlab.registry as r; del r.backend_names\n"
            "import benchmarks.common as c\n"
            "print(json.dumps([c.PYTHON_LEVELS, c.FAST_BACKENDS, c.CPU_BACKENDS, c.GPU_BACKENDS]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMMLAB_ASV_")}
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [list(x) for x in (common.PYTHON_LEVELS, common.FAST_BACKENDS, common.CPU_BACKENDS,
                                                         common.GPU_BACKENDS)]


@pytest.mark.parametrize("variable", ["GEMMLAB_ASV_EXTRA", "GEMMLAB_ASV_SMOKE"])
def test_extras_exist_for_asv_run_and_the_smoke_run(variable):
    """GEMMLAB_ASV_EXTRA=1 adds the informational benchmarks; the smoke run in `make test` has them
    too, so none of them rots unseen (but the cold numba compile, which the warm-cache one repeats)."""
    names = {b["name"] for b in list_benchmarks(**{variable: "1"})}
    assert {"Gflops.track_gflops", "DispatchOverhead.track_overhead_us", "NumbaFirstCall.track_compile_warm_cache",
            "ScratchNetwork.peakmem_step", "TorchNetwork.time_backward", "MatMul.time_matmul"} <= names
    assert ("NumbaFirstCall.track_compile_cold_cache" in names) == (variable == "GEMMLAB_ASV_EXTRA")


@pytest.mark.parametrize(
    "spec, expected",
    [("", {}), ("cpp:1.25", {"cpp": 1.25}), (" cpp : 1.25 , numba:2 ", {"cpp": 1.25, "numba": 2.0}),
     ("# a comment, with a comma\nnumpy.matmul:1.5  # trailing: 2\n", {"numpy.matmul": 1.5}), ("torch.nn.Linear:1", {"torch.nn.Linear": 1.0})],
)
def test_parse_slowdown(spec, expected):
    assert common.parse_slowdown(spec) == expected


@pytest.mark.parametrize(
    "spec, offending",
    [("cpp", "cpp"), ("cpp:", "cpp:"), ("cpp:fast", "cpp:fast"), ("cpp:0.8", "cpp:0.8"), ("cpp:nan", "cpp:nan"),
     ("nosuch:1.5", "nosuch:1.5"), ("cpp:1.25,gpu:2", "gpu:2")],
)
def test_parse_slowdown_rejects_bad_entries_by_name(spec, offending):
    with pytest.raises(ValueError, match=f"slowdown entry '{offending}'"):
        common.parse_slowdown(spec)


def test_slowed_stretches_each_call_by_the_factor():
    """With a fake clock (the product 'takes' 1.0), the slowed call returns at 1.25, not before."""
    now = [0.0]
    calls = []

    def clock():
        now[0] += 0.001  # each reading of the clock takes a little time
        return now[0]

    def product():
        calls.append(now[0])
        now[0] += 1.0

    run = common.slowed(product, 1.25, clock=clock)
    run()
    assert len(calls) == 1 and run.slowdown == 1.25
    assert 1.25 <= now[0] <= 1.26
    assert common.slowed(product, 1.0) is product  # no switch, no wrapper: nothing added to the timing


def test_benchmark_setup_takes_the_switch_for_its_backend_only(fresh):
    fresh.setenv("GEMMLAB_ASV_SLOWDOWN", "cpp:1.25,torch.nn.Linear:1.5")
    product = "float32 5x784x10"
    slowed, plain, peer = bench_matmul.MatMul(), bench_matmul.MatMul(), bench_matmul.PeerMatMul()
    slowed.setup("cpp", product)
    plain.setup("numba", product)
    peer.setup("numpy.matmul", product)
    assert slowed.run.slowdown == 1.25
    assert not hasattr(plain.run, "slowdown") and not hasattr(peer.run, "slowdown")
    slowed.time_matmul("cpp", product)  # still runs the product
    step = bench_network.TrainingStep()
    step.setup("torch.nn.Linear")
    assert step.run.slowdown == 1.5


def test_setup_runs_the_product_once_before_timing_and_only_once_per_process(fresh, monkeypatch):
    calls = []
    monkeypatch.setattr(common, "warmed", lambda fn: calls.append(fn) or fn)
    bench = bench_matmul.MatMul()
    for _ in range(3):  # asv re-runs setup before every sample
        bench.setup("cpp", "float32 5x784x10")
    assert len(calls) == 1


def make_repo(path: Path, slowdown: str | None) -> str:
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True).stdout.strip()

    path.mkdir(exist_ok=True)
    if not (path / ".git").exists():
        git("init", "--quiet")
        git("config", "user.name", "t")
        git("config", "user.email", "t@localhost")
    (path / "README.md").write_text(str(slowdown))
    if slowdown is not None:
        (path / "benchmarks").mkdir(exist_ok=True)
        (path / common.SLOWDOWN_FILE).write_text(slowdown)
        git("add", common.SLOWDOWN_FILE)
    elif (path / common.SLOWDOWN_FILE).exists():
        git("rm", "--quiet", common.SLOWDOWN_FILE)
    git("add", "README.md")
    git("commit", "--quiet", "-m", "x")
    return git("rev-parse", "HEAD")


def test_the_switch_is_read_at_the_commit_asv_measures(fresh, tmp_path):
    """asv sets ASV_COMMIT and ASV_CONF_DIR in each benchmark process: the file as committed there
    decides, whatever the working tree holds."""
    plain = make_repo(tmp_path, None)
    slowed = make_repo(tmp_path, "cpp:1.3\n")
    after = make_repo(tmp_path, None)
    fresh.setenv("ASV_CONF_DIR", str(tmp_path))
    for commit, expected in ((plain, {}), (slowed, {"cpp": 1.3}), (after, {})):
        fresh.setenv("ASV_COMMIT", commit)
        assert common.slowdowns() == expected
    fresh.setenv("GEMMLAB_ASV_SLOWDOWN", "numba:2")  # the variable wins over the file
    fresh.setenv("ASV_COMMIT", slowed)
    assert common.slowdowns() == {"numba": 2.0}
    fresh.delenv("GEMMLAB_ASV_SLOWDOWN")
    fresh.setenv("ASV_COMMIT", "0" * 40)
    with pytest.raises(RuntimeError, match="slowdown.cfg at commit 0000"):
        common.slowdowns()


def test_no_slowdown_is_committed_here():
    """The switch's file exists only in the demo's throw-away commits, never in this repository."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", common.SLOWDOWN_FILE], capture_output=True, text=True, check=True)
    assert tracked.stdout.strip() == ""


def test_regression_demo_makes_a_readme_only_commit_and_a_slowdown_commit(fresh, tmp_path, monkeypatch):
    """The demo's commits, without asv: A changes README.md only, B only adds the switch's file, and
    the suite reads the slowdown at B and none at A."""
    demo = load_demo()
    clone = tmp_path / "clone"
    base, readme_only, slowed = demo.make_commits(clone, "numba", 1.25)

    def changed(a, b):
        return subprocess.run(["git", "-C", str(clone), "diff", "--name-only", a, b], capture_output=True, text=True, check=True).stdout.split()

    assert changed(base, readme_only) == ["README.md"]
    assert changed(readme_only, slowed) == [common.SLOWDOWN_FILE]
    monkeypatch.setenv("ASV_CONF_DIR", str(clone))
    monkeypatch.setenv("ASV_COMMIT", readme_only)
    assert common.slowdowns() == {}
    monkeypatch.setenv("ASV_COMMIT", slowed)
    assert common.slowdowns() == {"numba": 1.25}


def test_regression_demo_reads_asv_verdicts():
    demo = load_demo()
    table = (
        "| Change   | Before [aaaa]   | After [bbbb]   |   Ratio | Benchmark (Parameter)   |\n"
        "|----------|-----------------|----------------|---------|-------------------------|\n"
        "| +        | 10.0±0.1ms      | 12.5±0.1ms     |    1.25 | bench_matmul.MatMul.time_matmul('cpp', 'float32 1024x1024x1024') |\n"
        "\nSOME BENCHMARKS HAVE CHANGED SIGNIFICANTLY.\nPERFORMANCE DECREASED.\n"
    )
    assert demo.verdict(table) == "PERFORMANCE DECREASED."
    assert len(demo.flagged_rows(table)) == 1
    assert demo.flagged_rows("BENCHMARKS NOT SIGNIFICANTLY CHANGED.\n") == []
    assert demo.verdict("Traceback ...") .startswith("no verdict")
