"""Cache-size detection (Python's sysfs reader and the C++ one), the cache blocking the cpp kernel
derives from the sizes, and the measured FMA peak. (The cpp kernel's correctness under non-default
blocking is in test_cpp_kernel.py: its edge-shape tests run under small caches too.)"""

import math
import os

import pytest
from conftest import import_or_fail

from gemmlab import cpu_caches

cpp = import_or_fail("gemmlab._cpp")

PATHS = ["avx512", "avx2", "generic"]
KIB, MIB = 1 << 10, 1 << 20


def make_sysfs(root, entries):
    """A fake /sys/devices/system/cpu/cpu0/cache: entries are {file: text} per index directory."""
    for i, files in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        for name, text in files.items():
            (d / name).write_text(text + "\n")
    return root


def cache(level, kind, size, shared="0"):
    return {"level": str(level), "type": kind, "size": size, "shared_cpu_list": shared}


TREES = {
    # (what sysfs holds, what both readers must make of it)
    "xeon": ([cache(1, "Data", "48K"), cache(1, "Instruction", "32K"), cache(2, "Unified", "2048K"),
              cache(3, "Unified", "266240K", "0-1")], {"L1d": 48 * KIB, "L2": 2 * MIB, "L3": 130 * MIB}),
    "zen4, L3 shared by 16 CPUs": ([cache(1, "Data", "32K", "0,8"), cache(1, "Instruction", "32K", "0,8"),
                                     cache(2, "Unified", "1024K", "0,8"), cache(3, "Unified", "32768K", "0-7,16-23")],
                                    {"L1d": 32 * KIB, "L2": 1 * MIB, "L3": 2 * MIB}),
    "no L3, sizes in M and bytes": ([cache(1, "Data", "65536"), cache(2, "Unified", "4M")],
                                    {"L1d": 64 * KIB, "L2": 4 * MIB, "L3": 0}),
    "unified L1, no shared_cpu_list": ([{"level": "1", "type": "Unified", "size": "16K"},
                                        {"level": "2", "type": "Unified", "size": "512K"}],
                                       {"L1d": 16 * KIB, "L2": 512 * KIB, "L3": 0}),
}
UNREADABLE = {
    "empty directory": [],
    "no L2": [cache(1, "Data", "48K"), cache(3, "Unified", "32M")],
    "instruction caches only": [cache(1, "Instruction", "32K"), cache(2, "Instruction", "1M")],
    "garbage sizes": [cache(1, "Data", "lots"), cache(2, "Unified", "-3K")],
    "files missing": [{"level": "1", "type": "Data"}, {"level": "2", "size": "1M"}],
}


@pytest.mark.parametrize("name", TREES)
def test_readers_agree_on_fake_sysfs_trees(tmp_path, name):
    entries, want = TREES[name]
    root = make_sysfs(tmp_path / "cache", entries)
    assert cpu_caches.read_sysfs(root) == {**want, "source": "sysfs"}
    assert cpu_caches.cache_sizes(root) == {**want, "source": "sysfs"}
    assert cpp.cache_sizes(str(root)) == {**want, "source": "sysfs"}


@pytest.mark.parametrize("name", UNREADABLE)
def test_nothing_readable_falls_back_to_the_default(tmp_path, name):
    root = make_sysfs(tmp_path / "cache", UNREADABLE[name])
    assert cpu_caches.read_sysfs(root) is None
    assert cpu_caches.cache_sizes(root) == cpu_caches.DEFAULT
    assert cpp.cache_sizes(str(root)) == {}  # the C++ reader says so; cache_sizes() then tries cpuid, then the default


def test_missing_root_falls_back_to_the_default(tmp_path):
    assert cpu_caches.cache_sizes(tmp_path / "no such dir") == cpu_caches.DEFAULT
    assert cpp.cache_sizes(str(tmp_path / "no such dir")) == {}
    assert cpp.default_cache_sizes() == cpu_caches.DEFAULT  # one default for both


def test_this_cpu_caches_are_detected():
    found = cpp.cache_sizes()
    assert found["source"] in ("sysfs", "cpuid", "default")
    assert found["L1d"] >= 4 * KIB and found["L2"] >= found["L1d"] and found["L3"] >= 0
    from_sysfs = cpu_caches.read_sysfs()
    if from_sysfs is not None:  # where sysfs answers, both readers use it
        assert found == from_sysfs == cpu_caches.cache_sizes()


@pytest.fixture
def caches():
    """caches(l1d, l2, l3): derive the cpp kernel's blocking from these sizes; lifted afterwards."""
    yield cpp._set_cache_sizes
    cpp._set_cache_sizes(0, 0, 0)


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param not in cpp.supported_paths():
        pytest.skip(f"this CPU does not support the {request.param} path")
    monkeypatch.setenv("GEMMLAB_CPU", request.param)
    return request.param


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reference_caches_give_the_reference_blocking(path, dtype, caches):
    """On caches like the machine the values were measured on, nothing moves."""
    caches(48 * KIB, 2 * MIB, 64 * MIB)
    b = cpp.blocking(dtype)
    assert (b["KC"], b["MC"], b["NC"]) == b["reference"]
    assert b["caches"] == {"L1d": 48 * KIB, "L2": 2 * MIB, "L3": 64 * MIB, "source": "testing override"}
    assert b["reference"] == {("avx512", "float32"): (1024, 84, 2048), ("avx512", "float64"): (768, 56, 2048),
                              ("avx2", "float32"): (768, 144, 2048), ("avx2", "float64"): (256, 144, 2048),
                              ("generic", "float32"): (256, 96, 2048), ("generic", "float64"): (256, 96, 2048)}[path, dtype]


SIZES = [(l1d, l2, l3) for l1d in (1 * KIB, 16 * KIB, 32 * KIB, 48 * KIB, 64 * KIB, 1 * MIB)
         for l2 in (16 * KIB, 256 * KIB, 1 * MIB, 2 * MIB, 8 * MIB) for l3 in (64 * KIB, 2 * MIB, 1 << 40)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_derived_blocking_stays_valid(path, dtype, caches):
    """Any caches give whole micro-panels, positive and bounded blocks, which grow with the caches."""
    last = {}
    for l1d, l2, l3 in SIZES:
        caches(l1d, l2, l3)
        b = cpp.blocking(dtype)
        ref_kc, ref_mc, ref_nc = b["reference"]
        assert 16 <= b["KC"] <= 2 * ref_kc and b["KC"] % 8 == 0, (l1d, l2, l3, b)
        assert b["MR"] <= b["MC"] <= 4 * ref_mc and b["MC"] % b["MR"] == 0, (l1d, l2, l3, b)
        assert b["NR"] <= b["NC"] <= ref_nc and b["NC"] % b["NR"] == 0, (l1d, l2, l3, b)
        last[l1d, l2, l3] = b
    for (l1d, l2, l3), b in last.items():  # a larger L1d never shrinks KC; a larger L2, at the same KC, never shrinks MC
        for bigger in (l1d * 2, l1d * 4, l1d * 16):
            if (bigger, l2, l3) in last:
                assert last[bigger, l2, l3]["KC"] >= b["KC"]
        for bigger in (l2 * 2, l2 * 4, l2 * 8, l2 * 32):
            if (l1d, bigger, l3) in last:
                assert last[l1d, bigger, l3]["MC"] >= b["MC"]


def test_cache_override_is_checked(caches):
    with pytest.raises(ValueError, match="cache sizes must all be 1..2\\^40 bytes.*got L1d 0, L2 1024, L3 1"):
        caches(0, 1024, 1)
    with pytest.raises(ValueError, match="L3 -1"):
        caches(1024, 1024, -1)
    caches(1024, 1024, 1024)
    assert cpp.cache_sizes()["source"] == "testing override"
    caches(0, 0, 0)
    assert cpp.cache_sizes()["source"] != "testing override"


# --- the measured peak -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_peak_is_positive_and_finite_on_every_path(dtype):
    for path in cpp.supported_paths():
        for threads in range(1, min(2, os.cpu_count()) + 1):
            gflops = cpp.peak_gflops(dtype, threads, path)
            assert math.isfinite(gflops) and gflops > 0, (path, dtype, threads, gflops)
            assert cpp.peak_gflops(dtype, threads, path) == gflops  # measured once per process
            again = cpp.peak_gflops(dtype, threads, path, refresh=True)  # measured again, the higher kept
            assert again >= gflops and cpp.peak_gflops(dtype, threads, path) == again


def test_peak_follows_the_selected_path(monkeypatch):
    for path in cpp.supported_paths():
        monkeypatch.setenv("GEMMLAB_CPU", path)
        assert cpp.peak_gflops("float32", 1) == cpp.peak_gflops("float32", 1, path)


def test_peak_refuses_bad_arguments():
    with pytest.raises(ValueError, match="peak_gflops\\(\\) takes 'float32' or 'float64', got 'int8'"):
        cpp.peak_gflops("int8", 1)
    for threads in (0, -1, os.cpu_count() + 1):
        with pytest.raises(ValueError, match=f"peak_gflops: threads must be 1..{os.cpu_count()} .*got {threads}"):
            cpp.peak_gflops("float32", threads)
    with pytest.raises(ValueError, match="unknown CPU path 'sse9'; use avx512, avx2 or generic"):
        cpp.peak_gflops("float32", 1, "sse9")
    cpp._set_path_ceiling("generic")
    try:
        for path in ("avx2", "avx512"):
            with pytest.raises(ValueError, match=f"this CPU does not support the {path} path"):
                cpp.peak_gflops("float32", 1, path)
    finally:
        cpp._set_path_ceiling("")
