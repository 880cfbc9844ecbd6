"""``agent.model_errors``: what a failed LLM/TTS reply turns into, without a call."""

from __future__ import annotations

from typing import Any

from livekit.agents import APIConnectionError, APIStatusError, APITimeoutError
from livekit.agents.llm import LLMError
from livekit.agents.stt import STTError
from livekit.agents.tts import TTSError
from livekit.agents.voice.events import ErrorEvent

from agent.model_errors import MAX_CAUSE_CHARS, ModelErrorReporter, describe


class FakeSession:
    """Records what the reporter does with the session (``on``/``off``/``say``)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.said: list[tuple[str, dict[str, Any]]] = []

    def on(self, name: str, cb: Any) -> None:
        self.handlers[name] = cb

    def off(self, name: str, cb: Any) -> None:
        self.handlers.pop(name, None)

    def say(self, text: str, **kw: Any) -> None:
        self.said.append((text, kw))

    def emit(self, error: Any) -> None:
        self.handlers["error"](ErrorEvent(error=error, source=None))


class Sink:
    def __init__(self) -> None:
        self.counts: list[tuple[str, bool]] = []

    def count_model_error(self, *, component: str, recoverable: bool) -> None:
        self.counts.append((component, recoverable))


def _llm(exc: Exception, recoverable: bool) -> LLMError:
    return LLMError(timestamp=0.0, label="openai.LLM", error=exc, recoverable=recoverable)


def test_describe_names_type_status_and_cause_clipped() -> None:
    assert describe(APIStatusError("Service Unavailable", status_code=503)) == {
        "error_type": "APIStatusError",
        "cause": "Service Unavailable",
        "status_code": 503,
    }
    assert describe(APITimeoutError())["cause"] == "Request timed out."
    long = describe(APIConnectionError("x" * 1000))
    assert len(long["cause"]) == MAX_CAUSE_CHARS and "status_code" not in long


def test_retried_errors_are_counted_and_only_a_final_llm_failure_apologises() -> None:
    session, sink = FakeSession(), Sink()
    reporter = ModelErrorReporter(session, apology="Sorry, again please?", sink=sink)
    session.emit(_llm(APIStatusError("boom", status_code=500), recoverable=True))
    assert session.said == []
    session.emit(_llm(APIStatusError("boom", status_code=503), recoverable=False))
    assert session.said == [
        ("Sorry, again please?", {"allow_interruptions": True, "add_to_chat_ctx": False})
    ]
    tts = TTSError(timestamp=0.0, label="cartesia.TTS", error=APITimeoutError(), recoverable=False)
    session.emit(tts)
    assert len(session.said) == 1, "no apology through a TTS that just failed"
    # STT errors belong to the plugin and turn_metrics
    session.emit(STTError(timestamp=0.0, label="stt", error=APITimeoutError(), recoverable=False))
    assert sink.counts == [("llm", True), ("llm", False), ("tts", False)]
    assert reporter.counts == {"llm/retried": 1, "llm/failed": 1, "tts/failed": 1}
    reporter.detach()
    assert "error" not in session.handlers


def test_no_apology_when_it_is_switched_off() -> None:
    session = FakeSession()
    ModelErrorReporter(session, apology=None)
    session.emit(_llm(APIConnectionError("down"), recoverable=False))
    assert session.said == []
