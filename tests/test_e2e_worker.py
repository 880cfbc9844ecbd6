"""The worker end to end, as users run it, on a real LiveKit server.

``python agent.py start`` configured by environment variables only (``LocalStack.env``), a
real ``livekit-server`` (SFU over WebRTC on loopback), a room and an explicit dispatch made
with ``livekit-api``, and a caller using the ``livekit`` SDK who speaks human recordings
(``localdev.human_speech``). The paid services are the local stand-ins speaking their real
wire protocols: Baseten streaming Whisper (real Whisper tiny.en over Silero VAD, in its own
process), OpenAI Chat Completions (echoes the user) and Cartesia TTS (espeak-ng). Everything
asserted is what a client sees over LiveKit plus the worker's JSON log; measured latencies
are printed (``-s``), not asserted.

One stack and one worker per module; the SIGTERM test runs its own worker (it ends it).
The first tests (no ``e2e`` mark, no LiveKit server) check the two tools themselves.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import aiohttp
import pytest

from localdev.stack import LocalStack, missing_services
from localdev.user_turns import UserTurn, named
from localdev.wer import normalise, word_error_rate
from localdev.worker_process import WorkerFailed, WorkerProcess
from tests.fixtures.e2e import (
    DRAIN_TIMEOUT_S,
    LLM_TTFT_S,
    TTS_TTFB_S,
    Call,
    Turn,
    open_call,
    speak,
    timing_line,
    worker_log_dir,
)

# the module's stack and worker live on the module's event loop (tests/fixtures/e2e.py)
pytestmark = pytest.mark.asyncio(loop_scope="module")

LOG_TIMEOUT_S = 30.0
# Shortest stretch of received agent speech that counts as a spoken reply: the echoed reply
# ("You said: <phrase>. How can I help with that?") is ~3 s of espeak speech.
MIN_REPLY_SPEECH_S = 1.0
#: What the caller may mishear at most: the issue's bar for human speech (the stand-in's
#: Whisper hears these clips word for word when fed directly; WebRTC's Opus round trip
#: is the difference).
MAX_WER = 0.10


def _turn(name: str) -> UserTurn:
    return named(name)


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _sample(metrics: str, name: str) -> float:
    """Value of the sample line ``name value`` in a Prometheus text exposition (0 if absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _words(text: str) -> str:
    return " ".join(normalise(text))


def _assert_no_secrets(worker: WorkerProcess, stack: LocalStack) -> None:
    """No credential in any worker output. Names only in the message: never the value."""
    output = worker.stdout + worker.stderr
    leaked = [
        name
        for name, value in stack.env.items()
        if ("KEY" in name or "SECRET" in name) and value in output
    ]
    assert not leaked, f"worker output contains the value of {leaked}"


async def _job_id(worker: WorkerProcess, room: str) -> str:
    started = await worker.wait_for_line(
        lambda ln: ln["message"] == "starting session" and ln["room"] == room,
        timeout=LOG_TIMEOUT_S,
        what=f"'starting session' in {room}",
    )
    job_id = str(started["job_id"])
    assert job_id.startswith("AJ_")
    return job_id


async def _turn_latency(worker: WorkerProcess, room: str) -> dict[str, object]:
    return await worker.wait_for_line(
        lambda ln: ln["message"] == "turn_latency" and ln["room"] == room,
        timeout=LOG_TIMEOUT_S,
        what=f"turn_latency in {room}",
    )


def _assert_turn_served(call: Call, turn: Turn, stack: LocalStack) -> None:
    """What the caller saw: the agent heard the recording and answered it out loud."""
    assert call.agent.is_agent
    # LiveKit's transcription stream for the caller's mic track carries what was said
    assert turn.user_transcript.track_id == call.caller.mic_track_sid
    said = turn.user_turn.text or ""
    wer = word_error_rate(said, turn.heard)
    print(f"[e2e hearing] WER {wer:.2f}: said {said!r}, heard {turn.heard!r}")
    assert wer <= MAX_WER, (said, turn.heard)
    heard = _words(turn.user_transcript.text)
    # the reply is about what this caller said (the LLM stand-in echoes it): no crosstalk
    assert heard in _words(turn.agent_transcript.text), turn.agent_transcript
    # ...and it was spoken: a stretch of speech-level audio on the agent's track
    assert turn.agent_speech.ended_at is not None
    spoken_s = turn.agent_speech.ended_at - turn.agent_speech.started_at
    assert spoken_s >= MIN_REPLY_SPEECH_S, f"only {spoken_s:.2f} s of agent speech"
    assert stack.cartesia is not None
    spoken = [_words(text) for text in stack.cartesia.transcripts().values()]
    assert any(heard in text for text in spoken)


def _assert_turn_logged(line: dict[str, object], *, room: str, job_id: str) -> None:
    assert line["room"] == room and line["job_id"] == job_id
    assert line["level"] == "INFO" and line["logger"] == "agent.turn_metrics"
    assert line["outcome"] == "answered" and line["stt_finals"] == 1
    assert line["missing"] == [] and line["implausible"] == []
    # injected service delays are floors for what the worker measured
    assert isinstance(line["llm_ttft_ms"], float) and line["llm_ttft_ms"] >= LLM_TTFT_S * 1000
    assert isinstance(line["tts_ttfb_ms"], float) and line["tts_ttfb_ms"] >= TTS_TTFB_S * 1000
    e2e = line["e2e_latency_ms"]
    assert isinstance(e2e, float) and e2e >= (LLM_TTFT_S + TTS_TTFB_S) * 1000


# ------------------------------------------------------------------ the tools themselves
async def test_stack_env_is_a_valid_worker_config_and_stand_ins_check_their_keys() -> None:
    from agent.config import Profile, load_settings

    async with LocalStack(livekit=False) as stack:
        env = stack.env
        assert set(env) == {
            "LIVEKIT_AGENT_NAME",
            "BASETEN_MODEL",
            "BASETEN_MODEL_ENDPOINT",
            "BASETEN_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            "CARTESIA_BASE_URL",
            "CARTESIA_API_KEY",
        }
        assert env["BASETEN_MODEL_ENDPOINT"].startswith("ws://127.0.0.1:")
        assert env["BASETEN_MODEL"] == "whisper"  # the protocol the stand-in speaks
        placeholders = {"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k" * 8}
        settings = load_settings(
            {**env, **placeholders, "LIVEKIT_API_SECRET": "s" * 32}, profile=Profile.WORKER
        )
        assert settings.livekit.agent_name == stack.agent_name
        assert len(set(stack.secrets)) == 3
        assert not [s for s in stack.secrets if s in repr(stack)]
        assert stack.openai is not None

        async with aiohttp.ClientSession() as http:
            for key, status in ((env["OPENAI_API_KEY"], 200), (env["CARTESIA_API_KEY"], 401)):
                headers = {"Authorization": f"Bearer {key}"}
                async with http.get(env["OPENAI_BASE_URL"] + "/models", headers=headers) as r:
                    assert r.status == status
            # the Baseten stand-in (its own process) checks its key at the upgrade
            assert stack.baseten is not None
            wrong = {"Authorization": f"Api-Key {env['OPENAI_API_KEY']}"}
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(env["BASETEN_MODEL_ENDPOINT"], headers=wrong)
            assert refused.value.status == 401
            assert (await stack.baseten.stats())["auth_failures"] == 1


async def test_filling_gaps_starts_stand_ins_only_for_services_without_keys() -> None:
    user_env = {
        "LIVEKIT_URL": "wss://example.livekit.cloud",
        "LIVEKIT_API_KEY": "APIuser",
        "LIVEKIT_API_SECRET": "user-secret",
        "OPENAI_API_KEY": "sk-user",
        "CARTESIA_API_KEY": "",  # empty counts as missing
    }
    assert missing_services(user_env) == {"baseten", "cartesia"}
    async with LocalStack.filling_gaps(user_env) as stack:
        assert stack.livekit is None and stack.openai is None
        assert stack.baseten is not None and stack.cartesia is not None
        assert {k.split("_")[0] for k in stack.env} == {"LIVEKIT", "BASETEN", "CARTESIA"}
        assert set(stack.env) & set(user_env) == {"CARTESIA_API_KEY"}


async def test_worker_process_reports_an_early_exit_without_secrets() -> None:
    secret = "bt-secret-that-must-not-leak-0123456789"
    # a config error: the worker exits 2 before connecting anywhere
    worker = WorkerProcess(env={"BASETEN_API_KEY": secret, "BASETEN_MODEL_ENDPOINT": secret})
    with pytest.raises(WorkerFailed, match="exited with code 2") as failure:
        await worker.start(timeout=60)
    assert "config error" in str(failure.value) and secret not in str(failure.value)
    assert worker.returncode == 2


@pytest.mark.e2e
async def test_a_call_is_heard_answered_and_logged(
    e2e_stack: LocalStack, e2e_worker: WorkerProcess
) -> None:
    room = "e2e-call"
    async with open_call(e2e_stack, room=room, identity="caller-1") as call:
        turn = await speak(call, _turn("endgame_talking_about"))
        job_id = await _job_id(e2e_worker, room)
        print(timing_line("one call", call, turn))
        # logged (and published) once the reply's playout is over
        records = await call.caller.wait_for(
            lambda: call.caller.turn_records or None, timeout=30, what="turn_latency record"
        )
    _assert_turn_served(call, turn, e2e_stack)
    line = await _turn_latency(e2e_worker, room)
    _assert_turn_logged(line, room=room, job_id=job_id)
    # PUBLISH_TURN_LATENCY: the room got the very record the worker logged (the web client's
    # latency bar), without the ids of the room it is sent in
    assert len(records) == 1, records
    logged = {k: v for k, v in line.items() if k in records[0]}
    assert records[0] == logged
    assert set(line) - set(records[0]) >= {"room", "job_id"}
    assert records[0]["e2e_latency_ms"] == line["e2e_latency_ms"] is not None
    # transcripts are personal data: not in the log unless LOG_TRANSCRIPTS=true
    assert turn.user_transcript.text not in e2e_worker.stdout
    assert "talking about" not in e2e_worker.stdout.lower()
    _assert_no_secrets(e2e_worker, e2e_stack)

    # the turn recorded in the job process reaches the main process's /metrics
    # (prometheus_client multiprocess mode; agent/prometheus.py)
    assert not e2e_worker.find_lines(lambda ln: ln["message"] == "prometheus_misconfigured")
    assert e2e_worker.metrics_url is not None
    metrics = await asyncio.to_thread(_get_text, e2e_worker.metrics_url)
    assert _sample(metrics, 'voice_agent_turns_total{outcome="answered"}') >= 1
    assert _sample(metrics, "voice_agent_e2e_latency_seconds_count") >= 1


@pytest.mark.e2e
async def test_two_simultaneous_callers_are_both_served(
    e2e_stack: LocalStack, e2e_worker: WorkerProcess
) -> None:
    async def one(room: str, identity: str, clip: str) -> tuple[Call, Turn, str]:
        async with open_call(e2e_stack, room=room, identity=identity) as call:
            turn = await speak(call, _turn(clip))
            return call, turn, await _job_id(e2e_worker, room)

    # two speakers: a question from the Endgame dialogue, a statement read from Dickens
    rooms = {"e2e-room-a": "endgame_hear_me", "e2e-room-b": "two_cities_best_of_times"}
    results = await asyncio.gather(
        *(one(room, f"caller-{room[-1]}", clip) for room, clip in rooms.items())
    )
    job_ids = set()
    for room, (call, turn, job_id) in zip(rooms, results, strict=True):
        print(timing_line(f"concurrent call {room}", call, turn))
        _assert_turn_served(call, turn, e2e_stack)
        _assert_turn_logged(await _turn_latency(e2e_worker, room), room=room, job_id=job_id)
        job_ids.add(job_id)
    assert len(job_ids) == 2  # two jobs, one per room
    # the calls overlapped: both agents were in their rooms, one of them still answering,
    # at the same moment (when one dispatch has to be retried, one agent may already be
    # speaking before the other joins, so compare whole spans, not start times)
    (a_call, a_turn, _), (b_call, b_turn, _) = results
    both_listening = max(a_call.listening_at, b_call.listening_at)
    # (a reply still playing has no end yet: it lasts at least until now)
    first_reply_end = min(t.agent_speech.ended_at or time.time() for t in (a_turn, b_turn))
    assert both_listening < first_reply_end
    _assert_no_secrets(e2e_worker, e2e_stack)


@pytest.mark.e2e
async def test_sigterm_during_a_call_lets_it_finish_then_exits_0(e2e_stack: LocalStack) -> None:
    """Rolling deploy: SIGTERM arrives while a caller is mid-turn. The worker drains: the
    reply is still spoken, the session ends normally when the caller hangs up, exit 0."""
    agent_name = "e2e-drain-agent"  # its own name: no dispatch can reach the module's worker
    room, clip = "e2e-drain", "audioeval_quick_brown_fox"
    worker = WorkerProcess(
        env={
            **e2e_stack.env,
            "LIVEKIT_AGENT_NAME": agent_name,
            "DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),
        },
        log_dir=worker_log_dir("drain"),
    )
    async with worker:
        sigterm_at = 0.0

        def sigterm() -> None:
            nonlocal sigterm_at
            sigterm_at = time.time()
            worker.terminate()

        # open_call's rooms close 1 s after the caller leaves (LiveKit's default is 20 s, which
        # would only make the drain wait longer): then the job, and the drain, ends
        async with open_call(
            e2e_stack, room=room, identity="caller-drain", agent_name=agent_name
        ) as call:
            job_id = await _job_id(worker, room)
            turn = await speak(call, _turn(clip), after_speech=sigterm)
            print(timing_line("call during drain", call, turn))
            await worker.wait_for_line(
                lambda ln: ln["message"] == "draining worker", timeout=LOG_TIMEOUT_S
            )
            assert worker.returncode is None, "the worker quit during a live call"
        _assert_turn_served(call, turn, e2e_stack)
        assert turn.agent_speech.started_at > sigterm_at  # the reply came after SIGTERM
        _assert_turn_logged(await _turn_latency(worker, room), room=room, job_id=job_id)

        # the caller hung up: the session closes normally and the drained worker exits 0
        summary = await worker.wait_for_line(
            lambda ln: ln["message"] == "session_latency_summary" and ln["room"] == room,
            timeout=LOG_TIMEOUT_S,
        )
        assert summary["close_reason"] == "participant_disconnected"
        assert summary["turns"] == 1 and summary["outcomes"] == {"answered": 1}
        assert await worker.wait(timeout=DRAIN_TIMEOUT_S) == 0
    messages = worker.messages()
    assert messages.index("draining worker") < messages.index("session_latency_summary")
    errors = [ln for ln in worker.lines if ln.get("level") in ("ERROR", "CRITICAL")]
    # The one error tolerated: the room closes 1 s after the caller leaves, and livekit-server
    # can tear down the agent's data channels ('_reliable', '_lossy', '_data_track') before
    # the agent has disconnected; the Rust rtc core logs that as an error although the call
    # had already ended normally (the session summary above says so).
    teardown = re.compile(r"publisher data channel '\w+' closed unexpectedly")
    assert not [ln for ln in errors if not teardown.search(str(ln["message"]))], errors
    _assert_no_secrets(worker, e2e_stack)
