"""The worker on a real LiveKit server with a fallback Baseten deployment.

A WebRTC caller talks to the agent; mid-sentence the primary Baseten stand-in is killed
(SIGKILL: no close frame, sockets gone). The sentence being spoken and the ones after it
are still heard word for word (the stream replays its unfinalised audio to the fallback),
the switch is one log line and one Prometheus sample, and the agent answers every turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from localdev.livekit_server import LocalLiveKitServer
from localdev.stack import LocalStack
from localdev.user_turns import named
from localdev.worker_process import WorkerProcess
from tests.fixtures.e2e import (
    e2e_services,
    open_call,
    speak,
    timing_line,
)
from tests.test_e2e_worker import _assert_no_secrets, _assert_turn_served, _get_text, _sample

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Into the sentence when the primary dies: "It was the best of times, it was the worst of
#: times" is 3.4 s of speech; 1.2 s in, the primary holds unfinalised words.
KILL_AFTER_S = 1.2
SWITCHED = 'voice_agent_stt_endpoint_switches_total{cause="failure",to="fallback"}'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def e2e_stack(livekit_server: LocalLiveKitServer) -> AsyncIterator[LocalStack]:
    """The e2e stack plus a second Baseten stand-in as BASETEN_FALLBACK_MODEL_ENDPOINT."""
    async with e2e_services(livekit_server, baseten_fallback=True) as stack:
        yield stack


@pytest.mark.e2e
async def test_killing_the_primary_baseten_mid_sentence_loses_no_word(
    e2e_stack: LocalStack, e2e_worker: WorkerProcess
) -> None:
    primary, fallback = e2e_stack.baseten, e2e_stack.baseten_fallback
    assert primary is not None and fallback is not None
    assert e2e_stack.env["BASETEN_FALLBACK_MODEL_ENDPOINT"].startswith(fallback.url)
    room = "e2e-failover-call"
    async with open_call(e2e_stack, room=room, identity="caller-f") as call:
        before = await speak(call, named("endgame_hear_me"))
        assert (await primary.stats())["finals_sent"] >= 1
        during_task = asyncio.create_task(speak(call, named("two_cities_best_of_times")))
        await asyncio.sleep(KILL_AFTER_S)
        killed_at = time.time()
        await primary.kill()
        during = await during_task
        after = await speak(call, named("endgame_ditch"))
        heard_again = min(
            seg.first_at
            for seg in call.caller.segments.values()
            if seg.role == "user" and seg.first_at > killed_at
        )
        print(timing_line("before the kill", call, before))
        print(timing_line("killed mid-sentence", call, during))
        print(timing_line("after", call, after))
        print(
            f"[e2e failover] primary killed {KILL_AFTER_S:g} s into the sentence; the next "
            f"user transcript {heard_again - killed_at:.2f} s later"
        )
    for turn in (before, during, after):
        _assert_turn_served(call, turn, e2e_stack)
    stats = await fallback.stats()
    assert stats["connections"] >= 1 and stats["finals_sent"] >= 2
    switches = e2e_worker.find_lines(
        lambda ln: str(ln["message"]).startswith("baseten STT failing over to a fallback")
    )
    assert len(switches) == 1, switches
    assert switches[0]["to_endpoint"] == e2e_stack.env["BASETEN_FALLBACK_MODEL_ENDPOINT"]
    assert e2e_worker.metrics_url is not None
    metrics = await asyncio.to_thread(_get_text, e2e_worker.metrics_url)
    assert _sample(metrics, SWITCHED) == 1, [ln for ln in metrics.splitlines() if "switch" in ln]
    _assert_no_secrets(e2e_worker, e2e_stack)
