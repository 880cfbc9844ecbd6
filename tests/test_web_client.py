"""The web client (``web/``) in a real Chromium, against a real livekit-server and worker.

The main test runs ``python agent.py demo --web`` as a user does and talks to the agent
through the page: Chromium's own WebRTC stack, Opus encoder, audio processing and jitter
buffer, with a fake microphone playing a human recording. The page must show what the user
said, the agent's state, a latency bar with the very numbers the worker logged, and it must
have decoded the agent's audio (WebRTC inbound stats).

The rest are the ways a call fails before it starts: no microphone permission, a LiveKit
URL that is wrong (for this server or for the browser), an expired token, no agent. Each
must be said in words with a Retry that really retries, never a silent hang. Those run the
page server in this process, so they know its secret and check it never reaches the page.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localdev.livekit_server import LocalLiveKitServer
from localdev.user_turns import named
from localdev.web_server import DEFAULT_TOKEN_TTL, WebSessionConfig, WebSessionServer
from localdev.wer import word_error_rate
from tests.fixtures.browser import ARTIFACTS, browser_tools, drive, fake_microphone_wav, summary
from tests.fixtures.worker import REPO, subprocess_env

#: What the fake microphone plays: two human recordings (pytest-audioeval's speaker, then
#: moonshine-voice's), a pause for the agent's answer between them.
CLIPS = ("audioeval_quick_brown_fox", "endgame_talking_about")
#: What the page may mishear of it: Whisper tiny.en through Chromium's capture path
#: (echo cancellation, noise suppression, AGC, Opus) heard it word for word in every run here.
MAX_WER = 0.2
#: demo --web start: livekit-server + stand-ins + worker registration, ~20 s here.
DEMO_START_TIMEOUT_S = 120.0
#: Connect -> both replies heard, ~25 s here (Whisper on CPU beside Chromium).
CALL_TIMEOUT_S = 90.0
#: SIGINT -> demo exited (worker drain after the page left): ~3 s.
DEMO_STOP_TIMEOUT_S = 45.0
URL_LINE = re.compile(r"Open (http://\S+) in ")
TURN_LINE = re.compile(r"turn (\d+): heard .*; e2e (\d+) ms")


# ---------------------------------------------------------------------------------------------
# the whole product: demo --web, a browser, the agent
# ---------------------------------------------------------------------------------------------


class DemoProcess:
    """``python agent.py demo --web --port 0`` with no key anywhere; its output kept."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.out = cwd / "demo-web.jsonl"
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "agent.py"),
            "demo",
            "--web",
            "--port",
            "0",
            "--out",
            str(self.out),
            cwd=self.cwd,
            env=subprocess_env({}),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        deadline = time.monotonic() + DEMO_START_TIMEOUT_S
        while time.monotonic() < deadline:
            for line in self.lines:
                if m := URL_LINE.search(line):
                    return m.group(1)
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        raise AssertionError("demo --web printed no URL:\n" + self.text)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(self.proc.wait(), DEMO_STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError("demo --web did not stop on Ctrl-C:\n" + self.text) from None
        if self._reader is not None:
            await self._reader
        return code


@pytest.mark.e2e
async def test_a_browser_talks_to_the_agent_through_demo_web(tmp_path: Path) -> None:
    browser_tools()
    turns = [named(c) for c in CLIPS]
    wav = fake_microphone_wav(tmp_path / "mic.wav", turns)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web-client.png"
    demo = DemoProcess(tmp_path)
    try:
        url = await demo.start()
        assert url.startswith("http://localhost:"), url  # loopback by default
        report = await drive(
            url, wav=wav, turns=len(turns), timeout_s=CALL_TIMEOUT_S, screenshot=shot, hang_up=True
        )
    finally:
        code = await demo.stop()
    why = summary(report) + "\n--- demo ---\n" + demo.text
    assert report["outcome"] == "turn", why
    state = report["state"]

    # the user's words, heard through the browser's capture path, and answered (the OpenAI
    # stand-in echoes them) in text and in audio the browser decoded
    finals = [t["text"] for t in state["transcripts"] if t["role"] == "user" and t["final"]]
    heard = " ".join(finals)
    wer = word_error_rate(" ".join(t.text or "" for t in turns), heard)
    assert wer <= MAX_WER, why
    replies = " ".join(t["text"].lower() for t in state["transcripts"] if t["role"] == "agent")
    assert "quick brown fox" in replies and "talking about" in replies, why
    audio = state["agentAudio"]
    assert audio["energy"] > 0 and audio["speechSeconds"] > 1.0, why
    assert {"listening", "thinking", "speaking"} <= set(state["agentStatesSeen"]), why
    # Hang up ends the call on the page
    after = report["afterHangUp"]
    assert after["phase"] == "ended" and after["connectVisible"] and not after["problem"]["visible"]

    # one bar per turn, each the worker's own record: its turn_latency log line's numbers
    assert code == 0, why
    logged = {
        r["turn_index"]: r
        for r in map(json.loads, filter(str.strip, demo.out.read_text().splitlines()))
        if r.get("message") == "turn_latency"
    }
    bars = state["bars"]
    assert [b["turn"] for b in bars] == list(range(1, len(turns) + 1)), why
    for bar in bars:
        line = logged[bar["turn"]]
        assert bar["e2eMs"] == line["e2e_latency_ms"] is not None, why
        # the page rounds to whole ms (JavaScript rounds halves up, Python to even)
        for stage, field in (
            ("stt", "transcript_latency_ms"),
            ("llm", "llm_ttft_ms"),
            ("tts", "tts_ttfb_ms"),
        ):
            assert abs(bar["stages"][stage] - line[field]) <= 0.5, (stage, line, why)
    # and the demo printed the same turns as they happened
    printed = {int(m.group(1)): int(m.group(2)) for m in map(TURN_LINE.search, demo.lines) if m}
    assert printed.keys() == {b["turn"] for b in bars}, demo.text
    assert all(abs(printed[b["turn"]] - b["e2eMs"]) <= 0.5 for b in bars), demo.text
    assert "Traceback" not in demo.text, demo.text
    assert shot.stat().st_size > 10_000
    e2e = ", ".join(f"{b['e2eMs']:.0f}" for b in bars)
    stt = ", ".join(f"{logged[b['turn']]['transcript_latency_ms']:.0f}" for b in bars)
    print(
        f"web client: heard {heard!r} (WER {wer:.2f}); e2e {e2e} ms; STT final {stt} ms; "
        f"Connect -> agent listening {report['phases'].get('in-call', -1)} ms (mic opens next)"
        f" (polled every 250 ms); -> last reply heard {report['seconds']:.1f} s; screenshot {shot}"
    )


# ---------------------------------------------------------------------------------------------
# bad input: the page says which, in words, and Retry retries
# ---------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def page_server(livekit_server: LocalLiveKitServer) -> AsyncIterator[Any]:
    """Start a page server for ``livekit_server`` with config overrides; closed on exit."""
    servers: list[WebSessionServer] = []

    async def start(**overrides: Any) -> WebSessionServer:
        settings: dict[str, Any] = {
            "livekit_url": livekit_server.url,
            "api_key": livekit_server.api_key,
            "api_secret": livekit_server.api_secret,
            "agent_name": None,
        }
        config = WebSessionConfig(**(settings | overrides))
        server = WebSessionServer(config)
        servers.append(server)
        await server.start()
        return server

    yield start
    for server in servers:
        await server.aclose()


async def _problem(server: WebSessionServer, **drive_args: Any) -> dict[str, Any]:
    """Drive the page into its problem, press Retry once; both outcomes must be problems."""
    browser_tools()
    report = await drive(server.url, until="problem", retry=True, timeout_s=30, **drive_args)
    assert report["outcome"] == "problem", summary(report)
    assert report["retryOutcome"] == "problem", summary(report)
    first, again = report["firstProblem"], report["state"]["problem"]
    assert first["retryVisible"] and again["retryVisible"], summary(report)
    assert again["kind"] == first["kind"], summary(report)
    return first


@pytest.mark.e2e
async def test_no_microphone_permission_is_said_before_any_room_exists(page_server: Any) -> None:
    server = await page_server(agent_name="demo-agent")
    problem = await _problem(server, microphone="deny")
    assert problem["kind"] == "microphone", problem
    assert "denied" in problem["text"] and "Retry" in problem["text"], problem
    assert server.sessions_issued == 0  # nothing was created for a call that cannot talk


@pytest.mark.e2e
async def test_a_livekit_url_the_page_server_cannot_reach_is_named(page_server: Any) -> None:
    wrong = f"ws://127.0.0.1:{_closed_port()}"
    server = await page_server(livekit_url=wrong)
    problem = await _problem(server)
    assert problem["kind"] == "session", problem
    assert f"cannot reach the LiveKit server at {wrong}" in problem["text"], problem


@pytest.mark.e2e
async def test_a_livekit_url_the_browser_cannot_reach_is_named(page_server: Any) -> None:
    wrong = f"ws://127.0.0.1:{_closed_port()}"
    server = await page_server(browser_url=wrong)
    problem = await _problem(server)
    assert problem["kind"] == "unreachable", problem
    assert f"Could not reach the LiveKit server at {wrong}" in problem["text"], problem
    assert server.sessions_issued == 2  # Retry asked for a new session


@pytest.mark.e2e
async def test_an_expired_token_is_named(page_server: Any) -> None:
    # beyond livekit-server's one-minute leeway for clock skew (go-jose DefaultLeeway)
    server = await page_server(token_ttl=datetime.timedelta(minutes=-5))
    problem = await _problem(server)
    assert problem["kind"] == "token", problem
    assert "expired" in problem["text"], problem


@pytest.mark.e2e
async def test_an_agent_that_never_joins_is_named_and_redispatched(page_server: Any) -> None:
    # the page waits 4.5 s: the server re-dispatches once (after 3 s) per session
    server = await page_server(agent_name="nobody-serves-this", agent_join_timeout_s=4.5)
    problem = await _problem(server)
    assert problem["kind"] == "agent", problem
    assert 'No agent "nobody-serves-this" joined' in problem["text"], problem
    assert "within 4.5 s" in problem["text"], problem
    assert server.redispatches == 2  # once while each of the two attempts waited


def test_demo_web_user_mistakes_are_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, code, says in [
            (["--port", str(port)], 1, f"cannot serve the page on 127.0.0.1:{port}"),
            (["--wav", "me.wav"], 2, "--web takes no --roomless or --wav"),
        ]:
            proc = subprocess.run(
                [sys.executable, str(REPO / "agent.py"), "demo", "--web", *args],
                cwd=tmp_path,
                env=subprocess_env({}),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            output = proc.stdout + proc.stderr
            assert proc.returncode == code and says in output, output
            assert "Traceback" not in output, output


# ---------------------------------------------------------------------------------------------
# the token endpoint itself
# ---------------------------------------------------------------------------------------------


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@pytest.mark.e2e
async def test_the_token_endpoint_hands_out_short_lived_room_tokens_and_no_secret(
    page_server: Any, livekit_server: LocalLiveKitServer
) -> None:
    server = await page_server(agent_name="demo-agent")
    secret = livekit_server.api_secret
    endpoint = server.url + "api/session"
    json_headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(endpoint, data="{}", headers=json_headers) as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "no-store"
            grant = await resp.json()
        async with http.post(endpoint, data="{}", headers=json_headers) as resp:
            other = await resp.json()
        pages = []
        for name in ("", "app.js", "style.css"):
            async with http.get(server.url + name) as resp:
                assert resp.status == 200, name
                pages.append(await resp.text())

        # refused: another site's page (CSRF), a form post, a DNS-rebinding host name
        refusals = [
            {**json_headers, "Origin": "https://evil.example"},
            {"Content-Type": "application/x-www-form-urlencoded"},
            {**json_headers, "Host": "rebound.example"},
        ]
        for headers in refusals:
            async with http.post(endpoint, data="{}", headers=headers) as resp:
                assert resp.status == 403, headers
                assert "error" in await resp.json()
        async with http.get(server.url + "../pyproject.toml") as resp:
            assert resp.status == 404

    for text in [json.dumps(grant), json.dumps(other), *pages]:
        assert secret not in text
    assert grant["server_url"] == livekit_server.url
    assert grant["room_name"] != other["room_name"]  # one room per call
    claims = _claims(grant["participant_token"])
    video = claims["video"]
    assert video["room"] == grant["room_name"] and video["roomJoin"] is True
    assert not video.get("roomAdmin") and not video.get("roomCreate") and not video.get("agent")
    assert video.get("canPublishSources") == ["microphone"]
    assert claims["sub"] == grant["participant_identity"]
    assert claims["exp"] - claims["nbf"] == DEFAULT_TOKEN_TTL.total_seconds()
    assert server.sessions_issued == 2  # the refused requests issued nothing


@pytest.mark.e2e
async def test_a_wrong_api_secret_is_named_by_the_token_endpoint(page_server: Any) -> None:
    server = await page_server(api_secret="not-the-secret-of-this-livekit-server")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.url + "api/session", data="{}", headers={"Content-Type": "application/json"}
        ) as resp,
    ):
        assert resp.status == 502
        error = (await resp.json())["error"]
    assert "refused this server's API key and secret" in error, error
    assert "not-the-secret" not in error
    assert server.sessions_issued == 0
