"""Rolling restarts and crashes with live calls on several workers, on a real LiveKit server.

* **Rolling deploy** (what Kubernetes does): two workers (``WORKER_MAX_CALLS=1``) each carry
  a call; a third, new worker starts; the first old one gets SIGTERM while its caller is
  mid-sentence. Its call carries on (the reply to that sentence and to the next one), the
  other old worker's call is untouched, a new call goes to the new worker, and the drained
  worker exits 0 once its caller hangs up: zero calls dropped.
* **Crash**: the worker serving a call is SIGKILLed (its whole process group, as an OOM kill
  of the pod). livekit-server 1.13.5 does not re-dispatch the job (``pkg/rtc/room.go``
  launches agents only when a room or participant starts; ``AgentHandler.deregisterJob``
  leaves a TODO), so the caller's app must: it sees the agent leave and dispatches again.
  Measured: kill -> the agent gone for the caller, -> a new agent listening, -> answered.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import pytest

from localdev.caller import ParticipantRecord, RoomAdmin
from localdev.stack import LocalStack
from localdev.user_turns import named
from localdev.worker_process import WorkerProcess
from tests.fixtures.e2e import (
    DRAIN_TIMEOUT_S,
    JOIN_TIMEOUT_S,
    Call,
    _wait_agent_listening,
    open_call,
    speak,
    worker_log_dir,
)
from tests.test_e2e_worker import LOG_TIMEOUT_S, _assert_turn_served

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _worker(stack: LocalStack, agent_name: str, name: str) -> WorkerProcess:
    return WorkerProcess(
        env={
            **stack.env,
            "LIVEKIT_AGENT_NAME": agent_name,
            "WORKER_MAX_CALLS": "1",
            "DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),
        },
        log_dir=worker_log_dir(name),
    )


def _serving(workers: list[WorkerProcess], room: str) -> WorkerProcess:
    """The worker whose job runs ``room`` (it logged "starting session" for it)."""
    found = [
        w
        for w in workers
        if w.find_lines(lambda ln: ln["message"] == "starting session" and ln["room"] == room)
    ]
    assert len(found) == 1, f"{room}: served by {len(found)} workers"
    return found[0]


async def _open_calls(
    stack: LocalStack, exit_stack: AsyncExitStack, agent_name: str, rooms: list[str]
) -> list[Call]:
    calls = []
    for room in rooms:  # one at a time: each then finds the other worker still free
        calls.append(
            await exit_stack.enter_async_context(
                open_call(stack, room=room, identity=f"caller-{room}", agent_name=agent_name)
            )
        )
    return calls


@pytest.mark.e2e
async def test_a_rolling_restart_drops_no_call(e2e_stack: LocalStack) -> None:
    agent = "e2e-rolling-agent"
    async with AsyncExitStack() as workers_stack:
        old = [
            await workers_stack.enter_async_context(_worker(e2e_stack, agent, f"old{i}"))
            for i in range(2)
        ]
        async with AsyncExitStack() as calls_stack:
            a, b = await _open_calls(e2e_stack, calls_stack, agent, ["roll-a", "roll-b"])
            draining, other = _serving(old, "roll-a"), _serving(old, "roll-b")
            assert draining is not other
            new = await workers_stack.enter_async_context(_worker(e2e_stack, agent, "new"))
            sigterm_at = 0.0

            def sigterm() -> None:
                nonlocal sigterm_at
                sigterm_at = time.time()
                draining.terminate()

            turn = await speak(a, named("endgame_hear_me"), after_speech=sigterm)
            _assert_turn_served(a, turn, e2e_stack)
            assert turn.agent_speech.started_at > sigterm_at
            await draining.wait_for_line(
                lambda ln: ln["message"] == "draining worker", timeout=LOG_TIMEOUT_S
            )
            # the draining worker's call goes on: another sentence, another answer
            _assert_turn_served(a, await speak(a, named("endgame_ditch")), e2e_stack)
            # the other old worker's call is untouched
            _assert_turn_served(b, await speak(b, named("endgame_talking_about")), e2e_stack)
            # a new call reaches the new worker (one draining, the other full)
            async with open_call(
                e2e_stack, room="roll-c", identity="caller-roll-c", agent_name=agent
            ) as c:
                assert _serving([*old, new], "roll-c") is new
                _assert_turn_served(c, await speak(c, named("two_cities_best_of_times")), e2e_stack)
            assert draining.returncode is None, "the draining worker quit during a live call"
        # every caller hung up: the drained worker exits 0, nobody else exited
        assert await draining.wait(timeout=DRAIN_TIMEOUT_S) == 0
        assert other.returncode is None and new.returncode is None
        summaries = [
            ln
            for w in (*old, new)
            for ln in w.find_lines(lambda ln: ln["message"] == "session_latency_summary")
        ]
        reasons = sorted(str(s["close_reason"]) for s in summaries)
        print(f"[e2e rolling] close reasons: {reasons}; sigterm -> drained exit ok")
        assert reasons == ["participant_disconnected"] * 3


@pytest.mark.e2e
async def test_a_worker_crash_mid_call_is_back_after_a_redispatch(e2e_stack: LocalStack) -> None:
    agent = "e2e-crash-agent"
    lk = e2e_stack.livekit
    assert lk is not None
    async with AsyncExitStack() as exit_stack:
        workers = [
            await exit_stack.enter_async_context(_worker(e2e_stack, agent, f"crash{i}"))
            for i in range(2)
        ]
        (call,) = await _open_calls(e2e_stack, exit_stack, agent, ["crash-a"])
        _assert_turn_served(call, await speak(call, named("endgame_hear_me")), e2e_stack)
        victim = _serving(workers, "crash-a")
        survivor = next(w for w in workers if w is not victim)
        old_agent = call.agent.identity
        killed_at = time.time()
        await asyncio.to_thread(victim.close)  # SIGKILL to its process group

        def gone() -> ParticipantRecord | None:
            rec = call.caller.participants.get(old_agent)
            return rec if rec is not None and rec.left_at is not None else None

        left = await call.caller.wait_for(gone, timeout=JOIN_TIMEOUT_S, what="the agent to leave")
        assert left.left_at is not None
        # what the caller's app does: the agent left a live call, so dispatch it again
        async with RoomAdmin(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret) as admin:
            await admin.dispatch_agent(agent_name=agent, room="crash-a")

        def new_agent() -> ParticipantRecord | None:
            for rec in call.caller.participants.values():
                if rec.is_agent and rec.identity != old_agent and rec.left_at is None:
                    return rec
            return None

        fresh = await call.caller.wait_for(new_agent, timeout=JOIN_TIMEOUT_S, what="a new agent")
        listening_at = await _wait_agent_listening(call.caller, fresh.identity, JOIN_TIMEOUT_S)
        again = await speak(call, named("endgame_talking_about"))
        _assert_turn_served(call, again, e2e_stack)
        assert _serving([survivor], "crash-a") is survivor
        print(
            f"[e2e crash] SIGKILL -> agent gone for the caller {left.left_at - killed_at:.2f} s, "
            f"-> new agent joined {fresh.joined_at - killed_at:.2f} s, listening "
            f"{listening_at - killed_at:.2f} s, answered "
            f"{again.agent_speech.started_at - killed_at:.2f} s (incl. speaking the sentence)"
        )


@pytest.mark.e2e
async def test_worker_max_calls_is_the_number_of_calls_a_worker_takes(
    e2e_stack: LocalStack,
) -> None:
    """``WORKER_MAX_CALLS=4``: four calls each get an agent on the first dispatch, and a
    fifth is not offered to the full worker. livekit-server stops offering jobs at its
    target load (0.7), so a load of jobs/max used to end dispatch at the 4th call (3/4)."""
    agent = "e2e-max-calls-agent"
    max_calls = 4
    worker = WorkerProcess(
        env={**e2e_stack.env, "LIVEKIT_AGENT_NAME": agent, "WORKER_MAX_CALLS": str(max_calls)},
        log_dir=worker_log_dir("max-calls"),
    )
    async with worker, AsyncExitStack() as calls_stack:
        calls = []
        for i in range(max_calls):
            calls += await _open_calls(e2e_stack, calls_stack, agent, [f"e2e-max-{i}"])
            # the server has seen the new load: status updates come every 2.5 s
            # (UPDATE_STATUS_INTERVAL, livekit/agents/worker.py)
            await asyncio.sleep(3.0)
        assert [c.dispatch_attempts for c in calls] == [1] * max_calls
        assert len({c.agent.identity for c in calls}) == max_calls

        lk = e2e_stack.livekit
        assert lk is not None
        async with RoomAdmin(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret) as admin:
            await admin.dispatch_agent(agent_name=agent, room="e2e-max-overflow")
            await asyncio.sleep(6.0)  # several of the worker's status updates
        assert not worker.find_lines(
            lambda ln: ln["message"] == "received job request" and ln["room"] == "e2e-max-overflow"
        ), "a full worker was offered a fifth call"
        assert worker.find_lines(
            lambda ln: ln["message"] == "worker is at full capacity, marking as unavailable"
        )
