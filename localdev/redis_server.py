"""A real ``redis-server`` on loopback: the shared state of a multi-node LiveKit cluster.

LiveKit's distributed deployment is several ``livekit-server`` nodes pointed at one Redis
(``redis.address``): rooms, participants and agent dispatch are routed between nodes
through it. This starts Debian's ``redis-server`` (``apt-get install redis-server``) on a
free loopback port, with no persistence (``--save ''``, no AOF) and no config file, and
waits until it answers ``PING``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil

from localdev.service import AsyncService, die_with_parent, free_port, stop_process

REDIS_SERVER_BINARY = "redis-server"
INSTALL_HINT = "install it with: apt-get install redis-server"
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class RedisUnavailable(RuntimeError):
    """``redis-server`` is not installed."""


class LocalRedisServer(AsyncService):
    """``async with LocalRedisServer() as redis:`` then ``redis.address`` (``host:port``)."""

    def __init__(self, *, binary: str | None = None) -> None:
        self._binary = binary
        self._port = 0
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as LiveKit's ``redis.address`` takes it."""
        if not self._port:
            raise RuntimeError("redis-server not started")
        return f"127.0.0.1:{self._port}"

    async def start(self) -> None:
        binary = self._binary or shutil.which(REDIS_SERVER_BINARY)
        if binary is None:
            raise RedisUnavailable(f"{REDIS_SERVER_BINARY} not found on PATH; {INSTALL_HINT}")
        self._port = free_port()
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(self._port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        try:
            await asyncio.wait_for(self._wait_ready(), READY_TIMEOUT_S)
        except BaseException:
            await self.aclose()
            raise

    async def _wait_ready(self) -> None:
        while True:
            assert self._proc is not None
            if self._proc.returncode is not None:
                raise RuntimeError(f"redis-server exited with code {self._proc.returncode}")
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
                writer.write(b"PING\r\n")
                await writer.drain()
                reply = await reader.readline()
                writer.close()
                if reply.startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await stop_process(proc, grace_s=STOP_TIMEOUT_S)
