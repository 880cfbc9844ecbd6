"""Prometheus metrics for per-turn voice latency and STT health.

The worker serves these through LiveKit's own ``/metrics`` endpoint
(``AgentServer(prometheus_port=N)``, ``livekit/agents/telemetry/http_server.py``). Jobs run in
separate processes, so an in-memory registry in a job process would never be scraped: the
endpoint lives in the main process. prometheus_client's multiprocess mode fixes that: every
process writes its samples to files under ``PROMETHEUS_MULTIPROC_DIR`` and the endpoint, seeing
that variable, merges them with ``MultiProcessCollector``.

prometheus_client picks its storage class ONCE, when it is first imported
(``prometheus_client.values.ValueClass``). ``AgentServer(prometheus_multiproc_dir=...)`` sets
the variable only inside ``AgentServer.run()``, after ``livekit.agents`` (and so
prometheus_client) was already imported in the main process; job processes come from a
forkserver started later and do inherit it. Set ``PROMETHEUS_MULTIPROC_DIR`` in the
environment before the interpreter starts (container ``ENV``) so both sides agree;
:func:`multiprocess_problem` reports a mismatch.

Metric names (all latencies in seconds, as Prometheus convention asks):

==========================================  =======================================================
``voice_agent_transcript_latency_seconds``  end of user speech -> final transcript received
                                            (measured by the Baseten STT plugin itself)
``voice_agent_transcription_delay_seconds`` LiveKit ``transcription_delay`` (VAD end of speech ->
                                            last final transcript, clamped at 0 by LiveKit)
``voice_agent_end_of_turn_delay_seconds``   LiveKit ``end_of_turn_delay`` (end of speech -> turn
                                            committed)
``voice_agent_llm_ttft_seconds``            LLM node time to first token
``voice_agent_tts_ttfb_seconds``            TTS node time to first audio byte
``voice_agent_e2e_latency_seconds``         end of user speech -> first agent audio played
``voice_agent_turns_total{outcome}``        user turns; outcome = answered|interrupted|no_reply
``voice_agent_turn_values_flagged_total``   per-turn values dropped, labels field and
  ``{field,reason}``                        reason = missing|implausible
``voice_agent_stt_reconnects_total``        STT websocket reconnects (plugin ``stats.reconnects``)
``voice_agent_stt_endpoint_switches_total`` Baseten endpoint switches: ``to`` = fallback|primary,
  ``{to,cause}``                            ``cause`` = failure (the endpoint left had failed)
                                            or recovered (the primary answered a probe)
``voice_agent_model_errors_total``          LLM/TTS errors LiveKit reported: ``component`` =
  ``{component,recoverable}``               llm|tts, ``recoverable`` = true when LiveKit retries
``voice_agent_stt_errors_total``            STT errors; ``source="server"``: error frames Baseten
  ``{source,recoverable}``                  sent (plugin ``stats``), ``source="stream"``: failures
                                            that reached LiveKit's retry logic (``error`` events)
==========================================  =======================================================

No room/job labels: those are unbounded and would explode the series count; per-turn detail
lives in the ``turn_latency`` log line instead.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from typing import Any, Final

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import values as _prom_values

NAMESPACE: Final = "voice_agent"

# Voice turn budgets: people expect a reply ~200-800 ms after they stop talking, a single
# stage (STT final, LLM TTFT, TTS TTFB) typically takes 50-500 ms, and anything past ~3 s
# feels broken. Fine steps below 1 s where the interesting variation is, coarse above, and
# 10 s as the top finite bucket (values past 30 s are already dropped as implausible).
LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
)  # fmt: skip

# turn_latency event field (milliseconds) -> (histogram name suffix, help text)
LATENCY_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "transcript_latency_ms": (
        "transcript_latency_seconds",
        "End of user speech to final transcript received, measured by the STT plugin",
    ),
    "transcription_delay_ms": (
        "transcription_delay_seconds",
        "LiveKit transcription_delay: end of speech to last final transcript",
    ),
    "end_of_turn_delay_ms": (
        "end_of_turn_delay_seconds",
        "LiveKit end_of_turn_delay: end of speech to user turn committed",
    ),
    "llm_ttft_ms": ("llm_ttft_seconds", "LLM node time to first token"),
    "tts_ttfb_ms": ("tts_ttfb_seconds", "TTS node time to first audio byte"),
    "e2e_latency_ms": (
        "e2e_latency_seconds",
        "End of user speech to first agent audio played",
    ),
}


class PrometheusTurnMetrics:
    """Histograms and counters fed by :class:`agent.turn_metrics.TurnMetricsCollector`."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        """Create the metric families in ``registry`` (default: the global registry that
        LiveKit's ``/metrics`` endpoint serves). Tests pass a fresh registry for isolation;
        in multiprocess mode the samples land in the shared files either way."""
        reg = registry if registry is not None else prometheus_client.REGISTRY
        self.histograms: dict[str, Histogram] = {
            field: Histogram(
                name,
                doc,
                namespace=NAMESPACE,
                buckets=LATENCY_BUCKETS_S,
                registry=reg,
            )
            for field, (name, doc) in LATENCY_FIELDS.items()
        }
        self.turns = Counter(
            "turns", "User turns by outcome", ["outcome"], namespace=NAMESPACE, registry=reg
        )
        self.flagged = Counter(
            "turn_values_flagged",
            "Per-turn latency values dropped as missing or implausible",
            ["field", "reason"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.stt_reconnects = Counter(
            "stt_reconnects", "STT websocket reconnects", namespace=NAMESPACE, registry=reg
        )
        self.stt_endpoint_switches = Counter(
            "stt_endpoint_switches",
            "Baseten endpoint switches (failover to a fallback, return to the primary)",
            ["to", "cause"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.model_errors = Counter(
            "model_errors",
            "LLM and TTS errors (recoverable=true: LiveKit retried the request)",
            ["component", "recoverable"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.stt_errors = Counter(
            "stt_errors",
            "STT errors: server error frames (source=server) and stream failures seen by "
            "LiveKit (source=stream)",
            ["source", "recoverable"],
            namespace=NAMESPACE,
            registry=reg,
        )

    def observe_turn(self, event: Mapping[str, Any]) -> None:
        """Record one ``turn_latency`` event (values in ms; None means flagged)."""
        for field, hist in self.histograms.items():
            value = event.get(field)
            if isinstance(value, int | float):
                hist.observe(value / 1000.0)
        self.turns.labels(outcome=str(event.get("outcome", "unknown"))).inc()
        for reason in ("missing", "implausible"):
            for field in event.get(reason) or ():
                self.flagged.labels(field=field, reason=reason).inc()

    def count_stt_reconnects(self, n: int) -> None:
        if n > 0:
            self.stt_reconnects.inc(n)

    def count_stt_endpoint_switch(self, *, to: str, after_failure: bool) -> None:
        self.stt_endpoint_switches.labels(
            to=to, cause="failure" if after_failure else "recovered"
        ).inc()

    def count_model_error(self, *, component: str, recoverable: bool) -> None:
        self.model_errors.labels(component=component, recoverable=str(recoverable).lower()).inc()

    def count_stt_errors(self, n: int, *, source: str, recoverable: bool) -> None:
        if n > 0:
            self.stt_errors.labels(source=source, recoverable=str(recoverable).lower()).inc(n)


_default: PrometheusTurnMetrics | None = None


def default_metrics() -> PrometheusTurnMetrics:
    """The process-wide instance on the global registry (metric families may only be
    registered once per registry, and a job process may run several sessions in THREAD
    executor mode)."""
    global _default
    if _default is None:
        _default = PrometheusTurnMetrics()
    return _default


def multiprocess_problem() -> str | None:
    """Describe a multiprocess misconfiguration, or None when the setup is coherent.

    The failure it catches is silent otherwise: ``PROMETHEUS_MULTIPROC_DIR`` set after
    prometheus_client was imported means this process keeps samples in memory while the
    ``/metrics`` endpoint only reads the files, so the values vanish."""
    env_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    in_files = _prom_values.ValueClass is not _prom_values.MutexValue
    if not env_dir and multiprocessing.parent_process() is not None:
        # a LiveKit job process: /metrics is served by the main process, which cannot see
        # this process's in-memory registry
        return (
            "metrics recorded in a job process without PROMETHEUS_MULTIPROC_DIR never reach "
            "the worker's /metrics endpoint; set PROMETHEUS_MULTIPROC_DIR"
        )
    if env_dir and not in_files:
        return (
            "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported; this "
            "process's metrics will not be served. Set it in the environment before start."
        )
    if env_dir and not os.path.isdir(env_dir):
        return f"PROMETHEUS_MULTIPROC_DIR={env_dir} does not exist"
    return None
