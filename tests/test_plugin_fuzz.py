"""Whatever a server sends after the first message, a stream never crashes.

A tiny scripted server replays hypothesis-generated frames (arbitrary JSON, valid and
mangled protocol shapes, truncated JSON, plain text, binary), then answers
``end_audio`` with ``finished``. The stream must end by itself; the only exception
allowed is LiveKit's ``APIError`` and only when the frames contained a fatal error.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livekit import rtc
from livekit.agents import APIConnectOptions, APIError
from livekit.agents import stt as lk_stt

from plugins.baseten_stt import STT
from plugins.baseten_stt.protocol import ErrorFrame, parse_server_message

E = lk_stt.SpeechEventType

floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1, max_value=100),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.none(),
    st.text(max_size=5),
)
words = st.fixed_dictionaries(
    {},
    optional={
        "word": st.one_of(st.text(max_size=12), st.integers()),
        "start_time": floats,
        "end_time": floats,
        "prob": floats,
    },
)
segments = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(st.text(max_size=30), st.none(), st.integers()),
        "start_time": floats,
        "end_time": floats,
        "log_prob": floats,
        "language_code": st.one_of(st.text(max_size=6), st.none()),
        "word_timestamps": st.one_of(st.lists(words, max_size=4), st.none(), st.text(max_size=3)),
    },
)
transcription = st.fixed_dictionaries(
    {"type": st.just("transcription")},
    optional={
        "is_final": st.one_of(st.booleans(), st.none(), st.text(max_size=3)),
        "segments": st.one_of(st.lists(segments, max_size=3), st.none(), st.integers()),
        "language_code": st.one_of(st.text(max_size=6), st.none()),
        "audio_length_sec": floats,
        "transcription_num": st.one_of(st.integers(), st.none()),
        "is_end_of_audio_flush": st.one_of(st.booleans(), st.none()),
    },
)
control = st.fixed_dictionaries(
    {"type": st.sampled_from(["error", "end_audio", "health_check", "other", ""])},
    optional={
        "trace_id": st.one_of(st.text(max_size=8), st.none(), st.integers()),
        "body": st.one_of(
            st.dictionaries(
                st.sampled_from(
                    ["status", "error_type", "message", "error", "recoverable", "healthy"]
                ),
                st.one_of(st.text(max_size=10), st.booleans(), st.none(), st.integers()),
                max_size=4,
            ),
            st.none(),
            st.text(max_size=4),
        ),
    },
)
json_any = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _dump(x: Any) -> str:
    return json.dumps(x)


frame = st.one_of(
    transcription.map(_dump),
    control.map(_dump),
    json_any.map(_dump),
    transcription.map(_dump).flatmap(lambda s: st.integers(0, len(s)).map(lambda n: s[:n])),
    st.text(max_size=40),
    st.binary(max_size=64),
)


def _is_fatal(raw: str | bytes) -> bool:
    if isinstance(raw, bytes):
        return False
    try:
        msg = parse_server_message(raw)
    except ValueError:
        return False
    return isinstance(msg, ErrorFrame) and msg.body.is_fatal


async def _scenario(frames: list[str | bytes]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # first message
        for f in frames:
            if isinstance(f, bytes):
                await ws.send_bytes(f)
            else:
                await ws.send_str(f)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and '"end_audio"' in msg.data:
                await ws.send_json({"type": "end_audio", "body": {"status": "finished"}})
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/v1/websocket"
    stt = STT(api_key="fuzz", model_endpoint=url, finish_timeout_s=3.0)
    stream = stt.stream(conn_options=APIConnectOptions(max_retry=0, timeout=5))
    events: list[lk_stt.SpeechEvent] = []
    error: BaseException | None = None
    try:
        pcm = np.zeros(1600, dtype=np.int16)
        stream.push_frame(rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm)))
        stream.end_input()
        async with asyncio.timeout(20):
            async for ev in stream:
                events.append(ev)
    except APIError as e:
        error = e
    finally:
        await stream.aclose()
        await stt.aclose()
        await runner.cleanup()

    if error is not None:
        assert any(_is_fatal(f) for f in frames), (error, frames)
    # speech events stay balanced whatever the server said
    depth = 0
    for ev in events:
        if ev.type == E.START_OF_SPEECH:
            depth += 1
        elif ev.type == E.END_OF_SPEECH:
            depth -= 1
        assert depth in (0, 1)
        if ev.type in (E.INTERIM_TRANSCRIPT, E.FINAL_TRANSCRIPT):
            assert depth == 1 and ev.alternatives[0].text


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(frame, max_size=8))
def test_fuzzed_server_frames_never_crash_a_stream(frames: list[str | bytes]) -> None:
    asyncio.run(_scenario(frames))
