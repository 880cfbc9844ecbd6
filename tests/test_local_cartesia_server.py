"""The Cartesia stand-in, driven by the real LiveKit Cartesia plugin.

The plugin only exercises pcm_s16le, sentence inputs and socket-close interruption; the
raw-websocket tests at the end cover the rest of the protocol the stand-in claims
(pcm_f32le, flush, cancel, managed buffering, errors) the way Cartesia documents it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from livekit import rtc
from livekit.agents import APIStatusError
from livekit.plugins import cartesia

from localdev.cartesia.server import LocalCartesiaServer
from tests.fixtures.standins import NO_RETRY, STANDIN_API_KEY

REPO = Path(__file__).resolve().parents[1]
API_VERSION = "2025-04-16"

# espeak-ng speech has an RMS of a few thousand; digital silence is 0. 300 is far from both.
SPEECH_RMS = 300.0
# espeak-ng at 150 wpm speaks ~0.4 s per word; these bounds only catch gross errors
# (empty/truncated audio, or audio for the wrong amount of text).
MIN_S_PER_WORD, MAX_S_PER_WORD = 0.15, 1.2


def _pcm(frames: list[rtc.AudioFrame]) -> npt.NDArray[np.int16]:
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])


def _rms(x: npt.NDArray[Any]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def _assert_speech(pcm: npt.NDArray[np.int16], sample_rate: int, text: str) -> None:
    words = len(text.split())
    duration = len(pcm) / sample_rate
    assert _rms(pcm) > SPEECH_RMS, "audio is (near) silent"
    assert MIN_S_PER_WORD * words <= duration <= MAX_S_PER_WORD * words, duration


async def test_synthesize_returns_speech_at_requested_rate(
    standin_cartesia: LocalCartesiaServer, standin_http_context: None
) -> None:
    text = "Sure, a table for two at seven."
    tts = cartesia.TTS(
        base_url=standin_cartesia.base_url, api_key=STANDIN_API_KEY, sample_rate=16000
    )
    try:
        async with tts.synthesize(text, conn_options=NO_RETRY) as stream:
            frames = [ev.frame async for ev in stream]
    finally:
        await tts.aclose()
    assert {f.sample_rate for f in frames} == {16000}
    _assert_speech(_pcm(frames), 16000, text)
    (req,) = standin_cartesia.requests
    assert req["endpoint"] == "bytes" and req["transcript"] == text
    assert req["output_format"] == {
        "container": "raw",
        "encoding": "pcm_s16le",
        "sample_rate": 16000,
    }


async def test_stream_speaks_pieces_with_ttfb_and_word_timestamps(
    standin_http_context: None,
) -> None:
    pieces = ["Hello there. ", "I can book a table ", "for you tonight."]
    text = "".join(pieces)
    async with LocalCartesiaServer(ttfb_s=0.4, api_key=STANDIN_API_KEY) as srv:
        tts = cartesia.TTS(base_url=srv.base_url, api_key=STANDIN_API_KEY)
        try:
            stream = tts.stream(conn_options=NO_RETRY)
            t0 = time.monotonic()
            for p in pieces:
                stream.push_text(p)
            stream.end_input()
            frames: list[rtc.AudioFrame] = []
            timed: list[str] = []
            first_audio: float | None = None
            async for ev in stream:
                first_audio = first_audio or time.monotonic() - t0
                frames.append(ev.frame)
                timed += [str(t) for t in (ev.frame.userdata or {}).get("lk.timed_transcripts", [])]
            await stream.aclose()
        finally:
            await tts.aclose()

    assert {f.sample_rate for f in frames} == {24000}
    _assert_speech(_pcm(frames), 24000, text)
    assert first_audio is not None and first_audio >= 0.4  # generous lower bound only
    # Everything the plugin sent arrived on one context, in order.
    (received,) = srv.transcripts().values()
    assert received.split() == text.split()
    assert all(r["continue"] for r in srv.requests[:-1]) and not srv.requests[-1]["continue"]
    # Word timestamps came back and the plugin aligned them to the words it sent.
    assert "".join(timed).split() == text.split()


async def test_stream_reuses_pooled_socket_after_interruption(
    standin_cartesia: LocalCartesiaServer,
    standin_tts: cartesia.TTS,
    caplog: pytest.LogCaptureFixture,
) -> None:
    long_text = "This is a long answer that the user will interrupt. " * 4
    with caplog.at_level(logging.DEBUG, logger="localdev.cartesia"):
        stream = standin_tts.stream(conn_options=NO_RETRY)
        stream.push_text(long_text)
        stream.end_input()
        async for _ in stream:
            break  # the user barged in after the first audio
        await stream.aclose()

        stream = standin_tts.stream(conn_options=NO_RETRY)
        stream.push_text("Okay, go ahead.")
        stream.end_input()
        frames = [ev.frame async for ev in stream]
        await stream.aclose()
    _assert_speech(_pcm(frames), 24000, "Okay, go ahead.")
    assert len(standin_cartesia.transcripts()) == 2
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("localdev")
    ]


@pytest.mark.parametrize("use_stream", [False, True], ids=["bytes", "websocket"])
async def test_wrong_key_surfaces_as_plugin_401(
    standin_cartesia: LocalCartesiaServer, standin_http_context: None, use_stream: bool
) -> None:
    wrong = "sk_car_wrong-secret-123"
    tts = cartesia.TTS(base_url=standin_cartesia.base_url, api_key=wrong)
    try:
        with pytest.raises(APIStatusError) as err:
            if use_stream:
                stream = tts.stream(conn_options=NO_RETRY)
                stream.push_text("Hello.")
                stream.end_input()
                async with stream:
                    async for _ in stream:
                        pass
            else:
                async with tts.synthesize("Hello.", conn_options=NO_RETRY) as s:
                    async for _ in s:
                        pass
    finally:
        await tts.aclose()
    assert err.value.status_code == 401
    assert wrong not in str(err.value)
    assert standin_cartesia.requests == []


# -- raw websocket protocol (features the LiveKit plugin does not use) -------------------


def _gen(context_id: str, transcript: str, *, cont: bool, **extra: Any) -> str:
    msg = {
        "model_id": "sonic-3",
        "voice": {"mode": "id", "id": "f786b574-daa5-4673-aa0c-cbe3e8534c02"},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
        "language": "en",
        "context_id": context_id,
        "transcript": transcript,
        "continue": cont,
    }
    msg.update(extra)
    return json.dumps(msg)


async def _recv_until_done(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        msg = json.loads(await ws.receive_str(timeout=10))
        out.append(msg)
        if msg.get("done"):
            return out


async def _ws(
    srv: LocalCartesiaServer,
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(
        srv.base_url.replace("http", "ws", 1) + f"/tts/websocket?cartesia_version={API_VERSION}"
        f"&api_key={STANDIN_API_KEY}"
    )
    return session, ws


async def test_ws_f32le_flush_and_done(standin_cartesia: LocalCartesiaServer) -> None:
    session, ws = await _ws(standin_cartesia)
    fmt = {"container": "raw", "encoding": "pcm_f32le", "sample_rate": 16000}
    try:
        await ws.send_str(
            _gen(
                "c1",
                "Good evening. ",
                cont=True,
                output_format=fmt,
                flush=True,
                max_buffer_delay_ms=0,
            )
        )
        await ws.send_str(_gen("c1", "", cont=False, output_format=fmt))
        msgs = await _recv_until_done(ws)
    finally:
        await ws.close()
        await session.close()
    assert {m["context_id"] for m in msgs} == {"c1"}
    kinds = [m["type"] for m in msgs]
    assert kinds[-1] == "done" and kinds.count("flush_done") == 1
    # flush_done comes after the audio of the text sent before the flush.
    assert kinds.index("flush_done") > max(i for i, k in enumerate(kinds) if k == "chunk")
    audio = b"".join(base64.b64decode(m["data"]) for m in msgs if m["type"] == "chunk")
    samples = np.frombuffer(audio, dtype="<f4")
    assert np.abs(samples).max() <= 1.0 and _rms(samples * 32768) > SPEECH_RMS
    assert 0.3 < len(samples) / 16000 < 3.0


async def test_ws_managed_buffering_waits_for_sentence_end(
    standin_cartesia: LocalCartesiaServer,
) -> None:
    session, ws = await _ws(standin_cartesia)
    try:
        # Token-by-token input with Cartesia's default buffering: no audio until a sentence
        # ends, then audio for it, then the rest on continue=false.
        for tok in ["Your", " table", " is"]:
            await ws.send_str(_gen("c2", tok, cont=True))
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive_str(timeout=0.5)
        await ws.send_str(_gen("c2", " ready. ", cont=True))
        first = json.loads(await ws.receive_str(timeout=10))
        assert first["type"] == "chunk"
        await ws.send_str(_gen("c2", "Enjoy", cont=False))
        msgs = await _recv_until_done(ws)
    finally:
        await ws.close()
        await session.close()
    assert msgs[-1]["type"] == "done"
    assert standin_cartesia.transcripts() == {"c2": "Your table is ready. Enjoy"}


async def test_ws_cancel_stops_context_and_bad_input_gets_error(
    standin_cartesia: LocalCartesiaServer,
) -> None:
    session, ws = await _ws(standin_cartesia)
    try:
        await ws.send_str(
            _gen("c3", "Some words that will be cancelled. ", cont=True, max_buffer_delay_ms=0)
        )
        await ws.send_str(json.dumps({"context_id": "c3", "cancel": True}))
        await ws.send_str(
            _gen(
                "c4",
                "x",
                cont=False,
                output_format={"container": "raw", "encoding": "mp3", "sample_rate": 16000},
            )
        )
        err = None
        while err is None:
            msg = json.loads(await ws.receive_str(timeout=10))
            assert msg["context_id"] in ("c3", "c4")
            assert msg["type"] != "done"  # a cancelled context never completes
            if msg["type"] == "error":
                err = msg
        await ws.send_str(_gen("c5", "Still alive.", cont=False))
        msgs = await _recv_until_done(ws)
    finally:
        await ws.close()
        await session.close()
    assert err["context_id"] == "c4" and err["status_code"] == 400
    assert [m["context_id"] for m in msgs if m["type"] == "done"] == ["c5"]
    assert not any(m["context_id"] == "c3" for m in msgs)


async def test_ws_requires_version_and_key(standin_cartesia: LocalCartesiaServer) -> None:
    url = standin_cartesia.base_url.replace("http", "ws", 1) + "/tts/websocket"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_version:
            await session.ws_connect(url, headers={"X-API-Key": STANDIN_API_KEY})
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_key:
            await session.ws_connect(url, headers={"Cartesia-Version": API_VERSION})
    assert no_version.value.status == 400
    assert no_key.value.status == 401


async def test_cli_serves_and_exits_cleanly_on_ctrl_c(standin_http_context: None) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "localdev.cartesia",
        "--port",
        "0",
        "--ttfb-ms",
        "50",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        base_url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert base_url.startswith("http://127.0.0.1:")
        tts = cartesia.TTS(base_url=base_url, api_key="any")
        try:
            async with tts.synthesize("Hello from the command line.", conn_options=NO_RETRY) as s:
                frames = [ev.frame async for ev in s]
        finally:
            await tts.aclose()
        _assert_speech(_pcm(frames), 24000, "Hello from the command line.")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
