"""The local Baseten server speaks the protocol of doc §3/§4/§7, over real websockets.

Every message is built and parsed with ``plugins.baseten_stt.protocol``; recognition is
real Whisper (tiny.en) over Silero VAD, on espeak-ng ``TEST_PHRASES`` (protocol mechanics),
compared as words (``localdev.wer.normalise``: Whisper adds casing and punctuation).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from localdev.baseten import FaultPlan, InjectedError, LocalBasetenServer
from localdev.speech import silence, synthesize
from localdev.wer import normalise
from plugins.baseten_stt.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INTERNAL_ERROR_REASON,
    CLOSE_NORMAL,
    Encoding,
    EndAudioReply,
    ErrorFrame,
    ErrorType,
    HealthCheckReply,
    ServerMessage,
    StreamingParams,
    StreamingWhisperInput,
    TranscriptionResult,
    WhisperParams,
    end_audio_message,
    health_check_message,
    parse_server_message,
)
from tests.fixtures.baseten import (
    TEST_PHRASES,
    BasetenServerFactory,
    speech_with_silence,
    to_frames,
)

KEY = "test-key-123"
REPO_ROOT = Path(__file__).resolve().parent.parent
PROD = "/environments/production/websocket"
CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)

FIRST = StreamingWhisperInput(
    whisper_params=WhisperParams(show_word_timestamps=True),
    streaming_params=StreamingParams(enable_partial_transcripts=True),
)


@pytest.fixture
async def srv(baseten_server: BasetenServerFactory) -> LocalBasetenServer:
    return await baseten_server(api_key=KEY)


async def open_stream(
    http: aiohttp.ClientSession,
    srv: LocalBasetenServer,
    first: StreamingWhisperInput | None = FIRST,
    *,
    path: str = PROD,
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(srv.url + path, headers={"Authorization": f"Api-Key {KEY}"})
    if first is not None:
        await ws.send_str(first.to_wire())
    return ws


async def send_audio(
    ws: aiohttp.ClientWebSocketResponse, frames: Sequence[bytes], *, pace_s: float = 0.0
) -> None:
    for frame in frames:
        await ws.send_bytes(frame)
        # Yield so the server's reader keeps up; pace_s > 0 approximates real time.
        await asyncio.sleep(pace_s)


async def receive(ws: aiohttp.ClientWebSocketResponse, wait_s: float = 20.0) -> ServerMessage:
    msg = await ws.receive(timeout=wait_s)
    assert msg.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg!r}"
    return parse_server_message(msg.data)


async def until_finished(ws: aiohttp.ClientWebSocketResponse) -> list[ServerMessage]:
    """Send ``end_audio`` and collect everything up to and including ``finished``."""
    await ws.send_str(end_audio_message("trace-1"))
    out: list[ServerMessage] = []
    while True:
        message = await receive(ws)
        out.append(message)
        if isinstance(message, EndAudioReply) and message.finished:
            return out


async def expect_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[str], int | None]:
    """Read until the server closes; return text frames seen before and the close code."""
    texts: list[str] = []
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type == aiohttp.WSMsgType.TEXT:
            texts.append(msg.data)
            continue
        assert msg.type in CLOSED, msg
        return texts, ws.close_code


def results(messages: Sequence[ServerMessage]) -> list[TranscriptionResult]:
    return [m for m in messages if isinstance(m, TranscriptionResult)]


def heard(finals: Sequence[TranscriptionResult]) -> list[list[str]]:
    """Each final's text as comparable words."""
    return [normalise(f.text) for f in finals]


def said(*phrases: str) -> list[list[str]]:
    return [normalise(p) for p in phrases]


# --------------------------------------------------------------------------- routes, auth
@pytest.mark.parametrize(
    "path",
    [
        "/v1/websocket",
        "/environments/production/websocket",
        "/environments/staging/websocket",
        "/deployment/abc123/websocket",
        "/development/websocket",
    ],
)
async def test_every_documented_route_serves_a_stream(
    http: aiohttp.ClientSession, srv: LocalBasetenServer, path: str
) -> None:
    ws = await open_stream(http, srv, path=path)
    await ws.send_str(health_check_message("hc", 1.0, get_partial_interval=False))
    reply = await receive(ws)
    assert isinstance(reply, HealthCheckReply) and reply.body.healthy is True
    await ws.close()
    assert srv.stats.streams_started == 1


async def test_plain_http_requests_get_helpful_4xx(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    base = srv.url.replace("ws://", "http://")
    async with http.get(base + PROD) as resp:
        assert resp.status == 426
        assert "WebSocket" in (await resp.json())["error"]
    async with http.get(base + "/environments/production/predict") as resp:
        assert resp.status == 404
        assert "/environments/{env}/websocket" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (None, False),
        ("Api-Key wrong", False),
        (f"Token {KEY}", False),
        (f"Api-Key {KEY}", True),
        (f"Bearer {KEY}", True),
    ],
)
async def test_api_key_is_checked_at_the_upgrade(
    http: aiohttp.ClientSession, srv: LocalBasetenServer, header: str | None, accepted: bool
) -> None:
    headers = {"Authorization": header} if header else {}
    if accepted:
        ws = await http.ws_connect(srv.url + PROD, headers=headers)
        await ws.close()
        assert srv.stats.connections == 1
        return
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(srv.url + PROD, headers=headers)
    assert info.value.status == 401
    # The body is JSON {"error": ...} and never echoes a key.
    async with http.get(
        srv.url.replace("ws://", "http://") + PROD,
        headers={
            **headers,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ) as resp:
        assert resp.status == 401
        body = await resp.json()
        assert set(body) == {"error"} and KEY not in body["error"] and "wrong" not in body["error"]
    assert srv.stats.auth_failures == 2 and srv.stats.connections == 0


async def test_without_a_key_configured_anything_is_accepted(
    http: aiohttp.ClientSession, baseten_server: BasetenServerFactory
) -> None:
    srv = await baseten_server()
    ws = await http.ws_connect(srv.url + PROD)
    await ws.close()
    assert srv.stats.connections == 1


# --------------------------------------------------------------------------- first message
@pytest.mark.parametrize(
    "payload",
    [
        {"bogus": 1},
        {"whisper_params": {"bogus": 1}},
        {"whisper_params": {"whisper_sampling_params": {"bogus": 1}}},
        {"streaming_params": {"bogus": 1}},
        {"streaming_vad_config": {"bogus": 1}},
        {"streaming_vad_config": {"sampling_rate": 44100}},  # Silero ValueError at init
        # Gen A names, rejected by a Gen C server:
        {"vad_params": {"threshold": 0.5}, "streaming_whisper_params": {"encoding": "pcm_s16le"}},
        "not json at all",
    ],
    ids=["top", "whisper", "sampling", "streaming", "vad", "vad-rate", "gen-a", "not-json"],
)
async def test_bad_first_message_closes_1011_without_a_frame(
    http: aiohttp.ClientSession, srv: LocalBasetenServer, payload: Any
) -> None:
    ws = await open_stream(http, srv, first=None)
    await ws.send_str(payload if isinstance(payload, str) else json.dumps(payload))
    texts, code = await expect_close(ws)
    assert texts == []
    assert code == CLOSE_INTERNAL_ERROR
    assert srv.stats.bad_first_messages == 1 and srv.stats.streams_started == 0


async def test_binary_first_frame_closes_1011(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    ws = await open_stream(http, srv, first=None)
    await ws.send_bytes(bytes(1024))
    texts, code = await expect_close(ws)
    assert (texts, code) == ([], CLOSE_INTERNAL_ERROR)


async def test_close_reason_is_the_truss_one(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    ws = await open_stream(http, srv, first=None)
    await ws.send_str('{"bogus": true}')
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert (msg.data, msg.extra) == (CLOSE_INTERNAL_ERROR, CLOSE_INTERNAL_ERROR_REASON)


# --------------------------------------------------------------------------- audio frames
@pytest.mark.parametrize("size", [1022, 1023, 2048, 512])
async def test_wrong_frame_size_is_fatal(
    http: aiohttp.ClientSession, srv: LocalBasetenServer, size: int
) -> None:
    ws = await open_stream(http, srv)
    await ws.send_bytes(bytes(1024))  # one good frame first
    await ws.send_bytes(bytes(size))
    texts, code = await expect_close(ws)
    assert code == CLOSE_NORMAL
    [frame] = [parse_server_message(t) for t in texts]
    assert isinstance(frame, ErrorFrame)
    assert frame.body.error_type == ErrorType.AUDIO_PROCESSING_ERROR
    assert frame.body.recoverable is False and frame.body.is_fatal
    assert frame.body.stream_id
    if size % 2 == 0:
        assert f"Provided number of samples is {size // 2}" in frame.body.description
    assert srv.stats.bad_frames == 1 and srv.stats.frames_received == 2


async def test_unsupported_encoding_fails_in_the_audio_path(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    first = StreamingWhisperInput(streaming_params=StreamingParams(encoding="opus"))
    ws = await open_stream(http, srv, first)
    await ws.send_bytes(bytes(1024))
    texts, code = await expect_close(ws)
    assert code == CLOSE_NORMAL
    frame = parse_server_message(texts[0])
    assert isinstance(frame, ErrorFrame)
    assert frame.body.error_type == ErrorType.AUDIO_PROCESSING_ERROR
    assert "opus" in frame.body.description


# --------------------------------------------------------------------------- recognition
async def test_two_utterances_partials_finals_and_stream_relative_times(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    first_pcm = speech_with_silence(TEST_PHRASES[0], lead_s=0.3, tail_s=0.8)
    second_pcm = speech_with_silence(TEST_PHRASES[1], lead_s=0.2, tail_s=0.8)
    ws = await open_stream(http, srv)
    # Twice real time: a partial still decoding when its utterance's final is queued is
    # abandoned (the preview is obsolete), so a burst would leave no partial to check.
    await send_audio(ws, to_frames(np.concatenate([first_pcm, second_pcm])), pace_s=0.016)
    messages = await until_finished(ws)
    found = results(messages)
    finals = [r for r in found if r.is_final]
    assert heard(finals) == said(TEST_PHRASES[0], TEST_PHRASES[1]), [f.text for f in finals]
    assert not any(f.is_end_of_audio_flush for f in finals)
    # Partials come before the final of their utterance and are non-final hypotheses.
    assert not found[0].is_final
    first_final = found.index(finals[0])
    assert any(not r.is_final and r.text for r in found[:first_final])
    # transcription_num quirk: finals pre-increment, partials carry the previous number.
    assert [f.transcription_num for f in finals] == [1, 2]
    assert {r.transcription_num for r in found[:first_final]} == {0}
    assert {r.transcription_num for r in found[first_final + 1 : -1]} <= {1}
    # Stream-relative, monotonic word times; the second utterance starts after the first.
    words = [w for f in finals for s in f.segments for w in s.word_timestamps]
    assert normalise(" ".join(w.word for w in words)) == normalise(
        f"{TEST_PHRASES[0]} {TEST_PHRASES[1]}"
    )
    starts = [w.start_time for w in words]
    assert starts == sorted(starts)
    assert all(w.start_time < w.end_time for w in words)
    first_len = len(first_pcm) / 16_000
    # Speech starts at 0.3 s. Whisper's word alignment may start a first word at the
    # decoded audio's start (up to ~0.35 s of lead-in is decoded), so within 0.5 s.
    assert abs(words[0].start_time - 0.3) < 0.5, words[0]
    # The second phrase starts 0.2 s into the second half: stream time, not buffer time.
    assert abs(finals[1].segments[0].start_time - (first_len + 0.2)) < 0.5
    assert finals[1].segments[0].start_time >= finals[0].segments[-1].end_time
    assert finals[1].segments[0].end_time <= (len(first_pcm) + len(second_pcm)) / 16_000
    for f in finals:
        assert f.language_code == "en" and f.segments[0].language_code == "en"
        assert f.audio_length_sec and f.audio_length_sec > 1.0
    # Partials are best effort (a partial never waits for a busy decode thread), and this
    # audio arrives far faster than real time: at least the one asserted above.
    assert srv.stats.finals_sent == 2 and srv.stats.partials_sent >= 1


async def test_word_timestamps_only_when_asked(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    first = StreamingWhisperInput(whisper_params=WhisperParams(show_word_timestamps=False))
    ws = await open_stream(http, srv, first)
    await send_audio(ws, to_frames(speech_with_silence(TEST_PHRASES[2])))
    finals = [r for r in results(await until_finished(ws)) if r.is_final]
    assert heard(finals) == said(TEST_PHRASES[2]), finals
    assert finals[0].segments[0].word_timestamps == []


async def test_mulaw_8k_path(http: aiohttp.ClientSession, srv: LocalBasetenServer) -> None:
    first = StreamingWhisperInput(
        streaming_params=StreamingParams(encoding="pcm_mulaw", sample_rate=8000)
    )
    ws = await open_stream(http, srv, first)
    pcm8k = speech_with_silence(TEST_PHRASES[3], sample_rate=8000)
    frames = to_frames(pcm8k, Encoding.PCM_MULAW)
    assert {len(f) for f in frames} == {256}
    await send_audio(ws, frames)
    finals = [r for r in results(await until_finished(ws)) if r.is_final]
    assert heard(finals) == said(TEST_PHRASES[3]), finals
    # Buffer duration in the declared rate's seconds: lead silence + speech + VAD hangover.
    assert finals[0].audio_length_sec is not None
    assert 1.0 < finals[0].audio_length_sec <= len(frames) * 256 / 8000


async def test_max_duration_cap_forces_a_final_and_drops_silence(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    first = StreamingWhisperInput(
        streaming_params=StreamingParams(final_transcript_max_duration_s=1)
    )
    ws = await open_stream(http, srv, first)
    # 2.5 s of pure silence: two full buffers dropped silently, no result.
    await send_audio(ws, to_frames(silence(2.5)))
    await srv.wait_for(lambda s: s.buffers_dropped >= 2)
    # ~2.5 s of speech without a pause long enough for the VAD: cap finals.
    await send_audio(ws, to_frames(synthesize(TEST_PHRASES[1])))
    messages = await until_finished(ws)
    finals = [r for r in results(messages) if r.is_final]
    assert len(finals) >= 2
    assert all(f.audio_length_sec is not None and f.audio_length_sec <= 1.0 for f in finals)
    assert srv.stats.finals_sent == len(finals)


# --------------------------------------------------------------------------- control messages
async def test_end_audio_flushes_in_speech_then_finished_and_no_self_close(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    ws = await open_stream(http, srv)
    # No trailing silence: the VAD is still in speech when end_audio arrives.
    await send_audio(
        ws, to_frames(np.concatenate([silence(0.3), synthesize(TEST_PHRASES[4])[:-4000]]))
    )
    messages = await until_finished(ws)
    # The ack is immediate (partials already queued may still precede it); the flush
    # final comes after it, once queued work is done.
    [ack] = [m for m in messages if isinstance(m, EndAudioReply) and not m.finished]
    assert ack.body.status == "acknowledged" and ack.trace_id == "trace-1"
    finals = [r for r in results(messages) if r.is_final]
    assert messages.index(ack) < messages.index(finals[0])
    assert len(finals) == 1 and finals[0].is_end_of_audio_flush is True
    # "turn on the lights" cut 0.25 s short: the words up to the cut are all there.
    assert normalise(finals[0].text)[:3] == normalise(TEST_PHRASES[4])[:3], finals[0].text
    last = messages[-1]
    assert isinstance(last, EndAudioReply) and last.finished and last.trace_id is None
    # The server never closes by itself after finished...
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=1.0)
    assert not ws.closed
    # ...but anything sent afterwards makes it close 1000.
    await ws.send_str(health_check_message("late", 1.0, get_partial_interval=False))
    texts, code = await expect_close(ws)
    assert (texts, code) == ([], CLOSE_NORMAL)
    assert srv.stats.messages_after_finished == 1 and srv.stats.finished_sent == 1


async def test_end_audio_in_silence_sends_no_final(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    ws = await open_stream(http, srv)
    await send_audio(ws, to_frames(silence(0.5)))
    messages = await until_finished(ws)
    assert [type(m) for m in messages] == [EndAudioReply, EndAudioReply]
    assert srv.stats.end_audio_received == 1 and srv.stats.finals_sent == 0


async def test_end_audio_wire_shape(http: aiohttp.ClientSession, srv: LocalBasetenServer) -> None:
    ws = await open_stream(http, srv)
    await ws.send_str(json.dumps({"type": "end_audio", "trace_id": "abc"}))
    ack = json.loads((await ws.receive(timeout=10)).data)
    done = json.loads((await ws.receive(timeout=10)).data)
    assert ack == {
        "type": "end_audio",
        "trace_id": "abc",
        "timestamp": None,
        "body": {"status": "acknowledged"},
    }
    assert done == {
        "type": "end_audio",
        "trace_id": None,
        "timestamp": None,
        "body": {"status": "finished"},
    }


@pytest.mark.parametrize("want_interval", [True, False])
async def test_health_check(
    http: aiohttp.ClientSession, srv: LocalBasetenServer, want_interval: bool
) -> None:
    ws = await open_stream(http, srv)
    await ws.send_str(health_check_message("hc-7", 123.0, get_partial_interval=want_interval))
    raw = json.loads((await ws.receive(timeout=10)).data)
    reply = parse_server_message(json.dumps(raw))
    assert isinstance(reply, HealthCheckReply)
    assert reply.trace_id == "hc-7" and reply.body.healthy is True
    assert reply.timestamp is not None and reply.timestamp > 1e9
    assert ("partial_interval" in raw["body"]) is want_interval
    assert srv.stats.health_checks == 1


@pytest.mark.parametrize(
    "text", ["not json", '{"terminate_session": true}', '{"type": "flush"}', "[1, 2]"]
)
async def test_unparsable_text_is_a_recoverable_stream_error(
    http: aiohttp.ClientSession, srv: LocalBasetenServer, text: str
) -> None:
    ws = await open_stream(http, srv)
    await ws.send_str(text)
    error = await receive(ws)
    assert isinstance(error, ErrorFrame)
    assert error.body.error_type == ErrorType.STREAM_ERROR and error.body.recoverable is True
    assert error.body.description.startswith("Failed to validate text message")
    # The stream goes on.
    await send_audio(ws, to_frames(speech_with_silence(TEST_PHRASES[2])))
    finals = [r for r in results(await until_finished(ws)) if r.is_final]
    assert heard(finals) == said(TEST_PHRASES[2]), finals


async def test_error_type_message_gets_the_unhandled_reply(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    ws = await open_stream(http, srv)
    await ws.send_str('{"type": "error", "trace_id": "e1"}')
    raw = json.loads((await ws.receive(timeout=10)).data)
    assert raw["type"] == "error" and raw["trace_id"] == "e1"
    assert raw["body"] == {"error": "Unhandled message type: error"}


# --------------------------------------------------------------------------- faults
async def test_fault_503_on_first_upgrades(
    http: aiohttp.ClientSession, baseten_server: BasetenServerFactory
) -> None:
    srv = await baseten_server(api_key=KEY, faults=FaultPlan(reject_upgrades_with_503=2))
    for _ in range(2):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await open_stream(http, srv)
        assert info.value.status == 503
    ws = await open_stream(http, srv)
    await ws.close()
    assert srv.stats.unavailable_503 == 2 and srv.stats.connections == 1
    # A new plan brings a fresh budget.
    srv.faults = FaultPlan(reject_upgrades_with_503=1)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await open_stream(http, srv)
    assert srv.stats.upgrades_rejected == 3


async def test_fault_drop_aborts_tcp_without_close_frame(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    srv.faults = FaultPlan(drop_after_frames=5, drop_connections=1)
    ws = await open_stream(http, srv)
    await send_audio(ws, [bytes(1024)] * 5)
    msg = await ws.receive(timeout=10)
    assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert ws.close_code != CLOSE_NORMAL  # no close frame: aiohttp reports 1006/None
    assert srv.stats.dropped_connections == 1
    # The budget was one connection: the next one works normally.
    ws = await open_stream(http, srv)
    await send_audio(ws, to_frames(speech_with_silence(TEST_PHRASES[2])))
    finals = [r for r in results(await until_finished(ws)) if r.is_final]
    assert heard(finals) == said(TEST_PHRASES[2]), finals
    assert srv.stats.dropped_connections == 1


async def test_fault_stall_stops_answering_but_keeps_tcp_open(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    srv.faults = FaultPlan(stall_after_frames=3)
    ws = await open_stream(http, srv)
    await send_audio(ws, [bytes(1024)] * 3)
    await srv.wait_for(lambda s: s.stalled_connections == 1)
    await ws.send_str(health_check_message("hc", 1.0, get_partial_interval=False))
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=1.0)
    assert not ws.closed and srv.stats.health_checks == 0


async def test_fault_inference_delay(http: aiohttp.ClientSession, srv: LocalBasetenServer) -> None:
    srv.faults = FaultPlan(inference_delay_s=0.7)
    ws = await open_stream(http, srv)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await send_audio(ws, to_frames(speech_with_silence(TEST_PHRASES[2])))
    finals = [r for r in results(await until_finished(ws)) if r.is_final]
    assert heard(finals) == said(TEST_PHRASES[2]), finals
    # Every transcription (partials too) leaves 0.7 s after it was queued, in FIFO order.
    assert loop.time() - started >= 0.7


async def test_fault_recoverable_injected_error_keeps_the_stream(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    srv.faults = FaultPlan(inject_errors=[InjectedError(after_frames=2)])
    ws = await open_stream(http, srv)
    await send_audio(ws, to_frames(speech_with_silence(TEST_PHRASES[2])))
    messages = await until_finished(ws)
    errors = [m for m in messages if isinstance(m, ErrorFrame)]
    assert len(errors) == 1 and errors[0].body.error_type == ErrorType.TRANSCRIPTION_ERROR
    assert errors[0].body.recoverable is True
    assert heard([r for r in results(messages) if r.is_final]) == said(TEST_PHRASES[2])


async def test_fault_fatal_injected_error_closes_1000(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    srv.faults = FaultPlan(
        inject_errors=[
            InjectedError(
                after_frames=2,
                error_type=ErrorType.AUDIO_PROCESSING_ERROR,
                recoverable=False,
                message="boom",
            )
        ]
    )
    ws = await open_stream(http, srv)
    await send_audio(ws, [bytes(1024)] * 2)
    texts, code = await expect_close(ws)
    frame = parse_server_message(texts[-1])
    assert isinstance(frame, ErrorFrame) and frame.body.is_fatal and frame.body.message == "boom"
    assert code == CLOSE_NORMAL and srv.stats.errors_injected == 1


# --------------------------------------------------------------------------- CLI
async def test_cli_serves_and_exits_cleanly_on_ctrl_c(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "localdev.baseten",
        "--port",
        "0",
        "--api-key",
        KEY,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stderr is not None
        url = ""
        async with asyncio.timeout(30):
            while not url:
                line = (await proc.stderr.readline()).decode()
                assert line, "server exited before listening"
                if line.startswith("listening on "):
                    url = line.split()[-1]
        ws = await http.ws_connect(url, headers={"Authorization": f"Bearer {KEY}"})
        await ws.send_str(FIRST.to_wire())
        await ws.send_str(health_check_message("cli", 1.0, get_partial_interval=True))
        reply = await receive(ws)
        assert isinstance(reply, HealthCheckReply) and reply.body.healthy
        await ws.close()
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stderr.read(), timeout=20)
        assert await proc.wait() == 0
        assert KEY.encode() not in rest
        assert b"Traceback" not in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
