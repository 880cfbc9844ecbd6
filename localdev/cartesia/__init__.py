"""Local stand-in for Cartesia's TTS API (``/tts/websocket`` and ``/tts/bytes``).

Speaks real audio synthesised by espeak-ng, so the voice loop, STT and tests hear words.
Point ``livekit.plugins.cartesia.TTS(base_url=srv.base_url, api_key=...)`` at
:class:`localdev.cartesia.server.LocalCartesiaServer`.
"""

from localdev.cartesia.server import LocalCartesiaServer

__all__ = ["LocalCartesiaServer"]
