"""The stream's audio timeline: replay buffer and stream-time -> wall-clock map.

Stream time is seconds of audio pushed into the stream since it was created; it is
continuous across reconnects, unlike the server's times, which restart at 0 on each
connection. Both classes are synchronous and free of I/O so they are easy to test.
"""

from __future__ import annotations

import bisect
from collections import deque


class ReplayBuffer:
    """Encoded frames the server has not finalised yet, in stream order.

    Frames are appended before they are sent, so a frame lost with a dying socket is
    still here. ``trim_until`` drops frames wholly covered by a final; ``max_frames``
    bounds memory (the oldest audio is given up first, and counted).
    """

    def __init__(self, *, frame_duration_s: float, max_duration_s: float) -> None:
        self.frame_duration_s = frame_duration_s
        self.max_frames = max(1, int(max_duration_s / frame_duration_s))
        self._frames: deque[tuple[int, bytes]] = deque()
        self.overflowed = 0

    def append(self, index: int, frame: bytes) -> None:
        self._frames.append((index, frame))
        while len(self._frames) > self.max_frames:
            self._frames.popleft()
            self.overflowed += 1

    def trim_until(self, stream_time_s: float) -> None:
        """Forget frames that end at or before ``stream_time_s``."""
        while self._frames and (self._frames[0][0] + 1) * self.frame_duration_s <= stream_time_s:
            self._frames.popleft()

    def frames(self) -> list[tuple[int, bytes]]:
        return list(self._frames)

    def __len__(self) -> int:
        return len(self._frames)


class WallClockMap:
    """Remembers when each stretch of stream audio was pushed (wall clock).

    ``record(end_s, wall)`` after each pushed frame; ``wall_time_at(t)`` is the push
    time of the frame holding stream time ``t``. Old points are pruned by the caller
    (``forget_before``) once their audio is finalised.
    """

    def __init__(self) -> None:
        self._ends: list[float] = []
        self._walls: list[float] = []

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
