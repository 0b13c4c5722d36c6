"""Timing that holds up on a shared, noisy machine: warm up, calibrate, repeat, take the median."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Timing:
    first_call: float  # seconds; includes JIT compilation and caches warming
    per_call: float  # median seconds per call over the repeats
    repeats: int
    calls_per_repeat: int


def measure(fn: Callable[[], object], repeats: int = 7, min_repeat_time: float = 0.05, max_total: float = 5.0) -> Timing:
    """Time fn(): one untimed-for-the-median first call, then `repeats` samples of enough calls
    each to last min_repeat_time; slow functions get fewer repeats (at least 3) to stay near max_total."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    start = time.perf_counter()
    fn()
    one = max(time.perf_counter() - start, 1e-9)
    number = max(1, int(min_repeat_time / one))
    repeats = max(3, min(repeats, int(max_total / (one * number))))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return Timing(first, statistics.median(samples), repeats, number)
