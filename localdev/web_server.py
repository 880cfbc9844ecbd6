"""The web client's server: the built page (``web/dist``) and its token endpoint.

``POST /api/session`` is the one thing a browser cannot do for itself: it creates a room,
dispatches the agent to it and answers with a short-lived access token for that room
alone, in LiveKit's standard token-endpoint shape (``server_url``, ``participant_token``).
The API secret signs tokens here and never leaves this process.

Safe by default for a developer's machine:

* binds loopback (``127.0.0.1``) unless told otherwise;
* answers ``/api/session`` only for a same-origin JSON POST: a page on another site can't
  mint tokens through the developer's browser (a cross-site JSON POST needs a CORS
  preflight, which this server never grants, and a foreign ``Origin`` is refused);
* on loopback it answers only to loopback ``Host`` names, so a DNS-rebinding site can't
  reach it under its own name.

Run it against any LiveKit server, LiveKit Cloud included, with the worker running
separately (``python agent.py dev``)::

    LIVEKIT_URL=wss://my-project.livekit.cloud LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... \\
        python -m localdev.web_server

``python agent.py demo --web`` starts it together with a local stack (``localdev.web_demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from livekit import api

REPO = Path(__file__).resolve().parents[1]
#: Where ``npm --prefix web run build`` puts the page.
WEB_DIST: Final = REPO / "web" / "dist"
BUILD_HINT: Final = "npm --prefix web ci && npm --prefix web run build"

#: Tokens live 10 minutes: enough to join after the page asked (milliseconds normally),
#: short enough that a leaked one is soon useless. A call outlives it: livekit-server
#: refreshes a connected participant's token itself.
DEFAULT_TOKEN_TTL: Final = datetime.timedelta(minutes=10)
#: How long the page waits for the agent: dispatch -> joined is ~1 s with a prewarmed
#: worker (README, "dispatch -> joined 0.68 s"); 20 s means no worker took the job.
DEFAULT_AGENT_JOIN_TIMEOUT_S: Final = 20.0
#: A room nobody joins, or everyone left, is closed this soon (seconds), and with it the
#: agent's job: a page that asked for a session and then failed to connect leaves no agent
#: waiting for long.
ROOM_EMPTY_TIMEOUT_S: Final = 60
ROOM_DEPARTURE_TIMEOUT_S: Final = 10
#: Server API calls (create room, dispatch) answer in milliseconds; 10 s is a dead server.
API_TIMEOUT_S: Final = 10.0
#: livekit-server (1.13.5) drops an explicit dispatch for good when the only worker says it
#: is full at that moment (CPU-based load on a busy machine: seen here when Chromium
#: started), so a dispatch without a job this long after it is made is made again. A job
#: normally exists ~0.3 s after its dispatch.
DISPATCH_RECHECK_S: Final = 3.0

log = logging.getLogger("localdev.web_server")

_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@dataclass(frozen=True)
class WebSessionConfig:
    """What the token endpoint needs. Nothing here but ``livekit_url`` reaches a browser."""

    livekit_url: str
    """The LiveKit server this process calls (room and dispatch APIs)."""
    api_key: str
    api_secret: str
    agent_name: str | None
    """Explicit dispatch to this agent name; None: the worker's automatic dispatch."""
    browser_url: str | None = None
    """The LiveKit URL handed to browsers when it differs (a proxy, another host name)."""
    token_ttl: datetime.timedelta = DEFAULT_TOKEN_TTL
    agent_join_timeout_s: float = DEFAULT_AGENT_JOIN_TIMEOUT_S
    room_prefix: str = "web"

    @property
    def url_for_browsers(self) -> str:
        return self.browser_url or self.livekit_url


class SessionRefused(Exception):
    """The session could not be set up; the message is for the person at the page."""


async def _no_content(_request: web.Request) -> web.Response:
    """The page has no icon; a 204 keeps the browser console free of 404s."""
    return web.Response(status=204)


def _is_loopback_host(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """``Host`` without its port (``[::1]:8080`` -> ``[::1]``)."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class WebSessionServer:
    """The page and ``/api/session`` on one aiohttp server.

    Usage::

        async with WebSessionServer(config) as server:
            await server.start()          # loopback, a free port
            print(server.url)
    """

    def __init__(self, config: WebSessionConfig, *, static_dir: Path = WEB_DIST) -> None:
        """``static_dir``: the built page (``index.html`` and its assets)."""
        self.config = config
        self.static_dir = static_dir
        self._runner: web.AppRunner | None = None
        self._lkapi: api.LiveKitAPI | None = None
        self._loopback = True
        self.url = ""
        self.sessions_issued = 0
        self.redispatches = 0
        self.rooms: list[str] = []
        """Every room this server created, oldest first."""
        self._watchers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> WebSessionServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/session", self._session)
        app.router.add_get("/", self._index)
        app.router.add_get("/favicon.ico", _no_content)
        app.router.add_get("/{name}", self._asset)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = a free port); returns the page's URL."""
        self._loopback = _is_loopback_host(host)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        shown = "localhost" if self._loopback else host
        self.url = f"http://{shown}:{bound[1]}/"
        return self.url

    async def aclose(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        if self._watchers:
            await asyncio.gather(*self._watchers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._lkapi is not None:
            await self._lkapi.aclose()
            self._lkapi = None

    # -- the page -------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return await self._asset(request, name="index.html")

    async def _asset(self, request: web.Request, name: str | None = None) -> web.StreamResponse:
        name = name or request.match_info["name"]
        path = (self.static_dir / name).resolve()
        if path.parent != self.static_dir.resolve() or not path.is_file():
            if not (self.static_dir / "index.html").is_file():
                return web.Response(
                    status=503,
                    text=f"The web client is not built. Build it with: {BUILD_HINT}\n",
                )
            raise web.HTTPNotFound()
        # no-cache: a rebuilt page is picked up on reload (files are small, this is local)
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    # -- the token endpoint ---------------------------------------------------------------

    def _refusal(self, request: web.Request) -> str | None:
        """Why this request may not have a token (None: it may)."""
        host = request.headers.get("Host", "")
        if self._loopback and not _is_loopback_host(_host_name(host)):
            return f"this server answers only on localhost, not {host!r}"
        origin = request.headers.get("Origin")
        # host and port only: behind a TLS proxy the page is https:// and this side http://
        if origin is not None and urlsplit(origin).netloc != host:
            return "cross-origin requests are refused"
        if request.content_type != "application/json":
            return "send a JSON POST (Content-Type: application/json)"
        return None

    async def _session(self, request: web.Request) -> web.Response:
        headers = {"Cache-Control": "no-store"}
        if refusal := self._refusal(request):
            return web.json_response({"error": refusal}, status=403, headers=headers)
        try:
            grant = await self.issue_session()
        except SessionRefused as exc:
            return web.json_response({"error": str(exc)}, status=502, headers=headers)
        return web.json_response(grant, headers=headers)

    def _api(self) -> api.LiveKitAPI:
        if self._lkapi is None:
            cfg = self.config
            self._lkapi = api.LiveKitAPI(
                url=cfg.livekit_url,
                api_key=cfg.api_key,
                api_secret=cfg.api_secret,
                timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S),
            )
        return self._lkapi

    async def issue_session(self) -> dict[str, Any]:
        """Create a room, dispatch the agent, and sign a token for that room only."""
        cfg = self.config
        room = f"{cfg.room_prefix}-{secrets.token_hex(4)}"
        identity = f"web-caller-{secrets.token_hex(3)}"
        lkapi = self._api()
        try:
            await lkapi.room.create_room(
                api.CreateRoomRequest(
                    name=room,
                    empty_timeout=ROOM_EMPTY_TIMEOUT_S,
                    departure_timeout=ROOM_DEPARTURE_TIMEOUT_S,
                )
            )
            if cfg.agent_name:
                dispatch = await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=cfg.agent_name, room=room)
                )
                task = asyncio.create_task(
                    self._keep_dispatched(room, cfg.agent_name, dispatch.id),
                    name=f"keep_dispatched:{room}",
                )
                self._watchers.add(task)
                task.add_done_callback(self._watchers.discard)
        except api.TwirpError as exc:
            if exc.status in (401, 403):
                raise SessionRefused(
                    f"the LiveKit server at {cfg.livekit_url} refused this server's API key "
                    f"and secret ({exc.message})"
                ) from None
            raise SessionRefused(
                f"the LiveKit server at {cfg.livekit_url} failed the request: {exc.message}"
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            cause = str(exc) or type(exc).__name__
            raise SessionRefused(
                f"cannot reach the LiveKit server at {cfg.livekit_url} ({cause})"
            ) from None
        now = datetime.datetime.now(datetime.UTC)
        token = (
            api.AccessToken(cfg.api_key, cfg.api_secret)
            .with_identity(identity)
            .with_name("Web caller")
            .with_ttl(cfg.token_ttl)
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=room,
                    can_publish=True,
                    can_subscribe=True,
                    can_publish_data=True,
                    can_publish_sources=["microphone"],
                )
            )
            .to_jwt()
        )
        self.sessions_issued += 1
        self.rooms.append(room)
        return {
            "server_url": cfg.url_for_browsers,
            "participant_token": token,
            "room_name": room,
            "participant_identity": identity,
            "agent_name": cfg.agent_name,
            "expires_at": (now + cfg.token_ttl).isoformat(timespec="seconds"),
            "agent_join_timeout_s": cfg.agent_join_timeout_s,
        }

    async def end_calls(self) -> int:
        """Delete every room this server created that still exists (their agents' jobs end
        at once, so a worker stopping after this drains in seconds); returns how many."""
        if not self.rooms:
            return 0
        lkapi = self._api()
        try:
            live = await lkapi.room.list_rooms(api.ListRoomsRequest(names=self.rooms))
        except (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError):
            return 0
        ended = 0
        for room in live.rooms:
            with contextlib.suppress(api.TwirpError, aiohttp.ClientError, TimeoutError, OSError):
                await lkapi.room.delete_room(api.DeleteRoomRequest(room=room.name))
                ended += 1
        return ended

    async def _agent_in(self, room: str) -> bool:
        resp = await self._api().room.list_participants(api.ListParticipantsRequest(room=room))
        return any(p.kind == api.ParticipantInfo.Kind.AGENT for p in resp.participants)

    async def _keep_dispatched(self, room: str, agent_name: str, dispatch_id: str) -> None:
        """Re-dispatch while the dispatch has no job, until the page stops waiting."""
        lkapi = self._api()
        deadline = time.monotonic() + self.config.agent_join_timeout_s
        try:
            while time.monotonic() + DISPATCH_RECHECK_S < deadline:
                await asyncio.sleep(DISPATCH_RECHECK_S)
                if await self._agent_in(room):
                    return
                # a dispatch's job list is not a reliable sign here (seen empty with its agent
                # already in the room), so it is asked only once no agent is present
                state = await lkapi.agent_dispatch.get_dispatch(dispatch_id, room)
                if state is None or state.state.jobs:
                    return  # a job exists (the agent is on its way), or the room is gone
                await lkapi.agent_dispatch.delete_dispatch(dispatch_id, room)
                dispatch = await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
                )
                dispatch_id = dispatch.id
                self.redispatches += 1
                log.info("re-dispatched %s to %s: the last dispatch got no job", agent_name, room)
        except (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("stopped watching the dispatch to %s: %s", room, exc)


# ---------------------------------------------------------------------------------------------
# python -m localdev.web_server: the page for an existing LiveKit server and worker
# ---------------------------------------------------------------------------------------------


def config_from_env(environ: dict[str, str]) -> WebSessionConfig:
    """LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET / LIVEKIT_AGENT_NAME, as the worker
    reads them; ``SystemExit`` with one line naming each missing variable."""
    missing = [
        name
        for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
        if not environ.get(name, "").strip()
    ]
    if missing:
        raise SystemExit(f"web_server: set {', '.join(missing)} (the LiveKit server to use)")
    return WebSessionConfig(
        livekit_url=environ["LIVEKIT_URL"].strip(),
        api_key=environ["LIVEKIT_API_KEY"].strip(),
        api_secret=environ["LIVEKIT_API_SECRET"].strip(),
        agent_name=environ.get("LIVEKIT_AGENT_NAME", "").strip() or None,
    )


async def _serve(config: WebSessionConfig, host: str, port: int) -> None:
    async with WebSessionServer(config) as server:
        url = await server.start(host, port)
        print(f"web client: open {url} (LiveKit {config.url_for_browsers})", flush=True)
        if not (WEB_DIST / "index.html").is_file():
            print(f"web client not built yet: {BUILD_HINT}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m localdev.web_server",
        description="Serve the web client and its token endpoint for an existing LiveKit "
        "server (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET; LIVEKIT_AGENT_NAME for "
        "explicit dispatch) and a worker running against it.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free)")
    args = p.parse_args(argv)
    from agent.config import load_dotenv_files

    environ = dict(os.environ)
    load_dotenv_files(Path.cwd(), environ)
    config = config_from_env(environ)
    if not _is_loopback_host(args.host):
        print(
            f"web_server: serving on {args.host}: anyone who can reach it can start calls",
            file=sys.stderr,
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
