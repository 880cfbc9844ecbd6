"""LLM and TTS trouble mid-call: never silence without a trace, and the call carries on.

The worker on a real LiveKit server; a WebRTC caller speaks human recordings while the
OpenAI and Cartesia stand-ins fail one reply each, in the ways their real counterparts do
(``localdev/openai/faults.py``, ``localdev/cartesia/faults.py``). Every failure must be one
``model_error`` line with its cause and a Prometheus sample; a failure LiveKit can retry
(nothing reached the caller yet) must still end in a spoken answer; an LLM that fails for
good must get the spoken apology; and the turn after each must be answered normally.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from agent.config import DEFAULT_ERROR_REPLY
from agent.session_factory import MODEL_RETRIES
from localdev.livekit_server import LocalLiveKitServer
from localdev.stack import LocalStack
from localdev.user_turns import named
from localdev.worker_process import WorkerProcess
from tests.fixtures.e2e import (
    Call,
    e2e_services,
    open_call,
    speak,
)
from tests.test_e2e_worker import _assert_turn_served, _get_text, _sample, _words

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLIPS = [
    "endgame_hear_me",
    "endgame_talking_about",
    "endgame_ditch",
    "two_cities_best_of_times",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def e2e_stack(livekit_server: LocalLiveKitServer) -> AsyncIterator[LocalStack]:
    async with e2e_services(livekit_server) as stack:
        yield stack


def _model_errors(worker: WorkerProcess, room: str) -> list[dict[str, Any]]:
    return worker.find_lines(lambda ln: ln["message"] == "model_error" and ln["room"] == room)


async def _answered(call: Call, stack: LocalStack, clip: str):
    turn = await speak(call, named(clip))
    _assert_turn_served(call, turn, stack)
    return turn


@pytest.mark.e2e
async def test_llm_and_tts_failures_are_retried_reported_and_survived(
    e2e_stack: LocalStack, e2e_worker: WorkerProcess
) -> None:
    llm, tts = e2e_stack.openai, e2e_stack.cartesia
    assert llm is not None and tts is not None
    room = "e2e-model-errors"
    async with open_call(e2e_stack, room=room, identity="caller-m") as call:
        # 1. OpenAI answers 500 before any token: LiveKit retries, the caller gets the answer
        llm.faults.add("status", status=500)
        await _answered(call, e2e_stack, CLIPS[0])
        # 2. Cartesia fails the reply's context before any audio: retried, answered
        tts.faults.add("error", after_chunks=0)
        await _answered(call, e2e_stack, CLIPS[1])
        # 3. OpenAI fails for good (every attempt LiveKit makes): the apology is spoken
        llm.faults.add("status", status=503, count=MODEL_RETRIES + 1)
        failed = await speak(call, named(CLIPS[2]))
        assert _words(failed.agent_transcript.text) == _words(DEFAULT_ERROR_REPLY)
        assert failed.agent_speech.ended_at is not None
        # 4. ...and the call carries on: the next turn is answered normally
        await _answered(call, e2e_stack, CLIPS[3])
        await asyncio.sleep(0.5)  # the last lines reach the log
    print(
        "[e2e model errors] LLM failing every attempt: end of speech -> the apology's audio "
        f"{failed.speech_end_to_agent_audio_s:.2f} s"
    )
    errors = _model_errors(e2e_worker, room)
    summary = [(e["component"], e["retrying"], e.get("status_code")) for e in errors]
    print("[e2e model errors]", summary)
    assert ("llm", True, 500) in summary
    assert any(c == "tts" and r for c, r, _ in summary)
    final_llm = [e for e in errors if e["component"] == "llm" and not e["retrying"]]
    assert len(final_llm) == 1 and final_llm[0]["apology"] is True
    assert all(e["cause"] for e in errors)
    assert llm.faults.injected.count("status") == MODEL_RETRIES + 2 and not llm.faults.pending
    assert tts.faults.injected == ["error"]
    assert e2e_worker.metrics_url is not None
    metrics = await asyncio.to_thread(_get_text, e2e_worker.metrics_url)
    retried = 'voice_agent_model_errors_total{component="llm",recoverable="true"}'
    given_up = 'voice_agent_model_errors_total{component="llm",recoverable="false"}'
    assert _sample(metrics, retried) >= MODEL_RETRIES + 1 and _sample(metrics, given_up) == 1
    assert _sample(metrics, 'voice_agent_model_errors_total{component="tts",recoverable="true"}')


@pytest.mark.e2e
async def test_failures_mid_reply_are_reported_and_the_call_carries_on(
    e2e_stack: LocalStack, e2e_worker: WorkerProcess
) -> None:
    llm, tts = e2e_stack.openai, e2e_stack.cartesia
    assert llm is not None and tts is not None
    room = "e2e-model-errors-mid-reply"
    async with open_call(e2e_stack, room=room, identity="caller-n") as call:
        # 1. the LLM stream is cut after 3 tokens: too late to retry (the caller would hear
        #    them twice), so what came is spoken, then the apology
        llm.faults.add("cut", after_tokens=3)
        cut = await speak(call, named(CLIPS[0]))
        apology = await call.caller.wait_for_transcript(
            role="agent", contains="went wrong", after=cut.said.started_at, timeout=30
        )
        assert apology.final
        # what came before the cut was spoken first: the echo's first words, not the apology
        assert cut.agent_transcript.text.startswith("You said"), cut.agent_transcript
        # 2. the LLM hangs (headers, then nothing): the read timeout makes it retryable
        llm.faults.add("hang")
        hung = await _answered(call, e2e_stack, CLIPS[1])
        # 3. Cartesia's socket closes after 2 audio chunks of the reply: not retried (audio
        #    already played), reported; the next reply opens a new socket
        tts.faults.add("close", after_chunks=2)
        await speak(call, named(CLIPS[2]))
        after = await _answered(call, e2e_stack, CLIPS[3])
        # 4. Cartesia accepts the reply's context and never answers: retried, answered
        tts.faults.add("hang")
        tts_hung = await _answered(call, e2e_stack, CLIPS[0])
        await asyncio.sleep(0.5)
    print(
        f"[e2e model errors] hung LLM: end of speech -> agent audio "
        f"{hung.speech_end_to_agent_audio_s:.2f} s; after the TTS close "
        f"{after.speech_end_to_agent_audio_s:.2f} s; hung TTS "
        f"{tts_hung.speech_end_to_agent_audio_s:.2f} s"
    )
    errors = _model_errors(e2e_worker, room)
    summary = [(e["component"], e["retrying"], e["error_type"]) for e in errors]
    print("[e2e model errors]", summary)
    llm_final = [e for e in errors if e["component"] == "llm" and not e["retrying"]]
    assert len(llm_final) == 1 and llm_final[0]["apology"] is True
    assert any(c == "llm" and r for c, r, _ in summary), "the hang was retried"
    tts_final = [e for e in errors if e["component"] == "tts" and not e["retrying"]]
    assert len(tts_final) == 1 and tts_final[0]["apology"] is False
    assert llm.faults.injected[-2:] == ["cut", "hang"]
    assert tts.faults.injected[-2:] == ["close", "hang"]
    assert any(c == "tts" and r for c, r, _ in summary), "the TTS hang was retried"
