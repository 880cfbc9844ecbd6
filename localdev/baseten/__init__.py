"""Local stand-in for Baseten's streaming-STT websocket services (real Whisper): the
streaming-Whisper v1 protocol, the Qwen3-ASR streaming dialect and a v2 stub."""

from localdev.baseten.engine import Recognition, RecognitionEngine
from localdev.baseten.faults import FaultPlan, InjectedError
from localdev.baseten.server import WEBSOCKET_ROUTES, LocalBasetenServer
from localdev.baseten.stats import ServerStats

__all__ = [
    "WEBSOCKET_ROUTES",
    "FaultPlan",
    "InjectedError",
    "LocalBasetenServer",
    "Recognition",
    "RecognitionEngine",
    "ServerStats",
]
