"""When the LLM or the TTS fails a reply: say why in the log, count it, keep the call going.

LiveKit already retries a failed LLM request or TTS synthesis, but only while nothing has
reached the caller (``llm.LLMStream._main_task``, ``tts.SynthesizeStream._main_task``: a
retry after tokens or audio went out would repeat them), and reports every attempt as a
session ``error`` event. Without a handler, a reply that failed for good is silence: the
caller waits for an answer that never comes, and the only trace is LiveKit's own warning
without the turn it belonged to.

:class:`ModelErrorReporter` turns each event into one ``model_error`` log line (component,
provider, cause, HTTP status, whether LiveKit retries it) and a
``voice_agent_model_errors_total{component,recoverable}`` sample; and when the LLM gives up,
it speaks a short apology through the TTS (``AGENT_ERROR_REPLY``), so the caller knows to
say it again instead of waiting. The session itself carries on: LiveKit closes it only
after ``max_unrecoverable_errors`` (3) failures in a row, and each reply that reaches the
caller resets that count.

STT errors are not handled here: the Baseten plugin logs its own (with the endpoint and the
replay it does), and ``agent.turn_metrics`` counts them.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from agent.logs import get_logger

log = get_logger("agent.model_errors")

#: Components whose failures end up here (``LLMError.type`` / ``TTSError.type`` prefix).
COMPONENTS: Final = ("llm", "tts")
#: The longest cause text logged: provider messages can carry a whole response body.
MAX_CAUSE_CHARS: Final = 300


class ModelErrorSink(Protocol):
    def count_model_error(self, *, component: str, recoverable: bool) -> None: ...


def describe(error: BaseException) -> dict[str, Any]:
    """The cause of ``error`` as log fields: its type, message and HTTP status if any."""
    fields: dict[str, Any] = {"error_type": type(error).__name__}
    message = str(getattr(error, "message", None) or error).strip()
    cause = error.__cause__
    if not message and cause is not None:
        message = f"{type(cause).__name__}: {cause}"
    fields["cause"] = message[:MAX_CAUSE_CHARS] or type(error).__name__
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and status > 0:
        fields["status_code"] = status
    return fields


class ModelErrorReporter:
    """Subscribes to ``session``'s ``error`` events (see the module docstring)."""

    def __init__(
        self,
        session: Any,
        *,
        apology: str | None,
        sink: ModelErrorSink | None = None,
    ) -> None:
        """``apology``: what the agent says when the LLM fails a reply for good (None or
        empty: say nothing); ``sink``: where the counts go (the Prometheus metrics)."""
        self._session = session
        self._apology = apology or None
        self._sink = sink
        self.counts: dict[str, int] = {}
        session.on("error", self._on_error)

    def detach(self) -> None:
        self._session.off("error", self._on_error)

    def _on_error(self, event: Any) -> None:
        try:
            self._report(event)
        except Exception:  # never raise into LiveKit's emitter
            log.warning("model_error_report_failed", exc_info=True)

    def _report(self, event: Any) -> None:
        err = getattr(event, "error", None)
        component = str(getattr(err, "type", "")).removesuffix("_error")
        if component not in COMPONENTS:
            return
        recoverable = bool(getattr(err, "recoverable", False))
        exc = getattr(err, "error", None)
        fields = describe(exc) if isinstance(exc, BaseException) else {"cause": repr(exc)}
        key = f"{component}/{'retried' if recoverable else 'failed'}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if self._sink is not None:
            self._sink.count_model_error(component=component, recoverable=recoverable)
        provider = str(getattr(err, "label", "") or "")
        if recoverable:
            # LiveKit retries it (nothing had reached the caller yet)
            log.warning(
                "model_error", component=component, provider=provider, retrying=True, **fields
            )
            return
        apologise = component == "llm" and self._apology is not None
        log.error(
            "model_error",
            component=component,
            provider=provider,
            retrying=False,
            apology=apologise,
            **fields,
        )
        if apologise:
            assert self._apology is not None
            # add_to_chat_ctx=False: the apology is not something the LLM said, and the
            # next request should carry the caller's words, not ours.
            self._session.say(self._apology, allow_interruptions=True, add_to_chat_ctx=False)
