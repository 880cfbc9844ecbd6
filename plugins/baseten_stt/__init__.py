"""Baseten streaming STT for LiveKit Agents (vendored, hardened): Whisper and Qwen3-ASR.

``from plugins.baseten_stt import STT`` gives a ``livekit.agents.stt.STT`` that speaks
Baseten's websocket protocols (``protocol.py``; ``STT(model="whisper" | "qwen3-asr")``,
one stream core in ``stream.py``, one ``dialect.py`` class per protocol) without
``livekit.plugins.baseten``.
``fallback_endpoints=[...]`` fails a stream over to another deployment without losing a
word (``failover.py``; switches arrive as ``stt.on("endpoint_switched", cb)``).
Per-final latency arrives as ``stt.on("transcript_latency", cb)`` with a
:class:`TranscriptLatency`; counters live on ``stt.stats`` (:class:`STTStats`).
"""

from .endpoint import normalize_endpoint
from .failover import EndpointSwitch
from .models import STTOptions
from .stats import STTStats, TranscriptLatency
from .stream import SpeechStream
from .stt import STT

__all__ = [
    "STT",
    "EndpointSwitch",
    "STTOptions",
    "STTStats",
    "SpeechStream",
    "TranscriptLatency",
    "normalize_endpoint",
]
