"""Turn a worker's result + the server's send log into latency / loss / CPU numbers.

Matching: each stream has its own websocket path, so per stream the server's
transcription frames (non-empty text only: neither client yields an event for an empty
result) and the client's INTERIM/FINAL events are two ordered lists. Events are matched
in order by (is_final, text); a server frame skipped over, or left unmatched though it
was sent well before the client was closed, is a lost event.

Protocol-agnostic: the Whisper and the Qwen3-ASR stand-ins write the same send-log
records (request path, text, is_final, send times) from the session core they share,
and both clients of both models connect each stream to its own ``stream_path``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.stt_worker import stream_path
from localdev.baseten.sendlog import SentTranscription

#: A frame sent this close to ``aclose`` may legitimately not have been read yet.
CLOSE_MARGIN_S = 0.2


def summary(values_ms: list[float]) -> dict[str, float]:
    """n, p50, p95, max of a list of milliseconds (NaN when empty)."""
    if not values_ms:
        nan = float("nan")
        return {"n": 0, "p50": nan, "p95": nan, "max": nan}
    arr = np.asarray(values_ms, dtype=float)
    return {
        "n": len(arr),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


@dataclass
class Matched:
    """Latencies (ms) by kind plus what could not be matched."""

    interim_ms: list[float] = field(default_factory=list)
    final_ms: list[float] = field(default_factory=list)
    lost: int = 0
    unexpected: int = 0
    server_frames: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def all_ms(self) -> list[float]:
        return self.interim_ms + self.final_ms


def match_run(result: dict[str, Any], sent: list[SentTranscription], run_id: str) -> Matched:
    by_path: dict[str, list[SentTranscription]] = {}
    for rec in sent:
        if rec.text:
            by_path.setdefault(rec.path, []).append(rec)
    out = Matched()
    deadline = result["close_started"] - CLOSE_MARGIN_S
    for i, slog in enumerate(result["streams_log"]):
        if slog["error"]:
            out.errors.append(slog["error"])
        server = sorted(by_path.get(stream_path(run_id, i), []), key=lambda r: r.before_send)
        out.server_frames += len(server)
        j = 0
        for kind, text, t in slog["events"]:
            is_final = kind == "F"
            m = next(
                (
                    x
                    for x in range(j, len(server))
                    if server[x].is_final == is_final and server[x].text == text
                ),
                None,
            )
            if m is None:
                out.unexpected += 1
                continue
            out.lost += sum(1 for r in server[j:m] if r.after_send < deadline)
            # before_send: on loopback the kernel delivers (and wakes the client) inside
            # the server's send() call, so a stamp taken after it is often *later* than
            # the client's event (measured: p50 -0.04 ms). The stamp before serialise +
            # write is never late; it overstates both clients alike by that step.
            latency_ms = (t - server[m].before_send) * 1000
            (out.final_ms if is_final else out.interim_ms).append(latency_ms)
            j = m + 1
        out.lost += sum(1 for r in server[j:] if r.after_send < deadline)
    return out


@dataclass
class Cpu:
    """CPU milliseconds per second of audio, raw and net of the harness baseline."""

    raw_ms: float
    baseline_ms: float

    @property
    def net_ms(self) -> float:
        return self.raw_ms - self.baseline_ms

    @property
    def streams_per_core(self) -> float:
        """Real-time streams one core could carry, from the net CPU cost alone."""
        return 1000.0 / self.net_ms if self.net_ms > 0 else float("inf")


def cpu_of(result: dict[str, Any]) -> Cpu:
    base_audio = result["streams"] * result["baseline_seconds"]
    return Cpu(
        raw_ms=1000 * result["client_cpu_s"] / result["audio_s"],
        baseline_ms=1000 * result["baseline_cpu_s"] / base_audio,
    )
