"""The LiveKit worker: ``AgentServer`` wiring, per-process prewarm and the job entrypoint.

Job processes are forked from LiveKit's forkserver and receive ``prewarm``/``entrypoint``
by reference (pickled as ``agent.worker.<name>``), so both live here at module level and
re-derive their settings from the environment the main process already validated.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from livekit.agents import AgentServer, JobContext, JobProcess
from livekit.agents import vad as lk_vad
from livekit.plugins import silero

from agent.config import Profile, Settings, load_settings
from agent.logs import configure_structlog, get_logger
from agent.model_errors import ModelErrorReporter
from agent.process_stats import log_process_stats, process_stats
from agent.prometheus import default_metrics

# Imported at module level on purpose: LiveKit plugins must register in the main process's
# main thread, and then the forkserver preloads them once for every job process.
from agent.session_factory import (
    build_assistant,
    build_room_options,
    build_session,
    local_turn_detector_available,
)
from agent.turn_metrics import attach_turn_metrics
from agent.turn_publisher import TurnLatencyPublisher

log = get_logger("agent.worker")

#: LiveKit's default (10 s) is tight for loading Silero + the turn model + plugin imports
#: on throttled containers (livekit/agents #1453, #2927: "process initialization timed out").
INITIALIZE_PROCESS_TIMEOUT_S = 30.0

#: Settings validated by the CLI in this process (console/thread mode runs jobs here).
_process_settings: Settings | None = None


def set_process_settings(settings: Settings) -> None:
    """Record the CLI-validated settings so in-process jobs do not re-read the env."""
    global _process_settings
    _process_settings = settings


def process_settings() -> Settings:
    """Settings for this process: the CLI's, or re-read in a forked job process.

    A job process inherits the main process's environment (``.env`` files already
    applied), which was validated under the stricter WORKER profile before any process
    was started; it only needs the model settings, hence CONSOLE here.
    """
    global _process_settings
    if _process_settings is None:
        _process_settings = load_settings(os.environ, profile=Profile.CONSOLE)
    return _process_settings


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before any job: logging, settings, models."""
    configure_structlog()
    proc.userdata["settings"] = process_settings()
    # Silero weights ship inside the plugin wheel; loading is ~0.3 s of CPU that must not
    # land on the first caller's turn.
    proc.userdata["vad"] = load_vad(proc.userdata["settings"])
    proc.userdata["local_turn_model"] = local_turn_detector_available()
    # The OpenAI SDK's HTTP stack imports its anyio backend lazily on the first request,
    # which blocked the job's event loop for ~120 ms in the middle of the first user turn
    # (LiveKit's loop monitor caught it); audio handling stalls with it. Pay it here.
    importlib.import_module("anyio._backends._asyncio")
    log.debug("job process ready", local_turn_model=proc.userdata["local_turn_model"])


def load_vad(settings: Settings) -> lk_vad.VAD:
    """The worker's Silero VAD, ending speech after ``VAD_MIN_SILENCE_MS``."""
    return silero.VAD.load(min_silence_duration=settings.agent.vad_min_silence_s)


async def entrypoint(ctx: JobContext) -> None:
    """One call: build the pipeline, join the room, greet."""

    configure_structlog()  # idempotent; covers executors that skipped prewarm
    # Join the room now, concurrently with building the pipeline: the WebRTC join is the
    # longest step between dispatch and "agent joined" (~220 ms here), and AgentSession.start
    # would only begin it after its own set-up. JobContext.connect() is idempotent (locked),
    # so start()'s own connect call then just waits for this one.
    connecting = asyncio.create_task(ctx.connect(), name="join_room_early")
    job_fields = {"job_id": ctx.job.id, "room": ctx.room.name}
    # framework records of this job get the fields via LiveKit's context filter, ours via
    # structlog's contextvars (each job has its own process, hence its own context)
    ctx.log_context_fields = dict(job_fields)
    structlog.contextvars.bind_contextvars(**job_fields)

    userdata: dict[str, Any] = ctx.proc.userdata
    settings: Settings = userdata.get("settings") or process_settings()
    vad: lk_vad.VAD = userdata.get("vad") or load_vad(settings)
    parts = build_session(
        settings, vad=vad, local_turn_model_available=userdata.get("local_turn_model")
    )

    # Per-turn latency log lines and Prometheus histograms. Attached before start() so
    # the first turn is measured too; it also owns transcript logging (LOG_TRANSCRIPTS).
    # With PUBLISH_TURN_LATENCY each record also goes to the room (the web client's bars).
    publisher = (
        TurnLatencyPublisher(ctx.room) if settings.observability.publish_turn_latency else None
    )
    if publisher is not None:
        ctx.add_shutdown_callback(publisher.aclose)
    attach_turn_metrics(
        parts.session,
        stt=parts.stt,
        room=ctx.room,
        job_id=ctx.job.id,
        log_transcripts=settings.observability.log_transcripts,
        prometheus=settings.observability.prometheus_port is not None,
        turn_detection=parts.turn_detection,
        on_turn=publisher,
    )

    # A reply the LLM or TTS failed is logged with its cause and counted; a failed LLM
    # reply gets a spoken apology instead of silence (agent/model_errors.py).
    ModelErrorReporter(
        parts.session,
        apology=settings.agent.error_reply,
        sink=default_metrics() if settings.observability.prometheus_port is not None else None,
    )

    # Model usage is logged once, in the collector's session_latency_summary at close.
    if settings.observability.process_stats_interval_s is not None:
        _keep(log_process_stats("job", settings.observability.process_stats_interval_s))

        async def final_stats() -> None:  # what the job holds as its call ends
            log.info("process_stats", role="job", at="shutdown", **process_stats())

        ctx.add_shutdown_callback(final_stats)

    log.info(
        "starting session",
        turn_detection=_describe_turn_detection(parts.turn_detection),
        llm_model=settings.openai.model,
        tts_model=settings.cartesia.model,
        stt_language=settings.baseten.language,
        instructions_source=settings.agent.instructions_source,
    )
    try:
        await parts.session.start(
            agent=build_assistant(settings),
            room=ctx.room,
            room_options=build_room_options(parts.stt),
        )
    except BaseException:
        connecting.cancel()  # nothing to join for: don't leave the task dangling
        raise
    await connecting


def _describe_turn_detection(td: object) -> str:
    return td if isinstance(td, str) else f"{type(td).__name__}({getattr(td, 'model', '?')})"


#: livekit-server offers a job only to workers whose reported load is below its
#: ``agents.target_load``: 0.7 unless the server's config changes it (``DefaultTargetLoad``,
#: livekit-server pkg/agent/config.go; the affinity is ``max(0, target - load)``). A load of
#: jobs/max therefore stopped dispatch at 70 % of WORKER_MAX_CALLS: ``bench.capacity_bench``
#: at 4, 6 and 8 calls never got the 4th, 6th and 7th job request.
SERVER_TARGET_LOAD = 0.7


def _calls_load(max_calls: int) -> Callable[[AgentServer], float]:
    """Each call slot is worth ``SERVER_TARGET_LOAD / max_calls``: the server stops offering
    jobs, and the worker reports itself full, exactly when all slots are taken."""

    def load(server: AgentServer) -> float:
        return SERVER_TARGET_LOAD * len(server.active_jobs) / max_calls

    return load


def build_server(settings: Settings) -> AgentServer:
    """The ``AgentServer`` with prewarm and the entrypoint registered.

    A non-empty ``LIVEKIT_AGENT_NAME`` turns on explicit dispatch: rooms then get this
    agent only when dispatched by name (LiveKit's ``LIVEKIT_AGENT_NAME_OVERRIDE`` wins).
    """
    lk = settings.livekit
    server_kwargs: dict[str, Any] = {} if lk.health_port is None else {"port": lk.health_port}
    if lk.max_calls is not None:
        # full (no new dispatch, on either side) when every call slot is taken
        server_kwargs["load_fnc"] = _calls_load(lk.max_calls)
        server_kwargs["load_threshold"] = SERVER_TARGET_LOAD
    server = AgentServer(
        **server_kwargs,
        ws_url=lk.url,
        api_key=lk.api_key.reveal() or None,
        api_secret=lk.api_secret.reveal() or None,
        drain_timeout=lk.drain_timeout_s,
        initialize_process_timeout=INITIALIZE_PROCESS_TIMEOUT_S,
        prometheus_port=settings.observability.prometheus_port,
        setup_fnc=prewarm,
        # our own modules join the plugins in the forkserver preload: imported once, shared
        # copy-on-write by every job process instead of re-imported per process
        preload_modules=["agent.worker"],
    )
    server.rtc_session(entrypoint, agent_name=lk.agent_name)
    interval = settings.observability.process_stats_interval_s
    if interval is not None:
        server.on("worker_started", lambda: _keep(log_process_stats("worker", interval)))
    return server


_background: set[asyncio.Task[None]] = set()


def _keep(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` for the process's life (a reference kept, so it is not collected)."""
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
