"""Local stand-in for Baseten's streaming-Whisper websocket service (real recognition)."""

from localdev.baseten.engine import PocketsphinxEngine, RecognitionEngine
from localdev.baseten.faults import FaultPlan, InjectedError
from localdev.baseten.server import WEBSOCKET_ROUTES, LocalBasetenServer
from localdev.baseten.stats import ServerStats

__all__ = [
    "WEBSOCKET_ROUTES",
    "FaultPlan",
    "InjectedError",
    "LocalBasetenServer",
    "PocketsphinxEngine",
    "RecognitionEngine",
    "ServerStats",
]
