"""This CPU's data-cache sizes, read from Linux's sysfs, and the cache blocking (KC, MC, NC) the
numba and cython kernels derive from them; pure Python, usable without the compiled extension.

The C++ kernel reads the same files (csrc/gemm/cpu_caches.cpp, with cpuid as a second source) and
derives its blocking by the same rule (derive_blocks in csrc/gemm/blocking.h);
`gemmlab._cpp.cache_sizes()` reports what it uses. Sizes are bytes: L1d and L2 per core, L3 as the
share of one logical CPU (its size over the CPUs in its shared_cpu_list), 0 when there is none.
"""

from __future__ import annotations

from pathlib import Path

SYSFS_CACHES = "/sys/devices/system/cpu/cpu0/cache"
# When nothing can be read: typical of recent x86-64 cores (the C++ reader's default too).
DEFAULT = {"L1d": 32 << 10, "L2": 1 << 20, "L3": 2 << 20, "source": "default"}

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(text: str) -> int:
    """'48K', '2048K', '1M', '32768' -> bytes; 0 when unreadable."""
    text = text.strip().upper()
    digits = text.rstrip("KMG")
    try:
        value = int(digits)
    except ValueError:
        return 0
    return value * _UNITS[text[len(digits):][:1]] if value > 0 else 0


def _cpu_count(cpu_list: str) -> int:
    """'0-1,4,6-7' -> 5; 1 when unreadable (the cache is then counted as the CPU's own)."""
    count = 0
    try:
        for part in cpu_list.strip().split(","):
            first, _, last = part.partition("-")
            count += int(last) - int(first) + 1 if last else 1
    except ValueError:
        return 1
    return max(count, 1)


def read_sysfs(root: str | Path = SYSFS_CACHES) -> dict | None:
    """{'L1d', 'L2', 'L3', 'source': 'sysfs'} from a sysfs cache directory's index*/ entries, or None
    unless it holds both an L1 data (or unified) cache and an L2."""
    found = {"L1d": 0, "L2": 0, "L3": 0}
    try:
        entries = sorted(Path(root).glob("index*"))
    except OSError:
        return None
    for entry in entries:
        try:
            level, kind, size = ((entry / name).read_text().strip() for name in ("level", "type", "size"))
        except OSError:
            continue
        if kind not in ("Data", "Unified") or level not in ("1", "2", "3"):
            continue
        try:
            sharing = _cpu_count((entry / "shared_cpu_list").read_text())
        except OSError:
            sharing = 1
        found[{"1": "L1d", "2": "L2", "3": "L3"}[level]] = _size(size) // sharing if level == "3" else _size(size)
    if found["L1d"] <= 0 or found["L2"] <= 0:
        return None
    return {**found, "source": "sysfs"}


def cache_sizes(root: str | Path = SYSFS_CACHES) -> dict:
    """This CPU's caches from sysfs, else DEFAULT (the source field says which)."""
    return read_sysfs(root) or dict(DEFAULT)


# The caches every kernel's reference blocking was measured with (the Sapphire Rapids class Xeon:
# L1d 48 KiB, L2 2 MiB per core); csrc/gemm/blocking.h's REFERENCE_L1D and REFERENCE_L2.
REFERENCE_L1D, REFERENCE_L2 = 48 << 10, 2 << 20


def derive_blocking(caches: dict, itemsize: int, mr: int, nr: int, reference: tuple[int, int, int]) -> tuple[int, int, int]:
    """(KC, MC, NC) for these caches (as cache_sizes() gives them): the reference values, measured on
    the reference caches for an MR x NR tile (NR in elements) of itemsize-byte elements, scaled so
    that each block keeps its share of its cache. The rule of derive_blocks in csrc/gemm/blocking.h,
    to the integer: equal to the reference on caches like the reference machine's.

    KC with L1d (the KC x NR panel of B; a multiple of 8, 16 to 2x the reference); MC with L2 (the
    MC x KC block of A; a multiple of MR, MR to 4x the reference); NC so the KC x NC block of B takes
    at most half of this CPU's share of L3 (L2 without one; a multiple of NR, NR to the reference)."""
    ref_kc, ref_mc, ref_nc = reference
    kc = _clamp(ref_kc * caches["L1d"] // REFERENCE_L1D // 8 * 8, 16, 2 * ref_kc)
    a_block_bytes = ref_mc * ref_kc * itemsize * caches["L2"] // REFERENCE_L2
    mc = _clamp(a_block_bytes // (kc * itemsize) // mr * mr, mr, 4 * ref_mc)
    last_level = caches["L3"] if caches["L3"] > 0 else caches["L2"]
    nc = _clamp(last_level // 2 // (kc * itemsize) // nr * nr, nr, ref_nc)
    return kc, mc, nc


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))
