"""Local stand-in for Baseten's streaming-Whisper websocket service (real Whisper)."""

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
