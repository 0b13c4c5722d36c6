"""scripts/profile_kernel.py: its sorting of perf's samples into categories, and one real profile
where perf can record here."""

import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "profile_kernel.py"
profile_kernel = runpy.run_path(str(SCRIPT))

# Lines as `perf report --stdio -n --sort dso,sym -t '|'` prints them (symbols from real profiles).
REPORT = """\
# Samples: 12K of event 'cpu-clock'
# Overhead|Samples|Shared Object|Symbol
#
70.00%|700|[JIT] tid 12664|[.] _update_tileB4v170B76c8tJTIeFIjxB2IKSgI4CrvSCKg1MMbCQQPKkLTj
5.00%|50|[JIT] tid 12664|[.] _pack_a_blockB4v168B76c8tJTIeFIjxB2IKSgI4CrvSCKg1MMbCQQPKkLT
8.00%|80|libtorch_cpu.so|[.] mkl_blas_avx512_sgemm_kernel_0_b0
3.00%|30|libtorch_cpu.so|[.] mkl_blas_avx512_sgemm_scopy_down48_ea
4.00%|40|_cpp.cpython-311-x86_64-linux-gnu.so|[.] gemmlab::avx512::micro_kernel<gemmlab::avx512::F32, 14, 32, 2, 14>
2.00%|20|_cpp.cpython-311-x86_64-linux-gnu.so|[.] gemmlab::(anonymous namespace)::Compiled<gemmlab::Avx512Path<float> >::task
0.50%|5|_cpp.cpython-311-x86_64-linux-gnu.so|[.] gemmlab::(anonymous namespace)::wait_for_others
1.00%|10|_cython_kernel_avx512.cpython-311-x86_64-linux-gnu.so|[.] __pyx_fuse_0__pyx_f_7gemmlab_8backends_21_cython_kernel_avx512_run_task
3.00%|30|libgomp.so.1|[.] 0x000000000001e02a
1.00%|10|libscipy_openblas64_-32a4b2a6.so|[.] blas_thread_server
2.00%|20|libpython3.11.so.1.0|[.] _PyEval_EvalFrameDefault
1.00%|10|[kernel.kallsyms]|[k] handle_softirqs
"""


def test_samples_are_sorted_into_categories():
    assert profile_kernel["parse_report"](REPORT) == {
        "micro-kernel": 700 + 80 + 40, "threads": 30 + 5 + 10, "rest of the product": 50 + 30 + 20 + 10, "other": 20 + 10}


def _perf_can_record() -> bool:
    if shutil.which("perf") is None:
        return False
    try:
        return subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"],
                              capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _perf_can_record(), reason="perf cannot record cpu-clock samples here")
def test_a_real_profile_finds_the_micro_kernel():
    run = subprocess.run([sys.executable, str(SCRIPT), "--backend", "cpp", "--size", "256", "--threads", "1",
                          "--seconds", "0.5"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith("cpp "))
    kernel_share = float(row.split()[3].rstrip("%"))
    assert kernel_share > 50, run.stdout  # a 256^3 product spends most of its time multiplying
