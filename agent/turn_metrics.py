"""Per-turn voice latency you can trust: one ``turn_latency`` log event per user turn.

Where the numbers come from (LiveKit Agents 1.8.9, no deprecated ``metrics_collected``):

* ``conversation_item_added`` with a *user* ``ChatMessage``: its ``metrics`` carry
  ``started_speaking_at``/``stopped_speaking_at`` (VAD-anchored wall times),
  ``transcription_delay`` and ``end_of_turn_delay``
  (``agent_activity._init_metrics_from_end_of_turn``).
  The message is added when the reply to it is scheduled.
* ``conversation_item_added`` with an *assistant* ``ChatMessage``: ``llm_node_ttft``,
  ``tts_node_ttfb``, ``started_speaking_at`` and ``e2e_latency`` (= agent ``started_speaking_at``
  minus the answered user message's ``stopped_speaking_at``). It is added after playout ends
  (or is interrupted), and only if some text was forwarded.
* The Baseten STT plugin's own ``transcript_latency`` event (end of user speech -> FINAL
  received, unclamped, unlike LiveKit's ``transcription_delay``) and its ``stats`` counters.
* ``session_usage_updated`` for usage, ``close`` for the end-of-session summary.

Pairing a reply with the user turn it answers: LiveKit computes the reply's ``e2e_latency``
from the answered user message's ``stopped_speaking_at``, so ``started_speaking_at -
e2e_latency`` recovers that anchor exactly and identifies the turn even when turns overlap
(interruptions, a turn with no reply, tool-call follow-ups). An assistant message without
an anchor is agent-initiated (greeting, ``say()``) and does not make a user turn.

A turn is logged when its reply's message arrives, when a later turn is answered (then it
had no reply), or at session end. Every latency field is always present: a value that is
absent becomes null and is named in ``missing``; one that is negative or above
:data:`IMPLAUSIBLE_S` becomes null and is named in ``implausible``. Values are plain JSON
types so the line survives LiveKit's job-process log pipe and any JSON renderer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog

from agent.prometheus import LATENCY_FIELDS, default_metrics, multiprocess_problem

TURN_EVENT: Final = "turn_latency"
SUMMARY_EVENT: Final = "session_latency_summary"

# A latency above this is a broken anchor, not a slow service: LiveKit issue #6093 logged
# transcription delays over 200 s from a stale VAD anchor, while no healthy voice stage takes
# anywhere near 30 s (STT/LLM/TTS connection timeouts are 10 s in APIConnectOptions).
IMPLAUSIBLE_S: Final = 30.0

# The reply's anchor is computed by subtraction from the very floats stored in the user
# message, so it matches to ~1e-9 s; 1 ms absorbs float noise and can't confuse two real
# turns (two user turns can't end within 1 ms of each other).
ANCHOR_MATCH_TOLERANCE_S: Final = 0.001

# The latency fields of a turn_latency event, in the order of the turn's budget.
LATENCY_KEYS: Final[tuple[str, ...]] = tuple(LATENCY_FIELDS)

# turn_latency field -> key in ChatMessage.metrics (user or assistant message)
_USER_METRIC_KEYS: Final = {
    "transcription_delay_ms": "transcription_delay",
    "end_of_turn_delay_ms": "end_of_turn_delay",
}
_REPLY_METRIC_KEYS: Final = {
    "llm_ttft_ms": "llm_node_ttft",
    "tts_ttfb_ms": "tts_node_ttfb",
    "e2e_latency_ms": "e2e_latency",
}

SUMMARY_PERCENTILES: Final = (50, 95)

#: LiveKit commits a turn right after the detector's verdict (same event-loop turn, or its
#: min_delay later); 50 ms absorbs scheduling on a busy loop.
DECISION_MATCH_S: Final = 0.05

#: ``turn_ended_by`` for LiveKit's own modes: the rule that commits their turns.
MODE_TURN_ENDS: Final = {"vad": "vad_silence", "stt": "baseten_end_of_speech"}


# --------------------------------------------------------------------------------------------
# Pure logic: value checks, event construction, pairing, percentiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TranscriptFinal:
    """One FINAL transcript as measured by the STT plugin (wall-clock seconds)."""

    latency_s: float | None
    received_wall_time: float
    reconnects_so_far: int | None = None


def clean_latency(seconds: Any) -> tuple[float | None, str | None]:
    """Seconds -> (milliseconds rounded to 0.1, None) or (None, "missing"|"implausible")."""
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None, "missing"
    if math.isnan(seconds):
        return None, "missing"
    if seconds < 0 or seconds > IMPLAUSIBLE_S:
        return None, "implausible"
    return round(seconds * 1000.0, 1), None


@dataclass(frozen=True)
class TurnEnd:
    """What ended a user turn: the turn policy's verdict, or the LiveKit mode's own rule."""

    ended_by: str
    eou_probability: float | None = None
    wait_s: float | None = None  # silence held before the verdict
    decided_at: float = 0.0  # wall clock


@dataclass
class UserTurn:
    """A committed user turn waiting for the reply that answers it."""

    index: int
    item_id: str
    text: str
    metrics: Mapping[str, Any]
    finals: list[TranscriptFinal] = field(default_factory=list)
    stt_reconnects: int | None = None
    end: TurnEnd | None = None

    @property
    def stopped_speaking_at(self) -> float | None:
        v = self.metrics.get("stopped_speaking_at")
        return float(v) if isinstance(v, int | float) else None


@dataclass(frozen=True)
class Reply:
    """The first assistant message that answered a user turn."""

    item_id: str
    metrics: Mapping[str, Any]
    interrupted: bool
    text_chars: int = 0


def build_turn_event(
    turn: UserTurn,
    reply: Reply | None,
    *,
    room: str | None,
    job_id: str | None,
    log_transcripts: bool,
) -> dict[str, Any]:
    """The ``turn_latency`` fields for one turn. Every key is always present (the transcript
    text only when ``log_transcripts``); values are plain JSON types."""
    raw: dict[str, Any] = {
        # the plugin measured each FINAL; the LAST one is what completed the turn's transcript
        # (the same choice LiveKit makes for transcription_delay)
        "transcript_latency_ms": turn.finals[-1].latency_s if turn.finals else None,
    }
    for key, src in _USER_METRIC_KEYS.items():
        raw[key] = turn.metrics.get(src)
    for key, src in _REPLY_METRIC_KEYS.items():
        raw[key] = reply.metrics.get(src) if reply is not None else None

    event: dict[str, Any] = {
        "room": room,
        "job_id": job_id,
        "turn_index": turn.index,
        "turn_id": turn.item_id,
        "reply_id": reply.item_id if reply is not None else None,
        "outcome": (
            "no_reply" if reply is None else "interrupted" if reply.interrupted else "answered"
        ),
        "interrupted": bool(reply is not None and reply.interrupted),
        "transcript_chars": len(turn.text),
        "reply_chars": reply.text_chars if reply is not None else None,
        "stt_finals": len(turn.finals),
    }
    if log_transcripts:
        event["transcript"] = turn.text

    missing: list[str] = []
    implausible: list[str] = []
    for key in LATENCY_KEYS:
        value, problem = clean_latency(raw.get(key))
        event[key] = value
        if problem == "missing":
            missing.append(key)
        elif problem == "implausible":
            implausible.append(key)

    # which signal ended the turn, the audio model's probability then, the silence held
    event["turn_ended_by"] = turn.end.ended_by if turn.end is not None else None
    event["eou_probability"] = (
        round(turn.end.eou_probability, 3)
        if turn.end is not None and turn.end.eou_probability is not None
        else None
    )
    wait = turn.end.wait_s if turn.end is not None else None
    event["turn_wait_ms"] = (
        round(wait * 1000.0, 1) if wait is not None else event.get("end_of_turn_delay_ms")
    )
    event["stt_reconnects"] = turn.stt_reconnects
    if turn.stt_reconnects is None:
        missing.append("stt_reconnects")
    event["missing"] = missing
    event["implausible"] = implausible
    return event


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(
    events: Iterable[Mapping[str, Any]],
    *,
    room: str | None,
    job_id: str | None,
) -> dict[str, Any]:
    """The ``session_latency_summary`` fields: counts, and p50/p95 per latency over the
    turns where that value was present and plausible."""
    events = list(events)
    outcomes: dict[str, int] = {}
    flagged: dict[str, int] = {}
    for ev in events:
        outcomes[ev["outcome"]] = outcomes.get(ev["outcome"], 0) + 1
        for name in (*ev.get("missing", ()), *ev.get("implausible", ())):
            flagged[name] = flagged.get(name, 0) + 1
    summary: dict[str, Any] = {
        "room": room,
        "job_id": job_id,
        "turns": len(events),
        "outcomes": outcomes,
        "flagged": flagged,
    }
    for key in LATENCY_KEYS:
        vals = [float(ev[key]) for ev in events if isinstance(ev.get(key), int | float)]
        summary[f"{key}_count"] = len(vals)
        for q in SUMMARY_PERCENTILES:
            p = percentile(vals, q)
            summary[f"{key}_p{q}"] = round(p, 1) if p is not None else None
    summary["stt_reconnects"] = sum(ev.get("stt_reconnects") or 0 for ev in events)
    return summary


class TurnPairer:
    """Pairs user turns with the replies that answer them and hands each finished turn's
    event to ``on_turn``. No LiveKit objects: fed plain values, so it is unit-testable."""

    def __init__(
        self,
        *,
        on_turn: Callable[[dict[str, Any]], None],
        room: str | None = None,
        job_id: str | None = None,
        log_transcripts: bool = False,
        reconnects_total: Callable[[], int | None] = lambda: None,
        default_end: str | None = None,
    ) -> None:
        """``reconnects_total`` returns the STT's cumulative reconnect count (None if
        unknown); a turn's ``stt_reconnects`` is its growth since the previous turn.
        ``default_end`` names what ends a turn when no verdict is reported (the LiveKit
        mode's own rule, e.g. ``vad_silence``)."""
        self._default_end = default_end
        self._decisions: list[TurnEnd] = []
        self._on_turn = on_turn
        self._room = room
        self._job_id = job_id
        self._log_transcripts = log_transcripts
        self._reconnects_total = reconnects_total
        self._reconnects_at_boundary = reconnects_total()
        self._pending: list[UserTurn] = []
        self._unassigned_finals: list[TranscriptFinal] = []
        self._turn_count = 0
        self.events: list[dict[str, Any]] = []
        self.agent_initiated_replies = 0

    def add_transcript_final(self, final: TranscriptFinal) -> None:
        self._unassigned_finals.append(final)

    def add_turn_end(self, end: TurnEnd) -> None:
        """A turn detector's verdict at a pause; the turn committed next takes the newest."""
        self._decisions.append(end)
        del self._decisions[:-16]

    def add_user_message(
        self, *, item_id: str, text: str, metrics: Mapping[str, Any], created_at: float
    ) -> None:
        # FINALs received before the message was created belong to this turn; later ones
        # (the user already talking again) wait for the next turn.
        finals = [f for f in self._unassigned_finals if f.received_wall_time <= created_at]
        self._unassigned_finals = [f for f in self._unassigned_finals if f not in finals]

        total = self._reconnects_total()
        reconnects: int | None = None
        if total is not None:
            reconnects = max(total - (self._reconnects_at_boundary or 0), 0)
            self._reconnects_at_boundary = total

        # The verdict that ended this turn came just before LiveKit committed it
        # (end of speech + end_of_turn_delay); the message itself may be older (a
        # preemptive generation creates it at the final).
        stopped, delay = metrics.get("stopped_speaking_at"), metrics.get("end_of_turn_delay")
        committed = (
            float(stopped) + float(delay) + DECISION_MATCH_S
            if isinstance(stopped, int | float) and isinstance(delay, int | float)
            else created_at
        )
        decided = [d for d in self._decisions if d.decided_at <= committed]
        self._decisions = [d for d in self._decisions if d.decided_at > committed]
        end = decided[-1] if decided else None
        if end is None and self._default_end is not None:
            end = TurnEnd(ended_by=self._default_end)

        self._turn_count += 1
        self._pending.append(
            UserTurn(
                index=self._turn_count,
                item_id=item_id,
                text=text,
                metrics=dict(metrics),
                finals=finals,
                stt_reconnects=reconnects,
                end=end,
            )
        )

    def add_assistant_message(
        self,
        *,
        item_id: str,
        metrics: Mapping[str, Any],
        interrupted: bool,
        text_chars: int = 0,
    ) -> None:
        turn = self._match(metrics)
        if turn is None:
            # greeting / say() / a second reply (after tool calls) to an already-logged turn
            self.agent_initiated_replies += 1
            return
        # an older turn still pending can no longer be answered: replies are serial
        while self._pending and self._pending[0] is not turn:
            self._emit(self._pending.pop(0), None)
        self._pending.pop(0)
        reply = Reply(
            item_id=item_id, metrics=dict(metrics), interrupted=interrupted, text_chars=text_chars
        )
        self._emit(turn, reply)

    def flush(self) -> None:
        """Log every turn still waiting as unanswered (session end)."""
        while self._pending:
            self._emit(self._pending.pop(0), None)

    def _match(self, metrics: Mapping[str, Any]) -> UserTurn | None:
        started = metrics.get("started_speaking_at")
        e2e = metrics.get("e2e_latency")
        if not isinstance(started, int | float) or not isinstance(e2e, int | float):
            return None
        anchor = started - e2e
        for turn in self._pending:
            stopped = turn.stopped_speaking_at
            if stopped is not None and abs(stopped - anchor) <= ANCHOR_MATCH_TOLERANCE_S:
                return turn
        return None

    def _emit(self, turn: UserTurn, reply: Reply | None) -> None:
        event = build_turn_event(
            turn,
            reply,
            room=self._room,
            job_id=self._job_id,
            log_transcripts=self._log_transcripts,
        )
        self.events.append(event)
        self._on_turn(event)


# --------------------------------------------------------------------------------------------
# Glue: LiveKit session + STT plugin -> pairer -> structlog + Prometheus
# --------------------------------------------------------------------------------------------


class TurnMetricsSink(Protocol):
    """Where numbers go besides the log (``agent.prometheus.PrometheusTurnMetrics``)."""

    def observe_turn(self, event: Mapping[str, Any]) -> None: ...

    def count_stt_reconnects(self, n: int) -> None: ...

    def count_stt_endpoint_switch(self, *, to: str, after_failure: bool) -> None: ...

    def count_stt_errors(self, n: int, *, source: str, recoverable: bool) -> None: ...


def _stat(stt: Any, name: str) -> int | None:
    """One of the plugin's cumulative ``stats`` counters, duck-typed so an STT without
    ``stats`` (a fallback adapter, another vendor) yields "unknown" instead of a crash."""
    value = getattr(getattr(stt, "stats", None), name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _reconnects_of(stt: Any) -> int | None:
    return _stat(stt, "reconnects")


# plugin stats counter -> how it is exported (see agent.prometheus)
_STAT_EXPORTS: Final = ("reconnects", "recoverable_errors", "fatal_errors")


def _stats_as_json(stt: Any) -> dict[str, int | float] | None:
    """The plugin's counters (ints/floats only: no text can leak through them)."""
    stats = getattr(stt, "stats", None)
    if stats is None:
        return None
    is_instance = dataclasses.is_dataclass(stats) and not isinstance(stats, type)
    fields = dataclasses.asdict(stats) if is_instance else vars(stats)
    return {
        k: v
        for k, v in fields.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not k.startswith("_")
    }


def _usage_as_json(usage: Any) -> list[dict[str, Any]]:
    """AgentSessionUsage -> list of plain dicts, zero counters dropped to keep the line short."""
    out: list[dict[str, Any]] = []
    for item in getattr(usage, "model_usage", None) or ():
        dump = item.model_dump(mode="json") if hasattr(item, "model_dump") else dict(vars(item))
        out.append({k: v for k, v in dump.items() if v not in (0, 0.0, None, "", [], {})})
    return out


class TurnMetricsCollector:
    """Listens to one ``AgentSession`` and its STT plugin; see :func:`attach_turn_metrics`."""

    def __init__(
        self,
        session: Any,
        *,
        stt: Any | None,
        room: str | None,
        job_id: str | None,
        log_transcripts: bool,
        logger: Any,
        sink: TurnMetricsSink | None,
        default_end: str | None = None,
        on_turn: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        """Prefer :func:`attach_turn_metrics`, which also subscribes to the events."""
        self._session = session
        self._on_turn_listener = on_turn
        self._stt = stt
        self._room = room
        self._job_id = job_id
        self._log = logger
        self._sink = sink
        self._usage: Any = None
        self._stream_errors = {"recoverable": 0, "fatal": 0}
        self._finalized = False
        # counters as already exported, so each turn exports only the growth
        self._stats_exported = {name: _stat(stt, name) or 0 for name in _STAT_EXPORTS}
        self.pairer = TurnPairer(
            on_turn=self._on_turn,
            room=room,
            job_id=job_id,
            log_transcripts=log_transcripts,
            reconnects_total=lambda: _reconnects_of(self._stt),
            default_end=default_end,
        )
        self.summary: dict[str, Any] | None = None

    # -- subscriptions ------------------------------------------------------------------

    def _subscribe(self) -> None:
        self._session.on("conversation_item_added", self._on_item_added)
        self._session.on("session_usage_updated", self._on_usage)
        self._session.on("close", self._on_close)
        if self._stt is not None:
            self._stt.on("transcript_latency", self._on_transcript_latency)
            self._stt.on("error", self._on_stt_error)
            self._stt.on("endpoint_switched", self._on_endpoint_switched)

    def _unsubscribe(self) -> None:
        for name, cb in (
            ("conversation_item_added", self._on_item_added),
            ("session_usage_updated", self._on_usage),
            ("close", self._on_close),
        ):
            self._session.off(name, cb)
        if self._stt is not None:
            self._stt.off("transcript_latency", self._on_transcript_latency)
            self._stt.off("error", self._on_stt_error)
            self._stt.off("endpoint_switched", self._on_endpoint_switched)

    # -- event handlers (never raise into LiveKit's emitter) ------------------------------

    def _on_item_added(self, ev: Any) -> None:
        try:
            item = ev.item
            if getattr(item, "type", None) != "message":
                return
            text = item.text_content or ""
            metrics = item.metrics or {}
            if item.role == "user":
                self.pairer.add_user_message(
                    item_id=item.id, text=text, metrics=metrics, created_at=item.created_at
                )
            elif item.role == "assistant":
                self.pairer.add_assistant_message(
                    item_id=item.id,
                    metrics=metrics,
                    interrupted=bool(item.interrupted),
                    text_chars=len(text),
                )
        except Exception:
            self._log.warning("turn_metrics_failed", stage="conversation_item_added", exc_info=True)

    def _on_turn_decision(self, decision: Any) -> None:
        try:
            self.pairer.add_turn_end(
                TurnEnd(
                    ended_by=str(decision.signal),
                    eou_probability=decision.eou_probability,
                    wait_s=decision.silence_s,
                    decided_at=float(decision.decided_at),
                )
            )
        except Exception:
            self._log.warning("turn_metrics_failed", stage="turn_decision", exc_info=True)

    def _on_transcript_latency(self, ev: Any) -> None:
        try:
            received = getattr(ev, "received_wall_time", None)
            if not isinstance(received, int | float):
                return
            self.pairer.add_transcript_final(
                TranscriptFinal(
                    latency_s=getattr(ev, "latency_s", None),
                    received_wall_time=float(received),
                    reconnects_so_far=getattr(ev, "reconnects_so_far", None),
                )
            )
        except Exception:
            self._log.warning("turn_metrics_failed", stage="transcript_latency", exc_info=True)

    def _on_stt_error(self, ev: Any) -> None:
        # LiveKit's RecognizeStream reports each failure that reached its retry logic
        recoverable = bool(getattr(ev, "recoverable", False))
        self._stream_errors["recoverable" if recoverable else "fatal"] += 1
        if self._sink is not None:
            self._sink.count_stt_errors(1, source="stream", recoverable=recoverable)

    def _on_endpoint_switched(self, ev: Any) -> None:
        # the plugin logs the switch itself (one line); here it is only counted
        if self._sink is not None:
            self._sink.count_stt_endpoint_switch(
                to="primary" if getattr(ev, "to_primary", False) else "fallback",
                after_failure=bool(getattr(ev, "after_failure", True)),
            )

    def _on_usage(self, ev: Any) -> None:
        self._usage = getattr(ev, "usage", None)

    def _on_close(self, ev: Any) -> None:
        reason = getattr(ev, "reason", None)
        self.finalize(reason=str(getattr(reason, "value", reason)) if reason else None)

    def _on_turn(self, event: dict[str, Any]) -> None:
        self._log.info(TURN_EVENT, **event)
        if self._on_turn_listener is not None:
            try:
                self._on_turn_listener(event)
            except Exception:
                self._log.warning("turn_metrics_failed", stage="on_turn", exc_info=True)
        if self._sink is not None:
            self._sink.observe_turn(event)
            self._export_stats()

    def _export_stats(self) -> None:
        """Push the growth of the plugin's counters since the last export."""
        if self._sink is None:
            return
        delta: dict[str, int] = {}
        for name in _STAT_EXPORTS:
            total = _stat(self._stt, name)
            if total is not None and total > self._stats_exported[name]:
                delta[name] = total - self._stats_exported[name]
                self._stats_exported[name] = total
        self._sink.count_stt_reconnects(delta.get("reconnects", 0))
        self._sink.count_stt_errors(
            delta.get("recoverable_errors", 0), source="server", recoverable=True
        )
        self._sink.count_stt_errors(
            delta.get("fatal_errors", 0), source="server", recoverable=False
        )

    # -- end of session ----------------------------------------------------------------

    def finalize(self, *, reason: str | None = None) -> dict[str, Any] | None:
        """Log still-pending turns as unanswered and one ``session_latency_summary``.
        Idempotent: the ``close`` event calls it, and so may a job shutdown callback."""
        if self._finalized:
            return self.summary
        self._finalized = True
        try:
            self.pairer.flush()
            self._export_stats()
            summary = summarize(self.pairer.events, room=self._room, job_id=self._job_id)
            summary["close_reason"] = reason
            summary["agent_initiated_replies"] = self.pairer.agent_initiated_replies
            summary["stt_stream_errors"] = dict(self._stream_errors)
            summary["stt_stats"] = _stats_as_json(self._stt)
            usage = self._usage
            if usage is None:
                usage = getattr(self._session, "usage", None)
            summary["usage"] = _usage_as_json(usage)
            self.summary = summary
            self._log.info(SUMMARY_EVENT, **summary)
        except Exception:
            self._log.warning("turn_metrics_failed", stage="finalize", exc_info=True)
        finally:
            self._unsubscribe()
        return self.summary


def _room_name(room: Any) -> str | None:
    if room is None or isinstance(room, str):
        return room
    return str(getattr(room, "name", "")) or None


def attach_turn_metrics(
    session: Any,
    *,
    stt: Any | None,
    room: Any = None,
    job_id: str | None = None,
    log_transcripts: bool = False,
    logger: Any = None,
    prometheus: TurnMetricsSink | bool | None = True,
    turn_detection: Any = None,
    on_turn: Callable[[Mapping[str, Any]], None] | None = None,
) -> TurnMetricsCollector:
    """Log one ``turn_latency`` event per user turn of ``session`` and a
    ``session_latency_summary`` when it closes; feed the Prometheus metrics.

    Call it BEFORE ``await session.start(...)`` so no turn is missed.

    Args:
        session: the ``AgentSession``.
        stt: the Baseten STT plugin instance given to the session (source of
            ``transcript_latency`` events, ``stats.reconnects`` and ``error`` events); None
            leaves those fields null and flagged missing.
        room: ``rtc.Room`` or room name, copied into every event (None when room-less).
        job_id: ``ctx.job.id``, copied into every event.
        log_transcripts: include the user's words (``LOG_TRANSCRIPTS``); otherwise only
            their length is logged.
        logger: a structlog logger; default ``structlog.get_logger("agent.turn_metrics")``.
        prometheus: True for the process-wide :func:`agent.prometheus.default_metrics`,
            False/None for none, or any :class:`TurnMetricsSink`.
        turn_detection: the session's turn detection: a detector with ``on_decision``
            (``agent.turn_policy.SignalTurnDetector``) reports each verdict; a LiveKit
            mode name gives every turn that mode's rule as ``turn_ended_by``.
        on_turn: called with each ``turn_latency`` event after it is logged (e.g.
            :class:`agent.turn_publisher.TurnLatencyPublisher`); its errors are logged.
    """
    log = logger if logger is not None else structlog.get_logger("agent.turn_metrics")
    sink: TurnMetricsSink | None
    if prometheus is True:
        sink = default_metrics()
        if problem := multiprocess_problem():
            log.warning("prometheus_misconfigured", problem=problem)
    elif prometheus is False or prometheus is None:
        sink = None
    else:
        sink = prometheus
    default_end = (
        MODE_TURN_ENDS.get(turn_detection, turn_detection)
        if isinstance(turn_detection, str)
        else None
    )
    collector = TurnMetricsCollector(
        session,
        stt=stt,
        room=_room_name(room),
        job_id=job_id,
        log_transcripts=log_transcripts,
        logger=log,
        sink=sink,
        default_end=default_end,
        on_turn=on_turn,
    )
    collector._subscribe()
    if callable(getattr(turn_detection, "on_decision", None)):
        turn_detection.on_decision(collector._on_turn_decision)
    return collector
