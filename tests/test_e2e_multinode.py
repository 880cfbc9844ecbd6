"""LiveKit's distributed deployment: two livekit-server nodes sharing a real Redis.

Users who outgrow one machine run several livekit-server nodes on one Redis, with workers
registered wherever. Here: Redis (Debian's ``redis-server``), two nodes with the same keys,
one worker registered with each node (``WORKER_MAX_CALLS=1``, so a worker with a call is
full and the next dispatch must go elsewhere), and two callers talking at once, one joining
through each node. Each caller gets an agent that hears and answers them, and the two calls
are served by different workers: dispatch crosses nodes through Redis.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import pytest_asyncio
from livekit import api

from localdev.caller import RoomAdmin
from localdev.livekit_server import LocalLiveKitServer
from localdev.redis_server import LocalRedisServer
from localdev.stack import LocalStack
from localdev.user_turns import named
from localdev.worker_process import WorkerProcess
from tests.fixtures.e2e import (
    DRAIN_TIMEOUT_S,
    e2e_services,
    open_call,
    speak,
    worker_log_dir,
)
from tests.fixtures.livekit import _unavailable
from tests.test_e2e_worker import _assert_turn_served, _job_id

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Cluster:
    def __init__(self, nodes: list[LocalLiveKitServer], stack: LocalStack) -> None:
        self.nodes = nodes
        self.stack = stack
        self.workers: list[WorkerProcess] = []


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    if shutil.which("redis-server") is None:
        _unavailable("redis-server not installed (apt-get install redis-server)")
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(LocalRedisServer())
        first = LocalLiveKitServer(redis_address=redis.address)
        await stack.enter_async_context(first)
        second = LocalLiveKitServer(
            redis_address=redis.address, api_key=first.api_key, api_secret=first.api_secret
        )
        await stack.enter_async_context(second)
        services = await stack.enter_async_context(e2e_services(first))
        c = Cluster([first, second], services)
        for i, node in enumerate(c.nodes):
            worker = WorkerProcess(
                env={
                    **services.env,
                    "LIVEKIT_URL": node.url,  # each worker registers with its own node
                    "WORKER_MAX_CALLS": "1",
                    "DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),
                },
                log_dir=worker_log_dir(f"node{i}"),
            )
            c.workers.append(await stack.enter_async_context(worker))
        yield c


@pytest.mark.e2e
async def test_callers_on_either_node_get_an_agent_and_dispatch_spreads(
    cluster: Cluster,
) -> None:
    first, second = cluster.nodes
    rooms = ["multinode-a", "multinode-b"]
    clips = ["endgame_hear_me", "endgame_talking_about"]

    async def call(
        room: str, via: LocalLiveKitServer, other: LocalLiveKitServer, clip: str
    ) -> None:
        async with open_call(cluster.stack, room=room, identity=f"caller-{room}", via=via) as c:
            turn = await speak(c, named(clip))
            _assert_turn_served(c, turn, cluster.stack)
            # one cluster: the other node sees the room and both its participants
            async with RoomAdmin(
                url=other.url, api_key=other.api_key, api_secret=other.api_secret
            ) as admin:
                listed = await admin.lkapi.room.list_participants(
                    api.ListParticipantsRequest(room=room)
                )
            assert {p.identity for p in listed.participants} == {
                f"caller-{room}",
                c.agent.identity,
            }

    # both calls at once: the first worker to take one is full for the other
    await asyncio.gather(
        call(rooms[0], first, second, clips[0]),
        call(rooms[1], second, first, clips[1]),
    )
    served = {}
    for room in rooms:
        for i, worker in enumerate(cluster.workers):
            if worker.find_lines(
                lambda ln, room=room: ln["message"] == "starting session" and ln["room"] == room
            ):
                served[room] = i
    print(f"[e2e multinode] room -> worker (registered with node): {served}")
    assert set(served) == set(rooms), served
    assert sorted(served.values()) == [0, 1], "each worker served one call"
    for room, i in served.items():
        assert (await _job_id(cluster.workers[i], room)).startswith("AJ_")
