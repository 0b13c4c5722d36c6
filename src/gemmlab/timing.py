"""Timing that holds up on a shared, noisy machine: warm up, calibrate, repeat, take the median.

A timer starts a clock and returns stop(), which gives the seconds since: wall_timer for work on
the CPU, cuda_event_timer for work queued on a CUDA stream (timer_for picks one by device).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

Timer = Callable[[], Callable[[], float]]


@dataclass
class Timing:
    first_call: float  # seconds; includes JIT compilation and caches warming
    per_call: float  # median seconds per call over the repeats (over rounds: the median of the rounds' medians)
    repeats: int
    calls_per_repeat: int
    samples: tuple[float, ...] = field(default=(), compare=False, repr=False)  # seconds per call, each repeat (every round)

    @property
    def spread(self) -> float:
        """The samples' interquartile range over their median: how far this function's timings moved
        while it was measured, a floor on the noise of a ratio between two timings (0 with under 2 samples)."""
        if not self.samples:
            return 0.0
        q1, median, q3 = quartiles(self.samples)
        return (q3 - q1) / median


def quartiles(values) -> tuple[float, float, float]:
    """First quartile, median and third quartile of one or more values (statistics.quantiles's)."""
    values = list(values)
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4)
    return q1, median, q3


def wall_timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def cuda_event_timer() -> Callable[[], float]:
    """Seconds between two CUDA events on the current stream, the second recorded by stop() and
    waited for: the host's clock would stop while the kernels it queued are still running."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()

    def stop() -> float:
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds

    return stop


def timer_for(device) -> Timer:
    """The timer for work on `device` (a name such as "cpu" or "cuda:0", or a torch.device)."""
    return cuda_event_timer if str(device).startswith("cuda") else wall_timer


def measure(fn: Callable[[], object], repeats: int = 7, min_repeat_time: float = 0.05, max_total: float = 5.0,
            timer: Timer = wall_timer) -> Timing:
    """Time fn(): one untimed-for-the-median first call, then `repeats` samples of enough calls
    each to last min_repeat_time; slow functions get fewer repeats (at least 3) to stay near max_total."""
    stop = timer()
    fn()
    first = stop()
    stop = timer()
    fn()
    one = max(stop(), 1e-9)
    number = max(1, int(min_repeat_time / one))
    repeats = max(3, min(repeats, int(max_total / (one * number))))
    samples = []
    for _ in range(repeats):
        stop = timer()
        for _ in range(number):
            fn()
        samples.append(stop() / number)
    return Timing(first, statistics.median(samples), repeats, number, tuple(samples))


def measure_rounds(fns: dict[str, Callable[[], object]], rounds: int = 1, interleave: bool = False,
                   **options) -> dict[str, Timing]:
    """measure(fn, **options) for each of fns, `rounds` times: blocked (each function's rounds back
    to back) or interleaved (round by round through all of them, so that a slow stretch of a noisy
    machine hits each alike). A function's Timing: its first round's first call and calls per
    repeat, the median of its rounds' medians, the repeats and samples of all its rounds. One round is measure()."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1; got {rounds}")
    order = [name for _ in range(rounds) for name in fns] if interleave else [name for name in fns for _ in range(rounds)]
    runs: dict[str, list[Timing]] = {name: [] for name in fns}
    for name in order:
        runs[name].append(measure(fns[name], **options))
    return {name: Timing(t[0].first_call, statistics.median(r.per_call for r in t), sum(r.repeats for r in t),
                         t[0].calls_per_repeat, tuple(s for r in t for s in r.samples)) for name, t in runs.items()}
