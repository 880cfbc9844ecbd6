"""The stream's audio timeline: replay buffer and stream-time -> wall-clock map.

Stream time is seconds of audio pushed into the stream since it was created; it is
continuous across reconnects, unlike the server's times, which restart at 0 on each
connection. Both classes are synchronous and free of I/O so they are easy to test.

Both store flat buffers (one ``bytearray``, two ``array('d')``), not a Python object
per frame: at ~31 protocol frames/s per stream, per-frame tuples, ``bytes`` and floats
cost more memory (and allocator work) than the audio they describe.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator

#: Overflow is trimmed in steps of this many seconds of audio rather than one frame at a
#: time, so a full buffer (a long unfinalised stretch) costs one cut per second instead
#: of one per frame; the buffer then holds between ``max_duration_s`` and that plus this.
OVERFLOW_TRIM_STEP_S = 1.0


class ReplayBuffer:
    """Encoded frames the server has not finalised yet, in stream order.

    Frames are appended before they are sent, so a frame lost with a dying socket is
    still here. Frame ``i`` covers stream time ``[i * d, (i + 1) * d)`` with ``d`` =
    ``frame_duration_s``; every frame is ``frame_bytes`` long, so the buffer is one
    ``bytearray`` plus the index of its first frame. ``trim_until`` drops frames wholly
    covered by a final; ``max_duration_s`` bounds memory (the oldest audio is given up
    first, and counted in ``overflowed``).
    """

    def __init__(self, *, frame_duration_s: float, frame_bytes: int, max_duration_s: float) -> None:
        """Keep at least ``max_duration_s`` of unfinalised ``frame_bytes``-byte frames."""
        self.frame_duration_s = frame_duration_s
        self.frame_bytes = frame_bytes
        self.max_frames = max(1, int(max_duration_s / frame_duration_s))
        self._slack_frames = max(1, round(OVERFLOW_TRIM_STEP_S / frame_duration_s))
        self._data = bytearray()
        self.first_index = 0  # index of the oldest frame held
        self.next_index = 0  # index the next appended frame gets
        self.overflowed = 0

    def append(self, frame: bytes | bytearray) -> None:
        """Add the next frame (exactly ``frame_bytes`` long)."""
        self._data += frame
        self.next_index += 1
        if self.next_index - self.first_index > self.max_frames + self._slack_frames:
            drop = self.next_index - self.first_index - self.max_frames
            self._drop(drop)
            self.overflowed += drop

    def trim_until(self, stream_time_s: float) -> None:
        """Forget frames that end at or before ``stream_time_s``."""
        d = self.frame_duration_s
        # first index whose frame ends after stream_time_s: (i + 1) * d > t
        i = max(self.first_index, int(stream_time_s / d) - 1)
        while (i + 1) * d <= stream_time_s:
            i += 1
        while i > self.first_index and i * d > stream_time_s:
            i -= 1  # float rounding in the division: never drop a frame ending after t
        self._drop(min(i, self.next_index) - self.first_index)

    def _drop(self, frames: int) -> None:
        if frames > 0:
            # Deleting from the front of a bytearray moves its start pointer, no copy.
            del self._data[: frames * self.frame_bytes]
            self.first_index += frames

    def frames(self) -> Iterator[bytes]:
        """The held frames, oldest first (a snapshot: safe to append while iterating)."""
        data = bytes(self._data)
        fb = self.frame_bytes
        for start in range(0, len(data), fb):
            yield data[start : start + fb]

    @property
    def start_s(self) -> float:
        """Stream time of the oldest held frame (of the next frame if none is held)."""
        return self.first_index * self.frame_duration_s

    def __len__(self) -> int:
        return self.next_index - self.first_index


class WallClockMap:
    """Remembers when stretches of stream audio were pushed (wall clock).

    ``record(end_s, wall)`` after a push whose audio ends at stream time ``end_s``;
    ``wall_time_at(t)`` is the wall time of the first recorded push ending at or after
    ``t``. Recording every push is exact; the stream records once per completed protocol
    frame, which bounds the error by one input frame (the push holding ``t`` or the one
    after it). Old points are pruned by the caller (``forget_before``) once their audio
    is finalised.
    """

    def __init__(self) -> None:
        self._ends = array("d")
        self._walls = array("d")

    def record(self, end_s: float, wall_time: float) -> None:
        self._ends.append(end_s)
        self._walls.append(wall_time)

    def wall_time_at(self, t: float) -> float | None:
        if not self._ends:
            return None
        i = bisect.bisect_left(self._ends, t)
        return self._walls[min(i, len(self._walls) - 1)]

    def forget_before(self, t: float) -> None:
        # Keep the newest point: a late final may still ask about the newest audio.
        i = min(bisect.bisect_left(self._ends, t), len(self._ends) - 1)
        if i > 0:
            del self._ends[:i]
            del self._walls[:i]

    def __len__(self) -> int:
        return len(self._ends)


class InjectedSilence:
    """Silence the stream sent on flushes, which exists on the wire but not in the user's audio.

    Server times and the replay buffer count wire time (every sample sent); word times given
    to LiveKit count the user's time. ``record`` each injection in wire order; the maps are
    bisections over cumulative sums, so a long call's many flushes cost O(log n) per result.
    """

    def __init__(self) -> None:
        self._wire_ends = array("d")  # wire time at which each injection ended
        self._totals = array("d")  # injected seconds up to and including each one
        self._user_at = array("d")  # user time at each one (it takes none of the user's)

    def record(self, wire_end_s: float, seconds: float) -> None:
        total = (self._totals[-1] if self._totals else 0.0) + seconds
        self._wire_ends.append(wire_end_s)
        self._totals.append(total)
        self._user_at.append(wire_end_s - total)

    def before_wire(self, wire_s: float) -> float:
        """Injected seconds that ended at or before wire time ``wire_s``."""
        i = bisect.bisect_right(self._wire_ends, wire_s + 1e-9)
        return self._totals[i - 1] if i else 0.0

    def to_wire(self, user_s: float) -> float:
        """The wire time of user time ``user_s`` (user audio after an injection comes later
        on the wire by everything injected before it)."""
        i = bisect.bisect_right(self._user_at, user_s + 1e-9)
        return user_s + (self._totals[i - 1] if i else 0.0)

    def __bool__(self) -> bool:
        return bool(self._wire_ends)
