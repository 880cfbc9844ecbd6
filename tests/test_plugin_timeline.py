"""The stream's timeline structures: compact replay buffer and wall-clock map."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.baseten_stt.timeline import ReplayBuffer, WallClockMap

FRAME_S = 0.032
FB = 4  # tiny frames keep the arithmetic readable


def frame(i: int) -> bytes:
    return i.to_bytes(FB, "little")


def buffer(max_s: float = 10.0) -> ReplayBuffer:
    return ReplayBuffer(frame_duration_s=FRAME_S, frame_bytes=FB, max_duration_s=max_s)


def held(buf: ReplayBuffer) -> list[int]:
    return [int.from_bytes(f, "little") for f in buf.frames()]


def test_replay_keeps_frames_in_order_and_trims_only_wholly_finalised_ones() -> None:
    buf = buffer()
    for i in range(10):
        buf.append(frame(i))
    assert held(buf) == list(range(10)) and len(buf) == 10 and buf.start_s == 0.0
    buf.trim_until(3 * FRAME_S)  # frames 0..2 end at or before 0.096
    assert held(buf) == list(range(3, 10))
    assert buf.start_s == pytest.approx(3 * FRAME_S)
    buf.trim_until(4.5 * FRAME_S)  # frame 3 ends at 0.128 <= t; frame 4 ends after t
    assert held(buf)[0] == 4
    buf.trim_until(0.0)  # never moves backwards
    assert held(buf)[0] == 4
    buf.trim_until(1e9)  # a final past everything sent empties it
    assert len(buf) == 0 and held(buf) == []
    assert buf.start_s == pytest.approx(10 * FRAME_S)  # next frame's time
    buf.append(frame(10))
    assert held(buf) == [10] and buf.next_index == 11


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), max_size=20))
def test_replay_trim_matches_the_per_frame_rule(cuts: list[float]) -> None:
    buf = buffer()
    for i in range(150):
        buf.append(frame(i))
    reached = 0.0
    for t in cuts:
        buf.trim_until(t)
        reached = max(reached, t)
        first = held(buf)[0] if len(buf) else buf.next_index
        # the per-frame definition: frame i is gone iff (i + 1) * d <= some t trimmed to
        expected = next((i for i in range(150) if (i + 1) * FRAME_S > reached), 150)
        assert first == expected


def test_replay_overflow_keeps_at_least_max_duration_and_counts_what_it_gave_up() -> None:
    buf = buffer(max_s=10.0)
    n = buf.max_frames
    for i in range(5 * n):
        buf.append(frame(i))
        assert n <= len(buf) or i < n
        assert len(buf) <= n + round(1.0 / FRAME_S)  # bounded: max + one trim step
    frames = held(buf)
    assert frames[-1] == 5 * n - 1 and frames == list(range(frames[0], 5 * n))
    assert buf.overflowed == frames[0]  # every frame given up is counted


def test_wall_clock_map_finds_the_push_holding_a_time_and_forgets_old_points() -> None:
    m = WallClockMap()
    assert m.wall_time_at(1.0) is None
    for k in range(1, 6):  # pushes ending at 0.1 .. 0.5 s, pushed at wall 100 + k
        m.record(0.1 * k, 100.0 + k)
    assert m.wall_time_at(0.05) == 101.0
    assert m.wall_time_at(0.25) == 103.0
    assert m.wall_time_at(9.0) == 105.0  # past the newest push: the newest
    m.forget_before(0.35)
    assert len(m) == 2 and m.wall_time_at(0.0) == 104.0
    m.forget_before(99.0)  # the newest point always survives
    assert len(m) == 1 and m.wall_time_at(0.0) == 105.0


def test_injected_silence_maps_wire_and_user_time_both_ways() -> None:
    from plugins.baseten_stt.timeline import InjectedSilence

    inj = InjectedSilence()
    assert not inj and inj.before_wire(5.0) == 0.0 and inj.to_wire(5.0) == 5.0
    inj.record(2.4, 0.4)  # user audio up to 2.0 s, then 0.4 s injected
    inj.record(6.4, 0.4)  # user 2.0-5.6 s at wire 2.4-6.0, then 0.4 s more
    assert inj.before_wire(1.0) == 0.0
    assert inj.before_wire(3.0) == pytest.approx(0.4)
    assert inj.before_wire(7.0) == pytest.approx(0.8)
    for user_s in (0.5, 2.5, 5.0, 6.0, 9.0):
        wire = inj.to_wire(user_s)
        assert wire - inj.before_wire(wire) == pytest.approx(user_s)
