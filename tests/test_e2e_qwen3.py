"""The worker on a real LiveKit server with ``BASETEN_MODEL=qwen3-asr``.

Same call as ``test_e2e_worker.py``'s first one (a caller speaks a human recording over
WebRTC; the agent hears it, answers out loud and logs the turn), but the Baseten stand-in
speaks the Qwen3-ASR streaming protocol (base64 appends, commit) and the worker is told so
by the one variable a user sets. LiveKit's flush must reach the server as a commit.
"""

from __future__ import annotations

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
from tests.test_e2e_worker import (
    _assert_no_secrets,
    _assert_turn_logged,
    _assert_turn_served,
    _job_id,
    _turn_latency,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def e2e_stack(livekit_server: LocalLiveKitServer) -> AsyncIterator[LocalStack]:
    """The e2e stack with the Qwen3-protocol Baseten stand-in (overrides the shared one)."""
    async with e2e_services(livekit_server, baseten_model="qwen3-asr") as stack:
        yield stack


@pytest.mark.e2e
async def test_a_call_over_qwen3_asr_is_heard_answered_and_logged(
    e2e_stack: LocalStack, e2e_worker: WorkerProcess
) -> None:
    assert e2e_stack.env["BASETEN_MODEL"] == "qwen3-asr"
    room = "e2e-qwen3-call"
    async with open_call(e2e_stack, room=room, identity="caller-q") as call:
        turn = await speak(call, named("endgame_hear_me"))
        job_id = await _job_id(e2e_worker, room)
        print(timing_line("qwen3 call", call, turn))
    _assert_turn_served(call, turn, e2e_stack)
    _assert_turn_logged(await _turn_latency(e2e_worker, room), room=room, job_id=job_id)
    _assert_no_secrets(e2e_worker, e2e_stack)
    assert e2e_stack.baseten is not None
    stats = await e2e_stack.baseten.stats()
    # the worker spoke Qwen3 (text appends, no binary frame) and ended the turn by commit
    assert stats["appends_received"] > 0 and stats["binary_frames_rejected"] == 0
    assert stats["commits_received"] >= 1 and stats["flush_replies_sent"] >= 1
    assert stats["dropped_connections"] == 0
