"""gemmlab.timing.measure on a fake clock: what it calls, how it calibrates, what it reports.

The clock only moves when the timed function runs (by durations the test chooses, in powers of two
so that every sum is exact), so the expected numbers follow from measure's rules alone; nothing here
depends on how fast the machine is.
"""

import pytest

from gemmlab import timing


@pytest.fixture
def clock(monkeypatch):
    """A fake perf_counter; fn(durations) returns a function whose calls advance it by those
    durations in turn (the last one repeated), counting its calls in fn.calls."""
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def fn(durations):
        def call():
            call.calls += 1
            now[0] += durations[min(call.calls, len(durations)) - 1]

        call.calls = 0
        return call

    return fn


def test_first_call_apart_and_calibrated_repeats(clock):
    # first call 0.5 s (a JIT compile, say), then 1/128 s a call
    fn = clock([0.5, 2.0**-7])
    t = timing.measure(fn, repeats=7, min_repeat_time=2.0**-4, max_total=5.0)
    assert t.first_call == 0.5
    assert t.calls_per_repeat == 8  # enough calls to fill min_repeat_time
    assert t.repeats == 7
    assert t.per_call == 2.0**-7  # the first call is not in it
    assert fn.calls == 2 + 7 * 8  # first call, calibration call, the samples


def test_per_call_is_the_median_of_the_repeats(clock):
    fast, slow = 2.0**-7, 2.0**-2
    # first, calibration, then 7 repeats of 8 calls: the fourth and sixth repeats are slow
    durations = [fast, fast] + [fast] * 8 * 3 + [slow] * 8 + [fast] * 8 + [slow] * 8 + [fast] * 8
    fn = clock(durations)
    t = timing.measure(fn, repeats=7, min_repeat_time=2.0**-4, max_total=100.0)
    assert (t.repeats, t.calls_per_repeat) == (7, 8)
    assert t.per_call == fast  # the mean would be (5 fast + 2 slow) / 7
    assert fn.calls == len(durations)


def test_slow_functions_get_fewer_repeats_but_at_least_three(clock):
    fn = clock([2.0])
    t = timing.measure(fn, repeats=7, min_repeat_time=0.05, max_total=5.0)
    assert (t.calls_per_repeat, t.repeats) == (1, 3)  # 5 s allows 2 repeats of 2 s; 3 is the floor
    assert t.first_call == t.per_call == 2.0
    fn = clock([2.0**-3])
    t = timing.measure(fn, repeats=7, min_repeat_time=0.05, max_total=2.0**-1)
    assert (t.calls_per_repeat, t.repeats) == (1, 4)  # max_total / (1/8 s a repeat) = 4 of the 7 asked for


def test_spread_is_the_interquartile_range_over_the_median(clock):
    steady = timing.measure(clock([2.0**-3]), repeats=5, min_repeat_time=2.0**-4, max_total=100.0)
    assert steady.samples == (2.0**-3,) * 5 and steady.spread == 0
    # after the two calls measure() does not time: repeats at 1/8, 1/8, 1/4, 1/4, 1/2 s
    jumpy = timing.measure(clock([2.0**-3] * 4 + [2.0**-2] * 2 + [2.0**-1]), repeats=5, min_repeat_time=2.0**-4,
                           max_total=100.0)
    assert jumpy.samples == (2.0**-3, 2.0**-3, 2.0**-2, 2.0**-2, 2.0**-1)
    assert jumpy.spread == (3 / 8 - 1 / 8) / (1 / 4)  # quartiles 1/8 and 3/8 (statistics.quantiles), median 1/4
    assert timing.Timing(1.0, 1.0, 1, 1).spread == 0  # no samples
    assert timing.Timing(1.0, 1.0, 1, 1, (2.0,)).spread == 0  # one


def test_quartiles_of_one_value_or_more():
    assert timing.quartiles([3.0]) == (3.0, 3.0, 3.0)
    assert timing.quartiles(iter([5.0, 1.0, 4.0, 2.0, 3.0])) == (1.5, 3.0, 4.5)


def test_measure_on_the_real_clock():
    calls = []
    t = timing.measure(lambda: calls.append(1), repeats=5, min_repeat_time=1e-3, max_total=1.0)
    assert t.first_call >= 0 and t.per_call > 0
    assert 3 <= t.repeats <= 5 and t.calls_per_repeat >= 1
    assert len(calls) == 2 + t.repeats * t.calls_per_repeat


def test_rounds_blocked_or_interleaved(clock):
    """Each round is one measure() (two untimed-for-the-median calls, then the repeats): blocked
    rounds run each function's back to back, interleaved ones take turns."""
    order = []

    def recorded(name, seconds):
        timed = clock([seconds])

        def call():
            order.append(name)
            timed()

        return call

    options = {"repeats": 3, "min_repeat_time": 2.0**-4, "max_total": 100.0}  # 1 call per repeat: 5 calls a round
    for interleave, expected in [(False, "aaaaa" "aaaaa" "bbbbb" "bbbbb"), (True, "aaaaa" "bbbbb" "aaaaa" "bbbbb")]:
        order.clear()
        fns = {"a": recorded("a", 2.0**-3), "b": recorded("b", 2.0**-2)}
        timed = timing.measure_rounds(fns, rounds=2, interleave=interleave, **options)
        assert "".join(order) == expected
        assert timed["a"] == timing.Timing(2.0**-3, 2.0**-3, 6, 1) and timed["b"] == timing.Timing(2.0**-2, 2.0**-2, 6, 1)


def test_rounds_report_the_median_round(clock):
    fn = clock([2.0**-3] * 5 + [2.0**-1] * 5 + [2.0**-2] * 5)  # three rounds of 5 calls, each at its own speed
    (t,) = timing.measure_rounds({"f": fn}, rounds=3, repeats=3, min_repeat_time=2.0**-4, max_total=100.0).values()
    assert (t.first_call, t.per_call, t.repeats, t.calls_per_repeat) == (2.0**-3, 2.0**-2, 9, 1)
    # the spread pools every round's repeats: quartiles 1/8 and 1/2 around the median 1/4
    assert t.samples == (2.0**-3,) * 3 + (2.0**-1,) * 3 + (2.0**-2,) * 3 and t.spread == 1.5
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        timing.measure_rounds({"f": fn}, rounds=0)


def test_measure_takes_a_timer():
    """A timer is start() -> stop() -> seconds; measure uses it for every reading."""
    starts = []

    def timer():
        starts.append(1)
        return lambda: 2.0**-5

    t = timing.measure(lambda: None, repeats=4, min_repeat_time=2.0**-4, timer=timer)
    assert (t.first_call, t.calls_per_repeat, t.repeats, t.per_call) == (2.0**-5, 2, 4, 2.0**-6)
    assert len(starts) == 2 + 4


def test_cuda_event_timer_times_between_two_events(monkeypatch):
    """On a fake torch.cuda.Event: the start event is recorded at once, the end one at stop(), which
    waits for it and turns elapsed_time's milliseconds into seconds."""
    import torch

    log = []

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.name = "start" if not log else "end"
            log.append(f"{self.name} made")

        def record(self):
            log.append(f"{self.name} recorded")

        def synchronize(self):
            log.append(f"{self.name} waited for")

        def elapsed_time(self, end):
            log.append(f"{self.name} to {end.name}")
            return 250.0

    monkeypatch.setattr(torch.cuda, "Event", Event)
    stop = timing.cuda_event_timer()
    assert log == ["start made", "end made", "start recorded"]
    assert stop() == 0.25
    assert log[3:] == ["end recorded", "end waited for", "start to end"]


def test_timer_for_device():
    assert timing.timer_for("cpu") is timing.wall_timer
    assert timing.timer_for("cuda") is timing.timer_for("cuda:1") is timing.cuda_event_timer
