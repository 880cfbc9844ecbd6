"""Local stand-in for the OpenAI Chat Completions API (streaming SSE and plain JSON).

Point ``livekit.plugins.openai.LLM(base_url=srv.base_url, api_key=...)`` at
:class:`localdev.openai.server.LocalOpenAIServer` to run the voice loop without an account.
"""

from localdev.openai.server import LocalOpenAIServer

__all__ = ["LocalOpenAIServer"]
